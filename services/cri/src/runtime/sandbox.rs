//! The sandbox lifecycle: run (directory, namespaces, CNI ADD, record),
//! stop (CNI DEL with the cached attachment, namespaces unmounted) and
//! remove (stop, then the directory). `sandbox.json` is written last on
//! run: a sandbox directory without it is a creation that crashed, and is
//! torn down at the next start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::proto::v1::{NamespaceMode, PodSandboxConfig, Protocol};

use super::cni::{Attachment, Cni, PodRef, PortMapping};
use super::record::{self, SandboxRecord, State};
use super::{netns, new_id, now_ns, Runtime, RuntimeError};

/// A sandbox in memory (behind its own async lock).
pub struct Sandbox {
    pub record: SandboxRecord,
    pub config: PodSandboxConfig,
    pub attachment: Option<Attachment>,
    pub dir: PathBuf,
    pub ns_dir: PathBuf,
}

/// What status and list calls see of a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxView {
    pub record: SandboxRecord,
    pub config: PodSandboxConfig,
    pub netns: Option<PathBuf>,
}

impl Sandbox {
    pub fn view(&self) -> SandboxView {
        SandboxView {
            record: self.record.clone(),
            config: self.config.clone(),
            netns: netns::path(&self.ns_dir, "net"),
        }
    }
}

/// Files every container of the pod gets bind-mounted: `hostname`, and
/// `resolv.conf` when kubelet sent a DNS config.
pub const ETC_FILES: [(&str, &str); 2] = [
    ("hostname", "/etc/hostname"),
    ("resolv.conf", "/etc/resolv.conf"),
];

fn write_etc_files(
    dir: &Path,
    config: &PodSandboxConfig,
    host_network: bool,
) -> Result<(), RuntimeError> {
    let hostname = if host_network || config.hostname.is_empty() {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        config.hostname.clone()
    };
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        crate::fsutil::write_atomic(&path, text.as_bytes())
            .map_err(|source| RuntimeError::Io { path, source })
    };
    write("hostname", format!("{hostname}\n"))?;
    if let Some(dns) = &config.dns_config {
        let mut text = String::new();
        if !dns.searches.is_empty() {
            text += &format!("search {}\n", dns.searches.join(" "));
        }
        for server in &dns.servers {
            text += &format!("nameserver {server}\n");
        }
        if !dns.options.is_empty() {
            text += &format!("options {}\n", dns.options.join(" "));
        }
        write("resolv.conf", text)?;
    }
    Ok(())
}

/// kubelet's unique key for a sandbox.
pub(super) fn name_key(config: &PodSandboxConfig) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

fn validate(config: &PodSandboxConfig, handler: &str) -> Result<(), RuntimeError> {
    let invalid = |field, problem: &str| RuntimeError::Invalid {
        field,
        problem: problem.into(),
    };
    let m = config
        .metadata
        .as_ref()
        .ok_or_else(|| invalid("config.metadata", "is required"))?;
    for (field, value) in [
        ("config.metadata.name", &m.name),
        ("config.metadata.namespace", &m.namespace),
        ("config.metadata.uid", &m.uid),
    ] {
        if value.is_empty() {
            return Err(invalid(field, "must not be empty"));
        }
    }
    if !handler.is_empty() {
        return Err(invalid(
            "runtime_handler",
            "kiln-cri has only the default handler (\"\")",
        ));
    }
    for (i, p) in config.port_mappings.iter().enumerate() {
        if !(1..=65535).contains(&p.container_port) || !(0..=65535).contains(&p.host_port) {
            return Err(RuntimeError::Invalid {
                field: "config.port_mappings",
                problem: format!("entry {i}: ports must be in 1..=65535 (host port 0: none)"),
            });
        }
    }
    Ok(())
}

/// Namespace modes from the pod's security context (POD when absent).
fn host_modes(config: &PodSandboxConfig) -> (bool, bool) {
    let opts = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let node = NamespaceMode::Node as i32;
    (
        opts.is_some_and(|o| o.network == node),
        opts.is_some_and(|o| o.ipc == node),
    )
}

fn port_mappings(config: &PodSandboxConfig) -> Vec<PortMapping> {
    config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| PortMapping {
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: match Protocol::try_from(p.protocol) {
                Ok(Protocol::Udp) => "udp",
                Ok(Protocol::Sctp) => "sctp",
                _ => "tcp",
            }
            .into(),
            host_ip: p.host_ip.clone(),
        })
        .collect()
}

