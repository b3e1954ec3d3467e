//! The route table: path prefixes and their upstreams, the longest prefix first, and what a
//! reload keeps of the old table (a route whose prefix and upstream are unchanged keeps its
//! [`Upstream`], its figures and its sockets).

use wscope_axum::relay::{RelayRoute, Upstream};

use crate::config::RouteSpec;

/// The routes in force, longest prefix first.
#[derive(Clone, Debug, Default)]
pub(crate) struct RouteTable {
    routes: Vec<RelayRoute>,
}

impl RouteTable {
    /// The table of `specs`, reusing the upstream of any route of `old` with the same prefix and
    /// URL. An upstream URL that cannot be relayed to is an error naming the route.
    pub(crate) fn build(specs: &[RouteSpec], old: &RouteTable) -> Result<Self, String> {
        let mut routes = Vec::with_capacity(specs.len());
        for spec in specs {
            let kept = old
                .routes
                .iter()
                .find(|r| r.prefix == spec.prefix && r.upstream.name() == upstream_name(spec));
            let upstream = match kept {
                Some(route) => route.upstream.clone(),
                None => {
                    let url = spec.upstream.as_str().parse().map_err(|e| {
                        format!("route {}: {}: {e}", spec.prefix, spec.upstream.as_str())
                    })?;
                    Upstream::new(url).map_err(|e| format!("route {}: {e}", spec.prefix))?
                }
            };
            routes.push(RelayRoute {
                prefix: spec.prefix.clone(),
                upstream,
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Self { routes })
    }

    /// The route for `path`: the longest prefix that is the path, or the path's start up to a
    /// `/` (`/chat` covers `/chat` and `/chat/room`, not `/chatter`); `/` covers everything.
    pub(crate) fn pick(&self, path: &str) -> Option<&RelayRoute> {
        self.routes.iter().find(|r| covers(&r.prefix, path))
    }

    /// The routes, longest prefix first.
    pub(crate) fn routes(&self) -> &[RelayRoute] {
        &self.routes
    }

    /// The routes of this table that `new` does not keep as they are (removed, or given another
    /// upstream): their sockets are to be drained.
    pub(crate) fn retired_by(&self, new: &RouteTable) -> Vec<RelayRoute> {
        self.routes
            .iter()
            .filter(|old| {
                !new.routes
                    .iter()
                    .any(|r| r.prefix == old.prefix && r.upstream.name() == old.upstream.name())
            })
            .cloned()
            .collect()
    }
}

/// The name an [`Upstream`] made from `spec` has (its URL without a trailing `/`).
fn upstream_name(spec: &RouteSpec) -> &str {
    let url = spec.upstream.as_str();
    url.strip_suffix('/').unwrap_or(url)
}

/// Whether `prefix` covers `path`.
fn covers(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(prefix: &str, url: &str) -> RouteSpec {
        format!("{prefix}={url}").parse().unwrap()
    }

    #[test]
    fn the_longest_covering_prefix_wins() {
        let table = RouteTable::build(
            &[
                spec("/", "http://127.0.0.1:1"),
                spec("/chat", "http://127.0.0.1:2"),
                spec("/chat/admin", "http://127.0.0.1:3"),
            ],
            &RouteTable::default(),
        )
        .unwrap();
        let port = |path| {
            let route = table.pick(path).unwrap();
            route.upstream.name().rsplit(':').next().unwrap().to_owned()
        };
        assert_eq!(port("/"), "1");
        assert_eq!(port("/chatter"), "1");
        assert_eq!(port("/chat"), "2");
        assert_eq!(port("/chat/room"), "2");
        assert_eq!(port("/chat/admin/x"), "3");
    }

    #[test]
    fn a_reload_keeps_unchanged_routes_and_retires_the_rest() {
        let old = RouteTable::build(
            &[
                spec("/a", "http://127.0.0.1:1"),
                spec("/b", "http://127.0.0.1:2"),
            ],
            &RouteTable::default(),
        )
        .unwrap();
        let new = RouteTable::build(
            &[
                spec("/a", "http://127.0.0.1:1"),
                spec("/b", "http://127.0.0.1:3"),
            ],
            &old,
        )
        .unwrap();
        let a_old = old.pick("/a").unwrap();
        let a_new = new.pick("/a").unwrap();
        assert!(a_old.upstream.same_place(&a_new.upstream));
        assert_eq!(
            a_old.upstream.figures() as *const _,
            a_new.upstream.figures() as *const _
        );
        let retired = old.retired_by(&new);
        assert_eq!(retired.len(), 1);
        assert_eq!(retired[0].prefix, "/b");
    }
}
