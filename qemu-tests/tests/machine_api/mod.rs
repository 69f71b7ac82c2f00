//! The machine API as an operator reaches it on a booted node: through the
//! QEMU user network's port forward to apid on TCP 50000, with the same
//! client kilnctl uses.

use std::time::Duration;

use kiln_api_client::{connect, Trust};
use kiln_api_proto::v1::machine_client::MachineClient;
use kiln_api_proto::v1::{
    event, ApplyConfigurationRequest, ApplyMode, ConfirmConfigurationRequest, DmesgRequest, Event,
    EventsRequest, GetConfigurationRequest, LogsRequest, Mode, RebootRequest, ResetRequest,
    ServiceListRequest, ServiceRequest, ServiceState, StatsRequest, VersionRequest,
};
use kiln_config::{
    Bond, BondMode, Cluster, Interface, Machine, MachineCa, MachineConfig, Network, Vlan,
};
use kiln_pki::{Ca, KeyedCert, Role, Validity, CLIENT_VALIDITY};
use tonic::transport::Channel;
use tonic::Code;

/// The guest needs its DHCP lease (netd) before the forward reaches apid.
const REACH: Duration = Duration::from_secs(120);

/// A cluster's machine PKI and the node config made from it.
pub struct TestCluster {
    pub ca: Ca,
    pub config: String,
}

impl TestCluster {
    /// `time_servers` go into the config's `time.servers`.
    pub fn new(hostname: &str, time_servers: &[String]) -> TestCluster {
        let ca = Ca::generate("kiln machine CA (qemu-tests)").unwrap();
        let kubernetes = Ca::generate("kubernetes").unwrap();
        let mut config = MachineConfig::new(
            Cluster {
                endpoint: "https://10.0.2.2:6443".into(),
                ca: kubernetes.pem.cert_pem.clone(),
                token: "abcdef.0123456789abcdef".into(),
            },
            Machine {
                ca: MachineCa {
                    cert: ca.pem.cert_pem.clone(),
                    key: ca.pem.key_pem.clone(),
                },
                cert_sans: vec![],
            },
        );
        config.hostname = Some(hostname.into());
        config.time.servers = time_servers.to_vec();
        TestCluster {
            ca,
            config: config.to_yaml().unwrap(),
        }
    }

    /// The config with the guest's one NIC (`eth0`) in an active-backup
    /// bond that takes its address by DHCP, and VLAN 42 on the bond with a
    /// static address (QEMU's user network has no VLAN peer: this checks
    /// that the kernel makes it).
    pub fn bonded_config(&self) -> String {
        let mut config = MachineConfig::from_yaml(&self.config).unwrap();
        config.network = Network {
            interfaces: vec![Interface {
                name: Some("bond0".into()),
                dhcp: true,
                bond: Some(Bond {
                    mode: BondMode::ActiveBackup,
                    members: vec!["eth0".into()],
                }),
                vlans: vec![Vlan {
                    id: 42,
                    addresses: vec!["192.168.42.5/24".into()],
                    ..Vlan::default()
                }],
                ..Interface::default()
            }],
            ..Network::default()
        };
        config.to_yaml().unwrap()
    }

    pub fn client(&self, role: Role) -> KeyedCert {
        self.ca
            .client_cert("qemu-tests", role, Validity::from_now(CLIENT_VALIDITY))
            .unwrap()
    }

