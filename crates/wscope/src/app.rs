//! [`App`]: what a [`Server`](crate::serve::Server) serves on its main listener — the
//! application's router, and the endpoints its start-up line names.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::Router;

/// An application for the main listener: its routes, and the endpoints the start-up line names
/// (`listening: echo ws://127.0.0.1:8080/ws, …`). Its WebSocket routes take
/// [`wscope_axum::WebSocketUpgrade`]: the server puts every socket they accept in its registry,
/// and serves `/health` and `/ready` beside them.
///
/// ```
/// use axum::{response::Response, routing::get, Router};
/// use wscope::app::App;
/// use wscope_axum::WebSocketUpgrade;
///
/// async fn greet(ws: WebSocketUpgrade) -> Response {
///     ws.on_upgrade(|mut socket| async move {
///         let _ = socket.send("hello").await;
///     })
/// }
///
/// let app = App::new(Router::new().route("/greet", get(greet))).announce("greeter", "ws", "/greet");
/// # let _ = app;
/// ```
///
/// A plain [`Router`] is an `App` that names no endpoint.
#[derive(Clone)]
pub struct App {
    router: Router,
    endpoints: Vec<Endpoint>,
    /// Layers both routers get (`Extension`s the handlers of either read).
    layers: Vec<Layer>,
}

/// A layer put on both routers.
type Layer = std::sync::Arc<dyn Fn(Router) -> Router + Send + Sync>;

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("endpoints", &self.endpoints)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

/// An endpoint the start-up line names: `name scheme://MAIN/path`.
#[derive(Clone, Copy, Debug)]
struct Endpoint {
    name: &'static str,
    scheme: &'static str,
    path: &'static str,
}

impl App {
    /// An application of `router`'s routes, naming no endpoint yet.
    pub fn new(router: Router) -> Self {
        Self {
            router,
            endpoints: Vec::new(),
            layers: Vec::new(),
        }
    }

    /// Hands `value` to the handlers of both listeners as an `axum::Extension` (`wscope proxy`
    /// hands its routes to `/metrics` and to the admin API's `reload` this way).
    pub fn extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.layers.push(std::sync::Arc::new(move |router: Router| {
            router.layer(axum::Extension(value.clone()))
        }));
        self
    }

    /// Names `path` in the start-up line, as `name scheme://MAIN/path` (`echo ws://…/ws`), after
    /// the endpoints named before it.
    pub fn announce(
        mut self,
        name: &'static str,
        scheme: &'static str,
        path: &'static str,
    ) -> Self {
        self.endpoints.push(Endpoint { name, scheme, path });
        self
    }

    /// The routes, and the endpoints' names and URLs with the main listener at `main`.
    pub(crate) fn into_parts(self, main: SocketAddr) -> (Router, Listing) {
        let urls = self
            .endpoints
            .iter()
            .map(|e| (e.name, Url(e.scheme, main, e.path)))
            .collect();
        (self.router, Listing(urls))
    }

    /// The layers for both routers (taken out before [`into_parts`](Self::into_parts)).
    pub(crate) fn take_layers(&mut self) -> Vec<Layer> {
        std::mem::take(&mut self.layers)
    }
}

impl From<Router> for App {
    fn from(router: Router) -> Self {
        Self::new(router)
    }
}

/// Names and URLs as the start-up line lists them: `echo ws://127.0.0.1:8080/ws, dashboard
/// http://127.0.0.1:9090/`.
pub(crate) struct Listing(Vec<(&'static str, Url)>);

impl Listing {
    /// The listing with `name url` after the rest.
    pub(crate) fn and(mut self, name: &'static str, url: Url) -> Self {
        self.0.push((name, url));
        self
    }

    /// The listing with each URL at `addr` in its TLS scheme (`ws` to `wss`, `http` to `https`).
    pub(crate) fn over_tls(mut self, addr: SocketAddr) -> Self {
        for (_, url) in &mut self.0 {
            if url.1 == addr {
                url.0 = match url.0 {
                    "ws" => "wss",
                    "http" => "https",
                    other => other,
                };
            }
        }
        self
    }
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, url)) in self.0.iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            write!(f, "{separator}{name} {url}")?;
        }
        Ok(())
    }
}

/// A URL to paste into a client or a browser: `scheme://address/path`, with loopback in place of
/// an unspecified address (`0.0.0.0`, `::`), which a listener binds but no client can reach.
pub(crate) struct Url(pub &'static str, pub SocketAddr, pub &'static str);

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self(scheme, addr, path) = *self;
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        write!(f, "{scheme}://{}{path}", SocketAddr::new(ip, addr.port()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_loopback_for_an_unspecified_address() {
        let url = |addr: &str, path| Url("ws", addr.parse().unwrap(), path).to_string();
        assert_eq!(url("127.0.0.1:8080", "/ws"), "ws://127.0.0.1:8080/ws");
        assert_eq!(url("0.0.0.0:8080", "/ws"), "ws://127.0.0.1:8080/ws");
        assert_eq!(url("[::]:9090", "/"), "ws://[::1]:9090/");
        assert_eq!(url("[2001:db8::1]:80", "/x"), "ws://[2001:db8::1]:80/x");
    }

    #[test]
    fn the_listing_names_the_endpoints_in_order_then_what_follows() {
        let main: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let admin: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let app = App::new(Router::new())
            .announce("echo", "ws", "/ws")
            .announce("chat", "ws", "/ws/chat");
        let (_, listing) = app.into_parts(main);
        assert_eq!(
            listing.and("dashboard", Url("http", admin, "/")).to_string(),
            "echo ws://127.0.0.1:8080/ws, chat ws://127.0.0.1:8080/ws/chat, dashboard http://127.0.0.1:9090/"
        );
        let (_, bare) = App::from(Router::new()).into_parts(main);
        assert_eq!(
            bare.and("dashboard", Url("http", admin, "/")).to_string(),
            "dashboard http://127.0.0.1:9090/"
        );
    }

    #[test]
    fn a_listener_over_tls_is_listed_in_its_tls_scheme() {
        let main: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        let admin: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let (_, listing) = App::new(Router::new())
            .announce("echo", "ws", "/ws")
            .into_parts(main);
        let listing = listing.and("dashboard", Url("http", admin, "/"));
        assert_eq!(
            listing.over_tls(main).to_string(),
            "echo wss://127.0.0.1:8443/ws, dashboard http://127.0.0.1:9090/"
        );
        let (_, listing) = App::new(Router::new()).into_parts(main);
        let listing = listing.and("dashboard", Url("http", admin, "/"));
        assert_eq!(
            listing.over_tls(admin).to_string(),
            "dashboard https://127.0.0.1:9090/"
        );
    }
}
