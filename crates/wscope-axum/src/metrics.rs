//! `GET /metrics`: the registry in the Prometheus text format (0.0.4), through
//! `prometheus-client`. `docs/METRICS.md` lists every family, its labels and its source.
//!
//! Every family is named `wscope_<what is counted>_<what happened to it>[_<unit>]`:
//! `wscope_connections_opened_total`, `wscope_messages_received_total` and the bytes of those
//! same messages, `wscope_messages_received_bytes_total`.
//!
//! No message pays for these. Counts, totals, states and refusals come from the registry's O(1)
//! summary and its traffic totals (one walk of the entries, atomics only) at scrape time; what
//! only a close can tell — its code, who closed, lifetime and idle time — and each timed pong come
//! from one observer, registered on the registry once however often the admin router is built
//! ([`Registry::observe_once`]), so each close costs two histogram observations and one atomic
//! increment, and each pong one observation.
//!
//! ```
//! use wscope_axum::metrics_text;
//! use wscope_core::Registry;
//!
//! let registry = Registry::new();
//! let text = metrics_text(&registry, None).expect("encodes");
//! assert!(text.contains("wscope_connections_opened_total 0"));
//! ```

mod process;
mod relays;
mod runtimes;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Extension;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use wscope_cluster::{Cluster, ClusterCounters, ClusterState, Member, MemberStatus};
use wscope_core::{
    ClosedEvent, Initiator, Observer, Registry, RttEvent, Snapshot, StateCounts, Traffic,
};

use crate::error::ApiError;
use crate::per_core::Runtimes;
use crate::relay::Relays;

/// Upper bounds (s) of the connection-lifetime buckets: from a reconnect loop to a day.
const LIFETIME_BUCKETS: [f64; 13] = [
    0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
];
/// Upper bounds (s) of the idle-at-close buckets: busy to forgotten.
const IDLE_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Upper bounds (s) of the ping round-trip buckets (the registry times them to the millisecond).
const RTT_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `/metrics` route, with the observer it reads registered on `registry` (once).
pub(crate) fn route(registry: &Registry) -> MethodRouter<Registry> {
    registry.observe_once(CloseMetrics::new);
    get(metrics)
}

/// `GET /metrics`: the exposition ([`metrics_text`]) as `text/plain; version=0.0.4`. Built on
/// the blocking pool: it reads files under `/proc` and walks the entries (about a millisecond at
/// 100,000), which should not hold up the tasks sharing this worker.
pub async fn metrics(
    State(registry): State<Registry>,
    cluster: Option<Extension<Cluster>>,
    relays: Option<Extension<Relays>>,
    runtimes: Option<Extension<Runtimes>>,
) -> Response {
    let cluster = cluster.map(|Extension(c)| c);
    let relays = relays.map(|Extension(r)| r);
    let runtimes = runtimes.map(|Extension(r)| r);
    let text = move || {
        metrics_text_with(
            &registry,
            cluster.as_ref(),
            relays.as_ref(),
            runtimes.as_ref(),
        )
    };
    match tokio::task::spawn_blocking(text).await {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                ),
            )],
            text,
        )
            .into_response(),
        Ok(Err(fmt::Error)) | Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded",
        )
        .into_response(),
    }
}

/// The registry's metrics in the Prometheus text format, with the `wscope_cluster_*` families of
/// `cluster` in cluster mode. The first call on a registry registers the observer behind the
/// close and round-trip families (as `admin_router` does when built), so those count from then
/// on.
pub fn metrics_text(registry: &Registry, cluster: Option<&Cluster>) -> Result<String, fmt::Error> {
    metrics_text_with(registry, cluster, None, None)
}

/// [`metrics_text`] with the `wscope_upstream_*` families of a proxy's `relays`, and
/// `wscope_runtime_connections` for the `runtimes` of a [`PerCore`](crate::PerCore) server.
pub fn metrics_text_with(
    registry: &Registry,
    cluster: Option<&Cluster>,
    relays: Option<&Relays>,
    runtimes: Option<&Runtimes>,
) -> Result<String, fmt::Error> {
    let scrape = Scrape {
        relays: relays.map(relays::RelayScrape::read),
        runtimes: runtimes.map(Runtimes::connections),
        summary: registry.summary(),
        traffic: registry.traffic(),
        closes: registry.observe_once(CloseMetrics::new),
        process: process::Process::read(),
        cluster: cluster.map(|c| ClusterScrape {
            state: c.state(),
            members: c.members(),
            counters: c.counters(),
        }),
    };
    let mut families = prometheus_client::registry::Registry::default();
    families.register_collector(Box::new(scrape));
    let mut text = String::with_capacity(8 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut text, &families)?;
    Ok(text)
}

