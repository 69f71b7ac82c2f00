//! RuntimeService tests (as root): kiln-cri over its socket with the tonic
//! CRI client, pods in real network namespaces wired by Debian's CNI
//! plugins (bridge + host-local), each test in its own network namespace.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{in_netns, refused, Cri};
use kiln_cri::proto::v1::*;
use tonic::Code;

/// A bridge network with host-local IPAM keeping its leases in `ipam`.
fn bridge_conflist(ipam: &Path, extra: &str) -> String {
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "kiln-test",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "kiln0",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {{
        "type": "host-local",
        "dataDir": "{}",
        "ranges": [[{{ "subnet": "10.88.0.0/24" }}]],
        "routes": [{{ "dst": "0.0.0.0/0" }}]
      }}
    }}{extra}
  ]
}}"#,
        ipam.display()
    )
}

fn write_config(cri: &Cri, name: &str, text: &str) -> PathBuf {
    let path = cri.cni_conf_dir().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn pod(name: &str, app: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: common::pod_metadata(name),
        hostname: name.into(),
        labels: HashMap::from([("app".to_string(), app.to_string())]),
        ..Default::default()
    }
}

fn host_network(mut config: PodSandboxConfig) -> PodSandboxConfig {
    config.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

async fn run(cri: &mut Cri, config: PodSandboxConfig) -> Result<String, tonic::Status> {
    cri.runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

async fn status(cri: &mut Cri, id: &str, verbose: bool) -> PodSandboxStatusResponse {
    cri.runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn pod_ip(cri: &mut Cri, id: &str) -> String {
    let s = status(cri, id, false).await.status.unwrap();
    assert_eq!(s.state, PodSandboxState::SandboxReady as i32);
    s.network.unwrap().ip
}

async fn list(cri: &mut Cri, filter: Option<PodSandboxFilter>) -> Vec<String> {
    cri.runtime
        .list_pod_sandbox(ListPodSandboxRequest { filter })
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect()
}

async fn network_ready(cri: &mut Cri) -> RuntimeCondition {
    let s = cri
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let runtime = s
        .conditions
        .iter()
        .find(|c| c.r#type == "RuntimeReady")
        .unwrap();
    assert!(runtime.status);
    s.conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap()
}

/// Runs `busybox <args>` inside the namespaces given as nsenter options.
fn in_pod(ns: &[String], args: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .args(ns)
        .arg("busybox")
        .args(args)
        .output()
        .expect("nsenter")
}

fn netns(cri: &Cri, id: &str) -> PathBuf {
    cri.state().join("ns").join(id).join("net")
}

/// Mount points under `dir` in this mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(String::from)
        .collect()
}

/// The IPs host-local has leased from `ipam` (one file per IP).
fn leases(ipam: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(ipam.join("kiln-test")) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    v.sort();
    v
}

/// Nothing of any sandbox is left: no record, no namespace, no mount.
fn assert_clean(cri: &Cri) {
    assert_eq!(cri.files("sandboxes"), Vec::<String>::new());
    let ns: Vec<_> = std::fs::read_dir(cri.state().join("ns"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(ns.is_empty(), "namespaces left: {ns:?}");
    assert_eq!(mounts_under(cri.dir.path()), Vec::<String>::new());
}

#[test]
fn two_pods_on_a_bridge_reach_each_other() {
    in_netns(|| async {
        let mut cri = Cri::start(&[]).await;
        let ipam = cri.dir.path().join("ipam");

        // No configuration yet: NetworkReady false with the reason, and a
        // pod cannot start (and leaves nothing behind).
        let cond = network_ready(&mut cri).await;
        assert!(!cond.status);
        assert_eq!(cond.reason, "NetworkPluginNotReady");
        assert!(
            cond.message.contains("no network configuration"),
            "{cond:?}"
        );
        refused(run(&mut cri, pod("early", "x")).await, Code::Unavailable);
        assert_clean(&cri);

        write_config(&cri, "10-kiln.conflist", &bridge_conflist(&ipam, ""));
        assert!(network_ready(&mut cri).await.status);

        let a = run(&mut cri, pod("a", "web")).await.unwrap();
        let b = run(&mut cri, pod("b", "db")).await.unwrap();
        assert_eq!(a.len(), 64);
        let (ip_a, ip_b) = (pod_ip(&mut cri, &a).await, pod_ip(&mut cri, &b).await);
        assert!(ip_a.starts_with("10.88.0.") && ip_b.starts_with("10.88.0."));
        assert_ne!(ip_a, ip_b);
        assert_eq!(leases(&ipam), {
            let mut v = vec![ip_a.clone(), ip_b.clone()];
            v.sort();
            v
        });

        // Pod a reaches pod b over the bridge, from a's own namespaces,
        // whose UTS namespace carries the pod's hostname.
        let ns_a = cri.state().join("ns").join(&a);
        let enter_a = [
            format!("--net={}", ns_a.join("net").display()),
            format!("--uts={}", ns_a.join("uts").display()),
        ];
        let ping = in_pod(&enter_a, &["ping", "-c", "1", "-W", "3", &ip_b]);
        assert!(ping.status.success(), "{ping:?}");
        let host = in_pod(&enter_a, &["hostname"]);
        assert_eq!(String::from_utf8_lossy(&host.stdout).trim(), "a");
        assert!(ns_a.join("ipc").exists());

        // Verbose status runs CNI CHECK: fine now, failing by name once the
        // pod's interface is gone.
        let v = status(&mut cri, &b, true).await;
        assert_eq!(v.info["network_check"], "ok");
        assert!(v.info["info"].contains(&ip_b));
        let del = Command::new("nsenter")
            .arg(format!("--net={}", netns(&cri, &b).display()))
            .args(["ip", "link", "del", "eth0"])
            .status()
            .unwrap();
        assert!(del.success());
        let v = status(&mut cri, &b, true).await;
        assert!(v.info["network_check"].contains("CHECK failed"), "{v:?}");

        // List with filters: label, ID prefix, state.
        let mut all = list(&mut cri, None).await;
        all.sort();
        let mut want = vec![a.clone(), b.clone()];
        want.sort();
        assert_eq!(all, want);
        let by_label = PodSandboxFilter {
            label_selector: HashMap::from([("app".into(), "web".into())]),
            ..Default::default()
        };
        assert_eq!(list(&mut cri, Some(by_label)).await, vec![a.clone()]);
        let by_prefix = PodSandboxFilter {
            id: b[..12].to_string(),
            ..Default::default()
        };
        assert_eq!(list(&mut cri, Some(by_prefix)).await, vec![b.clone()]);
        let not_ready = PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxNotready as i32,
            }),
            ..Default::default()
        };
        assert!(list(&mut cri, Some(not_ready.clone())).await.is_empty());

        // Stop a (by ID prefix): its lease, namespaces and mounts go; it
        // stays listed as NOTREADY; stopping again is fine.
        for _ in 0..2 {
            cri.runtime
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: a[..16].to_string(),
                })
                .await
                .unwrap();
        }
        let s = status(&mut cri, &a, false).await.status.unwrap();
        assert_eq!(s.state, PodSandboxState::SandboxNotready as i32);
        assert_eq!(s.network.unwrap().ip, "");
        assert!(!ns_a.exists());
        assert_eq!(leases(&ipam), vec![ip_b.clone()]);
        assert_eq!(list(&mut cri, Some(not_ready)).await, vec![a.clone()]);

        for id in [&a, &b] {
            cri.remove_pod(id).await;
        }
        assert!(list(&mut cri, None).await.is_empty());
        assert_eq!(leases(&ipam), Vec::<String>::new());
        assert_clean(&cri);
        cri.stop().await;
    });
}

