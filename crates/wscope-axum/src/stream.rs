//! `GET /api/stats/stream`: the live stream, as Server-Sent Events. Each event is `event: stats`,
//! `id: <seq>` and `data:` a [`LiveStats`] (the summary, traffic totals since start, and rates per
//! second since the previous event), one per interval (a second by default, `?interval=500ms`).
//! A client that reconnects with `Last-Event-ID` (or `?lastEventId=`) gets numbers that continue
//! after it.
//!
//! Each stream is a timer in its own response: nothing runs for it between ticks, and it is
//! dropped with the response when the client goes (no task, no subscription to clean up). A
//! stream ends, after one last event that says `shutDown: true`, as soon as the registry's
//! shutdown begins: a graceful HTTP stop waits for responses in flight, and this one would
//! otherwise never finish.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let registry = wscope_core::Registry::new();
//! let admin = wscope_axum::admin_router(registry); // serves GET /api/stats/stream among others
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
//! axum::serve(listener, admin).await
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use tokio::time::{Interval, MissedTickBehavior};
use wscope_core::wire::LiveStats;
use wscope_core::Registry;

use crate::error::ApiError;

/// The time between events when the query does not say.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest `interval` accepted: each event walks the entries once for the traffic totals.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The longest `interval` accepted (keep-alive comments still flow between events).
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// How often a comment line goes out when no event does, so proxies keep the connection.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The query of `GET /api/stats/stream`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Time between events (`500ms`, `2s`, or a number of seconds), from 100 ms to 60 s;
    /// default 1 s.
    pub interval: Option<String>,
    /// The last event id seen, for clients that cannot set the `Last-Event-ID` header (which
    /// wins when both are given).
    #[serde(rename = "lastEventId")]
    pub last_event_id: Option<String>,
}

/// `GET /api/stats/stream`: an SSE stream of [`LiveStats`] events. A bad `interval` or event id
/// (or an unknown parameter) is a 400 naming it.
pub async fn stats_stream(
    State(registry): State<Registry>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let every = interval(query.interval.as_deref())?;
    let after = last_event_id(&headers, query.last_event_id.as_deref())?;
    let feed = Feed::new(registry, every, after);
    let mut response = Sse::new(feed.events())
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // nginx buffers responses by default, which would hold events back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The `interval` parameter, checked against its bounds.
fn interval(text: Option<&str>) -> Result<Duration, ApiError> {
    let Some(text) = text else {
        return Ok(DEFAULT_INTERVAL);
    };
    let every = wscope_core::units::parse_duration(text)
        .map_err(|e| ApiError::bad_request(format!("interval: {e}")))?;
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&every) {
        return Err(ApiError::bad_request(format!(
            "interval: {text:?} is out of range: use {} to {}",
            humanize(MIN_INTERVAL),
            humanize(MAX_INTERVAL)
        )));
    }
    Ok(every)
}

/// `100ms`, `60s`: the bounds as the parameter writes them.
fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The id to continue after: the `Last-Event-ID` header, else `lastEventId`, else 0. Empty means
/// none (as the SSE spec resets it); anything else must be an id this stream could have sent.
fn last_event_id(headers: &HeaderMap, query: Option<&str>) -> Result<u64, ApiError> {
    let (name, value) = match headers.get("last-event-id") {
        Some(value) => (
            "Last-Event-ID",
            value
                .to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID: not text"))?,
        ),
        None => ("lastEventId", query.unwrap_or_default()),
    };
    let value = value.trim();
    if value.is_empty() {
        return Ok(0);
    }
    value
        .parse::<u64>()
        .ok()
        .filter(|&id| id < u64::MAX)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name}: {value:?} is not an event id of this stream (a whole number)"
            ))
        })
}

/// One client's stream: its timer, its numbering and the event before, for rates.
struct Feed {
    registry: Registry,
    /// Ticks once per interval; the first tick is at once, so a client sees figures at once.
    ticks: Interval,
    /// Completes when the registry's shutdown begins.
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The `seq` of the next event.
    next: u64,
    /// The last event sent, to compute rates against.
    previous: Option<LiveStats>,
    /// Set once the last event (the one after shutdown began) is out.
    ended: bool,
}

impl Feed {
    fn new(registry: Registry, every: Duration, after: u64) -> Self {
        let mut ticks = tokio::time::interval(every);
        // A client that reads slowly gets the next event late, not a burst of stale ones.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            stopping: Box::pin(registry.shutdown_started()),
            registry,
            ticks,
            next: after + 1,
            previous: None,
            ended: false,
        }
    }

    /// The events, ending after the one that follows the start of shutdown.
    fn events(self) -> impl Stream<Item = Result<Event, axum::Error>> + Send + 'static {
        futures_util::stream::unfold(self, |mut feed| async move {
            if feed.ended {
                return None;
            }
            tokio::select! {
                biased;
                () = &mut feed.stopping => feed.ended = true,
                _ = feed.ticks.tick() => {}
            }
            let event = feed.read();
            Some((event, feed))
        })
    }

    /// Reads the registry now into the next event.
    fn read(&mut self) -> Result<Event, axum::Error> {
        let clock = &self.registry.config().clock;
        let time = clock.unix_ms(clock.now_ms());
        let stats = LiveStats::new(
            self.next,
            time,
            &self.registry.summary(),
            self.registry.traffic(),
            self.previous.as_ref(),
        );
        self.next = self.next.saturating_add(1);
        let event = Event::default()
            .event("stats")
            .id(stats.seq.to_string())
            .json_data(&stats);
        self.previous = Some(stats);
        event
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn intervals_within_bounds_are_taken_and_others_named() {
        assert_eq!(interval(None).unwrap(), DEFAULT_INTERVAL);
        assert_eq!(interval(Some("250ms")).unwrap(), Duration::from_millis(250));
        assert_eq!(interval(Some("60")).unwrap(), MAX_INTERVAL);
        assert_eq!(interval(Some("100ms")).unwrap(), MIN_INTERVAL);
        for bad in ["99ms", "61s", "0", "soon", "-1"] {
            let err = interval(Some(bad)).unwrap_err();
            assert_eq!(err.status, 400);
            assert!(err.message.starts_with("interval: "), "{bad}: {err}");
        }
        assert!(interval(Some("10ms"))
            .unwrap_err()
            .message
            .contains("use 100ms to 60s"));
    }

    #[test]
    fn the_header_wins_over_the_query_and_bad_ids_are_named() {
        let mut headers = HeaderMap::new();
        assert_eq!(last_event_id(&headers, None).unwrap(), 0);
        assert_eq!(last_event_id(&headers, Some("41")).unwrap(), 41);
        headers.insert("last-event-id", HeaderValue::from_static("7"));
        assert_eq!(last_event_id(&headers, Some("41")).unwrap(), 7);
        headers.insert("last-event-id", HeaderValue::from_static(""));
        assert_eq!(last_event_id(&headers, Some("41")).unwrap(), 0);
        headers.insert("last-event-id", HeaderValue::from_static("x1"));
        let err = last_event_id(&headers, None).unwrap_err();
        assert!(err.message.starts_with("Last-Event-ID: \"x1\""), "{err}");
        let err = last_event_id(&HeaderMap::new(), Some("-3")).unwrap_err();
        assert!(err.message.starts_with("lastEventId: \"-3\""), "{err}");
        let max = u64::MAX.to_string();
        assert!(last_event_id(&HeaderMap::new(), Some(&max)).is_err());
    }
}
