//! The settings as `wscope serve` reads them: which source wins, what each refuses and how it
//! says so, and whether the README's table still matches the flags.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use clap::{Args, Command, FromArgMatches};
use ipnet::IpNet;
use wscope_axum::{ClientIpHeader, ServeOptions, SocketConfig};
use wscope_core::RegistryConfig;

use super::*;

mod compose;

/// Tests that set environment variables hold this, so they do not see each other's.
static ENV: Mutex<()> = Mutex::new(());

/// Environment variables set for one test, removed when it ends (even by a panic).
struct Env {
    names: Vec<String>,
    _lock: MutexGuard<'static, ()>,
}

impl Env {
    fn lock() -> Self {
        let lock = ENV.lock().unwrap_or_else(PoisonError::into_inner);
        let env = Self {
            names: Vec::new(),
            _lock: lock,
        };
        for arg in serve_command().get_arguments() {
            if let Some(name) = arg.get_env() {
                std::env::remove_var(name);
            }
        }
        std::env::remove_var(wscope_core::INSTANCE_ID_ENV);
        env
    }

    fn set(&mut self, name: &str, value: &str) {
        std::env::set_var(name, value);
        self.names.push(name.to_owned());
    }

    fn clear(&mut self) {
        for name in self.names.drain(..) {
            std::env::remove_var(name);
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.clear();
    }
}

fn serve_command() -> Command {
    ServeArgs::augment_args(Command::new("serve").no_binary_name(true))
}

/// Parses `args` as `wscope serve` would, reading the environment as it is now.
fn parse(args: &[&str]) -> Result<ServeArgs, String> {
    let matches = serve_command()
        .try_get_matches_from(args)
        .map_err(|e| e.to_string())?;
    ServeArgs::from_arg_matches(&matches).map_err(|e| e.to_string())
}

/// A file in a fresh temporary directory, removed with it.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wscope-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        Self { dir, path }
    }

    /// A token file: its owner's alone, as `--admin-token-file` wants it.
    fn secret(name: &str, text: &str) -> Self {
        let file = Self::new(name, text);
        file.chmod(0o600);
        file
    }

    fn chmod(&self, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One setting of each kind, with a different value from each source.
struct Case {
    flag: &'static str,
    env: &'static str,
    toml: &'static str,
    /// The value as resolved, so that each source's can be told apart.
    read: fn(&ServeSettings) -> String,
}

const CASES: &[Case] = &[
    Case {
        flag: "--listen=127.0.0.1:1001",
        env: "127.0.0.1:1002",
        toml: "listen = \"127.0.0.1:1003\"",
        read: |c| c.listeners.listen.to_string(),
    },
    Case {
        flag: "--stats-interval=1s",
        env: "2s",
        toml: "stats_interval = 3",
        read: |c| format!("{:?}", c.logging.stats_interval),
    },
    Case {
        flag: "--max-message-size=1KiB",
        env: "2K",
        toml: "max_message_size = \"3MB\"",
        read: |c| c.limits.max_message_size.to_string(),
    },
    Case {
        flag: "--backlog=11",
        env: "12",
        toml: "backlog = 13",
        read: |c| c.listeners.backlog.to_string(),
    },
    Case {
        flag: "--trusted-proxy=10.0.0.1",
        env: "10.0.0.2, 10.0.0.3",
        toml: "trusted_proxy = \"10.0.0.4\"",
        read: |c| format!("{:?}", c.listeners.trusted_proxies),
    },
    Case {
        flag: "--instance-id=from-flag",
        env: "from-env",
        toml: "instance_id = \"from-file\"",
        read: |c| c.instance.instance_id.clone(),
    },
];

fn env_name(case: &Case) -> String {
    let flag = case.flag.trim_start_matches("--");
    let flag = flag.split('=').next().unwrap();
    format!("WSCOPE_{}", flag.replace('-', "_").to_uppercase())
}

fn values(cfg: &ServeSettings) -> Vec<String> {
    CASES.iter().map(|case| (case.read)(cfg)).collect()
}

#[test]
fn flag_beats_env_beats_instance_id_beats_file_beats_default() {
    let mut env = Env::lock();
    let toml: Vec<&str> = CASES.iter().map(|case| case.toml).collect();
    let file = TempFile::new("precedence", &toml.join("\n"));
    let config = format!("--config={}", file.path().display());
    let flags: Vec<&str> = CASES.iter().map(|case| case.flag).collect();
    let resolve = |args: &[&str]| ServeSettings::resolve(parse(args).unwrap()).unwrap();

    // What each source alone resolves to.
    let defaults = values(&ServeSettings::default());
    let from_file = values(&resolve(&[&config]));
    let from_flags = values(&resolve(&flags));
    for case in CASES {
        env.set(&env_name(case), case.env);
    }
    let from_env = values(&resolve(&[]));
    for i in 0..CASES.len() {
        let distinct = [&from_flags[i], &from_env[i], &from_file[i], &defaults[i]];
        assert!(
            distinct.windows(2).all(|pair| pair[0] != pair[1]),
            "case {i} cannot tell its sources apart: {distinct:?}"
        );
    }
    env.set(wscope_core::INSTANCE_ID_ENV, "from-reference");

    let mut all = flags.clone();
    all.push(&config);
    assert_eq!(values(&resolve(&all)), from_flags, "flags win");
    assert_eq!(values(&resolve(&[&config])), from_env, "then env");
    env.clear();
    env.set(wscope_core::INSTANCE_ID_ENV, "from-reference");
    let mut expected = from_file.clone();
    *expected.last_mut().unwrap() = "from-reference".to_owned();
    assert_eq!(values(&resolve(&[&config])), expected, "then INSTANCE_ID");
    env.clear();
    assert_eq!(values(&resolve(&[&config])), from_file, "then the file");
    assert_eq!(values(&resolve(&[])), defaults, "then the defaults");

    assert_eq!(from_flags[0], "127.0.0.1:1001");
    assert_eq!(from_env[1], "2s");
    assert_eq!(from_file[1], "3s", "a TOML number is seconds");
    assert_eq!(from_env[2], "2048");
    assert_eq!(from_file[2], "3000000");
    assert_eq!(from_env[4], "[10.0.0.2/32, 10.0.0.3/32]");
    assert_eq!(from_file[4], "[10.0.0.4/32]", "a TOML string is a list");
}

#[test]
fn repeated_proxy_flags_add_up() {
    let _env = Env::lock();
    let args = parse(&[
        "--trusted-proxy",
        "10.0.0.0/8",
        "--trusted-proxy=::1,192.0.2.1",
    ])
    .unwrap();
    let cfg = ServeSettings::resolve(args).unwrap();
    let expected: Vec<IpNet> = ["10.0.0.0/8", "::1/128", "192.0.2.1/32"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(cfg.listeners.trusted_proxies, expected);
}

#[test]
fn a_bad_flag_or_variable_names_the_flag_and_where_it_came_from() {
    let mut env = Env::lock();
    let err = parse(&["--drain-timeout", "forever"]).unwrap_err();
    assert!(
        err.starts_with("error: --drain-timeout: invalid duration \"forever\""),
        "{err}"
    );
    env.set("WSCOPE_MAX_MESSAGE_SIZE", "huge");
    let err = parse(&[]).unwrap_err();
    assert!(
        err.starts_with("error: WSCOPE_MAX_MESSAGE_SIZE (for --max-message-size): invalid size"),
        "{err}"
    );
    // A flag hides its variable, bad or not.
    assert!(parse(&["--max-message-size", "1MiB"]).is_ok());
}

fn file_error(text: &str) -> (usize, String) {
    let _env = Env::lock();
    let file = TempFile::new("bad", text);
    let args = ServeArgs {
        config: Some(file.path().to_owned()),
        ..ServeArgs::default()
    };
    match ServeSettings::resolve(args) {
        Err(ConfigError::File { path, line, what }) => {
            assert_eq!(path, file.path());
            (line, what)
        }
        other => panic!("expected a file error, got {other:?}"),
    }
}

#[test]
fn a_bad_file_names_the_key_and_its_line() {
    let (line, what) = file_error("listen = \"127.0.0.1:1\"\n\nstats_interval = \"often\"\n");
    assert_eq!(line, 3);
    assert!(
        what.starts_with("stats_interval: invalid duration \"often\""),
        "{what}"
    );
    let (line, what) = file_error("# serve\nlistn = \"127.0.0.1:1\"\n");
    assert_eq!(
        (line, what.as_str()),
        (2, "unknown key `listn`; did you mean `listen`?")
    );
    let (line, what) = file_error("[listeners]\nlisten = \"127.0.0.1:1\"\n");
    assert_eq!(line, 1);
    assert!(what.starts_with("unknown key `listeners`"), "{what}");
    let (line, what) = file_error("backlog = 0\ntrusted_proxy = [\"10.0.0.0/99\"]\n");
    assert_eq!(
        (line, what.as_str()),
        (
            1,
            "backlog: invalid count \"0\": use a whole number of at least 1"
        )
    );
    let (line, what) = file_error("log_format = \"json\"\nqueue_capacity = true\n");
    assert_eq!(line, 2);
    assert!(
        what.starts_with("queue_capacity: expected a string or a number"),
        "{what}"
    );
    let (line, what) = file_error("engine = \"tungstenite\"\nlisten = \n");
    assert_eq!(line, 2, "{what}");
}

#[test]
fn every_source_checks_the_instance_id() {
    let mut env = Env::lock();
    assert!(parse(&["--instance-id", "a b/c"])
        .unwrap_err()
        .starts_with("error: --instance-id: invalid instance id"));
    env.set("WSCOPE_INSTANCE_ID", "a b/c");
    assert!(parse(&[])
        .unwrap_err()
        .starts_with("error: WSCOPE_INSTANCE_ID (for --instance-id): invalid instance id"));
    env.clear();

    env.set(wscope_core::INSTANCE_ID_ENV, "a b/c");
    let err = ServeSettings::resolve(ServeArgs::default()).unwrap_err();
    assert!(matches!(err, ConfigError::InstanceIdEnv(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("INSTANCE_ID (for --instance-id): invalid instance id \"a b/c\""),
        "{err}"
    );
    // Not read when a flag sets the id, as a `WSCOPE_*` variable is not.
    let args = parse(&["--instance-id", "node-1"]).unwrap();
    assert_eq!(
        ServeSettings::resolve(args).unwrap().instance.instance_id,
        "node-1"
    );
    env.clear();
    drop(env);

    let (_, what) = file_error("instance_id = \"a b/c\"\n");
    assert!(
        what.starts_with("instance_id: invalid instance id"),
        "{what}"
    );
}

/// The settings among `command`'s arguments (not `--config`), in order: each one's key, once
/// checked to be its flag's and its variable's, and its `--help` heading.
fn settings_of(command: &Command) -> Vec<(String, &str)> {
    let mut settings = Vec::new();
    for arg in command.get_arguments() {
        let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
            continue;
        };
        if long == "config" {
            continue;
        }
        let key = long.replace('-', "_");
        let env = env.to_str().unwrap();
        assert_eq!(env, format!("WSCOPE_{}", key.to_uppercase()));
        settings.push((key, arg.get_help_heading().unwrap_or_default()));
    }
    settings
}

#[test]
fn names_follow_the_key() {
    let command = serve_command();
    let keys: Vec<String> = settings_of(&command).into_iter().map(|s| s.0).collect();
    assert_eq!(keys, PartialServeSettings::keys());
}

#[test]
fn defaults_are_the_libraries() {
    let cfg = ServeSettings::default();
    let registry = RegistryConfig::default();
    let socket = SocketConfig::default();
    assert_eq!(cfg.logging.stats_interval, registry.stats_interval);
    assert_eq!(cfg.liveness.drain_timeout, registry.drain_timeout);
    assert_eq!(cfg.limits.queue_capacity, registry.queue_capacity);
    assert_eq!(cfg.limits.max_message_size, socket.max_message_size);
    assert_eq!(cfg.limits.max_frame_size, socket.max_frame_size);
    assert_eq!(cfg.socket_config().frame_limit(), socket.frame_limit());
    assert_eq!(
        Some(cfg.limits.max_buffered_bytes),
        socket.message_budget.limit()
    );
    let resolved = cfg.socket_config();
    assert_eq!(
        resolved.message_budget.address_limit(),
        socket.message_budget.address_limit()
    );
    assert_eq!(Some(cfg.limits.message_timeout), socket.message_timeout);
    assert_eq!(cfg.sockets.permessage_deflate, socket.permessage_deflate);
    assert_eq!(cfg.sockets.read_buffer_size, socket.read_buffer_size);
    assert_eq!(cfg.sockets.engine, socket.engine);
    assert_eq!(cfg.instance.instance_id, wscope_core::host_instance_id());
}
/// A switch is on with the bare flag, and reads a word from the flag, its variable and the file.
#[test]
fn permessage_deflate_is_a_switch() {
    let mut env = Env::lock();
    let on = |args: &[&str]| {
        ServeSettings::resolve(parse(args).unwrap())
            .unwrap()
            .sockets
            .permessage_deflate
    };
    assert!(!on(&[]));
    assert!(on(&["--permessage-deflate"]));
    assert!(!on(&["--permessage-deflate=false"]));
    let file = TempFile::new("switch", "permessage_deflate = true");
    let config = format!("--config={}", file.path().display());
    assert!(on(&[&config]));
    env.set("WSCOPE_PERMESSAGE_DEFLATE", "off");
    assert!(!on(&[&config]));
    assert!(on(&["--permessage-deflate", &config]));
    env.clear();
    let err = parse(&["--permessage-deflate=maybe"]).unwrap_err();
    assert!(
        err.starts_with("error: --permessage-deflate: invalid switch \"maybe\""),
        "{err}"
    );
    // A switch never takes the next word as its value.
    assert!(parse(&["--permessage-deflate", "true"]).is_err());
}

/// The README's table of `wscope serve` lists every flag with its variable and default.
#[test]
fn readme_table_matches_the_flags() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    for arg in serve_command().get_arguments() {
        let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
            continue;
        };
        // `--flag VALUE`, or `--flag[=VALUE]` for a switch.
        let flags = [format!("`--{long} "), format!("`--{long}[")];
        let row = readme
            .lines()
            .find(|line| line.starts_with("| ") && flags.iter().any(|f| line.contains(f)))
            .unwrap_or_else(|| panic!("README has no row for --{long}"));
        let env = env.to_str().unwrap();
        assert!(row.contains(&format!("`{env}`")), "{row}");
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        if let Some((_, default)) = help.split_once("[default: ") {
            let default = default.trim_end_matches(']');
            let shown = if long == "instance-id" {
                "host name".to_owned()
            } else {
                format!("`{default}`")
            };
            assert!(
                row.contains(&shown),
                "README row for --{long} lacks {shown}: {row}"
            );
        }
    }
}

/// The engine, where the build has engines enough to tell the sources apart.
#[cfg(all(feature = "tokio-websockets", feature = "fastwebsockets"))]
#[test]
fn engine_flag_beats_env_beats_file() {
    let mut env = Env::lock();
    let file = TempFile::new("engine", "engine = \"fastwebsockets\"");
    let config = format!("--config={}", file.path().display());
    let engine = |args: &[&str]| {
        ServeSettings::resolve(parse(args).unwrap())
            .unwrap()
            .sockets
            .engine
            .as_str()
    };
    assert_eq!(engine(&[]), wscope_axum::Engine::default().as_str());
    assert_eq!(engine(&[&config]), "fastwebsockets");
    env.set("WSCOPE_ENGINE", "tokio-websockets");
    assert_eq!(engine(&[&config]), "tokio-websockets");
    assert_eq!(
        engine(&["--engine=fastwebsockets", &config]),
        "fastwebsockets"
    );
    env.clear();
}

/// The registry's configuration with the settings `args` resolve to.
fn registry_config(args: &[&str]) -> RegistryConfig {
    ServeSettings::resolve(parse(args).unwrap())
        .unwrap()
        .registry_config()
}

/// The limits' settings, from their flags, reach the registry's configuration.
#[test]
fn limits_settings_reach_the_registry_config() {
    let _env = Env::lock();
    let registry = registry_config;
    let off = registry(&[]);
    assert_eq!((off.max_connections, off.max_connections_per_ip), (0, 0));
    assert_eq!(off.handshake_rate_per_ip, None);
    assert!(off.allowed_origins.is_empty() && off.allow_missing_origin);
    assert_eq!(
        off.allow_missing_origin,
        RegistryConfig::default().allow_missing_origin
    );

    let on = registry(&[
        "--max-connections=100",
        "--max-connections-per-ip",
        "5",
        "--handshake-rate-per-ip=10/s",
        "--handshake-burst=3",
        "--allowed-origin=https://app.example.com",
        "--allowed-origin",
        "https://*.example.org,http://localhost:3000",
        "--allow-missing-origin=false",
    ]);
    assert_eq!((on.max_connections, on.max_connections_per_ip), (100, 5));
    let rate = on.handshake_rate_per_ip.unwrap();
    assert_eq!((rate.to_string(), rate.burst()), ("10/s".to_owned(), 3));
    let origins: Vec<String> = on.allowed_origins.iter().map(ToString::to_string).collect();
    assert_eq!(
        origins,
        [
            "https://app.example.com",
            "https://*.example.org",
            "http://localhost:3000"
        ]
    );
    assert!(!on.allow_missing_origin);
    // Without a burst, the rate's count.
    let rate = registry(&["--handshake-rate-per-ip=600/m"]).handshake_rate_per_ip;
    assert_eq!(rate.unwrap().burst(), 600);
}

/// The limits' settings, from their variables and the file, reach the registry's configuration.
#[test]
fn limits_settings_from_variables_and_the_file_reach_the_registry_config() {
    let mut env = Env::lock();
    let registry = registry_config;
    env.set(
        "WSCOPE_ALLOWED_ORIGIN",
        "https://a.example.com, https://b.example.com",
    );
    env.set("WSCOPE_HANDSHAKE_RATE_PER_IP", "0");
    let from_env = registry(&[]);
    assert_eq!(from_env.allowed_origins.len(), 2);
    assert_eq!(from_env.handshake_rate_per_ip, None);
    env.clear();

    let file = TempFile::new(
        "limits",
        "max_connections = 7\nhandshake_rate_per_ip = \"5/10s\"\n\
         allowed_origin = [\"https://app.example.com\"]\nallow_missing_origin = false\n",
    );
    let from_file = registry(&[&format!("--config={}", file.path().display())]);
    assert_eq!(from_file.max_connections, 7);
    assert_eq!(
        from_file.handshake_rate_per_ip.unwrap().to_string(),
        "5/10s"
    );
    assert_eq!(from_file.allowed_origins.len(), 1);
    assert!(!from_file.allow_missing_origin);
}

/// A bad limit is one line naming its flag.
#[test]
fn bad_limits_settings_name_the_flag() {
    let _env = Env::lock();
    for (arg, wanted) in [
        (
            "--max-connections=-1",
            "error: --max-connections: invalid limit",
        ),
        (
            "--handshake-rate-per-ip=fast",
            "error: --handshake-rate-per-ip: invalid rate",
        ),
        (
            "--allowed-origin=example.com",
            "error: --allowed-origin: invalid origin",
        ),
        (
            "--allow-missing-origin=no",
            "error: --allow-missing-origin: invalid switch",
        ),
    ] {
        let err = parse(&[arg]).unwrap_err();
        assert!(err.starts_with(wanted), "{arg}: {err}");
    }
}

/// `--ipv6-prefix` and `--handshake-rate-addresses`, from a flag, a variable and the file, reach
/// the registry's configuration; out of bounds is a one-line error naming the flag.
#[test]
fn ipv6_grouping_and_rate_table_settings_reach_the_registry_config() {
    let mut env = Env::lock();
    let registry = |args: &[&str]| resolved(args).map(|cfg| cfg.registry_config());
    let default = registry(&[]).unwrap();
    assert_eq!(default.ipv6_prefix.len(), 64);
    assert_eq!(
        default.handshake_rate_addresses,
        RegistryConfig::DEFAULT_HANDSHAKE_RATE_ADDRESSES
    );
    let on = registry(&["--ipv6-prefix=/56", "--handshake-rate-addresses=5000"]).unwrap();
    assert_eq!(
        (on.ipv6_prefix.len(), on.handshake_rate_addresses),
        (56, 5000)
    );
    env.set("WSCOPE_IPV6_PREFIX", "128");
    assert_eq!(registry(&[]).unwrap().ipv6_prefix.len(), 128);
    env.clear();
    let file = TempFile::new(
        "grouping",
        "ipv6_prefix = 48
handshake_rate_addresses = 7
",
    );
    let from_file = registry(&[&format!("--config={}", file.path().display())]).unwrap();
    assert_eq!(
        (
            from_file.ipv6_prefix.len(),
            from_file.handshake_rate_addresses
        ),
        (48, 7)
    );
    for (flag, value) in [
        ("--ipv6-prefix", "47"),
        ("--ipv6-prefix", "129"),
        ("--ipv6-prefix", "64bits"),
        ("--handshake-rate-addresses", "0"),
        ("--handshake-rate-addresses", "10000001"),
    ] {
        let err = registry(&[flag, value]).unwrap_err();
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
}

/// `ServeSettings::resolve` of `args`, or its one-line error.
fn resolved(args: &[&str]) -> Result<ServeSettings, String> {
    ServeSettings::resolve(parse(args)?).map_err(|e| e.to_string())
}

#[test]
fn the_admin_token_comes_from_a_flag_a_variable_or_a_file() {
    let mut env = Env::lock();
    let token = |cfg: ServeSettings| cfg.admin.admin_token.map(|t| t.expose().to_owned());
    assert_eq!(token(resolved(&[]).unwrap()), None);
    assert_eq!(
        token(resolved(&["--admin-token=fl4g"]).unwrap()).as_deref(),
        Some("fl4g")
    );
    let file = TempFile::secret("token", "  s3cr3t-from-file \n");
    let from_file = format!("--admin-token-file={}", file.path().display());
    assert_eq!(
        token(resolved(&[&from_file]).unwrap()).as_deref(),
        Some("s3cr3t-from-file")
    );
    env.set("WSCOPE_ADMIN_TOKEN", "v4r");
    assert_eq!(token(resolved(&[]).unwrap()).as_deref(), Some("v4r"));
    // Two sources of a token: refused rather than one silently preferred.
    assert_eq!(
        resolved(&[&from_file]).unwrap_err(),
        "--admin-token and --admin-token-file: set one, not both"
    );
    env.clear();

    let empty = TempFile::secret("empty-token", " \n");
    let err = resolved(&[&format!("--admin-token-file={}", empty.path().display())]).unwrap_err();
    assert_eq!(
        err,
        format!(
            "--admin-token-file {}: the file is empty",
            empty.path().display()
        )
    );
    let big = TempFile::secret("big-token", &"x".repeat(64 << 10));
    let err = resolved(&[&format!("--admin-token-file={}", big.path().display())]).unwrap_err();
    assert!(err.contains("larger than"), "{err}");
    let err = resolved(&["--admin-token-file=/no/such/wscope/token"]).unwrap_err();
    assert!(
        err.starts_with("--admin-token-file /no/such/wscope/token: cannot read"),
        "{err}"
    );
    let err = resolved(&["--admin-token=two words"]).unwrap_err();
    assert!(err.contains("--admin-token"), "{err}");
}

#[test]
fn a_token_file_that_others_may_read_or_change_is_refused() {
    let _env = Env::lock();
    let file = TempFile::new("open-token", "s3cr3t-from-file\n");
    let flag = format!("--admin-token-file={}", file.path().display());
    let shown = file.path().display().to_string();
    for (mode, what) in [
        (0o644, "read"),
        (0o640, "read"),
        (0o604, "read"),
        (0o620, "change"),
    ] {
        file.chmod(mode);
        assert_eq!(
            resolved(&[&flag]).unwrap_err(),
            format!(
                "--admin-token-file {shown}: mode {mode:04o} lets other users {what} the token: make it its owner's alone (chmod 600)"
            )
        );
    }
    for mode in [0o600, 0o400] {
        file.chmod(mode);
        let token = resolved(&[&flag]).unwrap().admin.admin_token.unwrap();
        assert_eq!(token.expose(), "s3cr3t-from-file", "{mode:o}");
    }
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let _env = Env::lock();
    for addr in ["0.0.0.0:9090", "[::]:9090", "192.0.2.1:9090"] {
        let err = resolved(&["--admin-listen", addr]).unwrap_err();
        assert_eq!(
            err,
            format!("--admin-listen {addr} is not a loopback address: set --admin-token or --admin-token-file, or listen on 127.0.0.1"),
        );
        assert!(resolved(&["--admin-listen", addr, "--admin-token=t"]).is_ok());
    }
    for addr in ["127.0.0.2:9090", "[::1]:9090", "[::ffff:127.0.0.1]:9090"] {
        assert!(resolved(&["--admin-listen", addr]).is_ok(), "{addr}");
    }
}

#[test]
fn help_never_shows_the_token() {
    let mut env = Env::lock();
    env.set("WSCOPE_ADMIN_TOKEN", "hunter2-secret");
    let help = serve_command().render_long_help().to_string();
    assert!(help.contains("WSCOPE_ADMIN_TOKEN"), "{help}");
    assert!(!help.contains("hunter2-secret"), "{help}");
    let cfg = resolved(&[]).unwrap();
    assert!(!format!("{cfg:?}").contains("hunter2-secret"));
}

#[test]
fn the_config_file_is_read_up_to_1_mib() {
    let _env = Env::lock();
    // A setting and one long comment, 1 MiB exactly.
    let mut text = "stats_interval = 5\n#".to_owned();
    text.push_str(&"x".repeat((1 << 20) - text.len() - 1));
    text.push('\n');
    assert_eq!(text.len(), 1 << 20);
    let fits = TempFile::new("fits", &text);
    let cfg = resolved(&[&format!("--config={}", fits.path().display())]).unwrap();
    assert_eq!(
        cfg.logging.stats_interval,
        std::time::Duration::from_secs(5)
    );
    text.push('\n');
    let big = TempFile::new("big", &text);
    let err = resolved(&[&format!("--config={}", big.path().display())]).unwrap_err();
    assert_eq!(
        err,
        format!(
            "--config {}: larger than 1048576 bytes",
            big.path().display()
        )
    );
}

#[test]
fn edge_settings_reach_the_libraries() {
    let _env = Env::lock();
    let cfg = ServeSettings::default();
    assert_eq!(
        cfg.listeners.handshake_timeout,
        ServeOptions::DEFAULT_HANDSHAKE_TIMEOUT
    );
    assert_eq!(
        cfg.listeners.max_header_size,
        ServeOptions::DEFAULT_MAX_HEADER_SIZE
    );
    assert_eq!(
        cfg.listeners.client_ip_header,
        ClientIpHeader::XForwardedFor
    );
    assert!(!cfg.admin.admin_config().has_token());

    let cfg = resolved(&[
        "--handshake-timeout=0",
        "--max-header-size=8KiB",
        "--client-ip-header=forwarded",
        "--admin-token=t",
        "--admin-allowed-host=admin.internal",
        "--admin-allowed-origin=https://ops.example",
    ])
    .unwrap();
    let options = cfg.listeners.serve_options();
    assert_eq!(options.handshake_timeout, None, "0 turns the deadline off");
    assert_eq!(options.max_header_size, 8 << 10);
    assert_eq!(
        cfg.listeners.proxies().client_ip_header(),
        ClientIpHeader::Forwarded
    );
    assert!(cfg.admin.admin_config().has_token());
    assert_eq!(
        cfg.admin.admin_allowed_hosts[0].to_string(),
        "admin.internal"
    );
    assert_eq!(
        cfg.admin.admin_allowed_origins[0].as_str(),
        "https://ops.example"
    );
    for (flag, value) in [
        ("--handshake-timeout", "2h"),
        ("--max-header-size", "512"),
        ("--max-header-size", "2MiB"),
        ("--client-ip-header", "x-client-ip"),
        ("--read-buffer-size", "100GiB"),
        ("--stats-interval", "1e20"),
        ("--cleanup-interval", "18446744073709551615"),
        ("--queue-capacity", "1000000000"),
    ] {
        let err = resolved(&[flag, value]).unwrap_err();
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
}

/// An unset frame limit follows the message limit into the socket settings; a set one stays.
#[test]
fn the_frame_limit_follows_the_message_limit_unless_set() {
    let _env = Env::lock();
    let cfg = resolved(&["--max-message-size=64MiB"]).unwrap();
    assert_eq!(cfg.limits.max_frame_size, None);
    assert_eq!(cfg.socket_config().frame_limit(), 64 << 20);
    let cfg = resolved(&["--max-message-size=64MiB", "--max-frame-size=1MiB"]).unwrap();
    assert_eq!(cfg.socket_config().frame_limit(), 1 << 20);
    let err = resolved(&["--max-frame-size=0"]).unwrap_err();
    assert!(err.contains("--max-frame-size"), "{err}");
}

/// The budget's share per address and the message deadline reach the socket settings; a share
/// left unset is a quarter of the budget, 0 turns the deadline off.
#[test]
fn the_budget_share_and_the_message_deadline_reach_the_sockets() {
    let _env = Env::lock();
    let socket = resolved(&["--max-buffered-bytes=8MiB"])
        .unwrap()
        .socket_config();
    assert_eq!(socket.message_budget.limit(), Some(8 << 20));
    assert_eq!(socket.message_budget.address_limit(), Some(2 << 20));
    assert_eq!(socket.message_timeout, Some(Duration::from_secs(30)));
    let socket = resolved(&[
        "--max-buffered-bytes=8MiB",
        "--max-buffered-bytes-per-ip=3MiB",
        "--message-timeout=0",
    ])
    .unwrap()
    .socket_config();
    assert_eq!(socket.message_budget.limit(), Some(8 << 20));
    assert_eq!(socket.message_budget.address_limit(), Some(3 << 20));
    assert_eq!(socket.message_timeout, None);
    for (flag, value) in [
        ("--max-buffered-bytes-per-ip", "0"),
        ("--message-timeout", "2w"),
    ] {
        let err = resolved(&[flag, value]).unwrap_err();
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
}

/// `--threads` and `--runtime`: unset, a runtime per core on every core; each read from the
/// flag, its variable and the file, in that order.
#[test]
fn threads_and_runtime_default_to_a_runtime_per_core_and_read_every_source() {
    use crate::runtime::{self, RuntimeLayout};
    let mut env = Env::lock();
    let listeners = |args: &[&str]| {
        ServeSettings::resolve(parse(args).unwrap())
            .unwrap()
            .listeners
    };
    let defaults = listeners(&[]);
    assert_eq!(defaults.threads, None);
    assert_eq!(defaults.runtime, RuntimeLayout::PerCore);
    assert_eq!(runtime::threads(&defaults), runtime::cores());

    let file = TempFile::new("runtime", "threads = 3\nruntime = \"multi\"");
    let config = format!("--config={}", file.path().display());
    let from_file = listeners(&[&config]);
    assert_eq!(
        (from_file.threads, from_file.runtime),
        (Some(3), RuntimeLayout::Multi)
    );
    assert_eq!(runtime::threads(&from_file).get(), 3);
    env.set("WSCOPE_THREADS", "5");
    assert_eq!(listeners(&[&config]).threads, Some(5));
    let flagged = listeners(&["--threads", "7", "--runtime", "per-core", &config]);
    assert_eq!(
        (flagged.threads, flagged.runtime),
        (Some(7), RuntimeLayout::PerCore)
    );
    env.clear();

    let err = parse(&["--threads", "0"]).unwrap_err();
    assert!(
        err.starts_with("error: --threads: invalid count \"0\""),
        "{err}"
    );
    let err = parse(&["--runtime", "single"]).unwrap_err();
    assert!(
        err.contains("--runtime: unknown runtime \"single\": use per-core or multi"),
        "{err}"
    );
}
