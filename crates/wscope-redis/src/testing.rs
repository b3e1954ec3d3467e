//! Helpers for tests against a real Redis (feature `testing`): find the Redis to use or skip
//! visibly, start a throwaway `redis-server` to kill and restart, and make unique key names.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let Some(url) = wscope_redis::testing::redis_url_or_skip("my_test").await else {
//!     return; // a `SKIPPED: …` line is on stderr
//! };
//! let prefix = wscope_redis::testing::unique_name("my_test");
//! # let _ = (url, prefix);
//! # }
//! ```

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The variable naming the Redis tests use.
pub const URL_VAR: &str = "WSCOPE_TEST_REDIS_URL";
/// The Redis tests use when [`URL_VAR`] is unset.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// Set to `1` to make an unreachable Redis fail the tests instead of skipping them.
pub const REQUIRE_VAR: &str = "WSCOPE_REQUIRE_REDIS";

/// How long the reachability probe waits for Redis.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis URL for `test_name` ([`URL_VAR`], else [`DEFAULT_URL`]) if it answers PING;
/// otherwise `None` after one `SKIPPED: …` line on stderr — or a panic if [`REQUIRE_VAR`] is `1`.
pub async fn redis_url_or_skip(test_name: &str) -> Option<String> {
    let url = std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_owned());
    url_or_skip(test_name, &url, required()).await
}

/// Whether [`REQUIRE_VAR`] asks for Redis to be there.
pub fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1")
}

/// `url` if Redis answers there; otherwise, with `require`, panics naming the test and the URL,
/// and without it prints one `SKIPPED: …` line to stderr and answers `None`.
///
/// # Panics
/// If Redis is unreachable and `require` is set.
pub async fn url_or_skip(test_name: &str, url: &str, require: bool) -> Option<String> {
    match reachable(url).await {
        Ok(()) => Some(url.to_owned()),
        Err(err) => {
            skip_or_fail(
                test_name,
                &format!("Redis not reachable at {url} ({err})"),
                require,
            );
            None
        }
    }
}

/// Panics (with `require`) or prints `SKIPPED: {test_name}: {why} …` to stderr — visibly, even
/// under the test harness's output capture.
///
/// # Panics
/// If `require` is set.
pub fn skip_or_fail(test_name: &str, why: &str, require: bool) {
    if require {
        panic!("{test_name}: {why}, and {REQUIRE_VAR}=1 requires it");
    }
    // Written to the stderr handle, not through `eprintln!`, which the test harness captures
    // (and hides, for a passing test).
    let _ = writeln!(
        io::stderr(),
        "SKIPPED: {test_name}: {why} (set {REQUIRE_VAR}=1 to fail instead)"
    );
}

/// Whether Redis at `url` answers PING within two seconds; the reason if not.
///
/// # Errors
/// The URL's or the connection's problem, in words.
pub async fn reachable(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| format!("invalid URL: {e}"))?;
    let probe = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// A name no other test run shares: `wscope-test:{test_name}:{pid}:{nanos}:{n}`. Use it as a
/// prefix of every channel and key, and delete `{name}*` at the end.
pub fn unique_name(test_name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("wscope-test:{test_name}:{}:{nanos}:{n}", std::process::id())
}

/// A `redis-server` of the test's own on a free loopback port, without persistence, to kill and
/// restart at will. Killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Whether a `redis-server` binary can be run.
    pub fn available() -> bool {
        Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A server on a port free now, not started yet.
    ///
    /// # Errors
    /// If no port could be had from the OS.
    pub fn on_free_port() -> io::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Ok(Self {
            port,
            extra_args: Vec::new(),
            child: None,
        })
    }

    /// Passes `args` to `redis-server` too, on each start (e.g. `["--requirepass", "s3cret"]`).
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL, `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (`--port P --save '' --appendonly no`) and waits, at most five seconds, until
    /// it accepts connections.
    ///
    /// # Errors
    /// If it is already running, cannot be spawned, or does not listen in time.
    pub async fn start(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err(format!("redis-server on {} is already running", self.port));
        }
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let listening = async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), listening)
            .await
            .map_err(|_| format!("redis-server on {} did not listen within 5 s", self.port))
    }

    /// Kills it (SIGKILL, no goodbye to clients) and reaps it; nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
