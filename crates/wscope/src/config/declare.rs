//! `declare_settings!`: turns one declaration per setting into everything `wscope serve` needs
//! of it — a field of [`ServeConfig`](super::ServeConfig) and of
//! [`PartialConfig`](super::PartialConfig), a flag with its `WSCOPE_` variable and help line, a
//! TOML key, a default — so that no list of settings is written twice.
//!
//! Each setting reads
//!
//! ```text
//! /// Help line (also the field's doc).
//! #[key = "trusted_proxy"]        // optional: a key other than the field's name
//! field: Type as kind::Kind = default_expression;
//! ```
//!
//! The key (the field's name unless given) is the TOML key; with `-` for `_` it is the flag,
//! and in upper case after `WSCOPE_` the environment variable. The kind says how the value is
//! read from text and how the default is shown ([`Kind`](super::kind::Kind)).

/// The key of a setting: its field's name, or the one given with `#[key = "..."]`.
macro_rules! key {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident, $key:literal) => {
        $key
    };
}
pub(crate) use key;

/// See the module documentation.
macro_rules! declare_settings {
    ($(
        $heading:literal {$(
            $(#[doc = $doc:literal])+
            $(#[key = $key:literal])?
            $field:ident: $ty:ty as $kind:ty = $default:expr;
        )+}
    )+) => {
        /// The settings one source gives — the flags with their `WSCOPE_*` variables,
        /// `INSTANCE_ID`, or the `--config` file; `None` where that source says nothing.
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct PartialConfig {$($(
            $(#[doc = $doc])+
            pub $field: Option<$ty>,
        )+)+}

        /// Every setting of `wscope serve`, resolved.
        #[derive(Clone, Debug, PartialEq)]
        pub struct ServeConfig {$($(
            $(#[doc = $doc])+
            pub $field: $ty,
        )+)+}

        impl PartialConfig {
            /// Every key of the file, in declaration order.
            pub(crate) const KEYS: &[&str] = &[$($(
                $crate::config::declare::key!($field $(, $key)?),
            )+)+];

            /// Keeps what `self` sets and takes the rest from `lower`.
            pub fn or(self, lower: Self) -> Self {
                Self {$($(
                    $field: self.$field.or(lower.$field),
                )+)+}
            }

            /// Fills what no source set with its default.
            pub fn or_defaults(self) -> ServeConfig {
                ServeConfig {$($(
                    $field: self.$field.unwrap_or_else(|| $default),
                )+)+}
            }

            /// Sets the setting whose key is `key` from a TOML value; `None` if no setting has
            /// that key.
            pub(crate) fn set_from_toml(
                &mut self,
                key: &str,
                value: &toml::de::DeValue<'_>,
            ) -> Option<Result<(), String>> {
                $($(
                    if key == $crate::config::declare::key!($field $(, $key)?) {
                        let read = <$kind as $crate::config::kind::Kind>::from_toml(value);
                        return Some(read.map(|v| self.$field = Some(v)));
                    }
                )+)+
                None
            }
        }

        impl clap::FromArgMatches for PartialConfig {
            fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
                Ok(Self {$($(
                    $field: $crate::config::flag::given::<$kind>(matches, stringify!($field))?,
                )+)+})
            }

            fn update_from_arg_matches(
                &mut self,
                matches: &clap::ArgMatches,
            ) -> Result<(), clap::Error> {
                *self = Self::from_arg_matches(matches)?.or(std::mem::take(self));
                Ok(())
            }
        }

        impl clap::Args for PartialConfig {
            fn augment_args(cmd: clap::Command) -> clap::Command {
                cmd $($(.arg($crate::config::flag::arg::<$kind>(
                    $crate::config::flag::Names {
                        id: stringify!($field),
                        long: $crate::config::flag::spelled!(
                            "",
                            $crate::config::declare::key!($field $(, $key)?),
                            false,
                            b'-'
                        ),
                        env: $crate::config::flag::spelled!(
                            "WSCOPE_",
                            $crate::config::declare::key!($field $(, $key)?),
                            true,
                            b'_'
                        ),
                    },
                    $heading,
                    &[$($doc),+],
                    $default,
                )))+)+
            }

            fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
                Self::augment_args(cmd)
            }
        }
    };
}
pub(crate) use declare_settings;
