//! apid end to end on this host: the real server on loopback with real TLS,
//! driven through kiln-api-client as kilnctl drives it. Covers maintenance
//! mode, the first config, mutual TLS and roles, refusals, logs and power.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kiln_api_client::{connect, Trust};
use kiln_api_proto::v1::{
    event, ApplyConfigurationRequest, ApplyMode, ConfirmConfigurationRequest, Event, EventsRequest,
    GetConfigurationRequest, LogsRequest, Mode, RebootRequest, ResetRequest, ServiceListRequest,
    ServiceRequest, ServiceState, StatsRequest, VersionRequest,
};
use kiln_apid::config_source::{self, ConfigSource, ConfigUrl, FetchError};
use kiln_apid::stats::Sources;
use kiln_apid::{ConfigStore, Node};
use kiln_pki::Role;
use kiln_pki::{Ca, KeyedCert, Validity, CLIENT_VALIDITY};
use kiln_supervisor::reaper::{self, ExitFuture, Reaper};
use kiln_supervisor::Exit;
use kiln_supervisor::{ServiceSpec, Supervisor, SupervisorConfig};
use nix::unistd::Pid;
use tonic::Code;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A machine CA and certificates it issues.
struct Pki {
    ca: Ca,
}

impl Pki {
    fn new(name: &str) -> Pki {
        Pki {
            ca: Ca::generate(name).unwrap(),
        }
    }

    fn client(&self, orgs: &[&str], expired: bool) -> KeyedCert {
        let validity = if expired {
            let at = |secs| time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
            // 2001 to 2002.
            Validity {
                not_before: at(978_307_200),
                not_after: at(1_009_843_200),
            }
        } else {
            Validity::from_now(CLIENT_VALIDITY)
        };
        self.ca
            .client_cert_with_organizations("test client", orgs, validity)
            .unwrap()
    }

    fn role(&self, role: Role) -> KeyedCert {
        self.ca
            .client_cert("test", role, Validity::from_now(CLIENT_VALIDITY))
            .unwrap()
    }

    fn trust(&self, client: &KeyedCert) -> Trust {
        Trust::Mutual {
            ca_pem: self.ca.pem.cert_pem.clone(),
            cert_pem: client.cert_pem.clone(),
            key_pem: client.key_pem.clone(),
        }
    }

    /// A valid machine config for this CA.
    fn config(&self, hostname: &str) -> String {
        let indent = |pem: &str, n: usize| {
            pem.lines()
                .map(|l| format!("{:n$}{l}", ""))
                .collect::<Vec<_>>()
                .join("\n")
        };
        format!(
            "apiVersion: kiln.dev/v1alpha1\nkind: MachineConfig\nhostname: {hostname}\n\
             cluster:\n  endpoint: https://10.0.0.1:6443\n  token: abcdef.0123456789abcdef\n  ca: |\n{}\n\
             machine:\n  ca:\n    cert: |\n{}\n    key: |\n{}\n",
            indent(&self.ca.pem.cert_pem, 4),
            indent(&self.ca.pem.cert_pem, 6),
            indent(&self.ca.pem.key_pem, 6),
        )
    }
}

/// apid serving on a loopback port, with `init` a real process that
/// receives its power requests (started through the supervisor's reaper,
/// which reaps every child of this process), and PID 1's real control channel on a unix
/// socket, over a real supervisor running `sleep` as the services "apid"
/// (standing in for apid itself) and "worker".
struct Apid {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    init: i32,
    init_exit: Option<ExitFuture>,
    supervisor: Supervisor,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), kiln_apid::Error>>>,
}

fn sleeper(id: &str) -> ServiceSpec {
    ServiceSpec::new(id, ["sleep", "600"]).env("PATH", "/usr/bin:/bin")
}

impl Apid {
    async fn start() -> Apid {
        Apid::start_with(true).await
    }

