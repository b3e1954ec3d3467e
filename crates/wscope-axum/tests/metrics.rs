//! `GET /metrics` (issue 8, item 1): a scripted scenario over real sockets on a manual clock, then
//! a scrape whose counters, gauges and histogram buckets are checked exactly, and which parses as
//! the Prometheus text format line for line.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use prometheus_parse::{Scrape, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wscope_axum::admin_router;
use wscope_core::{Clock, ManualClock, Registry, RegistryConfig};
use wscope_testkit::raw;

engine_tests!(
    a_scripted_scenario_scrapes_to_exact_counts_and_buckets,
    ping_round_trips_fill_the_rtt_histogram,
);

/// A test registry on a manual clock, with server pings off unless the test turns them on.
fn manual(config: RegistryConfig) -> (Registry, ManualClock) {
    let (clock, manual) = Clock::manual();
    (Registry::with_config(config.clock(clock)), manual)
}

/// One scrape: its text and the parse, checked to be the whole of the text.
struct Metrics {
    text: String,
    scrape: Scrape,
}

impl Metrics {
    async fn scrape(server: &TestServer) -> Self {
        let response = http_get(server.admin_addr, "/metrics").await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        Self::parse(response.text())
    }

    /// Parses `text` and checks that every line was understood: each is a `# HELP` or `# TYPE`
    /// line, or a sample of a family typed before it whose value is a number, and the parser
    /// kept every sample (a histogram's buckets gathered into one).
    fn parse(text: String) -> Self {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let mut typed: BTreeMap<String, String> = BTreeMap::new();
        let mut sample_lines = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(
                    ["counter", "gauge", "histogram"].contains(&kind),
                    "type of {line}"
                );
                assert!(
                    typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "{name} typed twice"
                );
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let name_end = line
                .find(['{', ' '])
                .unwrap_or_else(|| panic!("line {line:?}"));
            let name = &line[..name_end];
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "metric name {name:?}"
            );
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| typed.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(name);
            assert!(
                typed.contains_key(family),
                "{name} has no TYPE line before it"
            );
            let value = line.rsplit(' ').next().unwrap();
            assert!(
                value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
                "value of {line:?}"
            );
            sample_lines += 1;
        }
        let kept: usize = scrape
            .samples
            .iter()
            .map(|s| match &s.value {
                Value::Histogram(buckets) => buckets.len(),
                _ => 1,
            })
            .sum();
        assert_eq!(kept, sample_lines, "the parser skipped lines of:\n{text}");
        Self { text, scrape }
    }

    /// The value of the sample `metric` with exactly `labels`.
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric && labels_are(&s.labels, labels))
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                ref other => panic!("{metric} is {other:?}"),
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{metric}{labels:?}: {found:?} in\n{}",
            self.text
        );
        found[0]
    }

    /// How many series `metric` has.
    fn series(&self, metric: &str) -> usize {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric)
            .count()
    }

    /// A histogram's cumulative buckets (upper bound, count), `+Inf` last; its sum and count.
    fn histogram(&self, name: &str) -> (Vec<(f64, u64)>, f64, u64) {
        let sample = self
            .scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("no {name} in\n{}", self.text));
        let Value::Histogram(buckets) = &sample.value else {
            panic!("{name} is not a histogram")
        };
        let buckets = buckets
            .iter()
            .map(|b| (b.less_than, b.count as u64))
            .collect();
        let sum = self.value(&format!("{name}_sum"), &[]);
        let count = self.value(&format!("{name}_count"), &[]) as u64;
        (buckets, sum, count)
    }
}

fn labels_are(labels: &prometheus_parse::Labels, want: &[(&str, &str)]) -> bool {
    labels.len() == want.len() && want.iter().all(|(k, v)| labels.get(k) == Some(*v))
}

/// The count at upper bound `le` of cumulative `buckets`.
fn at(buckets: &[(f64, u64)], le: f64) -> u64 {
    buckets
        .iter()
        .find(|(bound, _)| *bound == le)
        .unwrap_or_else(|| panic!("no bucket le={le} in {buckets:?}"))
        .1
}