#[test]
fn a_restart_keeps_pods_and_deletes_with_the_cached_config() {
    in_netns(|| async {
        let mut cri = Cri::start(&[]).await;
        let ipam = cri.dir.path().join("ipam");
        let conf = write_config(&cri, "10-kiln.conflist", &bridge_conflist(&ipam, ""));
        let id = run(&mut cri, pod("keep", "web")).await.unwrap();
        let ip = pod_ip(&mut cri, &id).await;

        // What a crash can leave: namespaces without a sandbox (mounted)
        // and a sandbox directory whose creation never finished.
        let orphan = cri.state().join("ns").join("orphan");
        std::fs::create_dir_all(&orphan).unwrap();
        std::fs::File::create(orphan.join("net")).unwrap();
        let bind = Command::new("mount")
            .args(["--bind", "/proc/self/ns/net"])
            .arg(orphan.join("net"))
            .status()
            .unwrap();
        assert!(bind.success());
        std::fs::create_dir_all(cri.root().join("sandboxes/unfinished")).unwrap();

        let mut cri = cri.restart(&[]).await;
        assert!(!orphan.exists());
        assert_eq!(cri.files("sandboxes"), vec![id.clone()]);
        assert_eq!(pod_ip(&mut cri, &id).await, ip);
        let enter = [format!("--net={}", netns(&cri, &id).display())];
        let ping = in_pod(&enter, &["ping", "-c", "1", "-W", "3", "10.88.0.1"]);
        assert!(ping.status.success(), "{ping:?}");

        // The conf dir empties; DEL still runs with the configuration ADD
        // used, cached with the sandbox, and frees the lease.
        std::fs::remove_file(conf).unwrap();
        assert!(!network_ready(&mut cri).await.status);
        cri.remove_pod(&id).await;
        assert_eq!(leases(&ipam), Vec::<String>::new());
        assert_clean(&cri);
        cri.stop().await;
    });
}