impl Runtime {
    /// RunPodSandbox: returns the new sandbox's ID.
    pub async fn run_sandbox(
        self: &Arc<Self>,
        config: PodSandboxConfig,
        handler: &str,
    ) -> Result<String, RuntimeError> {
        validate(&config, handler)?;
        let id = new_id()?;
        let key = name_key(&config);
        {
            let mut index = self.index();
            if let Some(other) = index.names.get(&key) {
                return Err(RuntimeError::AlreadyExists {
                    name: key,
                    id: other.clone(),
                });
            }
            index.names.insert(key.clone(), id.clone());
        }
        let dir = self.sandboxes_dir().join(&id);
        let ns_dir = self.ns_root().join(&id);
        match self.create(&id, config, &dir, &ns_dir).await {
            Ok(sandbox) => {
                let mut index = self.index();
                index
                    .by_id
                    .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(sandbox)));
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "pod sandbox creation failed; tearing down");
                if let Err(e2) =
                    teardown(&self.config.cni, &id, &dir, &ns_dir, OnDelError::Warn).await
                {
                    tracing::warn!(sandbox = %id, error = %e2, "teardown after a failed creation");
                }
                let _ = std::fs::remove_dir_all(&dir);
                self.index().names.remove(&key);
                Err(e)
            }
        }
    }

    async fn create(
        &self,
        id: &str,
        config: PodSandboxConfig,
        dir: &Path,
        ns_dir: &Path,
    ) -> Result<Sandbox, RuntimeError> {
        std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        record::save_config(dir, &config)?;
        let (host_network, host_ipc) = host_modes(&config);
        write_etc_files(dir, &config, host_network)?;
        // Host network pods keep the node's hostname too (kubelet's rule).
        let kinds = netns::Kinds {
            net: !host_network,
            ipc: !host_ipc,
            uts: !host_network,
        };
        let hostname = Some(config.hostname.clone()).filter(|h| !h.is_empty());
        let at = ns_dir.to_path_buf();
        tokio::task::spawn_blocking(move || netns::create(&at, kinds, hostname))
            .await
            .map_err(|e| RuntimeError::Task(e.to_string()))??;
        let mut attachment = None;
        let mut ips = Vec::new();
        if !host_network {
            let network = self.config.cni.network()?;
            let m = config.metadata.clone().unwrap_or_default();
            let pod = PodRef {
                sandbox_id: id,
                name: &m.name,
                namespace: &m.namespace,
                uid: &m.uid,
            };
            let mut att =
                Cni::attachment(network, &ns_dir.join("net"), &pod, port_mappings(&config));
            record::save_attachment(dir, &att)?;
            self.config.cni.add(id, &mut att).await?;
            record::save_attachment(dir, &att)?;
            ips = att.ips().iter().map(ToString::to_string).collect();
            attachment = Some(att);
        }
        let rec = SandboxRecord {
            id: id.to_string(),
            state: State::Ready,
            created_at: now_ns(),
            host_network,
            host_ipc,
            runtime_handler: String::new(),
            ips,
        };
        record::save(dir, &rec)?;
        tracing::info!(sandbox = %id, name = %name_key(&config), ips = ?rec.ips, "pod sandbox ready");
        Ok(Sandbox {
            record: rec,
            config,
            attachment,
            dir: dir.to_path_buf(),
            ns_dir: ns_dir.to_path_buf(),
        })
    }

    /// StopPodSandbox: releases the network and the namespaces. Idempotent.
    pub async fn stop_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let s = self.get(id)?;
        let mut s = s.lock().await;
        for c in self.containers_of(&s.record.id) {
            self.stop_container(&c, 0).await?;
        }
        stop_locked(&self.config.cni, &mut s).await
    }

    /// RemovePodSandbox: stops, then forgets the sandbox. Removing an
    /// unknown sandbox succeeds (CRI: the call is idempotent).
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let s = match self.get(id) {
            Ok(s) => s,
            Err(RuntimeError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut s = s.lock().await;
        for c in self.containers_of(&s.record.id) {
            self.remove_container(&c).await?;
        }
        stop_locked(&self.config.cni, &mut s).await?;
        std::fs::remove_dir_all(&s.dir).map_err(|source| RuntimeError::Io {
            path: s.dir.clone(),
            source,
        })?;
        let mut index = self.index();
        index.by_id.remove(&s.record.id);
        index.names.remove(&name_key(&s.config));
        tracing::info!(sandbox = %s.record.id, "pod sandbox removed");
        Ok(())
    }
}

async fn stop_locked(cni: &Cni, s: &mut Sandbox) -> Result<(), RuntimeError> {
    teardown(cni, &s.record.id, &s.dir, &s.ns_dir, OnDelError::Fail).await?;
    s.attachment = None;
    if s.record.state != State::NotReady {
        s.record.state = State::NotReady;
        s.record.ips.clear();
        record::save(&s.dir, &s.record)?;
        tracing::info!(sandbox = %s.record.id, "pod sandbox stopped");
    }
    Ok(())
}

/// How a teardown treats a failed CNI DEL.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum OnDelError {
    /// Stop: keep the attachment and the namespaces, so kubelet's retry
    /// can DEL again.
    Fail,
    /// A creation that failed or crashed: the sandbox never existed for
    /// kubelet, nobody would retry; log and remove the namespaces anyway.
    Warn,
}

/// CNI DEL with the cached attachment (if any), then the namespaces go.
pub(super) async fn teardown(
    cni: &Cni,
    id: &str,
    dir: &Path,
    ns_dir: &Path,
    on_error: OnDelError,
) -> Result<(), RuntimeError> {
    let attachment = match record::load_attachment(dir) {
        Err(e) if on_error == OnDelError::Warn => {
            tracing::warn!(sandbox = %id, error = %e, "CNI attachment unreadable; no DEL");
            None
        }
        other => other?,
    };
    if let Some(att) = attachment {
        let alive = att.netns.exists();
        match cni.del(id, &att, alive).await {
            Ok(()) => record::remove_attachment(dir)?,
            Err(e) if on_error == OnDelError::Warn => {
                tracing::warn!(sandbox = %id, error = %e, "CNI DEL failed; its allocations may leak");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let at = ns_dir.to_path_buf();
    tokio::task::spawn_blocking(move || netns::remove(&at))
        .await
        .map_err(|e| RuntimeError::Task(e.to_string()))??;
    Ok(())
}