/// Four clients on a cap of four, a fifth refused; messages each way; one client closes at 2 s,
/// one is closed by the admin API at 12 s (code 4000), one vanishes at 100 s (no close frame),
/// one stays. Every figure below follows from that script.
async fn a_scripted_scenario_scrapes_to_exact_counts_and_buckets() {
    let (registry, clock) = manual(
        test_config()
            .ping_interval(Duration::ZERO)
            .max_connections(4),
    );
    let app = tracked(echo_routes(), tracking(&registry));
    // Built twice, as a program may: the close observer must still count each close once.
    let _first = admin_router(registry.clone());
    let server = TestServer::start(registry.clone(), app).await;

    let mut a = server.connect_as("/ws", "a").await;
    let mut b = server.connect_as("/ws", "b").await;
    let mut c = server.connect_as("/ws", "c").await;
    let mut d = server.connect_as("/ws", "d").await;
    wait_open(&registry, 4).await;
    let refused = http(server.addr, "GET", "/ws", &UPGRADE_HEADERS, None).await;
    assert_eq!(refused.status, 503);

    // t = 0: a sends two texts (5 bytes each), b one binary (3 bytes); each is echoed.
    echo_roundtrip(&mut a, "hello").await;
    echo_roundtrip(&mut a, "world").await;
    b.send(WsMessage::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        next_msg(&mut b).await,
        Some(WsMessage::binary(vec![1u8, 2, 3]))
    );

    // t = 2 s: a closes (1000, by the client): lifetime 2 s, idle 2 s.
    clock.advance(Duration::from_secs(2));
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    };
    a.send(WsMessage::Close(Some(normal))).await.unwrap();
    assert_eq!(expect_close(&mut a).await.0, 1000, "the server's reply");
    wait_count(&registry, 3).await;

    // t = 12 s: c sends 7 bytes; the admin API closes b with 4000: lifetime 12 s, idle 12 s.
    clock.advance(Duration::from_secs(10));
    echo_roundtrip(&mut c, "seven!!").await;
    let id = info(&registry, "b").id;
    let closed = admin_post(
        &server,
        &format!(r#"{{"action":"close","id":"{id}","code":4000,"reason":"bye"}}"#),
    )
    .await;
    assert_eq!(closed.status, 200, "{}", closed.text());
    assert_eq!(expect_close(&mut b).await, (4000, "bye".to_owned()));
    wait_count(&registry, 2).await;

    // t = 100 s: c vanishes without a close frame: lifetime 100 s, idle 88 s; recorded as 1006
    // (RFC 6455 §7.1.5) on every engine, so its class is `abnormal`.
    clock.advance(Duration::from_secs(88));
    drop(c);
    wait_count(&registry, 1).await;
    let vanished = registry.recently_closed(Some(1))[0].clone();
    assert_eq!(vanished.closed_by.as_str(), "error");
    assert_eq!(vanished.code, Some(1006), "{vanished:?}");
    let vanished_class = "abnormal";

    let m = Metrics::scrape(&server).await;
    assert_eq!(m.value("wscope_connections_opened_total", &[]), 4.0);
    for (state, n) in [
        ("connecting", 0.0),
        ("open", 1.0),
        ("closing", 0.0),
        ("closed", 0.0),
    ] {
        assert_eq!(
            m.value("wscope_connections", &[("state", state)]),
            n,
            "{state}"
        );
    }
    let closes = [
        ("normal", "client", 1.0),
        ("4xxx", "admin", 1.0),
        (vanished_class, "error", 1.0),
    ];
    for (class, by, n) in closes {
        let labels = [("code_class", class), ("closed_by", by)];
        assert_eq!(m.value("wscope_connections_closed_total", &labels), n);
    }
    assert_eq!(m.series("wscope_connections_closed_total"), closes.len());
    assert_eq!(
        m.value(
            "wscope_upgrades_refused_total",
            &[("reason", "tooManyConnections")]
        ),
        1.0
    );
    assert_eq!(
        m.series("wscope_upgrades_refused_total"),
        wscope_core::RefusalKind::ALL.len(),
        "every reason, zeros too"
    );
    assert_eq!(
        m.value("wscope_upgrades_refused_total", &[("reason", "banned")]),
        0.0
    );
    assert_eq!(m.value("wscope_messages_received_total", &[]), 4.0);
    assert_eq!(m.value("wscope_messages_sent_total", &[]), 4.0);
    assert_eq!(m.value("wscope_messages_received_bytes_total", &[]), 20.0);
    assert_eq!(m.value("wscope_messages_sent_bytes_total", &[]), 20.0);
    assert_eq!(m.value("wscope_messages_queued", &[]), 0.0);
    assert_eq!(m.value("wscope_messages_queued_bytes", &[]), 0.0);
    assert_eq!(m.value("wscope_uptime_seconds", &[]), 100.0);
    assert_eq!(m.value("wscope_shutting_down", &[]), 0.0);
    assert_eq!(
        m.value(
            "wscope_info",
            &[
                ("instance_id", "test-node"),
                ("version", env!("CARGO_PKG_VERSION"))
            ]
        ),
        1.0
    );

    let (lifetime, sum, count) = m.histogram("wscope_connection_lifetime_seconds");
    assert_eq!((sum, count), (114.0, 3));
    for (le, n) in [
        (1.0, 0),
        (5.0, 1),
        (15.0, 2),
        (60.0, 2),
        (300.0, 3),
        (f64::INFINITY, 3),
    ] {
        assert_eq!(at(&lifetime, le), n, "lifetime le={le}");
    }
    let (idle, sum, count) = m.histogram("wscope_connection_idle_at_close_seconds");
    assert_eq!((sum, count), (102.0, 3));
    for (le, n) in [
        (1.0, 0),
        (5.0, 1),
        (15.0, 2),
        (60.0, 2),
        (120.0, 3),
        (f64::INFINITY, 3),
    ] {
        assert_eq!(at(&idle, le), n, "idle le={le}");
    }
    let (_, _, rtts) = m.histogram("wscope_ping_rtt_seconds");
    assert_eq!(rtts, 0, "pings are off");

    #[cfg(target_os = "linux")]
    {
        assert!(m.value("process_resident_memory_bytes", &[]) > 0.0);
        assert!(m.value("process_open_fds", &[]) >= 1.0);
        assert!(m.value("process_max_fds", &[]) >= m.value("process_open_fds", &[]));
        assert!(m.value("process_start_time_seconds", &[]) > 1.0e9);
        assert!(m.value("process_cpu_seconds_total", &[]) >= 0.0);
    }

    // The drain: 1001 to d, by shutdown; the gauge says so from its start.
    let reader = tokio::spawn(async move { expect_close(&mut d).await.0 });
    let report = server.shutdown().await;
    assert_eq!((report.connections, report.dropped), (1, 0));
    assert_eq!(reader.await.unwrap(), 1001);
    let m = Metrics::parse(wscope_axum::metrics_text(&registry, None).unwrap());
    assert_eq!(m.value("wscope_shutting_down", &[]), 1.0);
    let labels = [("code_class", "going_away"), ("closed_by", "shutdown")];
    assert_eq!(m.value("wscope_connections_closed_total", &labels), 1.0);
    assert_eq!(m.value("wscope_connections", &[("state", "open")]), 0.0);
}

