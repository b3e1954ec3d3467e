//! The logging group: how log lines are written, and how often the stats lines are.

use std::time::Duration;

use wscope_core::RegistryConfig;

use super::declare::declare_group;
use super::kind::{self, Named};
use crate::logging::LogFormat;

declare_group! {
    /// The log lines' format and the stats lines' period.
    pub struct Logging (PartialLogging) "Logging" {
        /// Log line format (`RUST_LOG` sets the level).
        log_format: LogFormat as kind::OneOf<LogFormat> = LogFormat::default();
        /// How often to log the stats lines (0 = never).
        stats_interval: Duration as kind::Duration = RegistryConfig::DEFAULT_STATS_INTERVAL;
    }
}

impl Logging {
    /// `config` with this stats-line period.
    pub fn configure_registry(&self, config: RegistryConfig) -> RegistryConfig {
        config.stats_interval(self.stats_interval)
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
    use crate::config::kind::{Kind, OneOf};

    #[test]
    fn log_formats_are_named() {
        assert_eq!(OneOf::<LogFormat>::parse("json"), Ok(LogFormat::Json));
        let err = OneOf::<LogFormat>::parse("xml").unwrap_err();
        assert_eq!(err, "unknown log format \"xml\": use human or json");
    }
}
