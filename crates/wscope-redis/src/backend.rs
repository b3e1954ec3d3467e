//! [`RedisBackend`]: the [`ClusterBackend`] on Redis — a publisher connection for commands, a
//! dedicated RESP3 subscriber connection, both reconnecting by themselves, and every call bounded
//! by the command timeout.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ProtocolVersion, Value};
use tokio::sync::{watch, Notify};
use wscope_cluster::{
    delivery_buffer, BackendError, BackendErrorKind, BackendFuture, ClusterBackend, Deliveries,
    Lease, Link, DELIVERY_BUFFER, DELIVERY_BUFFER_BYTES,
};

use crate::error::{redact, ConnectError};
use crate::inner::Inner;
use crate::link::LinkState;
use crate::options::RedisOptions;
use crate::scripts::Scripts;
use crate::subscriber::Router;
use crate::supervisor;

/// A cluster node's handle on Redis. Cheap to clone (clones share the connections); the
/// background task that probes and reconnects ends when the last clone is dropped.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use bytes::Bytes;
/// use wscope_cluster::ClusterBackend;
/// use wscope_redis::{RedisBackend, RedisOptions};
///
/// // Never waits for Redis: it connects (and reconnects) in the background.
/// let backend = RedisBackend::connect("redis://127.0.0.1:6379/0", RedisOptions::default())
///     .expect("a valid URL");
/// let mut rx = backend.subscribe(vec!["news".into()]).await.expect("subscribed");
/// backend.publish("news", Bytes::from("hello")).await.expect("published");
/// assert_eq!(rx.recv().await.expect("delivered").payload, "hello");
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

