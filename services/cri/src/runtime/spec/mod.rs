//! The OCI runtime spec of a container, from the image config and the CRI
//! request: process (command, env, cwd, user), root (the overlay rootfs,
//! read-only on request), namespaces (the pod's net/ipc/uts by path, its
//! own pid and mount), bind mounts, capabilities, privileged, cgroup path
//! and resources.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxCpu, LinuxMemory, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResources, Mount, MountBuilder, Root, Spec,
    User,
};

use crate::image::manifest::RunConfig;
use crate::proto::v1::{ContainerConfig, MountPropagation, NamespaceMode};

use super::RuntimeError;

/// What the spec is built from.
pub struct Inputs<'a> {
    pub config: &'a ContainerConfig,
    pub image: &'a RunConfig,
    pub rootfs: &'a Path,
    /// The pod's namespaces (`None`: the host's).
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub cgroups_path: String,
    /// The OOM score the container gets (`None`: inherited from the shim).
    pub oom_score_adj: Option<i32>,
    /// Pod files bind-mounted over the image's: (host file, container path);
    /// a mount of the same path in the request wins.
    pub pod_files: Vec<(PathBuf, &'static str)>,
}

/// The capabilities a container gets by default (containerd's set).
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability the kernels Kiln runs know (for privileged and `ALL`).
const ALL_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

fn invalid(field: &'static str, problem: impl Into<String>) -> RuntimeError {
    RuntimeError::Invalid {
        field,
        problem: problem.into(),
    }
}

fn cap(field: &'static str, name: &str) -> Result<Capability, RuntimeError> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    serde_json::from_value(serde_json::Value::String(full.clone()))
        .map_err(|_| invalid(field, format!("unknown capability {name:?}")))
}

fn cap_set(
    field: &'static str,
    names: impl IntoIterator<Item = impl AsRef<str>>,
) -> Result<Capabilities, RuntimeError> {
    names.into_iter().map(|n| cap(field, n.as_ref())).collect()
}

/// The process's argv: the request's command replaces the entrypoint, its
/// args replace the image's Cmd (Kubernetes' rule).
fn argv(config: &ContainerConfig, image: &RunConfig) -> Vec<String> {
    let entrypoint = if config.command.is_empty() {
        image.entrypoint.clone().unwrap_or_default()
    } else {
        config.command.clone()
    };
    let args = if !config.args.is_empty() {
        config.args.clone()
    } else if config.command.is_empty() {
        image.cmd.clone().unwrap_or_default()
    } else {
        Vec::new()
    };
    entrypoint.into_iter().chain(args).collect()
}

/// The image's env, then the request's (a later name replaces the earlier).
fn env(config: &ContainerConfig, image: &RunConfig) -> Vec<String> {
    let mut out: Vec<String> = image.env.clone().unwrap_or_default();
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    for kv in &config.envs {
        let prefix = format!("{}=", kv.key);
        out.retain(|e| !e.starts_with(&prefix));
        out.push(format!("{}={}", kv.key, kv.value));
    }
    out
}

