//! A setting as a clap argument: its flag and environment variable, its help line with the
//! default, and a value parser that names where a bad value came from.

use std::ffi::OsStr;
use std::marker::PhantomData;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::kind::Kind;

/// Spells a key (`admin_listen`) as a flag (`admin-listen`, with `sep` `-`) or as an environment
/// variable (`WSCOPE_ADMIN_LISTEN`, with a prefix, `upper` and `sep` `_`) at compile time: clap
/// takes `&'static str` names, and its derive has no prefix for environment variables.
pub(crate) const fn respell<const N: usize>(
    prefix: &str,
    key: &str,
    upper: bool,
    sep: u8,
) -> [u8; N] {
    let (prefix, key) = (prefix.as_bytes(), key.as_bytes());
    assert!(prefix.len() + key.len() == N, "N is the spelled length");
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        let b = if i < prefix.len() {
            prefix[i]
        } else {
            match key[i - prefix.len()] {
                b'_' => sep,
                b if upper => b.to_ascii_uppercase(),
                b => b,
            }
        };
        out[i] = b;
        i += 1;
    }
    out
}

/// [`respell`] as a `&'static str`: `spelled!("WSCOPE_", "admin_listen", true, b'_')`.
macro_rules! spelled {
    ($prefix:literal, $key:expr, $upper:literal, $sep:literal) => {{
        const KEY: &str = $key;
        const BYTES: [u8; $prefix.len() + KEY.len()] =
            $crate::config::flag::respell($prefix, KEY, $upper, $sep);
        const NAME: &str = match ::std::str::from_utf8(&BYTES) {
            Ok(name) => name,
            Err(_) => panic!("keys are ASCII"),
        };
        NAME
    }};
}
pub(crate) use spelled;

/// What a setting is called on the command line.
pub(crate) struct Names {
    /// The clap id (the resolved field's name).
    pub id: &'static str,
    /// The flag, without `--`.
    pub long: &'static str,
    /// The environment variable.
    pub env: &'static str,
}

/// The argument of one setting of kind `K`.
pub(crate) fn arg<K: Kind>(
    names: Names,
    heading: &'static str,
    doc: &[&str],
    default: K::Value,
) -> Arg {
    let about: Vec<&str> = doc.iter().map(|line| line.trim()).collect();
    // The doc is a sentence; in `--help` the default follows it.
    let about = about.join(" ");
    let about = about.strip_suffix('.').unwrap_or(&about);
    let arg = Arg::new(names.id)
        .long(names.long)
        .env(names.env)
        .value_name(K::PLACEHOLDER)
        .value_parser(Parser::<K>(PhantomData))
        .action(if K::REPEATABLE {
            ArgAction::Append
        } else {
            ArgAction::Set
        })
        .help_heading(heading)
        // A secret set in the environment must not show in `--help`.
        .hide_env_values(K::SECRET)
        .help(format!("{about} [default: {}]", K::show(&default)));
    if K::SWITCH {
        // `--flag` is on; a value must follow `=` so that a switch never takes the next word.
        arg.num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
    } else {
        arg
    }
}

/// What the command line (or the environment) gave for the setting `id`, if anything.
pub(crate) fn given<K: Kind>(
    matches: &ArgMatches,
    id: &str,
) -> Result<Option<K::Value>, clap::Error> {
    let values = matches
        .try_get_many::<K::Value>(id)
        .map_err(|e| clap::Error::raw(ErrorKind::InvalidValue, format!("{id}: {e}")))?;
    Ok(values.and_then(|values| K::join(values.cloned())))
}

/// Reads a flag's value as `K` does; a bad value is one line naming the flag, or the variable
/// and the flag when it came from the environment.
struct Parser<K>(PhantomData<fn() -> K>);

impl<K> Clone for Parser<K> {
    fn clone(&self) -> Self {
        Self(PhantomData)
    }
}

impl<K: Kind> TypedValueParser for Parser<K> {
    type Value = K::Value;

    fn parse_ref(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<K::Value, clap::Error> {
        self.parse_ref_(cmd, arg, value, ValueSource::CommandLine)
    }

    fn parse_ref_(
        &self,
        _cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
        source: ValueSource,
    ) -> Result<K::Value, clap::Error> {
        let text = value
            .to_str()
            .ok_or_else(|| format!("not UTF-8: {value:?}"));
        text.and_then(K::parse).map_err(|why| {
            let flag = arg.and_then(Arg::get_long).unwrap_or_default();
            let from = match (source, arg.and_then(Arg::get_env)) {
                (ValueSource::EnvVariable, Some(env)) => {
                    format!("{} (for --{flag})", env.to_string_lossy())
                }
                _ => format!("--{flag}"),
            };
            clap::Error::raw(ErrorKind::ValueValidation, format!("{from}: {why}"))
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        let choices = K::choices();
        if choices.is_empty() {
            return None;
        }
        Some(Box::new(choices.into_iter().map(PossibleValue::new)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_respelled_at_compile_time() {
        assert_eq!(spelled!("", "admin_listen", false, b'-'), "admin-listen");
        assert_eq!(
            spelled!("WSCOPE_", "admin_listen", true, b'_'),
            "WSCOPE_ADMIN_LISTEN"
        );
    }
}