#[test]
fn a_host_network_pod_skips_cni() {
    in_netns(|| async {
        let mut cri = Cri::start(&[]).await;
        assert!(!network_ready(&mut cri).await.status);
        let config = cri
            .runtime
            .runtime_config(RuntimeConfigRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            config.linux.unwrap().cgroup_driver,
            CgroupDriver::Cgroupfs as i32
        );
        let id = run(&mut cri, host_network(pod("hostnet", "agent")))
            .await
            .unwrap();
        let s = status(&mut cri, &id, false).await.status.unwrap();
        assert_eq!(s.state, PodSandboxState::SandboxReady as i32);
        assert_eq!(s.network.unwrap().ip, "");
        let opts = s.linux.unwrap().namespaces.unwrap().options.unwrap();
        assert_eq!(opts.network, NamespaceMode::Node as i32);
        assert_eq!(opts.ipc, NamespaceMode::Pod as i32);
        let ns = cri.state().join("ns").join(&id);
        assert!(!ns.join("net").exists() && !ns.join("uts").exists());
        assert!(ns.join("ipc").exists());
        cri.remove_pod(&id).await;
        assert_clean(&cri);
        cri.stop().await;
    });
}

#[test]
fn bad_requests_get_named_errors_and_leak_nothing() {
    in_netns(|| async {
        let mut cri = Cri::start(&[]).await;
        let ipam = cri.dir.path().join("ipam");

        let err = refused(
            cri.runtime
                .run_pod_sandbox(RunPodSandboxRequest::default())
                .await,
            Code::InvalidArgument,
        );
        assert!(err.message().contains("config"), "{err:?}");
        let mut no_meta = pod("x", "x");
        no_meta.metadata = None;
        let err = refused(run(&mut cri, no_meta).await, Code::InvalidArgument);
        assert!(err.message().contains("config.metadata"), "{err:?}");
        let mut no_uid = pod("x", "x");
        no_uid.metadata.as_mut().unwrap().uid.clear();
        let err = run(&mut cri, no_uid).await.unwrap_err();
        assert!(err.message().contains("config.metadata.uid"), "{err:?}");
        let err = refused(
            cri.runtime
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(host_network(pod("x", "x"))),
                    runtime_handler: "kata".into(),
                })
                .await,
            Code::InvalidArgument,
        );
        assert!(err.message().contains("runtime_handler"), "{err:?}");

        // Unknown IDs: NOT_FOUND, but remove is idempotent.
        let unknown = "0".repeat(64);
        refused(
            cri.runtime
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: unknown.clone(),
                    verbose: false,
                })
                .await,
            Code::NotFound,
        );
        refused(
            cri.runtime
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: unknown.clone(),
                })
                .await,
            Code::NotFound,
        );
        cri.remove_pod(&unknown).await;
        refused(
            cri.runtime
                .stop_pod_sandbox(StopPodSandboxRequest::default())
                .await,
            Code::InvalidArgument,
        );

        // A duplicate name is refused while the first sandbox exists.
        let first = run(&mut cri, host_network(pod("dup", "x"))).await.unwrap();
        let err = refused(
            run(&mut cri, host_network(pod("dup", "x"))).await,
            Code::AlreadyExists,
        );
        assert!(err.message().contains(&first), "{err:?}");
        cri.remove_pod(&first).await;

        // A chain whose second plugin fails after the bridge set the pod
        // up: the error names the plugin, and the bridge's part is undone.
        let bad_sysctl = r#",
    { "type": "tuning", "sysctl": { "net.ipv4.conf.eth0.no_such_knob": "1" } }"#;
        let conf = write_config(
            &cri,
            "10-kiln.conflist",
            &bridge_conflist(&ipam, bad_sysctl),
        );
        let err = refused(run(&mut cri, pod("tuned", "x")).await, Code::Unavailable);
        assert!(err.message().contains("tuning ADD failed"), "{err:?}");
        assert_eq!(leases(&ipam), Vec::<String>::new());

        // A plugin that is not installed, and a malformed configuration.
        std::fs::write(
            &conf,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"no-such-plugin"}]}"#,
        )
        .unwrap();
        let err = run(&mut cri, pod("missing", "x")).await.unwrap_err();
        assert!(
            err.message().contains("\"no-such-plugin\" not found"),
            "{err:?}"
        );
        std::fs::write(&conf, r#"{"cniVersion":"1.0.0","plugins":[]}"#).unwrap();
        let cond = network_ready(&mut cri).await;
        assert!(!cond.status);
        assert!(cond.message.contains("`name`"), "{cond:?}");

        // Attach is not written yet: UNIMPLEMENTED, not a fake.
        refused(
            cri.runtime.attach(AttachRequest::default()).await,
            Code::Unimplemented,
        );

        assert!(list(&mut cri, None).await.is_empty());
        assert_clean(&cri);
        cri.stop().await;
    });
}
