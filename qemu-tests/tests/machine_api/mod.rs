//! The machine API as an operator reaches it on a booted node: through the
//! QEMU user network's port forward to apid on TCP 50000, with the same
//! client kilnctl uses.

use std::time::Duration;

use kiln_api_client::{connect, Trust};
use kiln_api_proto::v1::machine_client::MachineClient;
use kiln_api_proto::v1::{
    ApplyConfigurationRequest, ApplyMode, DmesgRequest, GetConfigurationRequest, LogsRequest, Mode,
    RebootRequest, ServiceListRequest, ServiceRequest, ServiceState, StatsRequest, VersionRequest,
};
use kiln_config::{Cluster, Machine, MachineCa, MachineConfig};
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
}

fn apply(data: Vec<u8>) -> ApplyConfigurationRequest {
    ApplyConfigurationRequest {
        data,
        mode: ApplyMode::Auto as i32,
        dry_run: false,
        try_timeout_seconds: 0,
    }
}