    pub fn trust(&self, client: &KeyedCert) -> Trust {
        Trust::Mutual {
            ca_pem: self.ca.pem.cert_pem.clone(),
            cert_pem: client.cert_pem.clone(),
            key_pem: client.key_pem.clone(),
        }
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Connects to apid through the forward, retrying while the node comes up.
pub async fn reach(port: u16, trust: impl Fn() -> Trust) -> MachineClient<Channel> {
    let endpoint = format!("127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + REACH;
    loop {
        let attempt = async {
            let mut c = connect(&endpoint, trust(), Duration::from_secs(10))
                .await
                .map_err(|e| e.to_string())?;
            c.version(VersionRequest {})
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(c)
        };
        match attempt.await {
            Ok(c) => return c,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("apid not reachable on {endpoint} within {REACH:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Maintenance mode answers Version, pinned by the console's fingerprint.
pub async fn maintenance_version(port: u16, fingerprint: &str, arch: &str) {
    let mut c = reach(port, || Trust::Maintenance {
        fingerprint: Some(fingerprint.to_string()),
    })
    .await;
    let v = c.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!((v.mode, v.arch.as_str()), (Mode::Maintenance as i32, arch));
}

/// First boot of a fresh disk: maintenance mode, pinned by the console's
/// fingerprint; a bad config refused with its field named; the first
/// config taken; then only certificates from the machine CA get in, each
/// with its role.
pub async fn first_config(port: u16, fingerprint: &str, arch: &str, cluster: &TestCluster) {
    let pinned = || Trust::Maintenance {
        fingerprint: Some(fingerprint.to_string()),
    };
    maintenance_version(port, fingerprint, arch).await;
    let mut c = reach(port, pinned).await;

    let bad = cluster
        .config
        .replace("abcdef.0123456789abcdef", "not-a-token");
    let err = c
        .apply_configuration(apply(bad.into_bytes()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("cluster.token"), "{}", err.message());

    let r = c
        .apply_configuration(apply(cluster.config.clone().into_bytes()))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.reboot, "{r:?}");

    let admin = cluster.client(Role::Admin);
    let mut a = reach(port, || cluster.trust(&admin)).await;
    let v = a.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!(v.mode, Mode::Configured as i32);
    let stored = a
        .get_configuration(GetConfigurationRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.data, cluster.config.as_bytes());

    let reader = cluster.client(Role::Reader);
    let mut r = reach(port, || cluster.trust(&reader)).await;
    let err = r.reboot(RebootRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    // Without a client certificate the configured node lets no one in.
    let no_cert = connect(
        &format!("127.0.0.1:{port}"),
        Trust::Maintenance { fingerprint: None },
        Duration::from_secs(10),
    )
    .await;
    if let Ok(mut c) = no_cert {
        assert!(c.version(VersionRequest {}).await.is_err());
    }
}

/// A network change on a configured node: stored and applied live, no
/// reboot (netd re-applies it; the caller watches the console).
pub async fn apply_live(port: u16, cluster: &TestCluster, config: String) {
    let admin = cluster.client(Role::Admin);
    let mut a = reach(port, || cluster.trust(&admin)).await;
    let r = a
        .apply_configuration(apply(config.into_bytes()))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.reboot, "{r:?}");
    assert!(
        r.changes.iter().all(|c| !c.needs_reboot) && !r.changes.is_empty(),
        "{r:?}"
    );
    assert_eq!(r.message, "config stored and applied");
}

/// The node answers a configured client again (after the network moved).
pub async fn configured_version(port: u16, cluster: &TestCluster) {
    let reader = cluster.client(Role::Reader);
    let mut r = reach(port, || cluster.trust(&reader)).await;
    let v = r.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!(v.mode, Mode::Configured as i32);
}

/// A later boot: the config survived on STATE, so the node comes up
/// configured; logs and the kernel log are readable through the API.
pub async fn configured_again(port: u16, cluster: &TestCluster) {
    let reader = cluster.client(Role::Reader);
    let mut r = reach(port, || cluster.trust(&reader)).await;
    let v = r.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!(v.mode, Mode::Configured as i32);
    let mut lines = r
        .logs(LogsRequest {
            service: "hotplug".into(),
            tail: 5,
            follow: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut count = 0;
    while lines.message().await.unwrap().is_some() {
        count += 1;
    }
    assert!(count > 0, "hotplug's log is empty");
    let mut kmsg = r
        .dmesg(DmesgRequest { follow: false })
        .await
        .unwrap()
        .into_inner();
    let mut saw_kernel = false;
    while let Some(m) = kmsg.message().await.unwrap() {
        saw_kernel |= m.message.starts_with("Linux version");
    }
    assert!(saw_kernel, "the kernel log starts at the kernel's banner");
}

/// The services through PID 1's control channel on the node: the list, a
/// reader refused a stop, an operator's stop and start of hotplug, and
/// stats with the services' cgroup v2 memory and the disk's filesystems.
pub async fn services_and_stats(port: u16, cluster: &TestCluster) {
    let (reader, operator) = (cluster.client(Role::Reader), cluster.client(Role::Operator));
    let mut r = reach(port, || cluster.trust(&reader)).await;
    let mut o = reach(port, || cluster.trust(&operator)).await;
    let list = r
        .service_list(ServiceListRequest {})
        .await
        .unwrap()
        .into_inner()
        .services;
    let ids: Vec<&str> = list.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["apid", "hotplug", "netd", "timed"], "{list:?}");
    assert!(list.iter().all(|s| s.pid > 0), "{list:?}");

    let hotplug = || ServiceRequest {
        id: "hotplug".into(),
    };
    let err = r.service_stop(hotplug()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let err = o
        .service_stop(ServiceRequest { id: "apid".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let stopped = o.service_stop(hotplug()).await.unwrap().into_inner();
    let st = stopped.service.unwrap();
    assert_eq!((st.state(), st.pid), (ServiceState::Stopped, 0), "{st:?}");
    o.service_start(hotplug()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list = r
            .service_list(ServiceListRequest {})
            .await
            .unwrap()
            .into_inner()
            .services;
        let h = list.iter().find(|s| s.id == "hotplug").unwrap();
        if h.state() == ServiceState::Healthy {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hotplug not healthy again: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let s = r.stats(StatsRequest {}).await.unwrap().into_inner();
    let mem = s.memory.unwrap();
    assert!(mem.total_bytes > 256 << 20, "{mem:?}");
    assert!(s.cpus.len() >= 2 && s.cpus[0].name == "cpu", "{:?}", s.cpus);
    let mounts: Vec<&str> = s.disks.iter().map(|d| d.mount_point.as_str()).collect();
    assert_eq!(mounts, ["/", "/var", "/system/state"], "{:?}", s.disks);
    assert!(s.disks.iter().all(|d| d.total_bytes > 0));
    // The node runs cgroup v2: every service's memory is its cgroup's.
    let services: Vec<(&str, &str)> = s
        .services
        .iter()
        .map(|m| (m.id.as_str(), m.source.as_str()))
        .collect();
    assert_eq!(
        services,
        [
            ("apid", "cgroup"),
            ("hotplug", "cgroup"),
            ("netd", "cgroup"),
            ("timed", "cgroup")
        ]
    );
    assert!(s.services.iter().all(|m| m.memory_bytes > 0), "{s:?}");
    // Each has used CPU time by now (its cgroup's cpu.stat).
    assert!(s.services.iter().all(|m| m.cpu_usage_usec > 0), "{s:?}");
}

/// Under TCG a try's timer and the event stream are slow; a try's timeout
/// here leaves room for the calls in between.
const TRY_SECONDS: u32 = 15;

/// The config with another hostname: a change applied live.
pub fn with_hostname(config: &str, from: &str, to: &str) -> String {
    let out = config.replace(&format!("hostname: {from}\n"), &format!("hostname: {to}\n"));
    assert_ne!(out, config, "no `hostname: {from}` in the config");
    out
}

async fn next_event(events: &mut tonic::Streaming<Event>) -> event::Event {
    tokio::time::timeout(Duration::from_secs(120), events.message())
        .await
        .expect("an event in time")
        .expect("no stream error")
        .expect("the stream is open")
        .event
        .expect("an event of a known kind")
}

async fn stored(a: &mut MachineClient<Channel>) -> String {
    let r = a
        .get_configuration(GetConfigurationRequest {})
        .await
        .unwrap()
        .into_inner();
    String::from_utf8(r.data).unwrap()
}

/// Try mode on the node (hostname `from` in `cluster.config`): a tried
/// change is live at once and reverted after its timeout; a confirmed one
/// stays past it. Then one more try is left unconfirmed with a long
/// timeout, for the reboot to undo; returns the config the node must come
/// back with.
pub async fn try_mode(port: u16, cluster: &TestCluster, from: &str) -> String {
    let admin = cluster.client(Role::Admin);
    let mut a = reach(port, || cluster.trust(&admin)).await;
    let mut events = a
        .events(EventsRequest { follow: true })
        .await
        .unwrap()
        .into_inner();
    let original = stored(&mut a).await;
    let tried = with_hostname(&original, from, "node-tried");
    let request = |data: &str, seconds| ApplyConfigurationRequest {
        data: data.as_bytes().to_vec(),
        mode: ApplyMode::Try as i32,
        dry_run: false,
        try_timeout_seconds: seconds,
    };
    let r = a
        .apply_configuration(request(&tried, TRY_SECONDS))
        .await
        .unwrap()
        .into_inner();
    let changed: Vec<(&str, bool)> = r
        .changes
        .iter()
        .map(|c| (c.path.as_str(), c.needs_reboot))
        .collect();
    assert_eq!(changed, [("hostname", false)], "{r:?}");
    assert!(!r.reboot && r.revert_at_unix_ms > 0, "{r:?}");
    assert_eq!(stored(&mut a).await, tried);
    loop {
        if let event::Event::ConfigReverted(_) = next_event(&mut events).await {
            break;
        }
    }
    assert_eq!(stored(&mut a).await, original, "not reverted");

    let kept = with_hostname(&original, from, "node-kept");
    a.apply_configuration(request(&kept, TRY_SECONDS))
        .await
        .unwrap();
    a.confirm_configuration(ConfirmConfigurationRequest {})
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(u64::from(TRY_SECONDS) + 3)).await;
    assert_eq!(stored(&mut a).await, kept, "a confirmed try was reverted");

    let unconfirmed = with_hostname(&kept, "node-kept", "node-unconfirmed");
    a.apply_configuration(request(&unconfirmed, 3600))
        .await
        .unwrap();
    assert_eq!(stored(&mut a).await, unconfirmed);
    kept
}

/// After a reboot with a try pending: the node is back on `expected`, and
/// its Events show this boot's phases (`phases`, in order, all done).
pub async fn reverted_at_boot(port: u16, cluster: &TestCluster, expected: &str, phases: &[&str]) {
    let admin = cluster.client(Role::Admin);
    let mut a = reach(port, || cluster.trust(&admin)).await;
    assert_eq!(stored(&mut a).await, expected);
    let mut events = a
        .events(EventsRequest { follow: false })
        .await
        .unwrap()
        .into_inner();
    let mut seen = vec![];
    while let Some(e) = events.message().await.unwrap() {
        if let Some(event::Event::BootPhase(p)) = e.event {
            assert!(p.error.is_empty(), "{p:?}");
            seen.push(p.phase);
        }
    }
    assert_eq!(seen, phases);
}

/// A node in maintenance mode takes `cluster.config` (answered).
pub async fn apply_first(port: u16, fingerprint: &str, cluster: &TestCluster) {
    let mut c = reach(port, || Trust::Maintenance {
        fingerprint: Some(fingerprint.to_string()),
    })
    .await;
    c.apply_configuration(apply(cluster.config.clone().into_bytes()))
        .await
        .unwrap();
}

/// The node is configured with exactly `config`.
pub async fn configured_with(port: u16, cluster: &TestCluster, config: &str) {
    let admin = cluster.client(Role::Admin);
    let mut a = reach(port, || cluster.trust(&admin)).await;
    let v = a.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!(v.mode, Mode::Configured as i32);
    assert_eq!(stored(&mut a).await, config);
}

/// Sends `config` (staged) and, `after` the request went out, kills QEMU
/// (`qemu_pid`) with SIGKILL: a power cut in the middle of
/// ApplyConfiguration. Whatever answer (or none) the call gets is moot.
pub async fn apply_then_power_cut(
    port: u16,
    cluster: &TestCluster,
    config: &str,
    qemu_pid: u32,
    after: Duration,
) {
    let admin = cluster.client(Role::Admin);
    let mut a = reach(port, || cluster.trust(&admin)).await;
    let request = ApplyConfigurationRequest {
        data: config.as_bytes().to_vec(),
        mode: ApplyMode::Staged as i32,
        dry_run: false,
        try_timeout_seconds: 0,
    };
    let call = a.apply_configuration(request);
    let cut = async {
        tokio::time::sleep(after).await;
        let pid = i32::try_from(qemu_pid).unwrap();
        // SAFETY: kill(2) on QEMU's pid, a child of this process that has
        // not been reaped (the Machine still owns it).
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill QEMU");
    };
    let (_, ()) = tokio::join!(call, cut);
}

/// After a power cut during an apply: the node is configured with one of
/// `configs`, whole.
pub async fn configured_with_one_of(port: u16, cluster: &TestCluster, configs: &[&str]) {
    let admin = cluster.client(Role::Admin);
    let mut a = reach(port, || cluster.trust(&admin)).await;
    let now = stored(&mut a).await;
    assert!(
        configs.contains(&now.as_str()),
        "neither the old nor the new config:\n{now}"
    );
}

/// Reset with --wipe-state: answered, then the node reboots.
pub async fn reset(port: u16, cluster: &TestCluster) {
    let admin = cluster.client(Role::Admin);
    let mut a = reach(port, || cluster.trust(&admin)).await;
    a.reset(ResetRequest { wipe_state: true }).await.unwrap();
}

/// An HTTP server on the host's loopback (hyper's), which QEMU's user
/// network shows the guest as 10.0.2.2: serves `body` at `/node.yaml`.
/// Returns its port; it serves until the test process ends.
pub fn serve_config(body: String) -> u16 {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let body = body.clone();
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let (status, body) = if req.uri().path() == "/node.yaml" {
                        (200, body.clone())
                    } else {
                        (404, String::new())
                    };
                    async move {
                        hyper::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from(body)))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        })
    });
    port
}

/// A node that fetched `cluster.config` at boot: configured, with it.
pub async fn fetched_config(port: u16, cluster: &TestCluster) {
    let admin = cluster.client(Role::Admin);
    let mut a = reach(port, || cluster.trust(&admin)).await;
    let v = a.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!(v.mode, Mode::Configured as i32);
    assert_eq!(stored(&mut a).await, cluster.config);
}

fn apply(data: Vec<u8>) -> ApplyConfigurationRequest {
    ApplyConfigurationRequest {
        data,
        mode: ApplyMode::Auto as i32,
        dry_run: false,
        try_timeout_seconds: 0,
    }
}