/// A raw client answers two server pings by hand, 30 ms and 300 ms (of the manual clock) after
/// each arrives: the round-trip histogram holds exactly those two.
async fn ping_round_trips_fill_the_rtt_histogram() {
    let (registry, clock) = manual(
        test_config()
            .ping_interval(Duration::from_millis(20))
            .ping_timeout(Duration::from_secs(3600)),
    );
    let server = TestServer::echo(registry.clone()).await;
    let mut client = raw::upgrade(server.addr, "/ws", &[]).await;
    for wait in [Duration::from_millis(30), Duration::from_millis(300)] {
        let ping = next_ping(&mut client).await;
        clock.advance(wait);
        client.send(&raw::client_frame(0xA, &ping)).await;
    }
    wait_until("two round trips are timed", || {
        registry.summary().average_rtt_ms == Some(300)
    })
    .await;

    let m = Metrics::scrape(&server).await;
    let (rtt, sum, count) = m.histogram("wscope_ping_rtt_seconds");
    assert_eq!(count, 2);
    assert!((sum - 0.33).abs() < 1e-9, "sum {sum}");
    for (le, n) in [
        (0.025, 0),
        (0.05, 1),
        (0.25, 1),
        (0.5, 2),
        (f64::INFINITY, 2),
    ] {
        assert_eq!(at(&rtt, le), n, "rtt le={le}");
    }
    drop(client);
    server.shutdown().await;
}

