//! A lab for running CNI plugins for real: a dedicated "host" network
//! namespace (holding the bridge), pod namespaces, a private IPAM data dir.
//! Shared by the integration tests and `cni-bench`.
//!
//! The calling thread joins the lab's host namespace for the lab's life, so
//! plugins it spawns act there and nothing touches the real host's
//! interfaces; `Drop` deletes every namespace (which takes the bridge and
//! veths with it) and the data dir, and returns the thread to where it was.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};
use serde_json::{json, Value};

/// One set of plugins to drive through the same scenarios.
pub struct PluginSet {
    pub name: &'static str,
    pub bridge: PathBuf,
    pub loopback: PathBuf,
    pub portmap: PathBuf,
    pub ipam_type: &'static str,
    /// Whether the set speaks CNI 1.1 (STATUS, GC); Debian's 1.1.1 does not.
    pub spec_1_1: bool,
    /// Whether a failed ADD removes the interface it made. Debian's 1.1.1
    /// bridge releases the address but leaves the veth when IPAM fails.
    pub cleans_up_failed_add: bool,
    links_dir: Option<PathBuf>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> String {
    format!(
        "kc{}-{}-{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

impl PluginSet {
    /// Kiln's plugins: symlinks named as the plugins to the multi-call `bin`.
    pub fn kiln(bin: &Path) -> PluginSet {
        let dir = std::env::temp_dir().join(unique("bin"));
        std::fs::create_dir_all(&dir).expect("create plugin dir");
        for name in [
            "kiln-bridge",
            "kiln-host-local",
            "kiln-loopback",
            "kiln-portmap",
        ] {
            symlink(bin, dir.join(name)).expect("symlink plugin");
        }
        PluginSet {
            name: "kiln",
            bridge: dir.join("kiln-bridge"),
            loopback: dir.join("kiln-loopback"),
            portmap: dir.join("kiln-portmap"),
            ipam_type: "kiln-host-local",
            spec_1_1: true,
            cleans_up_failed_add: true,
            links_dir: Some(dir),
        }
    }

    /// Debian's containernetworking-plugins.
    pub fn reference() -> PluginSet {
        let dir = PathBuf::from("/usr/lib/cni");
        assert!(
            dir.join("bridge").is_file(),
            "reference plugins missing: apt-get install containernetworking-plugins (cargo xtask setup does)"
        );
        PluginSet {
            name: "reference",
            bridge: dir.join("bridge"),
            loopback: dir.join("loopback"),
            portmap: dir.join("portmap"),
            ipam_type: "host-local",
            spec_1_1: false,
            cleans_up_failed_add: false,
            links_dir: None,
        }
    }
}

impl Drop for PluginSet {
    fn drop(&mut self) {
        if let Some(d) = &self.links_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// What a plugin printed and whether it exited 0.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub json: Value,
    pub stdout: String,
}

pub struct Lab {
    pub host_ns: String,
    pub bridge: String,
    pub data_dir: PathBuf,
    pods: Vec<String>,
    home_ns: File,
}

/// Runs a command that must succeed; returns its stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Lab {
    /// Needs root: it creates network namespaces.
    pub fn new(tag: &str) -> Lab {
        let home_ns = File::open("/proc/thread-self/ns/net").expect("open own netns");
        let host_ns = unique(tag);
        run("ip", &["netns", "add", &host_ns]);
        let lab = Lab {
            bridge: format!("kbr{}", COUNTER.fetch_add(1, Ordering::SeqCst)),
            data_dir: std::env::temp_dir().join(format!("{host_ns}-ipam")),
            pods: Vec::new(),
            home_ns,
            host_ns,
        };
        let ns = File::open(lab.netns_path(&lab.host_ns)).expect("open lab netns");
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("join the lab's host netns");
        run("ip", &["link", "set", "lo", "up"]);
        lab
    }

    pub fn netns_path(&self, ns: &str) -> PathBuf {
        Path::new("/run/netns").join(ns)
    }

    /// A new, empty pod namespace; returns its name.
    pub fn pod(&mut self, tag: &str) -> String {
        let ns = format!("{}-{tag}", self.host_ns);
        run("ip", &["netns", "add", &ns]);
        self.pods.push(ns.clone());
        ns
    }

    /// A bridge network config for `set` (dual-stack unless `v4_only`).
    pub fn conf(&self, set: &PluginSet, v4_only: bool) -> Value {
        let mut ranges = vec![json!([{"subnet": "10.88.0.0/24"}])];
        if !v4_only {
            ranges.push(json!([{"subnet": "fd88::/64"}]));
        }
        json!({
            "cniVersion": "1.0.0",
            "name": "kilntest",
            "type": set.bridge.file_name().unwrap().to_str().unwrap(),
            "bridge": self.bridge,
            "isGateway": true,
            "ipam": {
                "type": set.ipam_type,
                "ranges": ranges,
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.data_dir,
            }
        })
    }

    /// Runs `plugin` with the CNI environment in the lab's host namespace;
    /// CNI_PATH is the plugin's own directory (where its set's IPAM lives).
    pub fn cni(
        &self,
        plugin: &Path,
        command: &str,
        conf: &Value,
        container: &str,
        pod_ns: Option<&str>,
        ifname: &str,
    ) -> Outcome {
        let mut cmd = Command::new(plugin);
        cmd.env_clear()
            // The reference portmap runs iptables.
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", plugin.parent().expect("plugin in a directory"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(ns) = pod_ns {
            cmd.env("CNI_NETNS", self.netns_path(ns));
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", plugin.display()));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Outcome {
            ok: out.status.success(),
            json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
            stdout,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = setns(&self.home_ns, CloneFlags::CLONE_NEWNET);
        for ns in self.pods.iter().chain([&self.host_ns]) {
            // A test may already have deleted a pod namespace: stay quiet.
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