    /// `pid1`: whether PID 1's control channel serves (else its socket is
    /// absent, as if PID 1 could not serve it).
    async fn start_with(pid1: bool) -> Apid {
        Apid::start_full(pid1, None, |_| {}).await
    }

    /// `config_source`: as if `kiln.config=` were on the command line;
    /// `prepare`: what STATE holds before apid starts.
    async fn start_full(
        pid1: bool,
        config_source: Option<ConfigSource>,
        prepare: impl FnOnce(&ConfigStore),
    ) -> Apid {
        let dir = tempfile::tempdir().unwrap();
        prepare(&ConfigStore::new(&dir.path().join("state")));
        reaper::become_subreaper().unwrap();
        let supervisor = Supervisor::new(SupervisorConfig::default(), Reaper::start());
        supervisor
            .load(vec![sleeper("apid"), sleeper("worker")])
            .await
            .unwrap();
        let control = dir.path().join("init.sock");
        if pid1 {
            kiln_init::control::spawn(supervisor.clone(), control.clone(), "apid", vec![]);
        }
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        let (init, init_exit) = Reaper::start()
            .spawn(&reaper::Command::new(["/bin/sleep", "60"]))
            .unwrap();
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let node = Arc::new(Node {
            store: ConfigStore::new(&dir.path().join("state")),
            log_dir: dir.path().join("log"),
            kmsg: "/dev/kmsg".into(),
            init: Pid::from_raw(init),
            names: vec!["localhost".into(), "127.0.0.1".into()],
            console: Some(dir.path().join("console")),
            control,
            stats: Sources {
                proc: "/proc".into(),
                cgroups: dir.path().join("cgroups"),
                disks: vec!["/".into(), "/var".into(), "/system/state".into()],
            },
            config_source,
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(kiln_apid::serve(node, addr, async {
            let _ = rx.await;
        }));
        Apid {
            addr,
            dir,
            init,
            init_exit: Some(init_exit),
            supervisor,
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    fn stored(&self) -> Option<Vec<u8>> {
        ConfigStore::new(&self.dir.path().join("state"))
            .load()
            .unwrap()
    }

    fn log_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Connects, retrying while the server (re)starts.
    /// A client holding a fresh certificate for `role`.
    async fn client_as(
        &self,
        pki: &Pki,
        role: Role,
    ) -> kiln_api_proto::v1::machine_client::MachineClient<tonic::transport::Channel> {
        let cert = pki.role(role);
        self.client(|| pki.trust(&cert)).await
    }

    async fn client(
        &self,
        trust: impl Fn() -> Trust,
    ) -> kiln_api_proto::v1::machine_client::MachineClient<tonic::transport::Channel> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match connect(&self.endpoint(), trust(), TIMEOUT).await {
                Ok(c) => return c,
                Err(e) if tokio::time::Instant::now() > deadline => panic!("{e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        self.supervisor.shutdown(TIMEOUT).await;
        let _ = nix::sys::signal::kill(Pid::from_raw(self.init), nix::sys::signal::Signal::SIGKILL);
    }
}

fn insecure() -> Trust {
    Trust::Maintenance { fingerprint: None }
}

#[tokio::test]
async fn maintenance_then_configured_with_roles() {
    let apid = Apid::start().await;
    let pki = Pki::new("machine CA");

    // Maintenance: Version answers, reading config does not.
    let mut c = apid.client(insecure).await;
    let v = c.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!(v.mode, Mode::Maintenance as i32);
    assert_eq!(v.version, env!("CARGO_PKG_VERSION"));
    refused(
        c.get_configuration(GetConfigurationRequest {}).await,
        Code::FailedPrecondition,
    );

    // A bad config is refused with the field named; nothing is stored.
    let bad = pki.config("Not_A_Hostname");
    let err = refused(
        c.apply_configuration(ApplyConfigurationRequest {
            data: bad.into_bytes(),
            mode: ApplyMode::Auto as i32,
            dry_run: false,
            try_timeout_seconds: 0,
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(err.message().contains("hostname"), "{}", err.message());
    assert_eq!(apid.stored(), None);

    // The first config is stored and the node leaves maintenance mode.
    let good = pki.config("node-1");
    let r = c
        .apply_configuration(ApplyConfigurationRequest {
            data: good.clone().into_bytes(),
            mode: ApplyMode::Auto as i32,
            dry_run: false,
            try_timeout_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.reboot, "{r:?}");
    assert_eq!(apid.stored().as_deref(), Some(good.as_bytes()));

    // Now only CA-signed clients get in, each with its role.
    let mut a = apid.client_as(&pki, Role::Admin).await;
    let v = a.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!(v.mode, Mode::Configured as i32);
    let full = a
        .get_configuration(GetConfigurationRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!full.redacted);
    assert_eq!(full.data, good.as_bytes());

    let mut r = apid.client_as(&pki, Role::Reader).await;
    let seen = r
        .get_configuration(GetConfigurationRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(seen.redacted);
    let text = String::from_utf8(seen.data).unwrap();
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    assert!(!text.contains("0123456789abcdef"), "{text}");
    refused(r.reboot(RebootRequest {}).await, Code::PermissionDenied);
    refused(
        r.apply_configuration(ApplyConfigurationRequest {
            data: good.clone().into_bytes(),
            mode: ApplyMode::Auto as i32,
            dry_run: true,
            try_timeout_seconds: 0,
        })
        .await,
        Code::PermissionDenied,
    );

    // A certificate with no Kiln role is refused by apid.
    let nobody = pki.client(&["system:masters"], false);
    let mut n = apid.client(|| pki.trust(&nobody)).await;
    refused(n.version(VersionRequest {}).await, Code::PermissionDenied);

    // No certificate, a foreign CA's, or an expired one: the TLS handshake
    // itself fails.
    let refused = |trust: Trust| async {
        match connect(&apid.endpoint(), trust, TIMEOUT).await {
            Err(_) => true,
            Ok(mut c) => c.version(VersionRequest {}).await.is_err(),
        }
    };
    assert!(refused(insecure()).await, "a client without a certificate");
    let other = Pki::new("another CA");
    let stranger = other.role(Role::Admin);
    assert!(
        refused(Trust::Mutual {
            ca_pem: pki.ca.pem.cert_pem.clone(),
            cert_pem: stranger.cert_pem.clone(),
            key_pem: stranger.key_pem.clone(),
        })
        .await,
        "a certificate from another CA"
    );
    let expired = pki.client(&["kiln:admin"], true);
    assert!(refused(pki.trust(&expired)).await, "an expired certificate");

    apid.stop().await;
}

#[tokio::test]
async fn fingerprint_pinning() {
    let apid = Apid::start().await;
    // The fingerprint shown on the console pins the node's key.
    let shown = async {
        loop {
            let console =
                std::fs::read_to_string(apid.dir.path().join("console")).unwrap_or_default();
            if let Some(line) = console.lines().find(|l| l.starts_with("kiln:   ")) {
                return line.trim_start_matches("kiln:").trim().to_string();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let fingerprint = tokio::time::timeout(TIMEOUT, shown).await.unwrap();
    let mut c = apid
        .client(|| Trust::Maintenance {
            fingerprint: Some(fingerprint.clone()),
        })
        .await;
    c.version(VersionRequest {}).await.unwrap();

    let wrong = "00".repeat(32);
    let result = match connect(
        &apid.endpoint(),
        Trust::Maintenance {
            fingerprint: Some(wrong),
        },
        TIMEOUT,
    )
    .await
    {
        Err(e) => Err(e.to_string()),
        Ok(mut c) => c
            .version(VersionRequest {})
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    assert!(result.is_err(), "a wrong fingerprint must not connect");
    apid.stop().await;
}

#[tokio::test]
async fn logs_and_reboot() {
    let mut apid = Apid::start().await;
    let pki = Pki::new("machine CA");
    let mut c = apid.client(insecure).await;
    c.apply_configuration(ApplyConfigurationRequest {
        data: pki.config("node-2").into_bytes(),
        mode: ApplyMode::Auto as i32,
        dry_run: false,
        try_timeout_seconds: 0,
    })
    .await
    .unwrap();
    let mut o = apid.client_as(&pki, Role::Operator).await;

    std::fs::write(apid.log_dir().join("log/svc.log"), "a\nb\nc\n").unwrap();
    let mut lines = o
        .logs(LogsRequest {
            service: "svc".into(),
            tail: 2,
            follow: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = vec![];
    while let Some(l) = lines.message().await.unwrap() {
        got.push(l.line);
    }
    assert_eq!(got, ["b", "c"]);
    for (service, code) in [("nope", Code::NotFound), ("../x", Code::InvalidArgument)] {
        let err = o
            .logs(LogsRequest {
                service: service.into(),
                tail: 0,
                follow: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{service}: {err}");
    }

    // Reboot reaches "init" as SIGINT, after the answer.
    o.reboot(RebootRequest {}).await.unwrap();
    let exit = tokio::time::timeout(TIMEOUT, apid.init_exit.take().unwrap())
        .await
        .unwrap();
    assert_eq!(exit, Some(Exit::Signal(libc::SIGINT)));
    apid.stop().await;
}

fn service(id: &str) -> ServiceRequest {
    ServiceRequest { id: id.into() }
}

/// The next event, within the test's patience.
async fn next_event(events: &mut tonic::Streaming<Event>) -> event::Event {
    tokio::time::timeout(TIMEOUT, events.message())
        .await
        .expect("an event in time")
        .expect("no stream error")
        .expect("the stream is open")
        .event
        .expect("an event")
}

/// Reads events until `id` reaches `state`; returns the states it passed.
async fn until_state(
    events: &mut tonic::Streaming<Event>,
    id: &str,
    state: ServiceState,
) -> Vec<ServiceState> {
    let mut seen = vec![];
    loop {
        if let event::Event::Service(e) = next_event(events).await {
            if e.service == id {
                seen.push(e.state());
                if e.state() == state {
                    return seen;
                }
            }
        }
    }
}

#[tokio::test]
async fn services_events_and_stats_through_pid1() {
    let apid = Apid::start().await;
    let pki = Pki::new("machine CA");
    let mut c = apid.client(insecure).await;
    // Maintenance mode serves none of them.
    refused(
        c.service_list(ServiceListRequest {}).await,
        Code::FailedPrecondition,
    );
    c.apply_configuration(ApplyConfigurationRequest {
        data: pki.config("node-3").into_bytes(),
        mode: ApplyMode::Auto as i32,
        dry_run: false,
        try_timeout_seconds: 0,
    })
    .await
    .unwrap();
    let (reader, operator) = (pki.role(Role::Reader), pki.role(Role::Operator));
    let mut r = apid.client(|| pki.trust(&reader)).await;
    let mut o = apid.client(|| pki.trust(&operator)).await;

    // The list comes from PID 1's supervisor: real processes.
    let list = loop {
        let list = r
            .service_list(ServiceListRequest {})
            .await
            .unwrap()
            .into_inner()
            .services;
        if list.iter().all(|s| s.state() == ServiceState::Healthy) {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ids: Vec<&str> = list.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["apid", "worker"]);
    let worker_pid = list[1].pid;
    assert!(Path::new(&format!("/proc/{worker_pid}")).exists());

    // Events: apid's own first (the first config), then every service's
    // current state, then changes.
    let mut events = r
        .events(EventsRequest { follow: true })
        .await
        .unwrap()
        .into_inner();
    match next_event(&mut events).await {
        event::Event::ConfigApplied(a) => {
            assert!(a.message.contains("maintenance"), "{a:?}");
            assert!(a.at_unix_ms > 0);
        }
        other => panic!("expected the first config's event, got {other:?}"),
    }
    for id in ["apid", "worker"] {
        match next_event(&mut events).await {
            event::Event::Service(e) => {
                assert_eq!((e.service.as_str(), e.state()), (id, ServiceState::Healthy))
            }
            other => panic!("expected {id}'s state, got {other:?}"),
        }
    }

    // A reader may look but not touch.
    let err = refused(
        r.service_stop(service("worker")).await,
        Code::PermissionDenied,
    );
    assert!(err.message().contains("operator"), "{}", err.message());

    // An operator stops, starts and restarts; the reader's stream sees it.
    let st = o
        .service_stop(service("worker"))
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert_eq!((st.state(), st.pid), (ServiceState::Stopped, 0));
    assert_eq!(
        until_state(&mut events, "worker", ServiceState::Stopped).await,
        [ServiceState::Stopping, ServiceState::Stopped]
    );
    o.service_start(service("worker")).await.unwrap();
    until_state(&mut events, "worker", ServiceState::Healthy).await;
    o.service_restart(service("worker")).await.unwrap();
    until_state(&mut events, "worker", ServiceState::Stopped).await;
    until_state(&mut events, "worker", ServiceState::Healthy).await;
    let now = r.service_list(ServiceListRequest {}).await.unwrap();
    let new_pid = now.into_inner().services[1].pid;
    assert!(new_pid != 0 && new_pid != worker_pid);
    assert!(!Path::new(&format!("/proc/{worker_pid}/exe")).exists());

    // Stopping apid itself is refused; unknown services are not found.
    refused(
        o.service_stop(service("apid")).await,
        Code::FailedPrecondition,
    );
    refused(o.service_start(service("nope")).await, Code::NotFound);

    // A stored config is an event too.
    let mut a = apid.client_as(&pki, Role::Admin).await;
    a.apply_configuration(ApplyConfigurationRequest {
        data: pki.config("node-4").into_bytes(),
        mode: ApplyMode::Staged as i32,
        dry_run: false,
        try_timeout_seconds: 0,
    })
    .await
    .unwrap();
    loop {
        if let event::Event::ConfigApplied(e) = next_event(&mut events).await {
            assert_eq!(e.mode, ApplyMode::Staged as i32);
            assert!(e.changes.iter().any(|c| c.path == "hostname"), "{e:?}");
            break;
        }
    }

    // Stats: this machine's numbers, and the services' memory (the host's
    // cgroups are v1, so each process's VmRSS).
    let s = r.stats(StatsRequest {}).await.unwrap().into_inner();
    let mem = s.memory.unwrap();
    assert!(mem.total_bytes > 0 && mem.available_bytes <= mem.total_bytes);
    assert_eq!(s.cpus[0].name, "cpu");
    assert!(s.cpus.len() >= 2 && s.ticks_per_second > 0);
    assert!(s.load.is_some());
    assert_eq!(s.disks[0].mount_point, "/");
    assert!(s.disks[0].total_bytes > 0);
    let ids: Vec<(&str, &str)> = s
        .services
        .iter()
        .map(|m| (m.id.as_str(), m.source.as_str()))
        .collect();
    assert_eq!(ids, [("apid", "rss"), ("worker", "rss")]);
    assert!(s.services.iter().all(|m| m.memory_bytes > 0));
    // The reader's stream is still following: stopping the server ends it
    // (a graceful shutdown would otherwise wait for it forever).
    apid.stop().await;
    let end = tokio::time::timeout(TIMEOUT, events.message()).await;
    assert!(matches!(end, Ok(Ok(None))), "{end:?}");
}

#[tokio::test]
async fn without_pid1_service_calls_are_unavailable() {
    let apid = Apid::start_with(false).await;
    let pki = Pki::new("machine CA");
    let mut c = apid.client(insecure).await;
    c.apply_configuration(ApplyConfigurationRequest {
        data: pki.config("node-5").into_bytes(),
        mode: ApplyMode::Auto as i32,
        dry_run: false,
        try_timeout_seconds: 0,
    })
    .await
    .unwrap();
    let mut r = apid.client_as(&pki, Role::Reader).await;
    // The calls that need PID 1 say so; apid itself stays up.
    refused(
        r.service_list(ServiceListRequest {}).await,
        Code::Unavailable,
    );
    let err = refused(r.stats(StatsRequest {}).await, Code::Unavailable);
    assert!(
        err.message().contains("control channel"),
        "{}",
        err.message()
    );
    r.version(VersionRequest {}).await.unwrap();
    apid.stop().await;
}

/// An apply request in `mode`.
fn apply(data: &str, mode: ApplyMode, try_timeout_seconds: u32) -> ApplyConfigurationRequest {
    ApplyConfigurationRequest {
        data: data.as_bytes().to_vec(),
        mode: mode as i32,
        dry_run: false,
        try_timeout_seconds,
    }
}

/// The error a call must end in, checked to be `code`.
fn refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code) -> tonic::Status {
    let err = r.unwrap_err();
    assert_eq!(err.code(), code, "{err}");
    err
}

/// Applies `req`, which must fail with `code` and a message naming
/// `naming`.
async fn apply_refused(
    c: &mut kiln_api_proto::v1::machine_client::MachineClient<tonic::transport::Channel>,
    req: ApplyConfigurationRequest,
    code: Code,
    naming: &str,
) {
    let err = refused(c.apply_configuration(req).await, code);
    assert!(err.message().contains(naming), "{}", err.message());
}

/// Reads events until one matches; panics on none in time.
async fn until_event<T>(
    events: &mut tonic::Streaming<Event>,
    pick: impl Fn(event::Event) -> Option<T>,
) -> T {
    loop {
        if let Some(found) = pick(next_event(events).await) {
            return found;
        }
    }
}

#[tokio::test]
async fn try_mode_reverts_unless_confirmed() {
    let apid = Apid::start().await;
    let pki = Pki::new("machine CA");
    let first = pki.config("node-6");
    let mut c = apid.client(insecure).await;
    // A node with no config has nothing to go back to.
    refused(
        c.apply_configuration(apply(&first, ApplyMode::Try, 5))
            .await,
        Code::FailedPrecondition,
    );
    c.apply_configuration(apply(&first, ApplyMode::Auto, 0))
        .await
        .unwrap();
    let mut a = apid.client_as(&pki, Role::Admin).await;
    let mut events = a
        .events(EventsRequest { follow: true })
        .await
        .unwrap()
        .into_inner();

    // A change that needs a reboot cannot be tried; nor can a timeout out
    // of bounds be asked for.
    let moved = first.replace("https://10.0.0.1:6443", "https://10.0.0.2:6443");
    apply_refused(
        &mut a,
        apply(&moved, ApplyMode::Try, 5),
        Code::FailedPrecondition,
        "cluster.endpoint",
    )
    .await;
    let tried = pki.config("node-7");
    apply_refused(
        &mut a,
        apply(&tried, ApplyMode::Try, 4),
        Code::InvalidArgument,
        "try_timeout_seconds",
    )
    .await;

    // Tried: stored and live at once, reverted after the timeout.
    let r = a
        .apply_configuration(apply(&tried, ApplyMode::Try, 5))
        .await
        .unwrap()
        .into_inner();
    assert!(r.message.contains("reverts in 5 s"), "{r:?}");
    assert!(r.revert_at_unix_ms > 0 && !r.reboot, "{r:?}");
    assert_eq!(apid.stored().as_deref(), Some(tried.as_bytes()));
    // Nothing else is applied while a try is pending.
    apply_refused(
        &mut a,
        apply(&pki.config("node-9"), ApplyMode::Auto, 0),
        Code::FailedPrecondition,
        "awaits confirmation",
    )
    .await;
    let reverted = until_event(&mut events, |e| match e {
        event::Event::ConfigReverted(r) => Some(r),
        _ => None,
    })
    .await;
    assert!(reverted.message.contains("previous config"), "{reverted:?}");
    assert_eq!(apid.stored().as_deref(), Some(first.as_bytes()));
    refused(
        a.confirm_configuration(ConfirmConfigurationRequest {})
            .await,
        Code::FailedPrecondition,
    );

    // Confirmed: it stays past its deadline.
    let kept = pki.config("node-8");
    a.apply_configuration(apply(&kept, ApplyMode::Try, 5))
        .await
        .unwrap();
    a.confirm_configuration(ConfirmConfigurationRequest {})
        .await
        .unwrap();
    until_event(&mut events, |e| match e {
        event::Event::ConfigConfirmed(c) => Some(c),
        _ => None,
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(apid.stored().as_deref(), Some(kept.as_bytes()));
    // Only an admin confirms.
    let mut r = apid.client_as(&pki, Role::Reader).await;
    refused(
        r.confirm_configuration(ConfirmConfigurationRequest {})
            .await,
        Code::PermissionDenied,
    );
    drop(events);
    apid.stop().await;
}

#[tokio::test]
async fn a_try_left_by_an_earlier_apid_is_resumed() {
    let pki = Pki::new("machine CA");
    let (old, tried) = (pki.config("node-10"), pki.config("node-11"));
    // As an apid that was restarted two seconds into a try left it.
    let deadline = kiln_config_store::try_apply::boottime_ms() + 2000;
    let apid = Apid::start_full(true, None, |store| {
        store
            .begin_try(tried.as_bytes(), old.as_bytes(), deadline)
            .unwrap()
    })
    .await;
    let mut a = apid.client_as(&pki, Role::Admin).await;
    let mut events = a
        .events(EventsRequest { follow: true })
        .await
        .unwrap()
        .into_inner();
    until_event(&mut events, |e| match e {
        event::Event::ConfigReverted(r) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!(apid.stored().as_deref(), Some(old.as_bytes()));
    drop(events);
    apid.stop().await;
}

#[tokio::test]
async fn reset_is_recorded_for_pid1_then_reboots() {
    let mut apid = Apid::start().await;
    let pki = Pki::new("machine CA");
    let mut c = apid.client(insecure).await;
    // Not in maintenance mode: there is nothing to reset.
    refused(
        c.reset(ResetRequest { wipe_state: true }).await,
        Code::FailedPrecondition,
    );
    c.apply_configuration(apply(&pki.config("node-12"), ApplyMode::Auto, 0))
        .await
        .unwrap();
    let mut o = apid.client_as(&pki, Role::Operator).await;
    refused(
        o.reset(ResetRequest { wipe_state: false }).await,
        Code::PermissionDenied,
    );
    let mut a = apid.client_as(&pki, Role::Admin).await;
    a.reset(ResetRequest { wipe_state: true }).await.unwrap();
    let store = ConfigStore::new(&apid.dir.path().join("state"));
    assert_eq!(
        store.reset_request().unwrap(),
        Some(kiln_config_store::reset::ResetRequest { wipe_state: true })
    );
    let exit = tokio::time::timeout(TIMEOUT, apid.init_exit.take().unwrap())
        .await
        .unwrap();
    assert_eq!(exit, Some(Exit::Signal(libc::SIGINT)));
    apid.stop().await;
}

/// An HTTP server on loopback (hyper's) that answers 503 to the first
/// `failures` requests, then `body`; counts the requests. With `tls`, it
/// speaks https.
async fn config_server(
    body: String,
    failures: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (body, count, tls) = (body.clone(), count.clone(), tls.clone());
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let answer = if req.uri().path() != "/node.yaml" {
                    (404, String::new())
                } else if n < failures {
                    (503, String::new())
                } else {
                    (200, body.clone())
                };
                async move {
                    hyper::Response::builder()
                        .status(answer.0)
                        .body(Full::new(Bytes::from(answer.1)))
                }
            });
            let http = hyper::server::conn::http1::Builder::new();
            tokio::spawn(async move {
                let _ = match tls {
                    // A client that refuses the certificate ends here.
                    Some(tls) => match tls.accept(stream).await {
                        Ok(stream) => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await
                        }
                        Err(_) => return,
                    },
                    None => {
                        http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await
                    }
                };
            });
        }
    });
    (addr, served)
}

/// TLS for a config server at 127.0.0.1, with a certificate from a fresh
/// CA; and that CA, for a client to trust.
fn https_identity() -> (
    tokio_rustls::TlsAcceptor,
    rustls::pki_types::CertificateDer<'static>,
) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        ca.der().clone(),
    )
}

fn source(addr: SocketAddr, sha256: Option<[u8; 32]>) -> ConfigSource {
    ConfigSource {
        url: ConfigUrl::parse(&format!("http://{addr}/node.yaml")).unwrap(),
        sha256,
        trust: config_source::Trust::public(),
    }
}

#[tokio::test]
async fn config_fetched_from_the_command_line_url() {
    use sha2::Digest;
    let pki = Pki::new("machine CA");
    let config = pki.config("node-13");
    // The server fails twice first: apid retries with backoff.
    let (addr, served) = config_server(config.clone(), 2, None).await;
    let pin: [u8; 32] = sha2::Sha256::digest(config.as_bytes()).into();
    let apid = Apid::start_full(true, Some(source(addr, Some(pin))), |_| {}).await;
    let mut a = apid.client_as(&pki, Role::Admin).await;
    let v = a.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!(v.mode, Mode::Configured as i32);
    assert_eq!(apid.stored().as_deref(), Some(config.as_bytes()));
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 3);
    apid.stop().await;
}

#[tokio::test]
async fn a_bad_fetched_config_leaves_the_node_in_maintenance() {
    let pki = Pki::new("machine CA");
    for (config, pin) in [
        // Fails validation.
        (pki.config("Not_A_Hostname"), None),
        // Valid, but not the pinned document.
        (pki.config("node-14"), Some([0u8; 32])),
    ] {
        let (addr, served) = config_server(config, 0, None).await;
        let apid = Apid::start_full(true, Some(source(addr, pin)), |_| {}).await;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while served.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never fetched");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut c = apid.client(insecure).await;
        let v = c.version(VersionRequest {}).await.unwrap().into_inner();
        assert_eq!(v.mode, Mode::Maintenance as i32);
        assert_eq!(apid.stored(), None);
        // Not retried: the document will not get better.
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
        apid.stop().await;
    }
}

#[tokio::test]
async fn config_fetched_over_https_only_from_a_trusted_server() {
    let pki = Pki::new("machine CA");
    let config = pki.config("node-15");
    let (tls, ca) = https_identity();
    let (addr, served) = config_server(config.clone(), 0, Some(tls)).await;
    let url = ConfigUrl::parse(&format!("https://{addr}/node.yaml")).unwrap();

    // The public roots do not know the test's CA: refused before any
    // request is sent (and retried by apid, as for a clock not yet set).
    let err = config_source::fetch(&url, &config_source::Trust::public())
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 0);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let source = ConfigSource {
        url,
        sha256: None,
        trust: config_source::Trust::with_roots(roots),
    };
    let apid = Apid::start_full(true, Some(source), |_| {}).await;
    let mut a = apid.client_as(&pki, Role::Admin).await;
    let v = a.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!(v.mode, Mode::Configured as i32);
    assert_eq!(apid.stored().as_deref(), Some(config.as_bytes()));
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
    apid.stop().await;
}
