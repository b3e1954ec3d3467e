//! The state every clone of one [`RedisBackend`](crate::RedisBackend) shares, and the supervisor
//! reaches through a `Weak`: the two connections, the subscription router, the link, and the
//! operations both use — a command bounded by the timeout, the probe.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use redis::aio::ConnectionManager;
use redis::{RedisResult, Value};
use tokio::sync::Notify;
use wscope_cluster::{BackendError, BackendErrorKind, Link};

use crate::error::backend_error;
use crate::link::LinkState;
use crate::options::RedisOptions;
use crate::scripts::Scripts;
use crate::subscriber::Router;

/// What the clones of one backend share (and the supervisor reaches through a `Weak`).
pub(crate) struct Inner {
    pub(crate) options: RedisOptions,
    /// Commands: PUBLISH, the lease scripts, PING, SCAN, INFO. One multiplexed connection, so
    /// publishes leave in the order they were made.
    pub(crate) publisher: ConnectionManager,
    /// SUBSCRIBE and the pushes that follow; resubscribes by itself after a reconnect.
    pub(crate) subscriber: ConnectionManager,
    pub(crate) router: Arc<Router>,
    pub(crate) scripts: Scripts,
    pub(crate) link: Arc<LinkState>,
    pub(crate) wake: Arc<Notify>,
}

impl Inner {
    /// Runs one command within the command timeout; a failure for want of Redis marks the link
    /// down (and wakes the supervisor).
    pub(crate) async fn run<T>(
        &self,
        what: &str,
        command: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, BackendError> {
        let timeout = self.options.command_timeout;
        let err = match tokio::time::timeout(timeout, command).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => backend_error(what, &err),
            Err(_) => BackendError::new(
                BackendErrorKind::Timeout,
                format!("redis {what}: no answer within {timeout:?}"),
            ),
        };
        if err.kind != BackendErrorKind::Engine {
            self.lost(&err.message);
        }
        Err(err)
    }

    /// The link is lost: subscriptions have to be confirmed again once it is back.
    fn lost(&self, why: &str) {
        self.router.resubscribe.store(true, Ordering::Relaxed);
        self.link.down(why);
    }

    /// One probe by the supervisor: PING the publisher, and the subscriber too once something
    /// is subscribed, then SUBSCRIBE again if the subscriptions are not confirmed. `Ok` means
    /// commands and subscriptions work.
    pub(crate) async fn probe(&self) -> Result<(), BackendError> {
        self.ping_fresh("ping", &self.publisher).await?;
        let channels = self.router.channels();
        if channels.is_empty() {
            return Ok(());
        }
        self.ping_fresh("ping subscriber", &self.subscriber).await?;
        if self.router.resubscribe.swap(false, Ordering::Relaxed) {
            let mut conn = self.subscriber.clone();
            let result = self.run("subscribe", conn.subscribe(&channels)).await;
            if result.is_err() {
                self.router.resubscribe.store(true, Ordering::Relaxed);
            }
            return result;
        }
        Ok(())
    }

    /// PINGs on `conn`, and once more if that failed for want of Redis: a connection manager
    /// answers the first command after a failed reconnect with that old failure (and only then
    /// starts a new attempt), so the second PING is the one that tells whether Redis is back.
    async fn ping_fresh(&self, what: &str, conn: &ConnectionManager) -> Result<(), BackendError> {
        match ping(self, what, conn.clone()).await {
            Err(err) if err.kind != BackendErrorKind::Engine => {
                ping(self, what, conn.clone()).await
            }
            answer => answer,
        }
    }

    /// The supervisor saw the link fail (no wake-up: it paces itself).
    pub(crate) fn probe_failed(&self, why: &str) {
        self.router.resubscribe.store(true, Ordering::Relaxed);
        self.link.set(Link::Disconnected, why);
    }
}

async fn ping(inner: &Inner, what: &str, mut conn: ConnectionManager) -> Result<(), BackendError> {
    let command = redis::cmd("PING");
    inner
        .run(what, command.query_async::<Value>(&mut conn))
        .await
        .map(drop)
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the supervisor notice at once that nobody holds the backend any more.
        self.wake.notify_one();
    }
}
