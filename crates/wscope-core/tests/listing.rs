//! `Registry::connections` against a brute-force model: every sort, order and filter, paged with
//! cursors and with offsets at several page sizes, must give exactly the rows the model gives
//! (the model sorts the full snapshot). Connections are driven by the real driver over the
//! in-process transport, on a manual clock, so nothing moves while the pages are read.
#![allow(clippy::unwrap_used, missing_docs)]

use std::cmp::Ordering;
use std::time::Duration;

use wscope_core::memory::{self, MemoryPeer};
use wscope_core::query::{ConnectionFilter, ConnectionQuery, SortKey, SortOrder};
use wscope_core::{Clock, ConnectionInfo, ConnectionMeta, ManualClock, Message, Registry};
use wscope_core::{ConnectionState, RegistryConfig};

const N: usize = 60;

/// A small deterministic mix (no dependency on a random crate).
fn mix(i: usize, salt: usize) -> usize {
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (salt as u64) << 17;
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (x ^ (x >> 32)) as usize
}

async fn populated() -> (Registry, ManualClock, Vec<MemoryPeer>) {
    let (clock, manual) = Clock::manual();
    let reg = Registry::with_config(
        RegistryConfig::default()
            .instance_id("listing")
            .cleanup_interval(Duration::ZERO)
            .stats_interval(Duration::ZERO)
            .ping_interval(Duration::ZERO)
            .clock(clock),
    );
    let mut peers = Vec::new();
    for i in 0..N {
        let ip = std::net::IpAddr::from([10, 0, (i % 4) as u8, 1]);
        let path = if i % 3 == 0 { "/a" } else { "/b" };
        let meta = ConnectionMeta::new(path)
            .remote_addr(ip)
            .user_agent(format!("Agent-{}", i % 5));
        let accepted = reg.accept(meta).unwrap();
        let handle = accepted.handle();
        // What an engine would report holding: varied, so the memory sort has an order to find.
        accepted.memory_gauge().set(mix(i, 3) % 5_000);
        if mix(i, 1).is_multiple_of(3) {
            handle.tag("red").unwrap();
        }
        if mix(i, 2).is_multiple_of(4) {
            handle.tag("blue").unwrap();
        }
        if i % 7 == 0 {
            handle.set_user(format!("user-{}", i % 2)).unwrap();
        }
        let (transport, mut peer) = memory::pair();
        tokio::spawn(accepted.run(transport, |mut socket| async move {
            while let Some(msg) = socket.recv().await {
                if socket.send(msg).await.is_err() {
                    break;
                }
            }
        }));
        // Messages and sizes with ties; activity at distinct and equal times.
        for _ in 0..mix(i, 3) % 4 {
            peer.send("x".repeat(mix(i, 4) % 3 + 1)).unwrap();
            assert!(matches!(peer.recv().await, Some(Message::Text(_))));
        }
        if i % 2 == 0 {
            manual.advance(Duration::from_millis(700));
        }
        peers.push(peer);
    }
    manual.advance(Duration::from_secs(1));
    (reg, manual, peers)
}

fn model_key(c: &ConnectionInfo, sort: SortKey) -> Option<u64> {
    Some(match sort {
        SortKey::Age => u64::MAX - c.id.seq(),
        SortKey::Idle => c.idle_time,
        SortKey::Messages => c.messages_in + c.messages_out,
        SortKey::Bytes => c.bytes_in + c.bytes_out,
        SortKey::Queued => c.queued_bytes,
        SortKey::Memory => c.memory_bytes,
        SortKey::Rtt => return c.rtt_ms.map(u64::from),
    })
}

/// The model: filter the full snapshot, sort by the key in the order (unknown last), ties by
/// registration order.
fn model(reg: &Registry, q: &ConnectionQuery) -> Vec<u64> {
    let now_idle = |c: &ConnectionInfo| Duration::from_millis(c.idle_time);
    let f = &q.filter;
    let mut rows: Vec<ConnectionInfo> = reg
        .snapshot()
        .connections
        .into_iter()
        .filter(|c| f.state.is_none_or(|s| s == c.state))
        .filter(|c| f.min_idle.is_none_or(|m| now_idle(c) >= m))
        .filter(|c| {
            f.ip.is_none_or(|n| c.remote_address.is_some_and(|ip| n.contains(&ip)))
        })
        .filter(|c| {
            f.ua.as_deref().is_none_or(|u| {
                c.user_agent
                    .as_deref()
                    .is_some_and(|a| a.to_lowercase().contains(&u.to_lowercase()))
            })
        })
        .filter(|c| f.path.as_deref().is_none_or(|p| *c.path == *p))
        .filter(|c| {
            f.tag
                .as_deref()
                .is_none_or(|t| c.tags.iter().any(|x| x == t))
        })
        .filter(|c| {
            f.user
                .as_deref()
                .is_none_or(|u| c.user.as_deref() == Some(u))
        })
        .collect();
    rows.sort_by(|a, b| {
        let (ka, kb) = (model_key(a, q.sort), model_key(b, q.sort));
        let primary = match (ka, kb) {
            (Some(x), Some(y)) => match q.order {
                SortOrder::Desc => y.cmp(&x),
                SortOrder::Asc => x.cmp(&y),
            },
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        primary.then(a.id.seq().cmp(&b.id.seq()))
    });
    rows.iter().map(|c| c.id.seq()).collect()
}

fn query(pairs: &[(&str, String)]) -> ConnectionQuery {
    ConnectionQuery::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str()))).unwrap()
}

