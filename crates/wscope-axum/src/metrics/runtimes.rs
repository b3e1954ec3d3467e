//! `wscope_runtime_connections`: the WebSockets open on each runtime of a server with a runtime
//! per core ([`Runtimes`](crate::Runtimes)), to see how the kernel's `SO_REUSEPORT` hashing
//! spread them.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Encodes the family from the counts by runtime index.
pub(super) fn encode(connections: &[u64], encoder: &mut DescriptorEncoder) -> fmt::Result {
    let mut family = encoder.encode_descriptor(
        "wscope_runtime_connections",
        "WebSockets open now on each runtime (a runtime per core; its index as the label).",
        None,
        MetricType::Gauge,
    )?;
    for (index, &n) in connections.iter().enumerate() {
        let gauge = ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
        gauge.encode(family.encode_family(&[("runtime", index.to_string())])?)?;
    }
    Ok(())
}
