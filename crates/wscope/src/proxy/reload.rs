//! A reload's drain: the sockets of routes a reload removed or gave another upstream are closed
//! with 1001 "route reloaded", after what is queued to them is flushed, paced by `--drain-rate`;
//! every other socket is left alone.

use std::time::Duration;

use wscope_axum::relay::RelayRoute;
use wscope_axum::ReloadAnswer;
use wscope_core::CloseCode;

/// The reason retired sockets are closed with.
pub(crate) const RELOAD_REASON: &str = "route reloaded";

/// Closes the sockets of `retired`, `rate` a second (0 = all at once), in a task of its own when
/// paced.
pub(crate) fn drain(retired: Vec<RelayRoute>, rate: u32) -> ReloadAnswer {
    let handles: Vec<_> = retired
        .iter()
        .flat_map(|r| r.upstream.connections())
        .collect();
    let report = ReloadAnswer::new(retired.len(), handles.len());
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

/// The setting groups other than the routes whose values differ between `running` and `fresh`:
/// a reload does not apply them (listeners are bound, the registry configured), and says so.
pub(crate) fn needs_restart(
    running: &crate::config::ProxySettings,
    fresh: &crate::config::ProxySettings,
) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |differs: bool, name: &'static str| {
        if differs {
            changed.push(name);
        }
    };
    check(
        running.listeners != fresh.listeners,
        "listener settings (--listen, --admin-listen, TLS, …)",
    );
    check(running.instance != fresh.instance, "--instance-id");
    check(
        running.liveness != fresh.liveness,
        "liveness settings (pings, timeouts, drain)",
    );
    check(
        running.sockets != fresh.sockets,
        "socket settings (--engine, compression)",
    );
    check(running.limits != fresh.limits, "limits");
    check(
        running.admin != fresh.admin,
        "admin access (token, hosts, origins)",
    );
    check(running.cluster != fresh.cluster, "cluster settings");
    check(running.logging != fresh.logging, "logging settings");
    changed
}
