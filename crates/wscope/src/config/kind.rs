//! The kinds of setting values — addresses, durations, sizes, counts, lists of networks, names
//! and instance ids. Each kind reads the same text whether it comes from a flag, an environment
//! variable or the TOML file, and writes its default the way a user would.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use ipnet::IpNet;
use toml::de::DeValue;

use wscope_axum::Engine;
use wscope_core::units::{parse_count, parse_duration, parse_size};

use super::LogFormat;

/// How one kind of value is read and shown. A setting names its kind next to its type.
pub(crate) trait Kind: 'static {
    /// The value once read.
    type Value: Clone + Send + Sync + 'static;
    /// What `--help` writes after the flag (`--drain-timeout <DURATION>`).
    const PLACEHOLDER: &'static str;
    /// Whether each use of the flag adds to the value (a list) instead of being refused.
    const REPEATABLE: bool = false;
    /// Whether the flag alone means "on" (`--permessage-deflate`), a value being optional.
    const SWITCH: bool = false;

    /// Reads the text of a flag, of an environment variable or of a TOML string.
    fn parse(text: &str) -> Result<Self::Value, String>;

    /// Reads a TOML value: a string as [`Kind::parse`] does, a number as its digits, so that
    /// `drain_timeout = 3` means what `--drain-timeout 3` means.
    fn from_toml(value: &DeValue<'_>) -> Result<Self::Value, String> {
        Self::parse(&scalar_text(value)?)
    }

    /// The value as a user would write it, for `--help`'s `[default: …]`.
    fn show(value: &Self::Value) -> String;

    /// The names accepted, when there are only a few, for `--help`.
    fn choices() -> Vec<&'static str> {
        Vec::new()
    }

    /// Combines the uses of a repeatable flag; a single-use flag has only one.
    fn join(values: impl Iterator<Item = Self::Value>) -> Option<Self::Value> {
        values.last()
    }
}

/// The text of a TOML string or number (integers in any radix are written in decimal).
fn scalar_text(value: &DeValue<'_>) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(n) => i128::from_str_radix(n.as_str(), n.radix())
            .map(|n| n.to_string())
            .map_err(|_| format!("integer {n} out of range")),
        DeValue::Float(x) => Ok(x.as_str().to_owned()),
        other => Err(format!(
            "expected a string or a number, found {} {}",
            article(other.type_str()),
            other.type_str()
        )),
    }
}

fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// A socket address: `127.0.0.1:8080`, `[::]:9090`.
pub(crate) struct Addr;

impl Kind for Addr {
    type Value = SocketAddr;
    const PLACEHOLDER: &'static str = "ADDR";

    fn parse(text: &str) -> Result<SocketAddr, String> {
        text.trim().parse().map_err(|_| {
            format!("invalid address {text:?}: use IP:PORT, such as 0.0.0.0:8080 or [::1]:8080")
        })
    }

    fn show(value: &SocketAddr) -> String {
        value.to_string()
    }
}

/// A duration, as [`parse_duration`] reads it: `30s`, `500ms`, `2m`, or seconds.
pub(crate) struct Duration;

impl Kind for Duration {
    type Value = StdDuration;
    const PLACEHOLDER: &'static str = "DURATION";

    fn parse(text: &str) -> Result<StdDuration, String> {
        parse_duration(text)
    }

    fn show(value: &StdDuration) -> String {
        humantime::format_duration(*value).to_string()
    }
}

/// A size in bytes, as [`parse_size`] reads it: `512`, `64KiB`, `16M`, `2MB`.
pub(crate) struct Size;

impl Kind for Size {
    type Value = usize;
    const PLACEHOLDER: &'static str = "SIZE";

    fn parse(text: &str) -> Result<usize, String> {
        parse_size(text)
    }

    fn show(value: &usize) -> String {
        for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            if *value > 0 && value.is_multiple_of(1 << shift) {
                return format!("{}{unit}", value >> shift);
            }
        }
        format!("{value}B")
    }
}

/// A count of at least one, as [`parse_count`] reads it, that fits in `T`.
pub(crate) struct Count<T>(PhantomData<T>);

impl<T> Kind for Count<T>
where
    T: TryFrom<usize> + ToString + Clone + Send + Sync + 'static,
{
    type Value = T;
    const PLACEHOLDER: &'static str = "N";

    fn parse(text: &str) -> Result<T, String> {
        let n = parse_count(text)?;
        T::try_from(n).map_err(|_| format!("invalid count {text:?}: too large"))
    }

    fn show(value: &T) -> String {
        value.to_string()
    }
}

