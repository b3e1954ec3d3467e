//! A reload's drain: the sockets of routes a reload removed or gave another upstream are closed
//! with 1001 "route reloaded", after what is queued to them is flushed, paced by `--drain-rate`;
//! every other socket is left alone.

use std::time::Duration;

use serde::Serialize;
use wscope_axum::relay::RelayRoute;
use wscope_core::CloseCode;

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// Routes removed or given another upstream.
    pub routes_retired: usize,
    /// Their sockets, closed by the drain (now, or paced over the next seconds).
    pub connections_drained: usize,
}

/// The reason retired sockets are closed with.
pub(crate) const RELOAD_REASON: &str = "route reloaded";

/// Closes the sockets of `retired`, `rate` a second (0 = all at once), in a task of its own when
/// paced.
pub(crate) fn drain(retired: Vec<RelayRoute>, rate: u32) -> ReloadReport {
    let handles: Vec<_> = retired
        .iter()
        .flat_map(|r| r.upstream.connections())
        .collect();
    let report = ReloadReport {
        routes_retired: retired.len(),
        connections_drained: handles.len(),
    };
    let close = |h: &wscope_core::ConnectionHandle| {
        // The reason is a constant shorter than a close frame takes.
        let _ = h.close(CloseCode::GOING_AWAY, RELOAD_REASON);
    };
    if rate == 0 || handles.is_empty() {
        handles.iter().for_each(close);
        return report;
    }
    // Ten batches a second.
    let batch = (rate as usize).div_ceil(10).max(1);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for chunk in handles.chunks(batch) {
            tick.tick().await;
            chunk.iter().for_each(close);
        }
    });
    report
}
