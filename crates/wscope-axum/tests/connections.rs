//! `GET /api/connections` and `/api/connections/{id}`, user ids and tags, `close_matching` and
//! the `/api/stats` cap, over real sockets: a real WebSocket client per connection, the raw HTTP
//! client for the admin API.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::HashSet;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wscope_axum::WebSocketUpgrade;
use wscope_core::{Clock, ManualClock, Registry};

/// The labelling echo: `user:NAME` sets the user id, `tag:NAME` adds a tag, `untag:NAME` removes
/// one (each answered "ok" once applied); anything else is echoed.
async fn labelled(ws: WebSocketUpgrade) -> axum::response::Response {
    ws.on_upgrade(|mut socket| async move {
        while let Some(msg) = socket.recv().await {
            let text = match &msg {
                wscope_core::Message::Text(t) => Some(t.as_str().to_owned()),
                _ => None,
            };
            let reply = match text.as_deref() {
                Some(t) if t.starts_with("user:") => match socket.set_user(&t[5..]) {
                    Ok(()) => wscope_core::Message::text("ok"),
                    Err(e) => wscope_core::Message::text(e.to_string()),
                },
                Some(t) if t.starts_with("tag:") => match socket.tag(&t[4..]) {
                    Ok(_) => wscope_core::Message::text("ok"),
                    Err(e) => wscope_core::Message::text(e.to_string()),
                },
                Some(t) if t.starts_with("untag:") => {
                    socket.untag(&t[6..]);
                    wscope_core::Message::text("ok")
                }
                _ => msg,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    })
}

async fn server(registry: Registry) -> TestServer {
    let routes = Router::new()
        .route("/ws", get(labelled))
        .route("/ws/other", get(labelled));
    let app = tracked(routes, tracking(&registry));
    TestServer::start(registry, app).await
}

fn manual_registry() -> (Registry, ManualClock) {
    let (clock, manual) = Clock::manual();
    (Registry::with_config(test_config().clock(clock)), manual)
}

/// `GET` on the admin listener, expecting 200 and JSON.
async fn get_ok(server: &TestServer, path: &str) -> Value {
    let response = http_get(server.admin_addr, path).await;
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    response.json()
}

/// The user agents of a page's rows, in order.
fn uas(page: &Value) -> Vec<String> {
    page["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["userAgent"].as_str().unwrap().to_owned())
        .collect()
}

/// Sends `text` and waits for its answer.
async fn say(ws: &mut Client, text: &str) -> String {
    ws.send(WsMessage::text(text.to_owned())).await.unwrap();
    recv_text(ws).await
}

/// Connects `n` clients named `{prefix}{i}` (their user agents) to `/ws`, in order.
async fn clients(server: &TestServer, prefix: &str, n: usize) -> Vec<Client> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(server.connect_as("/ws", &format!("{prefix}{i}")).await);
    }
    out
}

/// Pages through `query` `limit` rows at a time, calling `between` after each page; returns the
/// user agents seen, in order.
async fn page_through<F>(server: &TestServer, query: &str, mut between: F) -> Vec<String>
where
    F: AsyncFnMut(usize),
{
    let mut seen = Vec::new();
    let mut path = format!("/api/connections?{query}");
    for round in 0..100 {
        let page = get_ok(server, &path).await;
        seen.extend(uas(&page));
        match page["next"].as_str() {
            None => return seen,
            Some(next) => path = format!("/api/connections?{query}&cursor={next}"),
        }
        between(round).await;
    }
    panic!("more than 100 pages");
}

fn assert_once(seen: &[String], expected: &[String]) {
    for ua in expected {
        assert_eq!(
            seen.iter().filter(|s| *s == ua).count(),
            1,
            "{ua} once in {seen:?}"
        );
    }
    let distinct: HashSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "no row repeats: {seen:?}");
}