/// Networks (CIDRs or bare addresses), comma-separated in one text; a repeatable flag, and in
/// TOML either one such string or an array of them.
pub(crate) struct Networks;

impl Kind for Networks {
    type Value = Vec<IpNet>;
    const PLACEHOLDER: &'static str = "CIDR";
    const REPEATABLE: bool = true;

    fn parse(text: &str) -> Result<Vec<IpNet>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                wscope_axum::parse_net(part)
                    .map_err(|_| format!("invalid CIDR {part:?}: use 10.0.0.0/8, 192.0.2.1 or ::1"))
            })
            .collect()
    }

    fn from_toml(value: &DeValue<'_>) -> Result<Vec<IpNet>, String> {
        match value {
            DeValue::String(s) => Self::parse(s),
            DeValue::Array(items) => {
                let mut nets = Vec::new();
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => nets.extend(Self::parse(s)?),
                        other => return Err(expected_strings(other)),
                    }
                }
                Ok(nets)
            }
            other => Err(expected_strings(other)),
        }
    }

    fn show(value: &Vec<IpNet>) -> String {
        // A single host as it is usually written: `::1`, not `::1/128`.
        let show = |net: &IpNet| {
            if net.prefix_len() == net.max_prefix_len() {
                net.addr().to_string()
            } else {
                net.to_string()
            }
        };
        let parts: Vec<String> = value.iter().map(show).collect();
        parts.join(",")
    }

    fn join(values: impl Iterator<Item = Vec<IpNet>>) -> Option<Vec<IpNet>> {
        values.reduce(|mut all, more| {
            all.extend(more);
            all
        })
    }
}

fn expected_strings(found: &DeValue<'_>) -> String {
    let kind = found.type_str();
    format!(
        "expected a string or an array of strings, found {} {kind}",
        article(kind)
    )
}

/// An instance id, checked by [`wscope_core::check_instance_id`] whatever its source.
pub(crate) struct InstanceId;

impl Kind for InstanceId {
    type Value = String;
    const PLACEHOLDER: &'static str = "ID";

    fn parse(text: &str) -> Result<String, String> {
        wscope_core::check_instance_id(text.trim()).map_err(|e| e.to_string())
    }

    fn show(value: &String) -> String {
        value.clone()
    }
}

/// One of a few named choices (an engine, a log format).
pub(crate) struct OneOf<T>(PhantomData<T>);

/// A type with a few variants, each known by a name.
pub(crate) trait Named: Copy + Send + Sync + 'static {
    /// What the choice is, for error messages (`engine`).
    const WHAT: &'static str;
    /// Every variant.
    fn all() -> &'static [Self];
    /// The name a user writes.
    fn name(self) -> &'static str;

    /// Why `text` names no variant (by default: the names to use).
    fn unknown(text: &str) -> String {
        let names: Vec<&str> = Self::all().iter().map(|choice| choice.name()).collect();
        let (last, rest) = names.split_last().unwrap_or((&"", &[]));
        let listed = if rest.is_empty() {
            (*last).to_owned()
        } else {
            format!("{} or {last}", rest.join(", "))
        };
        format!("unknown {} {text:?}: use {listed}", Self::WHAT)
    }
}

impl<T: Named> Kind for OneOf<T> {
    type Value = T;
    const PLACEHOLDER: &'static str = "NAME";

    fn parse(text: &str) -> Result<T, String> {
        let text = text.trim();
        T::all()
            .iter()
            .copied()
            .find(|choice| choice.name() == text)
            .ok_or_else(|| T::unknown(text))
    }

    fn show(value: &T) -> String {
        value.name().to_owned()
    }

    fn choices() -> Vec<&'static str> {
        T::all().iter().map(|choice| choice.name()).collect()
    }
}

/// On or off: the flag alone is on; a value is `true`/`false` (also `on`/`off`, `yes`/`no`,
/// `1`/`0`), and in TOML a boolean.
pub(crate) struct Switch;

impl Kind for Switch {
    type Value = bool;
    const PLACEHOLDER: &'static str = "BOOL";
    const SWITCH: bool = true;

    fn parse(text: &str) -> Result<bool, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Ok(true),
            "false" | "off" | "no" | "0" => Ok(false),
            _ => Err(format!("invalid switch {text:?}: use true or false")),
        }
    }

    fn from_toml(value: &DeValue<'_>) -> Result<bool, String> {
        match value {
            DeValue::Boolean(on) => Ok(*on),
            DeValue::String(s) => Self::parse(s),
            other => Err(format!(
                "expected a boolean, found {} {}",
                article(other.type_str()),
                other.type_str()
            )),
        }
    }

    fn show(value: &bool) -> String {
        value.to_string()
    }
}