/// The payload of the next ping the server sends (data frames are not expected here).
async fn next_ping(client: &mut raw::Raw) -> Vec<u8> {
    let frame = client.read_frame().await;
    assert_eq!(frame.opcode, 0x9, "expected a ping, got {frame:?}");
    frame.payload
}

/// Scraping needs the admin token like every other admin route: none gets 401 with a JSON reason.
/// A client close frame without a code is counted as `none`, by the client.
#[tokio::test]
async fn metrics_sit_behind_the_admin_token() {
    let registry = test_registry();
    let admin = admin_router(registry.clone())
        .layer(wscope_axum::AdminConfig::new().token("s3cret").layer());
    let app = tracked(echo_routes(), tracking(&registry));
    let server = TestServer::start_with_admin(registry.clone(), app, admin).await;

    let denied = http_get(server.admin_addr, "/metrics").await;
    assert_eq!(denied.status, 401);
    assert!(denied.json()["error"].is_string(), "{}", denied.text());
    let auth = [("Authorization", "Bearer s3cret")];
    let ok = http(server.admin_addr, "GET", "/metrics", &auth, None).await;
    assert_eq!(ok.status, 200);
    assert!(ok.text().contains("wscope_connections_opened_total 0\n"));

    let client = server.connect("/ws").await;
    wait_open(&registry, 1).await;
    close_client(client).await; // a close frame with no code
    wait_count(&registry, 0).await;
    let ok = http(server.admin_addr, "GET", "/metrics", &auth, None).await;
    let m = Metrics::parse(ok.text());
    let labels = [("code_class", "none"), ("closed_by", "client")];
    assert_eq!(m.value("wscope_connections_closed_total", &labels), 1.0);
    server.shutdown().await;
}

/// `docs/METRICS.md` lists exactly the families a scrape has (a cluster member's here, so
/// the cluster's families too), under their one naming pattern — `wscope_<what is counted>_<what happened
/// to it>[_<unit>]` — and `wscope_info` names the instance in `instance_id`, not in `instance`,
/// which Prometheus sets on every series itself (and would rename ours `exported_instance`).
#[tokio::test]
async fn the_families_are_those_metrics_md_lists() {
    let registry = test_registry();
    let hub = wscope_cluster::MemoryHub::new();
    let config = wscope_cluster::ClusterConfig::new("metrics");
    let cluster =
        wscope_cluster::Cluster::join(&registry, std::sync::Arc::new(hub.backend()), config)
            .await
            .unwrap();
    let server = TestServer::echo_member(registry, cluster).await;
    let m = Metrics::scrape(&server).await;
    let mut scraped: Vec<String> = m
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE wscope_"))
        .map(|rest| format!("wscope_{}", rest.split_once(' ').unwrap().0))
        .collect();
    scraped.sort_unstable();
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/METRICS.md"
    ))
    .unwrap();
    let table = &doc[doc.find("## Families").unwrap()..];
    let table = &table[..table.find("### Renamed").unwrap()];
    let mut documented: Vec<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `wscope_"))
        .map(|rest| format!("wscope_{}", &rest[..rest.find('`').unwrap()]))
        .collect();
    documented.sort_unstable();
    assert_eq!(scraped, documented);
    for renamed in [
        "wscope_received_bytes_total",
        "wscope_sent_bytes_total",
        "wscope_queued_messages",
        "wscope_queued_bytes",
    ] {
        assert_eq!(m.series(renamed), 0, "{renamed} was renamed");
    }
    for family in [
        "wscope_messages_received_bytes_total",
        "wscope_messages_sent_bytes_total",
        "wscope_messages_queued",
        "wscope_messages_queued_bytes",
        "wscope_connection_memory_bytes",
    ] {
        assert_eq!(m.value(family, &[]), 0.0, "{family}");
    }
    let info = m
        .scrape
        .samples
        .iter()
        .find(|s| s.metric == "wscope_info")
        .unwrap();
    assert_eq!(info.labels.get("instance_id"), Some("test-node"));
    assert_eq!(info.labels.get("instance"), None);
    server.shutdown().await;
}