/// The `code_class` label of a close: the code's name for the codes RFC 6455 and IANA define,
/// its range for application codes, `abnormal` (1006) when the peer vanished without a close
/// frame, `none` when no code was recorded (a close frame without one, a transport error, a
/// connection dropped before it opened). A fixed set, so the family stays small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CodeClass {
    None,
    Normal,
    GoingAway,
    ProtocolError,
    UnsupportedData,
    InvalidPayload,
    PolicyViolation,
    MessageTooBig,
    MandatoryExtension,
    InternalError,
    ServiceRestart,
    TryAgainLater,
    BadGateway,
    /// 1006: the peer went away without a close frame (recorded, never sent).
    Abnormal,
    /// 1004, 1005, 1015 and unassigned 1xxx–2xxx: reserved codes a peer should not send.
    Reserved,
    /// 3000–3999: registered with IANA by libraries and frameworks.
    Registered,
    /// 4000–4999: private to an application.
    Application,
}

impl CodeClass {
    const ALL: [CodeClass; 17] = [
        Self::None,
        Self::Normal,
        Self::GoingAway,
        Self::ProtocolError,
        Self::UnsupportedData,
        Self::InvalidPayload,
        Self::PolicyViolation,
        Self::MessageTooBig,
        Self::MandatoryExtension,
        Self::InternalError,
        Self::ServiceRestart,
        Self::TryAgainLater,
        Self::BadGateway,
        Self::Abnormal,
        Self::Reserved,
        Self::Registered,
        Self::Application,
    ];