/// The page's JSON as `GET /api/connections` answered it before it was written by hand: serde's,
/// of the page, or of its rows projected to the query's fields.
fn serde_page(reg: &Registry, q: &ConnectionQuery) -> Vec<u8> {
    let page = reg.connections(q);
    match &q.fields {
        None => serde_json::to_vec(&page).unwrap(),
        Some(fields) => serde_json::to_vec(&page.map(|info| fields.project(&info))).unwrap(),
    }
}

/// Every page through cursors, concatenated; checks `total` on each, and that each page's JSON
/// is serde's.
fn by_cursor(reg: &Registry, base: &[(&str, String)], want_total: usize) -> Vec<u64> {
    let mut out = Vec::new();
    let mut pairs = base.to_vec();
    for _ in 0..=N {
        let q = query(&pairs);
        let json = reg.connections_json(&q);
        assert_eq!(
            String::from_utf8_lossy(&json),
            String::from_utf8_lossy(&serde_page(reg, &q)),
            "{pairs:?}"
        );
        let page = reg.connections(&q);
        assert_eq!(page.total as usize, want_total, "{base:?}");
        out.extend(page.connections.iter().map(|c| c.id.seq()));
        match page.next {
            None => return out,
            Some(next) => {
                pairs = base.to_vec();
                pairs.push(("cursor", next.to_string()));
            }
        }
    }
    panic!("pages did not end: {base:?}");
}

/// Every page through offsets, concatenated.
fn by_offset(reg: &Registry, base: &[(&str, String)], limit: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for page in 0..=N {
        let mut pairs = base.to_vec();
        pairs.push(("offset", (page * limit).to_string()));
        let rows = reg.connections(&query(&pairs)).connections;
        if rows.is_empty() {
            return out;
        }
        out.extend(rows.iter().map(|c| c.id.seq()));
    }
    panic!("offsets did not end");
}

