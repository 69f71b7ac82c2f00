//! The machine config as apid uses it: parsed and validated by kiln-config,
//! with the few questions the API asks of it.

use kiln_config::{Apply, MachineConfig};

/// A validated machine config.
pub struct NodeConfig(MachineConfig);

/// One changed field, for ApplyConfiguration's answer.
pub struct FieldChange {
    pub path: String,
    pub needs_reboot: bool,
}

impl NodeConfig {
    /// Parses and validates a document; the error lists every problem, each
    /// with its field path.
    pub fn parse(data: &[u8]) -> Result<NodeConfig, String> {
        let text =
            std::str::from_utf8(data).map_err(|e| format!("the config is not UTF-8 text: {e}"))?;
        MachineConfig::from_yaml(text)
            .map(NodeConfig)
            .map_err(|e| e.to_string())
    }

    /// The fields that differ in `new`, and which of them need a reboot.
    pub fn changes_to(&self, new: &NodeConfig) -> Result<Vec<FieldChange>, String> {
        let diff = kiln_config::diff(&self.0, &new.0).map_err(|e| e.to_string())?;
        Ok(diff
            .changes
            .into_iter()
            .map(|c| FieldChange {
                path: c.path.to_string(),
                needs_reboot: c.apply == Apply::Reboot,
            })
            .collect())
    }

    /// Whether `new` changes apid's own TLS set-up (CA or certificate names),
    /// so the server must restart to use it.
    pub fn api_identity_differs(&self, new: &NodeConfig) -> bool {
        self.0.machine != new.0.machine
    }

    /// The config with its secrets replaced, as YAML.
    pub fn redacted_yaml(&self) -> Result<Vec<u8>, String> {
        self.0
            .redacted()
            .to_yaml()
            .map(String::into_bytes)
            .map_err(|e| e.to_string())
    }

    /// Extra names for the API certificate.
    pub fn cert_sans(&self) -> Vec<String> {
        self.0.machine.cert_sans.clone()
    }

    /// The machine CA certificate and key, PEM.
    pub fn machine_ca(&self) -> (&str, &str) {
        (&self.0.machine.ca.cert, &self.0.machine.ca.key)
    }
}