/// uid and gid: the request's run-as user/group, else the image's `User`
/// (numbers, or names looked up in the rootfs' /etc/passwd and /etc/group).
fn user(config: &ContainerConfig, image: &RunConfig, rootfs: &Path) -> Result<User, RuntimeError> {
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let (mut uid, mut gid) = (0u32, 0u32);
    let image_user = image.user.clone().unwrap_or_default();
    if !image_user.is_empty() {
        let (u, g) = image_user
            .split_once(':')
            .map_or((image_user.as_str(), None), |(u, g)| (u, Some(g)));
        let (pu, pg) = lookup(rootfs, "etc/passwd", u)
            .ok_or_else(|| invalid("image.config.User", format!("unknown user {u:?}")))?;
        uid = pu;
        gid = pg.unwrap_or(0);
        if let Some(g) = g {
            gid = lookup(rootfs, "etc/group", g)
                .map(|(id, _)| id)
                .ok_or_else(|| invalid("image.config.User", format!("unknown group {g:?}")))?;
        }
    }
    if let Some(sc) = sc {
        if let Some(u) = &sc.run_as_user {
            uid = u32::try_from(u.value)
                .map_err(|_| invalid("security_context.run_as_user", "out of range"))?;
            gid = lookup(rootfs, "etc/passwd", &uid.to_string())
                .and_then(|(_, g)| g)
                .unwrap_or(0);
        } else if !sc.run_as_username.is_empty() {
            let (u, g) = lookup(rootfs, "etc/passwd", &sc.run_as_username).ok_or_else(|| {
                invalid(
                    "security_context.run_as_username",
                    format!("unknown user {:?}", sc.run_as_username),
                )
            })?;
            uid = u;
            gid = g.unwrap_or(0);
        }
        if let Some(g) = &sc.run_as_group {
            gid = u32::try_from(g.value)
                .map_err(|_| invalid("security_context.run_as_group", "out of range"))?;
        }
    }
    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    if let Some(sc) = sc {
        let extra = sc
            .supplemental_groups
            .iter()
            .map(|g| {
                u32::try_from(*g)
                    .map_err(|_| invalid("security_context.supplemental_groups", "out of range"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !extra.is_empty() {
            user.set_additional_gids(Some(extra));
        }
    }
    Ok(user)
}

/// A name or number in a passwd/group file: (id, the passwd entry's gid).
fn lookup(rootfs: &Path, file: &str, name: &str) -> Option<(u32, Option<u32>)> {
    let text = std::fs::read_to_string(rootfs.join(file)).unwrap_or_default();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && (f[0] == name || f[2] == name) {
            return Some((f[2].parse().ok()?, f.get(3).and_then(|g| g.parse().ok())));
        }
    }
    name.parse().ok().map(|id| (id, None))
}

fn namespace(
    typ: LinuxNamespaceType,
    path: Option<PathBuf>,
) -> Result<LinuxNamespace, RuntimeError> {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p);
    }
    b.build()
        .map_err(|e| invalid("spec.linux.namespaces", e.to_string()))
}

fn bind_mounts(config: &ContainerConfig) -> Result<Vec<Mount>, RuntimeError> {
    let mut out = Vec::new();
    for m in &config.mounts {
        if m.container_path.is_empty() || !m.container_path.starts_with('/') {
            return Err(invalid(
                "config.mounts.container_path",
                "must be an absolute path",
            ));
        }
        if m.host_path.is_empty() {
            return Err(invalid("config.mounts.host_path", "must not be empty"));
        }
        let mut options = vec!["rbind".to_string()];
        options.push(if m.readonly { "ro" } else { "rw" }.into());
        options.push(
            match MountPropagation::try_from(m.propagation) {
                Ok(MountPropagation::PropagationHostToContainer) => "rslave",
                Ok(MountPropagation::PropagationBidirectional) => "rshared",
                _ => "rprivate",
            }
            .into(),
        );
        out.push(
            MountBuilder::default()
                .destination(&m.container_path)
                .typ("bind")
                .source(&m.host_path)
                .options(options)
                .build()
                .map_err(|e| invalid("config.mounts", e.to_string()))?,
        );
    }
    Ok(out)
}

fn resources(config: &ContainerConfig) -> LinuxResources {
    let mut res = LinuxResources::default();
    let Some(r) = config.linux.as_ref().and_then(|l| l.resources.as_ref()) else {
        return res;
    };
    if r.memory_limit_in_bytes > 0 {
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(r.memory_limit_in_bytes));
        res.set_memory(Some(mem));
    }
    let mut cpu = LinuxCpu::default();
    if r.cpu_shares > 0 {
        cpu.set_shares(Some(r.cpu_shares as u64));
    }
    if r.cpu_quota > 0 {
        cpu.set_quota(Some(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.set_period(Some(r.cpu_period as u64));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.set_mems(Some(r.cpuset_mems.clone()));
    }
    res.set_cpu(Some(cpu));
    res
}

/// Builds the spec.
pub fn build(inp: &Inputs<'_>) -> Result<Spec, RuntimeError> {
    let config = inp.config;
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);

    let args = argv(config, inp.image);
    if args.is_empty() {
        return Err(invalid(
            "config.command",
            "no command: neither the request nor the image names one",
        ));
    }
    let mut spec = Spec::default();
    spec.set_hostname(None);
    let mut root = Root::default();
    root.set_path(inp.rootfs.to_path_buf());
    root.set_readonly(Some(sc.is_some_and(|s| s.readonly_rootfs)));
    spec.set_root(Some(root));

    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args));
    process.set_env(Some(env(config, inp.image)));
    let cwd = Some(config.working_dir.clone())
        .filter(|w| !w.is_empty())
        .or_else(|| inp.image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(invalid("config.working_dir", "must be an absolute path"));
    }
    process.set_cwd(cwd.into());
    process.set_user(user(config, inp.image, inp.rootfs)?);
    process.set_no_new_privileges(Some(sc.is_some_and(|s| s.no_new_privs)));
    process.set_oom_score_adj(inp.oom_score_adj);
    let caps: Capabilities = if privileged {
        cap_set("privileged", ALL_CAPS)?
    } else {
        let mut set: HashSet<Capability> = cap_set("default", DEFAULT_CAPS)?;
        if let Some(c) = sc.and_then(|s| s.capabilities.as_ref()) {
            let all = |v: &[String]| v.iter().any(|n| n.eq_ignore_ascii_case("ALL"));
            if all(&c.drop_capabilities) {
                set.clear();
            }
            for d in c
                .drop_capabilities
                .iter()
                .filter(|n| !n.eq_ignore_ascii_case("ALL"))
            {
                set.remove(&cap("security_context.capabilities.drop_capabilities", d)?);
            }
            if all(&c.add_capabilities) {
                set = cap_set("all", ALL_CAPS)?;
            }
            for a in c
                .add_capabilities
                .iter()
                .filter(|n| !n.eq_ignore_ascii_case("ALL"))
            {
                set.insert(cap("security_context.capabilities.add_capabilities", a)?);
            }
        }
        set
    };
    let mut lc = LinuxCapabilities::default();
    lc.set_bounding(Some(caps.clone()));
    lc.set_effective(Some(caps.clone()));
    lc.set_permitted(Some(caps));
    lc.set_inheritable(None);
    process.set_capabilities(Some(lc));
    spec.set_process(Some(process));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let readonly = sc.is_some_and(|s| s.readonly_rootfs);
    for (source, dest) in &inp.pod_files {
        if config.mounts.iter().any(|m| m.container_path == *dest) {
            continue;
        }
        let options = ["rbind", "rprivate", if readonly { "ro" } else { "rw" }];
        mounts.push(
            MountBuilder::default()
                .destination(dest)
                .typ("bind")
                .source(source)
                .options(options.map(String::from).to_vec())
                .build()
                .map_err(|e| invalid("pod files", e.to_string()))?,
        );
    }
    mounts.extend(bind_mounts(config)?);
    spec.set_mounts(Some(mounts));

    let pid_mode = sc
        .and_then(|s| s.namespace_options.as_ref())
        .map_or(NamespaceMode::Container as i32, |o| o.pid);
    if pid_mode == NamespaceMode::Pod as i32 || pid_mode == NamespaceMode::Target as i32 {
        return Err(RuntimeError::Unsupported {
            what: "a PID namespace shared with the pod or another container".into(),
        });
    }
    let mut namespaces = vec![namespace(LinuxNamespaceType::Mount, None)?];
    if pid_mode != NamespaceMode::Node as i32 {
        namespaces.push(namespace(LinuxNamespaceType::Pid, None)?);
    }
    for (typ, path) in [
        (LinuxNamespaceType::Network, &inp.net),
        (LinuxNamespaceType::Ipc, &inp.ipc),
        (LinuxNamespaceType::Uts, &inp.uts),
    ] {
        if let Some(p) = path {
            namespaces.push(namespace(typ, Some(p.clone()))?);
        }
    }
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_namespaces(Some(namespaces));
    linux.set_cgroups_path(Some(inp.cgroups_path.clone().into()));
    linux.set_resources(Some(resources(config)));
    if privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    spec.set_linux(Some(linux));
    Ok(spec)
}

#[cfg(test)]
mod tests;
