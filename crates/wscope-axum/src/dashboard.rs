//! The dashboard: one page at `/` and its scripts and styles under `/dashboard/`, embedded in the
//! binary (`include_bytes!`; no Node toolchain at build time). The page reads the admin API from
//! the browser: the live stream (`GET /api/stats/stream`), the paged connection list
//! (`GET /api/connections`), the recently closed (`GET /api/closed`) and the actions
//! (`POST /api/admin`), sending the admin token it asks for on a 401.
//!
//! The page and its assets are the same for every server and hold no data, so the admin guard
//! serves them without a token (see [`needs_no_token`]); they still pass its `Host` and `Origin`
//! checks (a link from another site may open the page: [`is_page_navigation`]), and every API
//! call the page makes needs the token like any other client's.
//!
//! In cluster mode (the admin `/health` names a cluster state) the header offers a switch to the
//! whole cluster: the summary, charts and an instances table from `GET /api/cluster/stats` polled
//! every 2 s (rates from the change between polls), the connection table and the actions through
//! `/api/cluster/connections` and `/api/cluster/admin`; the recently closed list stays this
//! instance's. `app.js` reads every URL from its `scope` object.
//!
//! Caching: an asset's URL carries a digest of its content (`/dashboard/<digest>/app.js`), so it
//! is cached for a year as immutable and a new build's page asks for new URLs; the page itself is
//! revalidated on every load (`no-cache` with an `ETag`).

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use sha1::{Digest, Sha1};

use crate::error::ApiError;

/// The page's policy: its own scripts, styles and API only; nothing inline, nothing framed.
/// (uPlot styles its elements through the CSSOM, which `style-src 'self'` allows.)
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page, with `{{name}}` where an asset's URL goes.
const INDEX: &str = include_str!("dashboard/index.html");

/// An embedded file the page loads.
struct Asset {
    /// Its name in the page's `{{name}}` and at the end of its URL.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("dashboard/app.css"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/vendor/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("dashboard/vendor/uPlot.min.css"),
    },
];

/// The page with its asset URLs filled in, and each asset's digest, computed once.
struct Built {
    index: String,
    index_etag: HeaderValue,
    /// Parallel to [`ASSETS`].
    digests: Vec<String>,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let digests: Vec<String> = ASSETS.iter().map(|a| digest(a.body)).collect();
        let mut index = INDEX.to_owned();
        for (asset, digest) in ASSETS.iter().zip(&digests) {
            // Relative, so that the page also works behind a proxy that serves it under a prefix.
            let url = format!("dashboard/{digest}/{}", asset.name);
            index = index.replace(&format!("{{{{{}}}}}", asset.name), &url);
        }
        let index_etag = HeaderValue::from_str(&format!("\"{}\"", digest(index.as_bytes())))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        Built {
            index,
            index_etag,
            digests,
        }
    })
}

/// The first 16 hex digits of the SHA-1 of `bytes`: a cache key, not a security measure.
fn digest(bytes: &[u8]) -> String {
    Sha1::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `path` is the dashboard's page or one of its assets, which the admin guard serves
/// without a token (they hold no data; the page must load to ask for the token).
pub(crate) fn needs_no_token(path: &str) -> bool {
    path == "/" || path.starts_with("/dashboard/")
}

/// Whether `request` is a browser opening the dashboard page as a top-level document (typed,
/// bookmarked, or a link on another site, such as a runbook). The admin guard lets such a
/// navigation through its same-site check: the page holds no data and changes nothing, it cannot
/// be framed (`frame-ancestors 'none'`), and every call it makes is same-origin and checked.
pub(crate) fn is_page_navigation(request: &axum::extract::Request) -> bool {
    let header = |name: &str, value: &str| {
        request
            .headers()
            .get(name)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
    };
    matches!(*request.method(), Method::GET | Method::HEAD)
        && request.uri().path() == "/"
        && header("sec-fetch-mode", "navigate")
        && header("sec-fetch-dest", "document")
}

/// Headers every dashboard answer carries.
fn common_headers(content_type: &'static str) -> [(HeaderName, HeaderValue); 2] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ]
}

/// `GET /`: the dashboard page, revalidated on every load (304 when unchanged).
pub(crate) async fn index(headers: HeaderMap) -> Response {
    let built = built();
    let policy = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, built.index_etag.clone()),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| etag_matches(tags.as_bytes(), built.index_etag.as_bytes()));
    if fresh {
        return (StatusCode::NOT_MODIFIED, policy).into_response();
    }
    (
        common_headers("text/html; charset=utf-8"),
        policy,
        built.index.clone(),
    )
        .into_response()
}

/// Whether an `If-None-Match` list (`"a", W/"b"` or `*`) names `etag`.
fn etag_matches(list: &[u8], etag: &[u8]) -> bool {
    list.split(|&b| b == b',').any(|tag| {
        let tag = tag.trim_ascii();
        let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
        tag == b"*" || tag == etag
    })
}

/// `GET /dashboard/{digest}/{file}`: an embedded asset, cached as immutable. Only the current
/// digest is served: an old page asking for an old build's file gets a 404, not the wrong file
/// cached for a year.
pub(crate) async fn asset(Path((digest, name)): Path<(String, String)>) -> Response {
    let built = built();
    let found = ASSETS
        .iter()
        .zip(&built.digests)
        .find(|(asset, d)| asset.name == name && **d == digest);
    match found {
        Some((asset, _)) => (
            common_headers(asset.content_type),
            [(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            )],
            asset.body,
        )
            .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "no such dashboard file").into_response(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled_with_a_digested_url() {
        let built = built();
        assert!(!built.index.contains("{{"), "{}", built.index);
        for (asset, digest) in ASSETS.iter().zip(&built.digests) {
            assert_eq!(digest.len(), 16);
            let url = format!("\"dashboard/{digest}/{}\"", asset.name);
            assert!(built.index.contains(&url), "{url} not in the page");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        // The policy forbids them; the page would break quietly.
        for forbidden in ["<script>", "style=", "onclick=", "onload=", "javascript:"] {
            assert!(!INDEX.contains(forbidden), "{forbidden}");
        }
        assert!(INDEX.contains("<script src=\"{{app.js}}\" defer></script>"));
    }

    #[test]
    fn etags_match_lists_weak_tags_and_stars() {
        assert!(etag_matches(b"\"a\"", b"\"a\""));
        assert!(etag_matches(b"\"x\", W/\"a\"", b"\"a\""));
        assert!(etag_matches(b"*", b"\"a\""));
        assert!(!etag_matches(b"\"b\"", b"\"a\""));
        assert!(!etag_matches(b"", b"\"a\""));
    }

    #[test]
    fn only_the_page_and_its_assets_go_without_a_token() {
        assert!(needs_no_token("/"));
        assert!(needs_no_token("/dashboard/0123/app.js"));
        for guarded in ["/api/stats", "/api/admin", "/dashboardx", "/metrics", ""] {
            assert!(!needs_no_token(guarded), "{guarded}");
        }
    }
}
