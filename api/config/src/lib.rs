//! The Kiln machine config: one versioned YAML document (`apiVersion:
//! kiln.dev/v1alpha1`, `kind: MachineConfig`) shared by the node and kilnctl.
//!
//! - [`MachineConfig::from_yaml`] parses and validates; errors name the field
//!   path and the problem, and validation reports every problem at once.
//! - [`MachineConfig::redacted`] hides secrets from non-admin readers.
//! - [`diff`] lists changed fields and whether each applies live or needs a
//!   reboot (the API's dry-run).
//! - [`json_schema`] is the document's JSON Schema (`docs/machine-config.schema.json`).

mod diff;
mod error;
mod model;
mod network;
mod path;
mod redact;
mod validate;

pub use diff::{diff, Apply, Change, ChangeKind, Diff, BOOT_ONLY_SYSCTLS};
pub use error::{ConfigError, FieldError, ParseError, Problem, ValidationErrors};
pub use model::*;
pub use network::{Bond, BondMode, Dns, Interface, Network, Route, Vlan};
pub use path::FieldPath;
pub use redact::REDACTED;
pub use validate::validate;

use serde::Deserialize;

/// Skips a section equal to its default when serialising, so a written
/// config holds only what was set.
pub(crate) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Just the header, read first: a document of another version or kind is
/// refused as such, not with a confusing error about its fields.
#[derive(Deserialize)]
struct Header {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
}

impl MachineConfig {
    /// A config with the required sections and every other one at its
    /// default (not yet validated).
    pub fn new(cluster: Cluster, machine: Machine) -> Self {
        Self {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            hostname: None,
            network: Network::default(),
            time: Time::default(),
            kubelet: Kubelet::default(),
            kube_proxy: KubeProxy::default(),
            registries: Registries::default(),
            install: None,
            sysctls: std::collections::BTreeMap::new(),
            kernel: Kernel::default(),
            cluster,
            machine,
        }
    }

    /// Parses and validates a YAML document.
    pub fn from_yaml(yaml: &str) -> Result<Self, ConfigError> {
        if let Ok(header) = serde_norway::from_str::<Header>(yaml) {
            let mut errors = Vec::new();
            let root = FieldPath::root();
            if let Some(found) = header.api_version.filter(|v| v != API_VERSION) {
                let problem = Problem::Unsupported {
                    expected: API_VERSION,
                    found,
                };
                errors.push(FieldError {
                    path: root.key("apiVersion"),
                    problem,
                });
            }
            if let Some(found) = header.kind.filter(|k| k != KIND) {
                let problem = Problem::Unsupported {
                    expected: KIND,
                    found,
                };
                errors.push(FieldError {
                    path: root.key("kind"),
                    problem,
                });
            }
            if !errors.is_empty() {
                return Err(ValidationErrors(errors).into());
            }
        }
        let de = serde_norway::Deserializer::from_str(yaml);
        let config: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let message = e.inner().to_string();
            // serde_norway starts its messages with its own (shorter) path;
            // ours is already in front.
            let message = match message.split_once(": ") {
                Some((prefix, rest)) if e.path().to_string().starts_with(prefix) => {
                    rest.to_string()
                }
                _ => message,
            };
            ParseError {
                path: FieldPath::from_serde(e.path()),
                message,
            }
        })?;
        validate(&config)?;
        Ok(config)
    }

    /// The document as YAML (fields left at their defaults are omitted).
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        serde_norway::to_string(self).map_err(|e| ConfigError::Serialize(e.to_string()))
    }
}

/// The JSON Schema of [`MachineConfig`], pretty-printed with a final newline
/// and keys sorted, so the checked-in file does not depend on whether some
/// other crate turned on serde_json's `preserve_order`.
pub fn json_schema() -> Result<String, ConfigError> {
    let schema = schemars::schema_for!(MachineConfig);
    let value = serde_json::to_value(&schema).map_err(|e| ConfigError::Serialize(e.to_string()))?;
    serde_json::to_string_pretty(&sorted(value))
        .map(|s| s + "\n")
        .map_err(|e| ConfigError::Serialize(e.to_string()))
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}
