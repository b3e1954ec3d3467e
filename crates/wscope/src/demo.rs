//! The demo application `wscope serve` runs: `/ws` echoes, `/ws/chat` fans out, and both label
//! a connection from its URL (`?user=ann&tag=red,blue`).

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use wscope_axum::WebSocketUpgrade;
use wscope_cluster::Cluster;

use crate::app::App;

/// The path of the echo endpoint.
pub const ECHO_PATH: &str = "/ws";
/// The path chat connections share.
pub const CHAT_PATH: &str = "/ws/chat";

/// `/ws` echo and `/ws/chat` fan-out, named in the start-up line as `echo` and `chat`.
pub fn app() -> App {
    let router = Router::new()
        .route(ECHO_PATH, get(echo))
        .route(CHAT_PATH, get(chat));
    App::new(router)
        .announce("echo", "ws", ECHO_PATH)
        .announce("chat", "ws", CHAT_PATH)
}

/// What a demo client may say about itself in its URL (`/ws?user=ann&tag=red,blue`): shown as
/// `user` and `tags` in the admin API, which filters and closes by them. Other parameters, and a
/// query that does not parse, are ignored: labels are a demonstration, not a gate. Labels past
/// their caps (a user of more than 256 bytes, more than 32 tags or one of more than 64 bytes)
/// get the upgrade refused with 400 naming the cap.
#[derive(Debug, serde::Deserialize)]
struct DemoLabels {
    user: Option<String>,
    /// Comma-separated.
    tag: Option<String>,
}

impl DemoLabels {
    /// Labels `ws` from the URL at registration, so that the connection's task keeps nothing for
    /// them (a handler's captures live inline in the task as long as the connection: capturing
    /// these grew every idle connection by ~240 B, DHAT at 1,000 connections).
    fn label(
        query: Result<Query<Self>, QueryRejection>,
        mut ws: WebSocketUpgrade,
    ) -> WebSocketUpgrade {
        let Ok(Query(labels)) = query else { return ws };
        if let Some(user) = labels.user.filter(|u| !u.is_empty()) {
            ws = ws.user(user);
        }
        for tag in labels.tag.iter().flat_map(|t| t.split(',')) {
            if ws.label_error().is_some() {
                // Refused already: the rest of a long list is not read.
                break;
            }
            if !tag.is_empty() {
                ws = ws.tag(tag);
            }
        }
        ws
    }
}

/// Sends each text or binary message back unchanged. A callback handler: per message, no
/// handler future is polled, and an idle connection keeps none (docs/BENCHMARKS.md, "A callback
/// handler for the hot path").
async fn echo(labels: Result<Query<DemoLabels>, QueryRejection>, ws: WebSocketUpgrade) -> Response {
    DemoLabels::label(labels, ws).on_message(|socket, msg| {
        // Fails only once the connection is closing: nothing to do then.
        let _ = socket.send(msg);
    })
}

/// Sends each message to every open chat connection (the sender included), visiting only the
/// chat path's members; in cluster mode, to those of every instance too (published once, in
/// order, never waiting on Redis). A member whose queue is full is closed as a slow consumer
/// (1008) rather than holding up the others. The cluster node, in cluster mode, is the
/// [`Extension`] the server hands its routes.
async fn chat(
    labels: Result<Query<DemoLabels>, QueryRejection>,
    cluster: Option<Extension<Cluster>>,
    ws: WebSocketUpgrade,
) -> Response {
    let fanout = match cluster {
        Some(Extension(cluster)) => Fanout::Cluster(cluster),
        None => Fanout::Local(ws.tracking_registry().clone()),
    };
    DemoLabels::label(labels, ws).on_message(move |_socket, msg| {
        let outcome = match &fanout {
            Fanout::Cluster(cluster) => cluster.broadcast(Some(CHAT_PATH), &msg).local,
            Fanout::Local(registry) => registry.broadcast(Some(CHAT_PATH), &msg),
        };
        if outcome.slow > 0 {
            tracing::debug!(slow = outcome.slow, "chat: closed members too slow to read");
        }
    })
}

/// Where a chat connection's messages go, taken once per connection: a handle per message
/// (`socket.registry()`) was a reference count taken and dropped on the registry every chat
/// message, on a counter every connection shares.
enum Fanout {
    /// The cluster's members (this instance's included).
    Cluster(Cluster),
    /// The registry the connection is tracked in.
    Local(wscope_core::Registry),
}
