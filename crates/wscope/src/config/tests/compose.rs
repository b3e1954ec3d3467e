//! A second subcommand's settings made of some of `serve`'s groups and a group of its own, as the
//! proxy's will be: its flags, variables, TOML keys and `--help` headings are its groups', and
//! they resolve, and refuse, as `serve`'s do.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Command, FromArgMatches};

use super::{settings_of, Env, TempFile};
use crate::config::declare::{declare_group, declare_settings, Partial};
use crate::config::{
    kind, layered, AdminAccess, ConfigError, Limits, Listeners, PartialAdminAccess, PartialLimits,
    PartialListeners, SettingsArgs,
};

declare_group! {
    /// Where a relay sends its clients: settings no group of `serve` has.
    struct Upstream (PartialUpstream) "Upstream" {
        /// The server relayed to.
        upstream: SocketAddr as kind::Addr = SocketAddr::from(([127, 0, 0, 1], 3000));
        /// How long the upstream may take to answer.
        upstream_timeout: Duration as kind::Duration = Duration::from_secs(30);
    }
}

declare_settings! {
    /// A relay's settings: three of `serve`'s groups and its own.
    struct RelaySettings (PartialRelaySettings) {
        /// `serve`'s listeners.
        listeners: Listeners (PartialListeners),
        /// `serve`'s limits.
        limits: Limits (PartialLimits),
        /// `serve`'s admin access.
        admin: AdminAccess (PartialAdminAccess),
        /// The relay's own.
        upstream: Upstream (PartialUpstream),
    }
}

fn relay_command() -> Command {
    SettingsArgs::<PartialRelaySettings>::augment_args(Command::new("relay").no_binary_name(true))
}

/// The relay's settings from `args`, the environment as it is now, and the file `args` names.
fn relay(args: &[&str]) -> Result<RelaySettings, String> {
    let matches = relay_command()
        .try_get_matches_from(args)
        .map_err(|e| e.to_string())?;
    let args = SettingsArgs::<PartialRelaySettings>::from_arg_matches(&matches)
        .map_err(|e| e.to_string())?;
    layered(args, PartialRelaySettings::default(), "wscope relay").map_err(|e| e.to_string())
}

#[test]
fn a_second_command_takes_its_groups_flags_variables_and_keys_whole() {
    let command = relay_command();
    let (keys, mut headings): (Vec<String>, Vec<&str>) = settings_of(&command).into_iter().unzip();
    headings.dedup();
    assert_eq!(keys, PartialRelaySettings::keys());
    let groups = [
        PartialListeners::keys(),
        PartialLimits::keys(),
        PartialAdminAccess::keys(),
        vec!["upstream", "upstream_timeout"],
    ];
    assert_eq!(keys, groups.concat(), "each group whole, in order");
    assert_eq!(headings, ["Listeners", "Limits", "Admin API", "Upstream"]);
    assert!(
        keys.contains(&"trusted_proxy".to_owned()),
        "a key other than its field's name"
    );
}

#[test]
fn a_second_command_resolves_each_source_and_refuses_what_serve_refuses() {
    let mut env = Env::lock();
    let file = TempFile::new(
        "relay",
        "admin_allowed_host = \"ops.internal\"\nupstream = \"127.0.0.1:4000\"\nbacklog = 9\n",
    );
    let config = format!("--config={}", file.path().display());
    env.set("WSCOPE_MAX_CONNECTIONS", "7");
    env.set("WSCOPE_BACKLOG", "8");
    let settings = relay(&["--listen=127.0.0.1:1001", &config]).unwrap();
    assert_eq!(settings.listeners.listen.to_string(), "127.0.0.1:1001");
    assert_eq!(settings.listeners.backlog, 8, "a variable beats the file");
    assert_eq!(settings.limits.max_connections, 7);
    assert_eq!(
        settings.admin.admin_allowed_hosts[0].to_string(),
        "ops.internal"
    );
    assert_eq!(settings.upstream.upstream.to_string(), "127.0.0.1:4000");
    assert_eq!(settings.upstream.upstream_timeout, Duration::from_secs(30));
    let limits = Limits {
        max_connections: 7,
        ..Limits::default()
    };
    assert_eq!(settings.limits, limits, "the rest at their defaults");
    let flagged = relay(&["--upstream=127.0.0.1:5000", "--backlog=10", &config]).unwrap();
    assert_eq!(flagged.upstream.upstream.to_string(), "127.0.0.1:5000");
    assert_eq!(flagged.listeners.backlog, 10, "a flag beats its variable");

    env.set("WSCOPE_UPSTREAM_TIMEOUT", "forever");
    let err = relay(&[]).unwrap_err();
    assert!(
        err.starts_with(
            "error: WSCOPE_UPSTREAM_TIMEOUT (for --upstream-timeout): invalid duration"
        ),
        "{err}"
    );
    env.clear();
    // Only its groups' flags and keys: `serve`'s others are unknown here.
    let err = relay(&["--ping-interval=1s"]).unwrap_err();
    assert!(err.contains("--ping-interval"), "{err}");
    let other = TempFile::new("relay-other", "ping_interval = 1\n");
    let err = relay(&[&format!("--config={}", other.path().display())]).unwrap_err();
    assert_eq!(
        err,
        format!(
            "{}:1: unknown key `ping_interval`; the keys are the flags of `wscope relay --help` in snake_case",
            other.path().display()
        )
    );
    drop(env);
    // A group's checks are the group's, whichever settings hold it.
    let open = AdminAccess::default().checked("0.0.0.0:9090".parse().unwrap());
    assert!(
        matches!(open, Err(ConfigError::OpenAdmin { .. })),
        "{open:?}"
    );
}
