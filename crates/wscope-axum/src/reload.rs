//! The admin action `reload` (`POST /api/admin` with `{"action":"reload"}`): what a server that
//! can reread its configuration without a restart hands the admin router ([`ReloadHook`], as an
//! `Extension`) — `wscope proxy` rereads its routes. Without a hook the action is a 400 saying
//! there is nothing to reload.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::error::ApiError;

/// What a reload did (the answer to `reload`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ReloadAnswer {
    /// Always true (a failed reload is a 400 naming why, and changes nothing).
    pub success: bool,
    /// Routes removed or given another upstream.
    pub routes_retired: usize,
    /// Their connections, closed by the reload's drain (at once, or paced).
    pub connections_drained: usize,
}

impl ReloadAnswer {
    /// A reload that retired `routes_retired` routes and drains `connections_drained`.
    pub fn new(routes_retired: usize, connections_drained: usize) -> Self {
        Self {
            success: true,
            routes_retired,
            connections_drained,
        }
    }
}

/// The reload a server runs for `{"action":"reload"}`: its answer, or why nothing changed.
#[derive(Clone)]
pub struct ReloadHook(Arc<dyn Fn() -> Result<ReloadAnswer, String> + Send + Sync>);

impl std::fmt::Debug for ReloadHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadHook")
    }
}

impl ReloadHook {
    /// A hook running `reload`.
    pub fn new(reload: impl Fn() -> Result<ReloadAnswer, String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(reload))
    }

    /// Runs the reload (what the admin action does; a server's SIGHUP may run it too).
    pub fn run(&self) -> Result<ReloadAnswer, String> {
        (self.0)()
    }
}

/// Whether an admin request's body names the `reload` action.
pub(crate) fn is_reload(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Action<'a> {
        #[serde(borrow)]
        action: Option<&'a str>,
    }
    serde_json::from_slice::<Action<'_>>(body).is_ok_and(|a| a.action == Some("reload"))
}

/// Runs the hook, if there is one.
pub(crate) fn reload(hook: Option<&ReloadHook>) -> Response {
    let Some(hook) = hook else {
        let why = "reload: this server has nothing to reload (wscope proxy rereads its routes)";
        return ApiError::bad_request(why).into_response();
    };
    match hook.run() {
        Ok(answer) => Json(answer).into_response(),
        Err(why) => {
            ApiError::new(StatusCode::BAD_REQUEST, format!("reload: {why}")).into_response()
        }
    }
}
