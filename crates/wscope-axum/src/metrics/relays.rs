//! The `wscope_upstream_*` families: per route and upstream of a proxy ([`Relays`]), the relays
//! open and opened, failures to open by reason, and upstream handshake latency.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::relay::{FailureKind, RelayRoute, Relays};

/// The routes as of the scrape (retired ones with relays still open included).
#[derive(Debug)]
pub(super) struct RelayScrape(Vec<(RelayRoute, bool)>);

impl RelayScrape {
    pub(super) fn read(relays: &Relays) -> Self {
        Self(relays.list())
    }

    pub(super) fn encode(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let labels = |r: &RelayRoute| {
            [
                ("route", r.prefix.clone()),
                ("upstream", r.upstream.name().to_owned()),
            ]
        };
        let mut active = encoder.encode_descriptor(
            "wscope_upstream_connections",
            "WebSockets relayed to each upstream now, by route.",
            None,
            MetricType::Gauge,
        )?;
        for (route, _) in &self.0 {
            let n = route.upstream.figures().active() as i64;
            ConstGauge::new(n).encode(active.encode_family(&labels(route))?)?;
        }
        let mut opened = encoder.encode_descriptor(
            "wscope_upstream_connections_opened",
            "WebSockets relayed to each upstream since start, by route.",
            None,
            MetricType::Counter,
        )?;
        for (route, _) in &self.0 {
            let n = route.upstream.figures().total();
            ConstCounter::new(n).encode(opened.encode_family(&labels(route))?)?;
        }
        let mut failures = encoder.encode_descriptor(
            "wscope_upstream_connect_failures",
            "Upgrades the upstream could not take, by reason: unreachable (502), timeout (504), \
             refused (its status passed on), invalid (502).",
            None,
            MetricType::Counter,
        )?;
        for (route, _) in &self.0 {
            let [route_label, upstream_label] = labels(route);
            for kind in FailureKind::ALL {
                let n = route.upstream.figures().failures(kind);
                let family = [
                    route_label.clone(),
                    upstream_label.clone(),
                    ("reason", kind.as_str().to_owned()),
                ];
                ConstCounter::new(n).encode(failures.encode_family(&family)?)?;
            }
        }
        let mut handshakes = encoder.encode_descriptor(
            "wscope_upstream_handshake_seconds",
            "Time to open each upstream: TCP connect and WebSocket handshake.",
            None,
            MetricType::Histogram,
        )?;
        for (route, _) in &self.0 {
            let histogram = &route.upstream.figures().handshakes;
            histogram.encode(handshakes.encode_family(&labels(route))?)?;
        }
        Ok(())
    }
}
