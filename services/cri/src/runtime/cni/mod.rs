//! CNI (spec 1.0): a pod's network is set up by running the plugin chain of
//! the first network configuration in the conf dir with ADD, checked with
//! CHECK and torn down with DEL. The ADD result and the exact configuration
//! used are cached with the sandbox (`Attachment`), so DEL runs with them
//! even after the conf dir changed or the daemon restarted.
//!
//! Modules: `config` (finding and validating the configuration), `exec`
//! (running one plugin).

mod config;
mod exec;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use config::NetworkList;
use exec::Call;

/// The pod's interface name, as every runtime uses.
const IFNAME: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI conf dir {dir}: {source}")]
    ConfDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("no network configuration (*.conflist, *.conf, *.json) in {dir}")]
    NoConfig { dir: PathBuf },
    #[error("CNI config {path}: {source}")]
    ConfFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CNI config {path}: {problem}")]
    BadConfig { path: PathBuf, problem: String },
    #[error("CNI plugin {plugin:?} not found in {dir}")]
    PluginMissing { plugin: String, dir: PathBuf },
    #[error("CNI plugin {plugin}: {source}")]
    Spawn {
        plugin: String,
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} {command} timed out after {secs} s")]
    Timeout {
        plugin: String,
        command: String,
        secs: u64,
    },
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}")]
    Plugin {
        plugin: String,
        command: String,
        code: u64,
        msg: String,
    },
    #[error("CNI plugin {plugin} printed an invalid result: {problem}")]
    BadResult { plugin: String, problem: String },
    #[error("encoding a CNI request: {0}")]
    Encode(String),
}

/// Where plugins and configurations are.
#[derive(Debug, Clone)]
pub struct Cni {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
}

/// Who the pod is, for `CNI_ARGS` (the K8S_* keys plugins such as Calico read).
pub struct PodRef<'a> {
    pub sandbox_id: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
}

/// A port mapping, in the `portMappings` capability's form.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    pub protocol: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// A pod's attachment to a network: what DEL and CHECK need, cached on disk.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    pub network: NetworkList,
    pub netns: PathBuf,
    pub ifname: String,
    pub args: String,
    pub port_mappings: Vec<PortMapping>,
    pub result: Value,
}

impl Attachment {
    /// The pod's IPs from the result: those on the pod's interface (or on
    /// no named interface), IPv4 first.
    pub fn ips(&self) -> Vec<IpAddr> {
        let interfaces = self.result.get("interfaces").and_then(Value::as_array);
        let on_pod = |ip: &Value| match ip.get("interface").and_then(Value::as_u64) {
            None => true,
            Some(i) => interfaces
                .and_then(|ifs| ifs.get(i as usize))
                .is_none_or(|itf| {
                    itf.get("sandbox")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
                }),
        };
        let mut ips: Vec<IpAddr> = self
            .result
            .get("ips")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|ip| on_pod(ip))
            .filter_map(|ip| ip.get("address").and_then(Value::as_str))
            .filter_map(|a| a.split('/').next()?.parse().ok())
            .collect();
        ips.sort_by_key(|ip| ip.is_ipv6());
        ips
    }
}

impl Cni {
    /// The configuration ADD would use now (Status reports NetworkReady by it).
    pub fn network(&self) -> Result<NetworkList, CniError> {
        NetworkList::load_first(&self.conf_dir)
    }

    /// A pod's attachment before ADD: saved first, so that a crash during
    /// ADD still leaves what DEL needs.
    pub fn attachment(
        network: NetworkList,
        netns: &Path,
        pod: &PodRef<'_>,
        port_mappings: Vec<PortMapping>,
    ) -> Attachment {
        Attachment {
            network,
            netns: netns.to_path_buf(),
            ifname: IFNAME.into(),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
                pod.namespace, pod.name, pod.sandbox_id, pod.uid
            ),
            port_mappings,
            result: Value::Null,
        }
    }

    /// Runs the chain with ADD, each plugin getting the previous one's
    /// result, and stores the last result in `att`. On failure the caller
    /// tears down with `del`.
    pub async fn add(&self, sandbox_id: &str, att: &mut Attachment) -> Result<(), CniError> {
        let netns = att.netns.to_string_lossy().into_owned();
        let call = self.call("ADD", sandbox_id, &netns, att);
        let mut prev = Value::Null;
        for plugin in &att.network.plugins {
            let conf = plugin_conf(att, plugin, &prev);
            prev = exec::invoke(&call, &conf).await?;
        }
        att.result = prev;
        Ok(())
    }

    /// Runs CHECK along the chain with the cached result (skipped when the
    /// network disables it or predates CHECK).
    pub async fn check(&self, sandbox_id: &str, att: &Attachment) -> Result<(), CniError> {
        if att.network.disable_check || version_before_check(&att.network.cni_version) {
            return Ok(());
        }
        let netns = att.netns.to_string_lossy().into_owned();
        let call = self.call("CHECK", sandbox_id, &netns, att);
        for plugin in &att.network.plugins {
            exec::invoke(&call, &plugin_conf(att, plugin, &att.result)).await?;
        }
        Ok(())
    }

    /// Runs DEL in reverse order with the cached configuration and result.
    /// `netns_alive` false passes an empty `CNI_NETNS`, as the spec asks for a
    /// namespace that is already gone.
    pub async fn del(
        &self,
        sandbox_id: &str,
        att: &Attachment,
        netns_alive: bool,
    ) -> Result<(), CniError> {
        let netns = if netns_alive {
            att.netns.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let call = self.call("DEL", sandbox_id, &netns, att);
        for plugin in att.network.plugins.iter().rev() {
            exec::invoke(&call, &plugin_conf(att, plugin, &att.result)).await?;
        }
        Ok(())
    }

    fn call<'a>(
        &'a self,
        command: &'a str,
        sandbox_id: &'a str,
        netns: &'a str,
        att: &'a Attachment,
    ) -> Call<'a> {
        Call {
            command,
            container_id: sandbox_id,
            netns,
            ifname: &att.ifname,
            args: &att.args,
            bin_dir: &self.bin_dir,
        }
    }
}

/// One plugin's stdin: its own object plus the network's name and version,
/// the previous result, and `runtimeConfig` for the capabilities it declares.
fn plugin_conf(att: &Attachment, plugin: &Map<String, Value>, prev: &Value) -> Map<String, Value> {
    let mut conf = plugin.clone();
    conf.insert("name".into(), Value::String(att.network.name.clone()));
    conf.insert(
        "cniVersion".into(),
        Value::String(att.network.cni_version.clone()),
    );
    if !prev.is_null() {
        conf.insert("prevResult".into(), prev.clone());
    }
    let wants_ports = plugin
        .get("capabilities")
        .and_then(|c| c.get("portMappings"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if wants_ports && !att.port_mappings.is_empty() {
        let mut rc = Map::new();
        rc.insert(
            "portMappings".into(),
            serde_json::to_value(&att.port_mappings).unwrap_or(Value::Null),
        );
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    conf
}

/// CHECK exists from CNI 0.4.0 on.
fn version_before_check(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    major == 0 && minor < 4
}