    fn of(code: Option<u16>) -> Self {
        match code {
            None => Self::None,
            Some(1000) => Self::Normal,
            Some(1001) => Self::GoingAway,
            Some(1002) => Self::ProtocolError,
            Some(1003) => Self::UnsupportedData,
            Some(1007) => Self::InvalidPayload,
            Some(1008) => Self::PolicyViolation,
            Some(1009) => Self::MessageTooBig,
            Some(1010) => Self::MandatoryExtension,
            Some(1011) => Self::InternalError,
            Some(1012) => Self::ServiceRestart,
            Some(1013) => Self::TryAgainLater,
            Some(1014) => Self::BadGateway,
            Some(1006) => Self::Abnormal,
            Some(3000..=3999) => Self::Registered,
            Some(4000..=4999) => Self::Application,
            Some(_) => Self::Reserved,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Normal => "normal",
            Self::GoingAway => "going_away",
            Self::ProtocolError => "protocol_error",
            Self::UnsupportedData => "unsupported_data",
            Self::InvalidPayload => "invalid_payload",
            Self::PolicyViolation => "policy_violation",
            Self::MessageTooBig => "message_too_big",
            Self::MandatoryExtension => "mandatory_extension",
            Self::InternalError => "internal_error",
            Self::ServiceRestart => "service_restart",
            Self::TryAgainLater => "try_again_later",
            Self::BadGateway => "bad_gateway",
            Self::Abnormal => "abnormal",
            Self::Reserved => "reserved",
            Self::Registered => "3xxx",
            Self::Application => "4xxx",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What only the events tell: closes by code class and initiator, the lifetime and idle-time
/// histograms, and the ping round trips. One per registry ([`Registry::observe_once`]).
#[derive(Debug)]
struct CloseMetrics {
    /// Closes by [`CodeClass`], then by position in [`Initiator::ALL`].
    closed: [[AtomicU64; Initiator::ALL.len()]; CodeClass::ALL.len()],
    lifetime: Histogram,
    idle: Histogram,
    rtt: Histogram,
}

impl CloseMetrics {
    fn new() -> Self {
        Self {
            closed: Default::default(),
            lifetime: Histogram::new(LIFETIME_BUCKETS),
            idle: Histogram::new(IDLE_BUCKETS),
            rtt: Histogram::new(RTT_BUCKETS),
        }
    }
}

impl Observer for CloseMetrics {
    fn closed(&self, event: &ClosedEvent<'_>) {
        let class = CodeClass::of(event.record.code).index();
        let by = Initiator::ALL
            .iter()
            .position(|i| *i == event.record.initiator)
            .unwrap_or(0);
        self.closed[class][by].fetch_add(1, Ordering::Relaxed);
        self.lifetime.observe(event.lifetime.as_secs_f64());
        self.idle.observe(event.idle.as_secs_f64());
    }

    fn ping_rtt(&self, event: &RttEvent) {
        self.rtt.observe(event.rtt.as_secs_f64());
    }
}

/// One scrape's readings, encoded as the families of `docs/METRICS.md`.
#[derive(Debug)]
struct Scrape {
    summary: Snapshot,
    traffic: Traffic,
    closes: Arc<CloseMetrics>,
    process: process::Process,
    cluster: Option<ClusterScrape>,
    relays: Option<relays::RelayScrape>,
    /// The WebSockets open on each runtime of a per-core server.
    runtimes: Option<Vec<u64>>,
}

/// What cluster mode adds to a scrape.
#[derive(Debug)]
struct ClusterScrape {
    state: ClusterState,
    members: Vec<Member>,
    counters: ClusterCounters,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.encode_instance(&mut encoder)?;
        self.encode_connections(&mut encoder)?;
        self.encode_traffic(&mut encoder)?;
        self.encode_histograms(&mut encoder)?;
        if let Some(cluster) = &self.cluster {
            cluster.encode(&mut encoder)?;
        }
        if let Some(relays) = &self.relays {
            relays.encode(&mut encoder)?;
        }
        if let Some(runtimes) = &self.runtimes {
            runtimes::encode(runtimes, &mut encoder)?;
        }
        self.process.encode(&mut encoder)
    }
}

impl Scrape {
    fn encode_instance(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let s = &self.summary;
        let mut info = encoder.encode_descriptor(
            "wscope_info",
            "Always 1; the instance id and the wscope version as labels.",
            None,
            MetricType::Gauge,
        )?;
        let labels = [
            // Not `instance`: Prometheus sets that on every scraped series itself (the target's
            // address) and would rename ours to `exported_instance`.
            ("instance_id", s.instance_id.as_str()),
            ("version", env!("CARGO_PKG_VERSION")),
        ];
        ConstGauge::new(1i64).encode(info.encode_family(&labels)?)?;
        gauge(
            encoder,
            "wscope_uptime_seconds",
            "Seconds since the registry started.",
            s.uptime as f64 / 1000.0,
        )?;
        gauge(
            encoder,
            "wscope_shutting_down",
            "1 once shutdown (the drain) has begun, else 0.",
            i64::from(s.shut_down),
        )
    }

    fn encode_connections(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let s = &self.summary;
        let StateCounts {
            connecting,
            open,
            closing,
            closed,
        } = s.connections_by_state;
        let mut by_state = encoder.encode_descriptor(
            "wscope_connections",
            "Connections tracked now, by state.",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in [
            ("connecting", connecting),
            ("open", open),
            ("closing", closing),
            ("closed", closed),
        ] {
            ConstGauge::new(n).encode(by_state.encode_family(&[("state", state)])?)?;
        }
        counter(
            encoder,
            "wscope_connections_opened",
            "Connections registered since start.",
            s.total_connections_ever,
        )?;
        let mut closes = encoder.encode_descriptor(
            "wscope_connections_closed",
            "Connections removed, by close-code class and by who closed (series appear at their \
             first close).",
            None,
            MetricType::Counter,
        )?;
        for class in CodeClass::ALL {
            for (by, initiator) in Initiator::ALL.iter().enumerate() {
                let n = self.closes.closed[class.index()][by].load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let labels = [
                    ("code_class", class.as_str()),
                    ("closed_by", initiator.as_str()),
                ];
                ConstCounter::new(n).encode(closes.encode_family(&labels)?)?;
            }
        }
        let mut refused = encoder.encode_descriptor(
            "wscope_upgrades_refused",
            "Upgrades refused at admission, by reason.",
            None,
            MetricType::Counter,
        )?;
        for (kind, n) in s.refused.iter() {
            ConstCounter::new(n).encode(refused.encode_family(&[("reason", kind.as_str())])?)?;
        }
        Ok(())
    }

    fn encode_traffic(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let t = &self.traffic;
        counter(
            encoder,
            "wscope_messages_received",
            "Text and binary messages received since start.",
            t.messages_in,
        )?;
        counter(
            encoder,
            "wscope_messages_sent",
            "Text and binary messages sent since start.",
            t.messages_out,
        )?;
        counter(
            encoder,
            "wscope_messages_received_bytes",
            "Payload bytes of the messages received since start.",
            t.bytes_in,
        )?;
        counter(
            encoder,
            "wscope_messages_sent_bytes",
            "Payload bytes of the messages sent since start.",
            t.bytes_out,
        )?;
        gauge(
            encoder,
            "wscope_messages_queued",
            "Messages waiting in outbound queues now.",
            t.queued_messages,
        )?;
        gauge(
            encoder,
            "wscope_messages_queued_bytes",
            "Payload bytes waiting in outbound queues now.",
            t.queued_bytes,
        )?;
        gauge(
            encoder,
            "wscope_connection_memory_bytes",
            "Bytes the open connections hold now: what their engines hold for them (buffers, \
             partly received messages) and their queued payloads (the sum of memoryBytes).",
            t.memory_bytes,
        )
    }

    fn encode_histograms(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        for (name, help, histogram) in [
            (
                "wscope_connection_lifetime_seconds",
                "How long connections were registered, observed as each closes.",
                &self.closes.lifetime,
            ),
            (
                "wscope_connection_idle_at_close_seconds",
                "How long closed connections had moved no message when they closed.",
                &self.closes.idle,
            ),
            (
                "wscope_ping_rtt_seconds",
                "Round trips of server pings, observed per pong.",
                &self.closes.rtt,
            ),
        ] {
            histogram.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Histogram,
            )?)?;
        }
        Ok(())
    }
}

impl ClusterScrape {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let mut state = encoder.encode_descriptor(
            "wscope_cluster_state",
            "1 for the state this instance is in with its cluster, 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for s in [
            ClusterState::Connected,
            ClusterState::Disconnected,
            ClusterState::Refused,
            ClusterState::Left,
        ] {
            ConstGauge::new(i64::from(self.state == s))
                .encode(state.encode_family(&[("state", s.as_str())])?)?;
        }
        let mut members = encoder.encode_descriptor(
            "wscope_cluster_members",
            "Other members this instance knows, by status.",
            None,
            MetricType::Gauge,
        )?;
        for status in [MemberStatus::Live, MemberStatus::Late, MemberStatus::Gone] {
            let n = self.members.iter().filter(|m| m.status == status).count() as i64;
            ConstGauge::new(n).encode(members.encode_family(&[("status", status.as_str())])?)?;
        }
        let c = &self.counters;
        for (name, help, value) in [
            (
                "wscope_cluster_messages_ignored",
                "Malformed or foreign messages on the cluster channels, ignored.",
                c.ignored,
            ),
            (
                "wscope_cluster_broadcasts_sent",
                "Cluster broadcasts this instance published.",
                c.broadcasts_sent,
            ),
            (
                "wscope_cluster_broadcasts_received",
                "Cluster broadcasts of other instances delivered here.",
                c.broadcasts_received,
            ),
            (
                "wscope_cluster_broadcasts_undelivered",
                "Cluster broadcasts that could not be published (delivered here only).",
                c.broadcasts_undelivered,
            ),
            (
                "wscope_cluster_broadcasts_too_large",
                "Of the undelivered broadcasts, those larger than --cluster-max-relay-size.",
                c.broadcasts_too_large,
            ),
            (
                "wscope_cluster_messages_unsent",
                "Other cluster messages not published: publish queue full, or not encodable.",
                c.messages_unsent,
            ),
            (
                "wscope_cluster_broadcasts_lost",
                "Broadcasts of other instances known lost on the way (sequence gaps).",
                c.broadcasts_lost,
            ),
            (
                "wscope_cluster_deliveries_dropped",
                "Cluster messages dropped because this instance read them too slowly.",
                c.deliveries_dropped,
            ),
            (
                "wscope_cluster_disconnects",
                "Times the link to the cluster engine was lost.",
                c.disconnects,
            ),
        ] {
            counter(encoder, name, help, value)?;
        }
        Ok(())
    }
}

/// One unlabelled gauge.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl prometheus_client::encoding::EncodeGaugeValue,
) -> fmt::Result {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// One unlabelled counter (`name` without its `_total`, which the encoder adds).
fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl prometheus_client::encoding::EncodeCounterValue,
) -> fmt::Result {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_classes_name_each_defined_code_and_group_the_rest() {
        let cases = [
            (None, "none"),
            (Some(1000), "normal"),
            (Some(1001), "going_away"),
            (Some(1008), "policy_violation"),
            (Some(1011), "internal_error"),
            (Some(1013), "try_again_later"),
            (Some(1005), "reserved"),
            (Some(1006), "abnormal"),
            (Some(2999), "reserved"),
            (Some(3000), "3xxx"),
            (Some(3999), "3xxx"),
            (Some(4000), "4xxx"),
            (Some(4999), "4xxx"),
            (Some(5000), "reserved"),
        ];
        for (code, class) in cases {
            assert_eq!(CodeClass::of(code).as_str(), class, "{code:?}");
        }
        for (i, class) in CodeClass::ALL.iter().enumerate() {
            assert_eq!(class.index(), i, "ALL is in declaration order");
        }
    }
}
