//! The client config file (`kilnconfig`): named contexts, like kubeconfig.
//! It holds client keys, so it is written 0600.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfig {
    /// The context used when `--context` is not given.
    pub context: String,
    /// Contexts by name.
    pub contexts: BTreeMap<String, Context>,
}

/// Where to connect and with which credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Context {
    /// Addresses kilnctl connects to.
    pub endpoints: Vec<String>,
    /// Nodes the calls target (default `-n`).
    pub nodes: Vec<String>,
    /// PEM machine CA: the node's API certificate must chain to it.
    pub ca: String,
    /// PEM client certificate; its Organization is the role.
    pub crt: String,
    /// PEM client key. Secret.
    pub key: String,
}
