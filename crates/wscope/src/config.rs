//! `wscope serve`'s options: one [`ServeConfig`] filled from flags, `WSCOPE_*` environment
//! variables and an optional TOML file, in that order of precedence, then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use ipnet::IpNet;
use serde::Deserialize;
use wscope_axum::Engine;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `wscope serve` flags. Every flag can also be set by `WSCOPE_<FLAG>` or in the `--config` file.
#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// TOML file with any of the options below (keys in snake_case: `admin_listen = "..."`).
    #[arg(long, env = "WSCOPE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the main listener (`/ws`, `/ws/chat`, `/health`) [default: 127.0.0.1:8080].
    #[arg(long, env = "WSCOPE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of the admin listener (`/api/stats`, `/api/admin`, `/health`) [default: 127.0.0.1:9090].
    #[arg(long, env = "WSCOPE_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Names this instance in ids, stats and health [default: $INSTANCE_ID, else the host name].
    #[arg(long, env = "WSCOPE_INSTANCE_ID", value_name = "ID", value_parser = parse_instance_id)]
    pub instance_id: Option<String>,
    /// How often to log the stats lines (`30s`, `500ms`, `2m`, seconds; 0 = never) [default: 30s].
    #[arg(long, env = "WSCOPE_STATS_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub stats_interval: Option<Duration>,
    /// How often to sweep stale entries (0 = never) [default: 30s].
    #[arg(long, env = "WSCOPE_CLEANUP_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub cleanup_interval: Option<Duration>,
    /// How long shutdown waits for close handshakes before dropping the rest [default: 10s].
    #[arg(long, env = "WSCOPE_DRAIN_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// A proxy (CIDR or address) whose forwarding headers are believed; repeatable
    /// [default: 127.0.0.0/8 and ::1].
    #[arg(long = "trusted-proxy", env = "WSCOPE_TRUSTED_PROXY", value_name = "CIDR",
          value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<IpNet>,
    /// Accept backlog of each listener [default: 4096].
    #[arg(long, env = "WSCOPE_BACKLOG", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub backlog: Option<u32>,
    /// Most messages queued for one connection [default: 1024].
    #[arg(long, env = "WSCOPE_QUEUE_CAPACITY", value_name = "N", value_parser = parse_positive)]
    pub queue_capacity: Option<usize>,
    /// Largest message accepted (`64KiB`, `16MiB`, bytes) [default: 64MiB].
    #[arg(long, env = "WSCOPE_MAX_MESSAGE_SIZE", value_name = "SIZE", value_parser = parse_size)]
    pub max_message_size: Option<usize>,
    /// Log format [default: human].
    #[arg(long, env = "WSCOPE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Bytes read from a socket at a time (the tungstenite engine's read buffer) [default: 512].
    #[arg(long, env = "WSCOPE_READ_BUFFER_SIZE", value_name = "SIZE", value_parser = parse_size)]
    pub read_buffer_size: Option<usize>,
    /// WebSocket engine: tungstenite or tokio-websockets [default: tungstenite].
    #[arg(long, env = "WSCOPE_ENGINE", value_name = "ENGINE")]
    pub engine: Option<Engine>,
}

/// The `--config` file: the same options, as strings or numbers, checked like the flags.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    admin_listen: Option<String>,
    instance_id: Option<String>,
    stats_interval: Option<toml::Value>,
    cleanup_interval: Option<toml::Value>,
    drain_timeout: Option<toml::Value>,
    trusted_proxy: Option<Vec<String>>,
    backlog: Option<u32>,
    queue_capacity: Option<usize>,
    max_message_size: Option<toml::Value>,
    log_format: Option<LogFormat>,
    engine: Option<String>,
    read_buffer_size: Option<toml::Value>,
}

/// Every option of `wscope serve`, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeConfig {
    /// Main listener address.
    pub listen: SocketAddr,
    /// Admin listener address.
    pub admin_listen: SocketAddr,
    /// Instance id.
    pub instance_id: String,
    /// Stats log period (zero: off).
    pub stats_interval: Duration,
    /// Sweep period (zero: off).
    pub cleanup_interval: Duration,
    /// Drain deadline.
    pub drain_timeout: Duration,
    /// Trusted proxies.
    pub trusted_proxies: Vec<IpNet>,
    /// Listen backlog.
    pub backlog: u32,
    /// Per-connection queue capacity.
    pub queue_capacity: usize,
    /// Largest message accepted.
    pub max_message_size: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// WebSocket engine.
    pub engine: Engine,
    /// Engine read buffer size.
    pub read_buffer_size: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        let registry = wscope_core::RegistryConfig::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            instance_id: registry.instance_id,
            stats_interval: registry.stats_interval,
            cleanup_interval: registry.cleanup_interval,
            drain_timeout: registry.drain_timeout,
            trusted_proxies: wscope_axum::TrustedProxies::default().networks().to_vec(),
            backlog: 4096,
            queue_capacity: registry.queue_capacity,
            max_message_size: wscope_axum::SocketConfig::default().max_message_size,
            log_format: LogFormat::Human,
            engine: Engine::default(),
            read_buffer_size: wscope_axum::SocketConfig::default().read_buffer_size,
        }
    }
}