/// Registration order (the default) and a walked sort, paged while connections come and go
/// between pages: every connection that stays open shows exactly once, nothing repeats; in
/// registration order the newcomers come last and are seen too.
#[tokio::test]
async fn paging_is_stable_while_connections_come_and_go() {
    let (reg, _manual) = manual_registry();
    let server = server(reg.clone()).await;
    let mut stay = clients(&server, "s", 9).await;
    let mut leave = clients(&server, "l", 6).await;
    wait_open(&reg, 15).await;
    // Distinct message counts for the walked sort: s{i} has sent i messages.
    for (i, ws) in stay.iter_mut().enumerate() {
        for _ in 0..i {
            echo_roundtrip(ws, "x").await;
        }
    }
    let stayed: Vec<String> = (0..9).map(|i| format!("s{i}")).collect();

    // Registration order: between pages one leaver goes and one newcomer comes.
    let mut newcomers = Vec::new();
    let mut leavers = std::mem::take(&mut leave);
    let seen = page_through(&server, "limit=4", async |round| {
        if let Some(ws) = leavers.pop() {
            close_client(ws).await;
        }
        newcomers.push(server.connect_as("/ws", &format!("n{round}")).await);
    })
    .await;
    assert_once(&seen, &stayed);
    let new: Vec<String> = (0..newcomers.len() - 1).map(|i| format!("n{i}")).collect();
    assert_once(&seen, &new);
    let order: Vec<&String> = seen.iter().filter(|s| s.starts_with('s')).collect();
    assert_eq!(order, stayed.iter().collect::<Vec<_>>(), "oldest first");

    // Newest first: newcomers come before the cursor and are not seen; the stayers are, once.
    let mut more = Vec::new();
    let seen = page_through(&server, "limit=3&order=asc", async |round| {
        more.push(server.connect_as("/ws", &format!("m{round}")).await);
        if let Some(ws) = newcomers.pop() {
            close_client(ws).await;
        }
    })
    .await;
    assert_once(&seen, &stayed);
    assert!(seen.iter().all(|s| !s.starts_with('m')), "{seen:?}");
    let order: Vec<&String> = seen.iter().filter(|s| s.starts_with('s')).collect();
    assert_eq!(
        order,
        stayed.iter().rev().collect::<Vec<_>>(),
        "newest first"
    );

    // Most messages first, walked: the stayers keep their counts, the churn has none.
    let mut churn = Vec::new();
    let seen = page_through(&server, "limit=2&sort=messages", async |round| {
        churn.push(server.connect_as("/ws", &format!("c{round}")).await);
        if let Some(ws) = more.pop() {
            close_client(ws).await;
        }
    })
    .await;
    assert_once(&seen, &stayed);
    let order: Vec<&String> = seen.iter().filter(|s| s.starts_with('s')).collect();
    assert_eq!(
        order,
        stayed.iter().rev().collect::<Vec<_>>(),
        "busiest first"
    );

    let rest = churn
        .into_iter()
        .chain(more)
        .chain(newcomers)
        .chain(leavers);
    for ws in stay.into_iter().chain(rest) {
        close_client(ws).await;
    }
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

/// Each sort in both orders; an offset; the total.
#[tokio::test]
async fn each_sort_orders_as_asked() {
    let (reg, manual) = manual_registry();
    let server = server(reg.clone()).await;
    let mut ws = clients(&server, "c", 4).await;
    wait_open(&reg, 4).await;
    // c0 is the busiest and the least idle; c3 the idlest; bytes grow with the message length.
    for (i, client) in ws.iter_mut().enumerate().rev() {
        manual.advance(Duration::from_secs(1));
        for _ in 0..(4 - i) {
            echo_roundtrip(client, &"b".repeat(10 * (4 - i))).await;
        }
    }
    manual.advance(Duration::from_secs(1));
    let order = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let busiest = order(&["c0", "c1", "c2", "c3"]);
    let quietest = order(&["c3", "c2", "c1", "c0"]);
    for (query, want) in [
        ("", &busiest), // age desc: the oldest first
        ("sort=age&order=asc", &quietest),
        ("sort=messages", &busiest),
        ("sort=messages&order=asc", &quietest),
        ("sort=bytes", &busiest),
        ("sort=bytes&order=asc", &quietest),
        ("sort=idle", &quietest), // c3 spoke first, long ago
        ("sort=idle&order=asc", &busiest),
        // Nothing queued and no ping yet: ties go by registration order.
        ("sort=queued", &busiest),
        ("sort=rtt", &busiest),
        ("sort=rtt&order=asc", &busiest),
    ] {
        let page = get_ok(&server, &format!("/api/connections?{query}")).await;
        assert_eq!(&uas(&page), want, "{query}");
        assert_eq!(page["total"], 4);
        assert_eq!(page["next"], Value::Null, "{query}: one page holds all");
    }
    let page = get_ok(&server, "/api/connections?sort=messages&offset=1&limit=2").await;
    assert_eq!(uas(&page), order(&["c1", "c2"]));
    assert!(page["next"].is_string());
    let page = get_ok(&server, "/api/connections?offset=3").await;
    assert_eq!(uas(&page), order(&["c3"]));
    let page = get_ok(&server, "/api/connections?offset=9&sort=idle").await;
    assert_eq!((page["total"].clone(), uas(&page).len()), (json!(4), 0));
    let c0 = &get_ok(&server, "/api/connections?limit=1").await["connections"][0];
    assert_eq!(
        (c0["messagesIn"].clone(), c0["bytesOut"].clone()),
        (json!(4), json!(160))
    );
    assert_eq!(c0["idleTime"], 1000, "c0 spoke last, a second ago");

    for client in ws {
        close_client(client).await;
    }
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

/// Each filter selects exactly its connections, and `total` counts them.
#[tokio::test]
async fn each_filter_selects_its_connections() {
    let (reg, manual) = manual_registry();
    let server = server(reg.clone()).await;
    let mut fox = server.connect_as("/ws", "Mozilla/5.0 Firefox/128").await;
    let mut bot = server.connect_as("/ws/other", "bot/1").await;
    let mut quiet = server.connect_as("/ws", "quiet/2").await;
    wait_open(&reg, 3).await;
    assert_eq!(say(&mut fox, "user:alice").await, "ok");
    assert_eq!(say(&mut fox, "tag:beta").await, "ok");
    assert_eq!(say(&mut bot, "tag:beta").await, "ok");
    assert_eq!(say(&mut bot, "tag:crawler").await, "ok");
    assert_eq!(say(&mut quiet, "user:bob").await, "ok");
    manual.advance(Duration::from_secs(40));
    echo_roundtrip(&mut fox, "still here").await;

    let all = ["Mozilla/5.0 Firefox/128", "bot/1", "quiet/2"];
    for (query, want) in [
        ("state=OPEN", &all[..]),
        ("state=open", &all[..]),
        ("state=CLOSING", &[][..]),
        ("min_idle=30s", &["bot/1", "quiet/2"][..]),
        ("min_idle=41", &[][..]),
        ("ip=127.0.0.1", &all[..]),
        ("ip=127.0.0.0/8", &all[..]),
        ("ip=10.0.0.0/8", &[][..]),
        ("ua=firefox", &["Mozilla/5.0 Firefox/128"][..]),
        ("ua=%2F", &all[..]),
        ("path=/ws", &["Mozilla/5.0 Firefox/128", "quiet/2"][..]),
        ("path=%2Fws%2Fother", &["bot/1"][..]),
        ("path=/nowhere", &[][..]),
        ("tag=beta", &["Mozilla/5.0 Firefox/128", "bot/1"][..]),
        ("tag=crawler", &["bot/1"][..]),
        ("user=alice", &["Mozilla/5.0 Firefox/128"][..]),
        ("user=bob&min_idle=30s", &["quiet/2"][..]),
        ("user=bob&path=/ws/other", &[][..]),
        (
            "tag=beta&sort=idle",
            &["bot/1", "Mozilla/5.0 Firefox/128"][..],
        ),
        ("tag=beta&limit=1", &["Mozilla/5.0 Firefox/128"][..]),
    ] {
        let page = get_ok(&server, &format!("/api/connections?{query}")).await;
        assert_eq!(uas(&page), want, "{query}");
        let total = if query.ends_with("limit=1") {
            2
        } else {
            want.len()
        };
        assert_eq!(page["total"], total, "{query}");
    }
    // A filtered page's cursor keeps the filter's rows only.
    let first = get_ok(&server, "/api/connections?tag=beta&limit=1").await;
    let next = first["next"].as_str().unwrap();
    let rest = get_ok(
        &server,
        &format!("/api/connections?tag=beta&limit=1&cursor={next}"),
    )
    .await;
    assert_eq!(uas(&rest), ["bot/1"]);
    assert_eq!(rest["next"], Value::Null);

    // The labels as the stats list them (absent when unset); untagging shows.
    let row = |page: &Value, ua: &str| {
        page["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["userAgent"] == ua)
            .unwrap()
            .clone()
    };
    let stats = get_ok(&server, "/api/stats").await;
    assert_eq!(row(&stats, "Mozilla/5.0 Firefox/128")["user"], "alice");
    assert_eq!(row(&stats, "bot/1")["tags"], json!(["beta", "crawler"]));
    assert!(row(&stats, "bot/1").get("user").is_none());
    assert!(row(&stats, "quiet/2").get("tags").is_none());
    assert_eq!(say(&mut bot, "untag:beta").await, "ok");
    let page = get_ok(&server, "/api/connections?tag=beta").await;
    assert_eq!(uas(&page), ["Mozilla/5.0 Firefox/128"]);

    for ws in [fox, bot, quiet] {
        close_client(ws).await;
    }
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

/// `fields` picks the columns (`id` always); a single connection by id; 404 for an unknown one.
#[tokio::test]
async fn fields_pick_columns_and_one_connection_by_id() {
    let server = server(test_registry()).await;
    let reg = server.registry.clone();
    let mut ws = server.connect_as("/ws", "one/1").await;
    wait_open(&reg, 1).await;
    assert_eq!(say(&mut ws, "user:carol").await, "ok");

    let page = get_ok(&server, "/api/connections?fields=age,user,state").await;
    let row = page["connections"][0].as_object().unwrap();
    let keys: HashSet<&str> = row.keys().map(String::as_str).collect();
    assert_eq!(keys, HashSet::from(["id", "age", "user", "state"]));
    assert_eq!(row["user"], "carol");
    let page = get_ok(&server, "/api/connections?fields=tags,rttMs").await;
    let keys: Vec<&String> = page["connections"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id"], "unset columns stay omitted");

    let id = row["id"].as_str().unwrap().to_owned();
    let one = get_ok(&server, &format!("/api/connections/{id}")).await;
    assert_eq!(one["id"], id.as_str());
    assert_eq!(one["userAgent"], "one/1");
    assert_eq!(one["user"], "carol");
    assert_eq!(one["state"], "OPEN");
    for missing in [
        "test-node-0-1".to_owned(),
        format!("{id}9"),
        "nonsense".to_owned(),
    ] {
        let response = http_get(server.admin_addr, &format!("/api/connections/{missing}")).await;
        assert_eq!(response.status, 404, "{missing}");
        assert!(response.json()["error"]
            .as_str()
            .unwrap()
            .contains(&missing));
    }

    close_client(ws).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

/// `fields` answers the bytes serde wrote for the page of rows projected to a map (as the
/// handler built it before it wrote them by hand): the envelope in its order, each row's keys in
/// name order, text escaped, `next` a cursor or `null`. On a manual clock, so nothing moves
/// between the answer and the page it is compared with.
#[tokio::test]
async fn fields_answer_serde_bytes_of_the_projected_page() {
    let (registry, _manual) = manual_registry();
    let server = server(registry).await;
    let reg = server.registry.clone();
    let mut quoted = server.connect_as("/ws", r#"quote " back\slash	tab"#).await;
    let plain = server.connect_as("/ws/other", "plain/1").await;
    wait_open(&reg, 2).await;
    assert_eq!(say(&mut quoted, "user:dora").await, "ok");
    assert_eq!(say(&mut quoted, r#"tag:x"y"#).await, "ok");
    assert_eq!(say(&mut quoted, "tag:b").await, "ok");
    let every: Vec<&str> = wscope_core::ConnectionInfo::FIELDS
        .iter()
        .rev()
        .copied()
        // Moved by the driver after the client has its answer: not compared.
        .filter(|f| {
            ![
                "messagesOut",
                "bytesOut",
                "queuedMessages",
                "queuedBytes",
                "memoryBytes",
            ]
            .contains(f)
        })
        .collect();
    let every = every.join(",");
    let queries: [&[(&str, &str)]; 4] = [
        &[("fields", "userAgent,user,tags,state,age")],
        &[("fields", &every)],
        &[("fields", "path,idleTime"), ("limit", "1")],
        &[
            ("sort", "idle"),
            ("order", "asc"),
            ("fields", "tags,rttMs,messagesIn"),
        ],
    ];
    for pairs in queries {
        let query = wscope_core::query::ConnectionQuery::from_pairs(pairs.iter().copied()).unwrap();
        let fields = query.fields.clone().unwrap();
        let url: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let response = http_get(
            server.admin_addr,
            &format!("/api/connections?{}", url.join("&")),
        )
        .await;
        assert_eq!(response.status, 200, "{}", response.text());
        let page = reg.connections(&query).map(|info| fields.project(&info));
        assert_eq!(
            response.text(),
            serde_json::to_string(&page).unwrap(),
            "{pairs:?}"
        );
    }
    let first = http_get(
        server.admin_addr,
        "/api/connections?fields=userAgent,user,tags,age&limit=1",
    )
    .await
    .text();
    assert!(
        first.starts_with(r#"{"total":2,"connections":[{"age":0,"id":""#),
        "{first}"
    );
    assert!(
        first.contains(
            r#""tags":["x\"y","b"],"user":"dora","userAgent":"quote \" back\\slash\ttab"}],"next":"age.desc."#
        ),
        "{first}"
    );

    for ws in [quoted, plain] {
        close_client(ws).await;
    }
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

/// Every bad parameter is a 400 whose JSON error starts with the parameter's name.
#[tokio::test]
async fn bad_parameters_get_400_naming_the_parameter() {
    let server = server(test_registry()).await;
    let reg = server.registry.clone();
    let _held = clients(&server, "h", 2).await;
    wait_open(&reg, 2).await;
    let page = get_ok(&server, "/api/connections?limit=1").await;
    let cursor = page["next"].as_str().unwrap().to_owned();
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=many", "limit"),
        ("offset=-2", "offset"),
        ("sort=size", "sort"),
        ("order=sideways", "order"),
        ("fields=id,password", "fields"),
        ("state=HALF", "state"),
        ("min_idle=later", "min_idle"),
        ("ip=300.1.1.1", "ip"),
        ("ua=", "ua"),
        ("path=", "path"),
        ("tag=", "tag"),
        ("user=", "user"),
        ("cursor=abc", "cursor"),
        ("colour=blue", "colour"),
        ("sort=age&sort=idle", "sort"),
        (&format!("cursor={cursor}&offset=1"), "offset"),
        (&format!("cursor={cursor}&sort=idle"), "cursor"),
    ] {
        let response = http_get(server.admin_addr, &format!("/api/connections?{query}")).await;
        assert_eq!(response.status, 400, "{query}");
        let error = response.json()["error"].as_str().unwrap().to_owned();
        assert!(error.starts_with(&format!("{param}: ")), "{query}: {error}");
    }
    let response = http_get(server.admin_addr, "/api/stats?connections=some").await;
    assert_eq!(response.status, 400);
    assert!(response.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("connections: "));
    let response = http_get(server.admin_addr, "/api/stats?fields=age,password").await;
    assert_eq!(response.status, 400);
    let error = response.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with("fields: unknown field \"password\""),
        "{error}"
    );
    let response = http_get(server.admin_addr, "/api/stats?limit=1").await;
    assert_eq!(response.status, 400);
    assert_eq!(reg.connection_count(), 2, "nothing changed");
    server.shutdown().await;
}

/// `close_matching` by tag, by user and by another filter closes exactly the matching
/// connections, which receive the code and reason; an empty filter is refused.
#[tokio::test]
async fn close_matching_closes_exactly_the_matching_connections() {
    let (reg, manual) = manual_registry();
    let server = server(reg.clone()).await;
    let mut beta = clients(&server, "beta", 2).await;
    let mut dave = server.connect_as("/ws", "dave").await;
    let mut old = server.connect_as("/ws/other", "old").await;
    let mut keep = server.connect_as("/ws", "keep").await;
    wait_open(&reg, 5).await;
    for ws in beta.iter_mut() {
        assert_eq!(say(ws, "tag:beta").await, "ok");
    }
    assert_eq!(say(&mut dave, "user:dave").await, "ok");
    assert_eq!(say(&mut keep, "tag:gamma").await, "ok");

    let too_long = format!(
        r#"{{"action":"close_matching","filter":{{"tag":"beta"}},"reason":"{}"}}"#,
        "r".repeat(124)
    );
    for body in [
        r#"{"action":"close_matching","filter":{}}"#,
        r#"{"action":"close_matching"}"#,
        r#"{"action":"close_matching","filter":{"colour":"red"}}"#,
        r#"{"action":"close_matching","filter":{"ip":"nowhere"}}"#,
        too_long.as_str(),
    ] {
        let response = admin_post(&server, body).await;
        assert_eq!(response.status, 400, "{body}");
    }
    assert_eq!(
        reg.connection_count(),
        5,
        "nothing closed by a refused request"
    );

    let response = admin_post(
        &server,
        r#"{"action":"close_matching","filter":{"tag":"beta"},"code":4000,"reason":"beta over"}"#,
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json(), json!({"success": true, "closed": 2}));
    for ws in beta.iter_mut() {
        assert_eq!(expect_close(ws).await, (4000, "beta over".to_owned()));
    }
    wait_count(&reg, 3).await;

    let response = admin_post(
        &server,
        r#"{"action":"close_matching","filter":{"user":"dave"}}"#,
    )
    .await;
    assert_eq!(response.json(), json!({"success": true, "closed": 1}));
    assert_eq!(expect_close(&mut dave).await, (1000, String::new()));
    wait_count(&reg, 2).await;

    // Another filter: idle for 10 s on /ws/other; `keep` spoke meanwhile and is on /ws.
    manual.advance(Duration::from_secs(10));
    echo_roundtrip(&mut keep, "busy").await;
    let response = admin_post(
        &server,
        r#"{"action":"close_matching","filter":{"min_idle":"10s","path":"/ws/other","state":"OPEN"},"code":4001}"#,
    )
    .await;
    assert_eq!(response.json(), json!({"success": true, "closed": 1}));
    assert_eq!(expect_close(&mut old).await.0, 4001);
    wait_count(&reg, 1).await;
    let response = admin_post(
        &server,
        r#"{"action":"close_matching","filter":{"tag":"beta"}}"#,
    )
    .await;
    assert_eq!(response.json(), json!({"success": true, "closed": 0}));

    echo_roundtrip(&mut keep, "untouched").await;
    close_client(keep).await;
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

/// `/api/stats?connections=N` lists at most the N oldest; 0 lists none; absent lists all.
#[tokio::test]
async fn stats_can_cap_or_omit_the_connection_list() {
    let server = server(test_registry()).await;
    let reg = server.registry.clone();
    let held = clients(&server, "k", 5).await;
    wait_open(&reg, 5).await;
    let all = get_ok(&server, "/api/stats").await;
    assert_eq!(all["connections"].as_array().unwrap().len(), 5);
    let capped = get_ok(&server, "/api/stats?connections=2").await;
    assert_eq!(uas(&capped), ["k0", "k1"]);
    assert_eq!(
        capped["totalConnections"], 5,
        "the figures still count every connection"
    );
    let none = get_ok(&server, "/api/stats?connections=0").await;
    assert_eq!(none["connections"], json!([]));
    assert_eq!(none["connectionsByState"]["OPEN"], 5);
    let more = get_ok(&server, "/api/stats?connections=50").await;
    assert_eq!(uas(&more), ["k0", "k1", "k2", "k3", "k4"]);
    for ws in held {
        close_client(ws).await;
    }
    wait_count(&reg, 0).await;
    server.shutdown().await;
}

/// `/api/stats?fields=` lists each connection with those columns only (`id` always), the rows
/// otherwise what the full list has; with `connections=N` too; the figures unchanged.
#[tokio::test]
async fn stats_can_list_only_some_fields_of_each_connection() {
    let server = server(test_registry()).await;
    let reg = server.registry.clone();
    let mut held = clients(&server, "f", 3).await;
    wait_open(&reg, 3).await;
    assert_eq!(say(&mut held[1], "user:erin").await, "ok");
    let full = get_ok(&server, "/api/stats").await;
    let cut = get_ok(
        &server,
        "/api/stats?fields=userAgent,%20user,state,userAgent",
    )
    .await;
    assert_eq!(cut["totalConnections"], 3);
    assert_eq!(cut["connectionsByState"], full["connectionsByState"]);
    let rows = cut["connections"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let whole_rows = full["connections"].as_array().unwrap();
    for row in rows {
        let row = row.as_object().unwrap();
        let whole = whole_rows.iter().find(|w| w["id"] == row["id"]).unwrap();
        let keys: HashSet<&str> = row.keys().map(String::as_str).collect();
        let mut expected = HashSet::from(["id", "state", "userAgent"]);
        if whole.get("user").is_some() {
            expected.insert("user");
        }
        assert_eq!(keys, expected, "{row:?}");
        for key in keys {
            assert_eq!(row[key], whole[key], "{key}");
        }
    }
    let mut agents = uas(&cut);
    agents.sort();
    assert_eq!(agents, ["f0", "f1", "f2"]);
    // Written in the order of the full row, whatever the order asked in.
    let raw = http_get(server.admin_addr, "/api/stats?fields=user,userAgent,state").await;
    assert!(
        raw.text()
            .contains(r#""state":"OPEN","userAgent":"f1","user":"erin"}"#),
        "{}",
        raw.text()
    );
    let erin = rows.iter().find(|r| r["userAgent"] == "f1").unwrap();
    assert_eq!(erin["user"], "erin");
    let capped = get_ok(&server, "/api/stats?connections=1&fields=age").await;
    let keys: HashSet<&str> = capped["connections"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, HashSet::from(["id", "age"]));
    assert_eq!(capped["connections"].as_array().unwrap().len(), 1);
    for ws in held {
        close_client(ws).await;
    }
    wait_count(&reg, 0).await;
    server.shutdown().await;
}
