//! `declare_group!` and `declare_settings!`: one declaration per setting, in the group it belongs
//! to, makes everything a subcommand needs of it — a field of the group and of its partial, a
//! flag with its `WSCOPE_` variable and help line (under the group's heading), a TOML key, a
//! default — and one list of groups makes a subcommand's settings, so that no setting is written
//! twice and every subcommand that takes a group takes it whole.
//!
//! Each setting of a group reads
//!
//! ```text
//! /// Help line (also the field's doc).
//! #[key = "trusted_proxy"]        // optional: a key other than the field's name
//! field: Type as kind::Kind = default_expression;
//! ```
//!
//! The key (the field's name unless given) is the TOML key; with `-` for `_` it is the flag,
//! and in upper case after `WSCOPE_` the environment variable. The kind says how the value is
//! read from text and how the default is shown ([`Kind`](super::kind::Kind)). The TOML file is
//! flat whatever the groups: a key is a setting's, never a group's.

use toml::de::DeValue;

/// What one source gives of some settings — a group's, or a subcommand's made of groups: the
/// flags with their `WSCOPE_*` variables, `INSTANCE_ID`, or the `--config` file; `None` where
/// that source says nothing. The file reader and the subcommands' settings handle any of them
/// through this.
pub(crate) trait Partial: Default + clap::Args + clap::FromArgMatches {
    /// The settings once every one has a value.
    type Resolved;

    /// Every key of the file, in declaration order.
    fn keys() -> Vec<&'static str>;

    /// Keeps what `self` sets and takes the rest from `lower`.
    fn or(self, lower: Self) -> Self;

    /// Fills what no source set with its default.
    fn or_defaults(self) -> Self::Resolved;

    /// Sets the setting whose key is `key` from a TOML value; `None` if no setting has that key.
    fn set_from_toml(&mut self, key: &str, value: &DeValue<'_>) -> Option<Result<(), String>>;
}

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

/// Declares a group of settings under one `--help` heading: the group (every setting resolved,
/// its `Default` each setting's default) and its partial (what one source sets). See the module
/// documentation for the settings' lines.
macro_rules! declare_group {
    (
        $(#[doc = $gdoc:literal])+
        $vis:vis struct $group:ident ($partial:ident) $heading:literal {$(
            $(#[doc = $doc:literal])+
            $(#[key = $key:literal])?
            $field:ident: $ty:ty as $kind:ty = $default:expr;
        )+}
    ) => {
        $(#[doc = $gdoc])+
        #[derive(Clone, Debug, PartialEq)]
        $vis struct $group {$(
            $(#[doc = $doc])+
            pub $field: $ty,
        )+}

        #[doc = concat!("What one source sets of [`", stringify!($group), "`]; `None` where it says nothing.")]
        #[derive(Clone, Debug, Default, PartialEq)]
        $vis struct $partial {$(
            $(#[doc = $doc])+
            pub $field: Option<$ty>,
        )+}

        impl Default for $group {
            /// Every setting at its default (no flag, variable or file read).
            fn default() -> Self {
                <$partial as $crate::config::declare::Partial>::or_defaults($partial::default())
            }
        }

        impl $crate::config::declare::Partial for $partial {
            type Resolved = $group;

            fn keys() -> Vec<&'static str> {
                vec![$($crate::config::declare::key!($field $(, $key)?)),+]
            }

            fn or(self, lower: Self) -> Self {
                Self {$(
                    $field: self.$field.or(lower.$field),
                )+}
            }

            fn or_defaults(self) -> $group {
                $group {$(
                    $field: self.$field.unwrap_or_else(|| $default),
                )+}
            }

            fn set_from_toml(
                &mut self,
                key: &str,
                value: &toml::de::DeValue<'_>,
            ) -> Option<Result<(), String>> {
                $(
                    if key == $crate::config::declare::key!($field $(, $key)?) {
                        let read = <$kind as $crate::config::kind::Kind>::from_toml(value);
                        return Some(read.map(|v| self.$field = Some(v)));
                    }
                )+
                None
            }
        }

        impl clap::FromArgMatches for $partial {
            fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
                Ok(Self {$(
                    $field: $crate::config::flag::given::<$kind>(matches, stringify!($field))?,
                )+})
            }

            fn update_from_arg_matches(
                &mut self,
                matches: &clap::ArgMatches,
            ) -> Result<(), clap::Error> {
                let given = <Self as clap::FromArgMatches>::from_arg_matches(matches)?;
                *self = $crate::config::declare::Partial::or(given, std::mem::take(self));
                Ok(())
            }
        }

        impl clap::Args for $partial {
            fn augment_args(cmd: clap::Command) -> clap::Command {
                cmd $(.arg($crate::config::flag::arg::<$kind>(
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
                )))+
            }

            fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
                <Self as clap::Args>::augment_args(cmd)
            }
        }
    };
}
pub(crate) use declare_group;

/// Declares a subcommand's settings as a list of groups, flattened: its flags are the groups'
/// flags, in this order (and so are `--help`'s headings), its file keys the groups' keys. Makes
/// the settings (a field per group) and their partial (a partial per group).
macro_rules! declare_settings {
    (
        $(#[doc = $doc:literal])+
        $vis:vis struct $settings:ident ($partial:ident) {$(
            $(#[doc = $gdoc:literal])+
            $field:ident: $group:ident ($group_partial:ident),
        )+}
    ) => {
        $(#[doc = $doc])+
        #[derive(Clone, Debug, Default, PartialEq)]
        $vis struct $settings {$(
            $(#[doc = $gdoc])+
            pub $field: $group,
        )+}

        #[doc = concat!("What one source sets of [`", stringify!($settings), "`], group by group.")]
        #[derive(Clone, Debug, Default, PartialEq)]
        $vis struct $partial {$(
            $(#[doc = $gdoc])+
            pub $field: $group_partial,
        )+}

        impl $crate::config::declare::Partial for $partial {
            type Resolved = $settings;

            fn keys() -> Vec<&'static str> {
                let mut keys = Vec::new();
                $(keys.extend(<$group_partial as $crate::config::declare::Partial>::keys());)+
                keys
            }

            fn or(self, lower: Self) -> Self {
                Self {$(
                    $field: $crate::config::declare::Partial::or(self.$field, lower.$field),
                )+}
            }

            fn or_defaults(self) -> $settings {
                $settings {$(
                    $field: $crate::config::declare::Partial::or_defaults(self.$field),
                )+}
            }

            fn set_from_toml(
                &mut self,
                key: &str,
                value: &toml::de::DeValue<'_>,
            ) -> Option<Result<(), String>> {
                $(
                    let read =
                        $crate::config::declare::Partial::set_from_toml(&mut self.$field, key, value);
                    if read.is_some() {
                        return read;
                    }
                )+
                None
            }
        }

        impl clap::FromArgMatches for $partial {
            fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
                Ok(Self {$(
                    $field: clap::FromArgMatches::from_arg_matches(matches)?,
                )+})
            }

            fn update_from_arg_matches(
                &mut self,
                matches: &clap::ArgMatches,
            ) -> Result<(), clap::Error> {
                $(clap::FromArgMatches::update_from_arg_matches(&mut self.$field, matches)?;)+
                Ok(())
            }
        }

        impl clap::Args for $partial {
            fn augment_args(cmd: clap::Command) -> clap::Command {
                $(let cmd = <$group_partial as clap::Args>::augment_args(cmd);)+
                cmd
            }

            fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
                <Self as clap::Args>::augment_args(cmd)
            }
        }
    };
}
pub(crate) use declare_settings;