#[tokio::test]
async fn pages_match_a_brute_force_model_for_every_sort_order_and_filter() {
    let (reg, _manual, peers) = populated().await;
    // Gaps in the sequence numbers: every fifth connection, and a run of four, have left.
    let gone: Vec<usize> = (0..N)
        .filter(|i| i % 5 == 4 || (20..24).contains(i))
        .collect();
    for &i in &gone {
        peers[i].close(None).unwrap();
    }
    let left = (N - gone.len()) as u64;
    wscope_testkit::wait_until("the closed connections are removed", || {
        reg.connection_count() == left
    })
    .await;
    let filters: Vec<Vec<(&str, String)>> = vec![
        vec![],
        vec![("state", "OPEN".into())],
        vec![("state", "CLOSING".into())],
        vec![("tag", "red".into())],
        vec![("tag", "blue".into()), ("path", "/b".into())],
        vec![("user", "user-1".into())],
        vec![("min_idle", "5s".into())],
        vec![("ip", "10.0.2.0/24".into())],
        vec![("ua", "agent-3".into())],
        vec![("ip", "10.0.0.0/15".into()), ("tag", "red".into())],
    ];
    // Every column, in reverse (rows come back in name order), and a few.
    let every = ConnectionInfo::FIELDS
        .iter()
        .rev()
        .copied()
        .collect::<Vec<_>>()
        .join(",");
    let every = every.as_str();
    let some = "userAgent,tags,age,user,remoteAddress,memoryBytes";
    let mut checked = 0;
    for sort in SortKey::ALL {
        for order in [SortOrder::Asc, SortOrder::Desc] {
            for filter in &filters {
                for (limit, fields) in [(1usize, Some(every)), (7, Some(some)), (100, None)] {
                    let mut base = filter.clone();
                    base.push(("sort", sort.as_str().into()));
                    base.push(("order", order.as_str().into()));
                    base.push(("limit", limit.to_string()));
                    // Columns change the rows' JSON, not which rows.
                    if let Some(fields) = fields {
                        base.push(("fields", fields.to_owned()));
                    }
                    let q = query(&base);
                    let want = model(&reg, &q);
                    assert_eq!(by_cursor(&reg, &base, want.len()), want, "{base:?}");
                    assert_eq!(by_offset(&reg, &base, limit), want, "{base:?}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, SortKey::ALL.len() * 2 * 10 * 3);
    // The filters are not all trivial: some select part of the connections, some none.
    let sizes: Vec<usize> = filters
        .iter()
        .map(|f| model(&reg, &query(f)).len())
        .collect();
    assert_eq!(sizes[0] as u64, left);
    assert_eq!(sizes[2], 0);
    assert!(sizes.iter().any(|&s| s > 0 && s < N / 2), "{sizes:?}");
    drop(peers);
}

#[tokio::test]
async fn close_matching_closes_what_the_filter_matches_and_a_capped_snapshot_lists_the_oldest() {
    let (reg, _manual, mut peers) = populated().await;
    let filter = ConnectionFilter::default().tag("red").path("/b");
    let q = ConnectionQuery::from_pairs([("tag", "red"), ("path", "/b")]).unwrap();
    let want = model(&reg, &q);
    assert!(!want.is_empty());
    let closed = reg
        .close_matching(&filter, wscope_core::CloseCode::new(4321).unwrap(), "red")
        .unwrap();
    assert_eq!(closed as usize, want.len());
    for (i, peer) in peers.iter_mut().enumerate() {
        let seq = i as u64 + 1;
        if want.contains(&seq) {
            match peer.recv().await {
                Some(Message::Close(Some(f))) => assert_eq!(f.code.as_u16(), 4321),
                other => panic!("{seq}: expected a close, got {other:?}"),
            }
        }
    }
    let closing = reg.connections(&ConnectionQuery::from_pairs([("state", "CLOSING")]).unwrap());
    assert_eq!(closing.total as usize, want.len());
    assert!(closing
        .connections
        .iter()
        .all(|c| c.state == ConnectionState::Closing));

    let capped = reg.snapshot_capped(5);
    let seqs: Vec<u64> = capped.connections.iter().map(|c| c.id.seq()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(capped.total_connections, N as u64);
    assert!(reg.snapshot_capped(0).connections.is_empty());
    assert_eq!(reg.snapshot_capped(N * 2).connections.len(), N);
}

/// Labels set through the socket and through a handle are the same labels; tags do not repeat;
/// clearing and untagging show in the rows (absent once empty).
#[tokio::test]
async fn labels_attach_through_the_socket_and_a_handle() {
    let reg = Registry::new();
    let accepted = reg.accept(ConnectionMeta::new("/ws")).unwrap();
    let handle = accepted.handle();
    let (transport, mut peer) = memory::pair();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(accepted.run(transport, |mut socket| async move {
        socket.set_user("u-7").unwrap();
        assert!(socket.tag("a").unwrap());
        assert!(!socket.tag("a").unwrap(), "a tag is held once");
        let _ = tx.send(());
        while let Some(msg) = socket.recv().await {
            if let Message::Text(t) = &msg {
                if t.as_str() == "clear" {
                    socket.clear_user();
                    assert!(socket.untag("a"));
                    assert!(!socket.untag("a"));
                    // "b" came through the handle: the same labels.
                    assert_eq!((socket.user(), socket.tags()), (None, vec!["b".to_owned()]));
                }
            }
            let _ = socket.send(msg).await;
        }
    }));
    rx.await.unwrap();
    assert!(handle.tag("b").unwrap());
    assert_eq!(handle.user().as_deref(), Some("u-7"));
    assert_eq!(handle.tags(), ["a", "b"]);
    let info = reg.connection_info(&handle.id().to_string()).unwrap();
    assert_eq!(
        (info.user.as_deref(), info.tags.clone()),
        (Some("u-7"), vec!["a".to_owned(), "b".to_owned()])
    );
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["user"], "u-7");
    assert_eq!(json["tags"], serde_json::json!(["a", "b"]));

    peer.send("clear").unwrap();
    assert_eq!(peer.recv().await, Some(Message::text("clear")));
    assert!(handle.untag("b"));
    let json =
        serde_json::to_value(reg.connection_info(&handle.id().to_string()).unwrap()).unwrap();
    assert!(
        json.get("user").is_none() && json.get("tags").is_none(),
        "{json}"
    );
    assert!(reg.connection_info("listing-0-999").is_none());
    peer.close(None).unwrap();
    while peer.recv().await.is_some() {}
    task.await.unwrap();
}
