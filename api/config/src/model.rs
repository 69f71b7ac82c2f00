//! The document's types. Field names are camelCase in YAML; every struct
//! refuses unknown fields so a typo is an error, never a silently ignored
//! setting.
//!
//! Values whose syntax is checked by [`crate::validate`] (addresses, names,
//! PEM) are kept as the strings the operator wrote: validation then reports
//! every bad value at once instead of stopping at the first, and a
//! serialised config reads back exactly as written.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::network::Network;

/// The only `apiVersion` this crate reads.
pub const API_VERSION: &str = "kiln.dev/v1alpha1";
/// The only `kind` this crate reads.
pub const KIND: &str = "MachineConfig";

/// A Kiln node's whole configuration: one YAML document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Kiln MachineConfig")]
// `cluster` and `machine` default when absent so validation reports every
// missing field; the schema still tells editors they are required.
#[schemars(extend("required" = ["apiVersion", "kind", "cluster", "machine"]))]
pub struct MachineConfig {
    /// Always `kiln.dev/v1alpha1`.
    pub api_version: String,
    /// Always `MachineConfig`.
    pub kind: String,
    /// The node's hostname (RFC 1123). Unset: `kiln-<machine id prefix>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Host networking. No interfaces listed: DHCP on the first link with carrier.
    #[serde(default, skip_serializing_if = "crate::is_default")]
    pub network: Network,
    /// Time synchronisation.
    #[serde(default, skip_serializing_if = "crate::is_default")]
    pub time: Time,
    /// The kubelet.
    #[serde(default, skip_serializing_if = "crate::is_default")]
    pub kubelet: Kubelet,
    /// kube-proxy.
    #[serde(default, skip_serializing_if = "crate::is_default")]
    pub kube_proxy: KubeProxy,
    /// Container image registries: mirrors, credentials, CAs.
    #[serde(default, skip_serializing_if = "crate::is_default")]
    pub registries: Registries,
    /// Where the OS is installed. Unset: the node runs from PXE or the disk it booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<Install>,
    /// Kernel parameters, `name: value` (e.g. `net.ipv4.ip_forward: "1"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// Kernel settings.
    #[serde(default, skip_serializing_if = "crate::is_default")]
    pub kernel: Kernel,
    /// How the node joins its Kubernetes cluster. Required.
    #[serde(default)]
    pub cluster: Cluster,
    /// The node's own identity for the machine API. Required.
    #[serde(default)]
    pub machine: Machine,
}

/// Time servers (NTP).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Time {
    /// NTP servers: host names or IP addresses, each optionally with `:port`
    /// (default 123). Empty: the servers DHCP (option 42) or `ip=` name;
    /// the image has no default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
}

/// Kubelet settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kubelet {
    /// Container image reference (`registry/name:tag` or `@sha256:…`). Unset: the image's pinned kubelet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The IP the node registers with. Unset: the first address of the default route's link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<String>,
    /// Node labels (Kubernetes label syntax).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Node taints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Extra command-line flags, `flag-name: value` (without the leading `--`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_args: BTreeMap<String, String>,
}

/// A Kubernetes node taint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    /// Label-key syntax.
    pub key: String,
    /// Label-value syntax; may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// What the scheduler does with pods that do not tolerate it.
    pub effect: TaintEffect,
}

/// A taint's effect, as Kubernetes spells it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum TaintEffect {
    /// Pods without a toleration are not scheduled here.
    NoSchedule,
    /// The scheduler avoids this node.
    PreferNoSchedule,
    /// Running pods without a toleration are evicted.
    NoExecute,
}

/// kube-proxy settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeProxy {
    /// Do not run kube-proxy (e.g. a CNI replaces it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Container image reference. Unset: the image's pinned kube-proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Extra command-line flags, `flag-name: value` (without the leading `--`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_args: BTreeMap<String, String>,
}

/// Container registries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Registries {
    /// Mirrors by registry host (`docker.io`, `registry.local:5000`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Credentials and CAs by registry host.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, RegistryConfig>,
}

/// The endpoints tried, in order, before the registry itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mirror {
    /// `http://` or `https://` URLs.
    pub endpoints: Vec<String>,
}

/// How to talk to one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryConfig {
    /// Credentials. Secret: redacted for non-admin readers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RegistryAuth>,
    /// PEM CA certificates trusted for this registry, in addition to the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// Registry credentials: a user name and password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryAuth {
    /// User name.
    pub username: String,
    /// Password or token. Secret.
    pub password: String,
}

/// Installation target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Install {
    /// Block device path under `/dev/` (prefer `/dev/disk/by-id/…`, stable across boots).
    pub disk: String,
}

/// Kernel settings applied at boot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kernel {
    /// Modules loaded at boot in addition to the image's, by name (e.g. `br_netfilter`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
}

/// Cluster join data. All three fields are required; they are checked by
/// validation (not by the parser) so a document missing several reports all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("required" = ["endpoint", "ca", "token"]))]
pub struct Cluster {
    /// The Kubernetes API server, `https://host[:port]`.
    #[serde(default)]
    pub endpoint: String,
    /// PEM CA certificate(s) of the Kubernetes API server.
    #[serde(default)]
    pub ca: String,
    /// Bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`. Secret.
    #[serde(default)]
    pub token: String,
}

/// The node's machine-API identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("required" = ["ca"]))]
pub struct Machine {
    /// The machine CA: it signs the node's API certificate and the clients' certificates.
    #[serde(default)]
    pub ca: MachineCa,
    /// Extra names and IPs in the node's API certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cert_sans: Vec<String>,
}

/// The machine CA certificate and key (PEM). Both required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("required" = ["cert", "key"]))]
pub struct MachineCa {
    /// PEM certificate; must be a CA.
    #[serde(default)]
    pub cert: String,
    /// PEM private key. Secret.
    #[serde(default)]
    pub key: String,
}
