//! The instance group: what names this instance, and what it remembers of the connections that
//! closed; and `INSTANCE_ID`, the reference's variable for the name.

use wscope_core::RegistryConfig;

use super::declare::declare_group;
use super::error::ConfigError;
use super::kind;

declare_group! {
    /// This instance's name, and how many closed connections it remembers.
    pub struct Instance (PartialInstance) "Instance" {
        /// Names this instance in ids, stats and health; `INSTANCE_ID` is read after
        /// `WSCOPE_INSTANCE_ID`.
        instance_id: String as kind::InstanceId = wscope_core::host_instance_id();
        /// How many recently closed connections `GET /api/closed` keeps (0 = none).
        recent_closed: usize as kind::Limit<usize> = RegistryConfig::DEFAULT_RECENT_CLOSED;
    }
}

impl Instance {
    /// `config` with this instance's name and memory of closed connections.
    pub fn configure_registry(&self, config: RegistryConfig) -> RegistryConfig {
        config
            .instance_id(self.instance_id.clone())
            .recent_closed(self.recent_closed)
    }
}

impl PartialInstance {
    /// What `INSTANCE_ID` sets, read after the flags and their variables and before the file: the
    /// instance id, unless `flags` set it already (like a `WSCOPE_*` variable, it is not read
    /// when a flag overrides it).
    pub(crate) fn from_reference_env(flags: &Self) -> Result<Self, ConfigError> {
        let instance_id = match flags.instance_id {
            Some(_) => None,
            None => wscope_core::instance_id_from_env().map_err(ConfigError::InstanceIdEnv)?,
        };
        Ok(Self {
            instance_id,
            ..Self::default()
        })
    }
}