impl Named for Engine {
    const WHAT: &'static str = "engine";

    fn all() -> &'static [Self] {
        Engine::ALL
    }

    fn name(self) -> &'static str {
        self.as_str()
    }

    /// Says when the engine exists but this build was made without its feature.
    fn unknown(text: &str) -> String {
        match text.parse::<Engine>() {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        }
    }
}

impl Named for LogFormat {
    const WHAT: &'static str = "log format";

    fn all() -> &'static [Self] {
        &[LogFormat::Human, LogFormat::Json]
    }

    fn name(self) -> &'static str {
        match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml_value(text: &str) -> DeValue<'_> {
        DeValue::parse(text).unwrap().into_inner()
    }

    #[test]
    fn toml_numbers_read_as_their_digits() {
        assert_eq!(
            Duration::from_toml(&toml_value("3")),
            Ok(StdDuration::from_secs(3))
        );
        assert_eq!(
            Duration::from_toml(&toml_value("0.5")),
            Ok(StdDuration::from_millis(500))
        );
        assert_eq!(Size::from_toml(&toml_value("0x400")), Ok(1024));
        assert_eq!(Size::from_toml(&toml_value("\"1MiB\"")), Ok(1 << 20));
        assert_eq!(Count::<u32>::from_toml(&toml_value("1_000")), Ok(1000));
        let err = Duration::from_toml(&toml_value("true")).unwrap_err();
        assert!(err.contains("found a boolean"), "{err}");
    }

    #[test]
    fn networks_read_from_a_string_or_an_array() {
        let two: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        assert_eq!(Networks::parse("10.0.0.0/8, ::1"), Ok(two.clone()));
        assert_eq!(
            Networks::from_toml(&toml_value("\"10.0.0.0/8,::1\"")),
            Ok(two.clone())
        );
        assert_eq!(
            Networks::from_toml(&toml_value("[\"10.0.0.0/8\", \"::1\"]")),
            Ok(two.clone())
        );
        assert_eq!(Networks::from_toml(&toml_value("[]")), Ok(vec![]));
        assert!(Networks::from_toml(&toml_value("[1]")).is_err());
        assert!(Networks::parse("10.0.0.0/99").is_err());
        assert_eq!(
            Networks::join([two[..1].to_vec(), two[1..].to_vec()].into_iter()),
            Some(two)
        );
    }

    #[test]
    fn counts_fit_their_type() {
        assert_eq!(Count::<u32>::parse("4096"), Ok(4096));
        assert!(Count::<u32>::parse("0").is_err());
        assert!(Count::<u32>::parse("99999999999").is_err());
    }

    #[test]
    fn names_list_the_choices() {
        assert_eq!(OneOf::<LogFormat>::parse("json"), Ok(LogFormat::Json));
        let err = OneOf::<Engine>::parse("warp-drive").unwrap_err();
        assert_eq!(
            err,
            format!(
                "unknown engine \"warp-drive\": use {}",
                Engine::compiled_names()
            )
        );
    }

    #[test]
    fn defaults_show_as_written() {
        assert_eq!(Size::show(&(64 << 20)), "64MiB");
        assert_eq!(Size::show(&512), "512B");
        assert_eq!(Duration::show(&StdDuration::from_secs(30)), "30s");
        assert_eq!(Duration::show(&StdDuration::from_millis(1500)), "1s 500ms");
    }

    #[test]
    fn switches_read_words_and_booleans() {
        assert_eq!(Switch::parse("on"), Ok(true));
        assert_eq!(Switch::parse("FALSE"), Ok(false));
        assert!(Switch::parse("maybe").is_err());
        assert_eq!(Switch::from_toml(&toml_value("true")), Ok(true));
        assert_eq!(Switch::from_toml(&toml_value("\"off\"")), Ok(false));
        let err = Switch::from_toml(&toml_value("1")).unwrap_err();
        assert!(
            err.contains("expected a boolean, found an integer"),
            "{err}"
        );
    }

    #[test]
    fn instance_ids_are_checked() {
        assert_eq!(InstanceId::parse("eu-1"), Ok("eu-1".to_owned()));
        assert!(InstanceId::parse("a b/c").is_err());
    }
}