impl RedisBackend {
    /// A backend for the Redis at `url` (`redis://[[user]:password@]host[:port][/db]`, or
    /// `rediss://` and `redis+unix://` as the `redis` crate accepts them).
    ///
    /// Returns at once and never fails because Redis is down: the link starts
    /// [`Link::Disconnected`] and a background task connects, retrying with
    /// [`RedisOptions::reconnect_min`] doubling to [`RedisOptions::reconnect_max`]; watch
    /// [`ClusterBackend::link`] for [`Link::Connected`].
    ///
    /// # Errors
    /// [`ConnectError::InvalidUrl`] for a URL that is not a Redis URL,
    /// [`ConnectError::InvalidOptions`] for an out-of-range option, and
    /// [`ConnectError::NoRuntime`] outside a Tokio runtime.
    pub fn connect(url: &str, options: RedisOptions) -> Result<Self, ConnectError> {
        options.check().map_err(ConnectError::InvalidOptions)?;
        let redacted = redact(url);
        let invalid = |err: redis::RedisError| ConnectError::InvalidUrl {
            url: redacted.clone(),
            reason: err.to_string(),
        };
        let client = Client::open(url).map_err(invalid)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConnectError::NoRuntime);
        }
        let info = client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let subscriber_client = Client::open(info.set_redis_settings(resp3)).map_err(invalid)?;

        // The client makes one connection attempt per call; the supervisor paces the retries.
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.command_timeout))
            .set_connection_timeout(Some(options.command_timeout))
            .set_number_of_retries(0)
            .set_min_delay(options.reconnect_min)
            .set_max_delay(options.reconnect_max);
        let publisher =
            ConnectionManager::new_lazy_with_config(client, config.clone()).map_err(invalid)?;
        let wake = Arc::new(Notify::new());
        let link = Arc::new(LinkState::new(redacted.clone(), Arc::clone(&wake)));
        let router = Arc::new(Router::new(Arc::clone(&link)));
        let pushes = Arc::clone(&router);
        let subscriber = ConnectionManager::new_lazy_with_config(
            subscriber_client,
            config
                .set_push_sender(move |push| {
                    pushes.push(push);
                    Ok::<(), std::convert::Infallible>(())
                })
                .set_automatic_resubscription(),
        )
        .map_err(invalid)?;

        let inner = Arc::new(Inner {
            options,
            publisher,
            subscriber,
            router,
            scripts: Scripts::new(),
            link,
            wake,
        });
        supervisor::spawn(&inner);
        Ok(Self { inner })
    }

    /// Deletes every key matching the glob `pattern` (SCAN, then UNLINK), for cleanup in tests
    /// and tools; answers how many were deleted. Not atomic: keys created meanwhile may survive.
    ///
    /// # Errors
    /// As any command: `Unavailable`/`Timeout` while Redis cannot be reached (each SCAN and UNLINK
    /// is bounded by the command timeout), `Engine` if Redis refuses.
    pub async fn delete_matching(&self, pattern: &str) -> Result<u64, BackendError> {
        let inner = &self.inner;
        let mut conn = inner.publisher.clone();
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let scanned = scan.query_async::<(u64, Vec<Vec<u8>>)>(&mut conn);
            let (next, keys) = inner.run("scan", scanned).await?;
            if !keys.is_empty() {
                let mut unlink = redis::cmd("UNLINK");
                unlink.arg(&keys);
                deleted += inner
                    .run("unlink", unlink.query_async::<u64>(&mut conn))
                    .await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// The server's count of commands processed since it started (`total_commands_processed`
    /// in `INFO stats`), to measure the load a backend puts on Redis. The INFO itself counts.
    ///
    /// # Errors
    /// As any command, and `Engine` if the reply lacks the field.
    pub async fn info_commands(&self) -> Result<u64, BackendError> {
        let inner = &self.inner;
        let mut conn = inner.publisher.clone();
        let mut command = redis::cmd("INFO");
        command.arg("stats");
        let info = inner
            .run("info", command.query_async::<String>(&mut conn))
            .await?;
        info.lines()
            .find_map(|line| line.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| {
                BackendError::new(
                    BackendErrorKind::Engine,
                    "redis info: no total_commands_processed in INFO stats",
                )
            })
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.inner.link.url())
            .field("link", &self.inner.link.get())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// The lease script's reply: `[1]`, or `[0, value]`.
fn lease_reply(reply: Vec<Value>) -> Result<Lease, BackendError> {
    let mut reply = reply.into_iter();
    match (reply.next(), reply.next()) {
        (Some(Value::Int(1)), None) => Ok(Lease::Held),
        (Some(Value::Int(0)), Some(Value::BulkString(value))) => Ok(Lease::HeldByOther {
            value: Bytes::from(value),
        }),
        other => Err(BackendError::new(
            BackendErrorKind::Engine,
            format!("redis lease: unexpected reply {other:?}"),
        )),
    }
}

/// A ttl in whole milliseconds, at least 1 (PEXPIRE 0 would delete the lease just taken).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl ClusterBackend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn publish(&self, channel: &str, payload: Bytes) -> BackendFuture<'_, ()> {
        // The command owns copies of its arguments, so the future borrows only `self`.
        let mut command = redis::cmd("PUBLISH");
        command.arg(channel).arg(payload.as_ref());
        Box::pin(async move {
            let mut conn = self.inner.publisher.clone();
            self.inner
                .run("publish", command.query_async::<Value>(&mut conn))
                .await
                .map(drop)
        })
    }

    /// One pipeline of PUBLISHes on the publisher connection: one round trip for the lot, in
    /// order.
    fn publish_batch(&self, batch: Vec<(String, Bytes)>) -> BackendFuture<'_, ()> {
        let mut pipe = redis::pipe();
        for (channel, payload) in &batch {
            pipe.cmd("PUBLISH")
                .arg(channel)
                .arg(payload.as_ref())
                .ignore();
        }
        Box::pin(async move {
            let mut conn = self.inner.publisher.clone();
            self.inner
                .run("publish", pipe.query_async::<Value>(&mut conn))
                .await
                .map(drop)
        })
    }

    /// Subscribes on the dedicated subscriber connection. If Redis cannot be reached right now
    /// the receiver is still returned: the SUBSCRIBE is made by the supervisor as soon as the
    /// link is back (the link reports `Connected` only once it is confirmed), so a node can
    /// subscribe before Redis is up. Only an engine error (`Engine`) fails the call.
    fn subscribe(&self, channels: Vec<String>) -> BackendFuture<'_, Deliveries> {
        Box::pin(async move {
            let inner = &self.inner;
            let (tx, rx) = delivery_buffer(DELIVERY_BUFFER, DELIVERY_BUFFER_BYTES);
            inner.router.add(channels.clone(), tx);
            let mut conn = inner.subscriber.clone();
            match inner.run("subscribe", conn.subscribe(&channels)).await {
                Ok(()) => Ok(rx),
                Err(err) if err.kind == BackendErrorKind::Engine => Err(err),
                Err(_) => {
                    // `run` marked the link down; the supervisor subscribes when it is back.
                    inner.router.resubscribe.store(true, Ordering::Relaxed);
                    Ok(rx)
                }
            }
        })
    }

    fn lease(
        &self,
        key: &str,
        holder: &str,
        value: Bytes,
        ttl: Duration,
    ) -> BackendFuture<'_, Lease> {
        let key = key.to_owned();
        let holder = holder.to_owned();
        Box::pin(async move {
            let inner = &self.inner;
            let mut conn = inner.publisher.clone();
            let mut invocation = inner.scripts.lease.prepare_invoke();
            invocation
                .key(&key)
                .arg(&holder)
                .arg(value.as_ref())
                .arg(ttl_ms(ttl));
            let reply = inner
                .run("lease", invocation.invoke_async::<Vec<Value>>(&mut conn))
                .await?;
            lease_reply(reply)
        })
    }

    fn release(&self, key: &str, holder: &str) -> BackendFuture<'_, ()> {
        let key = key.to_owned();
        let holder = holder.to_owned();
        Box::pin(async move {
            let inner = &self.inner;
            let mut conn = inner.publisher.clone();
            let mut invocation = inner.scripts.release.prepare_invoke();
            invocation.key(&key).arg(&holder);
            inner
                .run("release", invocation.invoke_async::<u64>(&mut conn))
                .await
                .map(drop)
        })
    }

    fn link(&self) -> watch::Receiver<Link> {
        self.inner.link.subscribe()
    }

    fn dropped(&self) -> u64 {
        self.inner.router.dropped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_replies() {
        assert_eq!(lease_reply(vec![Value::Int(1)]), Ok(Lease::Held));
        assert_eq!(
            lease_reply(vec![Value::Int(0), Value::BulkString(b"v".to_vec())]),
            Ok(Lease::HeldByOther {
                value: Bytes::from("v")
            })
        );
        let odd = lease_reply(vec![Value::Nil]).unwrap_err();
        assert_eq!(odd.kind, BackendErrorKind::Engine);
    }

    #[test]
    fn ttl_is_at_least_a_millisecond() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(1500)), 1);
        assert_eq!(ttl_ms(Duration::from_secs(3)), 3000);
    }

    #[test]
    fn invalid_urls_are_named() {
        let err = RedisBackend::connect("http://user:pw@host", RedisOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid Redis URL \"http://user:***@host\""),
            "{err}"
        );
        assert!(!err.contains("pw"), "{err}");
    }

    #[test]
    fn outside_a_runtime_is_refused() {
        let err = RedisBackend::connect("redis://127.0.0.1:1", RedisOptions::default());
        assert!(matches!(err, Err(ConnectError::NoRuntime)), "{err:?}");
    }
}
