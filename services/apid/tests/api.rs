//! apid end to end on this host: the real server on loopback with real TLS,
//! driven through kiln-api-client as kilnctl drives it. Covers maintenance
//! mode, the first config, mutual TLS and roles, refusals, logs and power.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use kiln_api_client::{connect, Trust};
use kiln_api_proto::v1::{
    ApplyConfigurationRequest, ApplyMode, GetConfigurationRequest, LogsRequest, Mode,
    RebootRequest, VersionRequest,
};
use kiln_apid::{ConfigStore, Node};
use kiln_pki::Role;
use kiln_pki::{Ca, KeyedCert, Validity, CLIENT_VALIDITY};
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
/// receives its power requests.
struct Apid {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    init: Child,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), kiln_apid::Error>>>,
}

impl Apid {
    fn start() -> Apid {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        let init = Command::new("sleep").arg("60").spawn().unwrap();
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let node = Arc::new(Node {
            store: ConfigStore::new(&dir.path().join("state")),
            log_dir: dir.path().join("log"),
            kmsg: "/dev/kmsg".into(),
            init: Pid::from_raw(init.id() as i32),
            names: vec!["localhost".into(), "127.0.0.1".into()],
            console: Some(dir.path().join("console")),
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(kiln_apid::serve(node, addr, async {
            let _ = rx.await;
        }));
        Apid {
            addr,
            dir,
            init,
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
        let _ = self.init.kill();
        let _ = self.init.wait();
    }
}

fn insecure() -> Trust {
    Trust::Maintenance { fingerprint: None }
}

#[tokio::test]
async fn maintenance_then_configured_with_roles() {
    let apid = Apid::start();
    let pki = Pki::new("machine CA");

    // Maintenance: Version answers, reading config does not.
    let mut c = apid.client(insecure).await;
    let v = c.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!(v.mode, Mode::Maintenance as i32);
    assert_eq!(v.version, env!("CARGO_PKG_VERSION"));
    let err = c
        .get_configuration(GetConfigurationRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");

    // A bad config is refused with the field named; nothing is stored.
    let bad = pki.config("Not_A_Hostname");
    let err = c
        .apply_configuration(ApplyConfigurationRequest {
            data: bad.into_bytes(),
            mode: ApplyMode::Auto as i32,
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("hostname"), "{}", err.message());
    assert_eq!(apid.stored(), None);

    // The first config is stored and the node leaves maintenance mode.
    let good = pki.config("node-1");
    let r = c
        .apply_configuration(ApplyConfigurationRequest {
            data: good.clone().into_bytes(),
            mode: ApplyMode::Auto as i32,
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.reboot, "{r:?}");
    assert_eq!(apid.stored().as_deref(), Some(good.as_bytes()));

    // Now only CA-signed clients get in, each with its role.
    let admin = pki.role(Role::Admin);
    let mut a = apid.client(|| pki.trust(&admin)).await;
    let v = a.version(VersionRequest {}).await.unwrap().into_inner();
    assert_eq!(v.mode, Mode::Configured as i32);
    let full = a
        .get_configuration(GetConfigurationRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!full.redacted);
    assert_eq!(full.data, good.as_bytes());

    let reader = pki.role(Role::Reader);
    let mut r = apid.client(|| pki.trust(&reader)).await;
    let seen = r
        .get_configuration(GetConfigurationRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(seen.redacted);
    let text = String::from_utf8(seen.data).unwrap();
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    assert!(!text.contains("0123456789abcdef"), "{text}");
    let err = r.reboot(RebootRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let err = r
        .apply_configuration(ApplyConfigurationRequest {
            data: good.clone().into_bytes(),
            mode: ApplyMode::Auto as i32,
            dry_run: true,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // A certificate with no Kiln role is refused by apid.
    let nobody = pki.client(&["system:masters"], false);
    let mut n = apid.client(|| pki.trust(&nobody)).await;
    let err = n.version(VersionRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

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
    let apid = Apid::start();
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
    let mut apid = Apid::start();
    let pki = Pki::new("machine CA");
    let mut c = apid.client(insecure).await;
    c.apply_configuration(ApplyConfigurationRequest {
        data: pki.config("node-2").into_bytes(),
        mode: ApplyMode::Auto as i32,
        dry_run: false,
    })
    .await
    .unwrap();
    let operator = pki.role(Role::Operator);
    let mut o = apid.client(|| pki.trust(&operator)).await;

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
    let status = tokio::task::spawn_blocking({
        let mut init = std::mem::replace(&mut apid.init, Command::new("true").spawn().unwrap());
        move || init.wait().unwrap()
    })
    .await
    .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGINT));
    apid.stop().await;
}