impl ServeConfig {
    /// Resolves flags (and their env variables) over the TOML file over the defaults.
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let d = Self::default();
        let path = args.config.as_deref().unwrap_or(Path::new("-"));
        let key = |k: &str| format!("config file {}: {k}", path.display());
        let addr = |v: Option<String>, k: &str| -> anyhow::Result<Option<SocketAddr>> {
            v.map(|s| s.parse().with_context(|| key(k))).transpose()
        };
        let dur = |v: Option<toml::Value>, k: &str| -> anyhow::Result<Option<Duration>> {
            v.map(|v| {
                parse_duration(&value_text(&v))
                    .map_err(anyhow::Error::msg)
                    .with_context(|| key(k))
            })
            .transpose()
        };
        let trusted_file = file
            .trusted_proxy
            .map(|v| {
                v.iter()
                    .map(|s| parse_cidr(s).map_err(anyhow::Error::msg))
                    .collect::<anyhow::Result<Vec<_>>>()
                    .with_context(|| key("trusted_proxy"))
            })
            .transpose()?;
        let instance_env = std::env::var("INSTANCE_ID")
            .ok()
            .filter(|s| !s.trim().is_empty());
        let size = |v: Option<toml::Value>, k: &str| -> anyhow::Result<Option<usize>> {
            v.map(|v| {
                parse_size(&value_text(&v))
                    .map_err(anyhow::Error::msg)
                    .with_context(|| key(k))
            })
            .transpose()
        };
        let max_message_size = size(file.max_message_size, "max_message_size")?;
        let read_buffer_size = size(file.read_buffer_size, "read_buffer_size")?;
        if file.queue_capacity == Some(0) {
            bail!("{}: must be at least 1", key("queue_capacity"));
        }
        if file.backlog == Some(0) {
            bail!("{}: must be at least 1", key("backlog"));
        }
        Ok(Self {
            listen: args
                .listen
                .or(addr(file.listen, "listen")?)
                .unwrap_or(d.listen),
            admin_listen: args
                .admin_listen
                .or(addr(file.admin_listen, "admin_listen")?)
                .unwrap_or(d.admin_listen),
            instance_id: args
                .instance_id
                .or(instance_env)
                .or(file.instance_id)
                .unwrap_or(d.instance_id),
            stats_interval: args
                .stats_interval
                .or(dur(file.stats_interval, "stats_interval")?)
                .unwrap_or(d.stats_interval),
            cleanup_interval: args
                .cleanup_interval
                .or(dur(file.cleanup_interval, "cleanup_interval")?)
                .unwrap_or(d.cleanup_interval),
            drain_timeout: args
                .drain_timeout
                .or(dur(file.drain_timeout, "drain_timeout")?)
                .unwrap_or(d.drain_timeout),
            trusted_proxies: if args.trusted_proxies.is_empty() {
                trusted_file.unwrap_or(d.trusted_proxies)
            } else {
                args.trusted_proxies
            },
            backlog: args.backlog.or(file.backlog).unwrap_or(d.backlog),
            queue_capacity: args
                .queue_capacity
                .or(file.queue_capacity)
                .unwrap_or(d.queue_capacity),
            max_message_size: args
                .max_message_size
                .or(max_message_size)
                .unwrap_or(d.max_message_size),
            log_format: args.log_format.or(file.log_format).unwrap_or(d.log_format),
            engine: match (args.engine, file.engine) {
                (Some(e), _) => e,
                (None, Some(name)) => name
                    .parse::<Engine>()
                    .map_err(anyhow::Error::from)
                    .with_context(|| key("engine"))?,
                (None, None) => d.engine,
            },
            read_buffer_size: args
                .read_buffer_size
                .or(read_buffer_size)
                .unwrap_or(d.read_buffer_size),
        })
    }

    /// The registry's part of the configuration.
    pub fn registry_config(&self) -> wscope_core::RegistryConfig {
        wscope_core::RegistryConfig::default()
            .instance_id(self.instance_id.clone())
            .cleanup_interval(self.cleanup_interval)
            .stats_interval(self.stats_interval)
            .drain_timeout(self.drain_timeout)
            .queue_capacity(self.queue_capacity)
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--config {}: cannot read", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        // toml's message spans several lines; keep the first (it names the key).
        let first = e
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_owned();
        anyhow::anyhow!("--config {}: {first}", path.display())
    })
}

/// A TOML value as the text a flag would carry (`"30s"` or `30`).
fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub use wscope_core::units::{parse_duration, parse_size};

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    wscope_axum::parse_net(s.trim())
        .map_err(|_| format!("invalid CIDR {s:?}: use 10.0.0.0/8, 192.0.2.1 or ::1"))
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "invalid count {s:?}: use a whole number of at least 1"
        )),
    }
}

fn parse_instance_id(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "invalid instance id {s:?}: use 1-64 characters without spaces"
        ));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_fills_what_flags_leave() {
        let dir = std::env::temp_dir().join(format!("wscope-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("serve.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7001\"\nadmin_listen = \"127.0.0.1:7002\"\nstats_interval = \"5s\"\ndrain_timeout = 3\ntrusted_proxy = [\"10.0.0.0/8\"]\nmax_message_size = \"1MiB\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:7100".parse().unwrap()),
            ..Default::default()
        };
        let cfg = ServeConfig::resolve(args).unwrap();
        assert_eq!(cfg.listen.port(), 7100, "flag wins over file");
        assert_eq!(cfg.admin_listen.port(), 7002);
        assert_eq!(cfg.stats_interval, Duration::from_secs(5));
        assert_eq!(cfg.drain_timeout, Duration::from_secs(3));
        assert_eq!(
            cfg.trusted_proxies,
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        assert_eq!(cfg.max_message_size, 1 << 20);

        std::fs::write(&path, "stats_interval = \"often\"\n").unwrap();
        let err = ServeConfig::resolve(ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("stats_interval"), "{err:#}");

        std::fs::write(&path, "listn = \"x\"\n").unwrap();
        let err = ServeConfig::resolve(ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("listn"), "{err:#}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
