//! Shared by the host tests: Debian's chronyd as a real NTP server on a
//! loopback port, a test [`Clock`] that is the host's clock plus a skew
//! (timed steps and slews the skew, never the host's clock), and timed's
//! daemon run against both.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kiln_timed::client::{self, Query};
use kiln_timed::servers::{Server, Sources};
use kiln_timed::{Clock, ClockError, Options, Status, Timing};
use tokio::sync::watch;

pub const YEAR_NS: i64 = 365 * 86_400 * 1_000_000_000;

/// A loopback UDP port nobody uses (bound then released).
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

/// chronyd serving its own clock (`local stratum 8`) on 127.0.0.1:`port`;
/// `-x`: it never touches the host's clock. Killed on drop.
pub struct Chrony {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Chrony {
    pub async fn start() -> Chrony {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_udp_port();
        let d = dir.path().display();
        let conf = dir.path().join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbindaddress 127.0.0.1\nlocal stratum 8\nallow 127.0.0.1\n\
                 cmdport 0\ndriftfile {d}/drift\npidfile {d}/chronyd.pid\n"
            ),
        )
        .expect("chrony.conf");
        let log = dir.path().join("chronyd.log");
        let child = Command::new("chronyd")
            // -d: foreground, log to stderr; -x: no clock control; -u root:
            // no privilege drop (the tempdir is root's).
            .args(["-d", "-x", "-u", "root", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("chronyd (apt package chrony, installed by cargo xtask)");
        let chrony = Chrony {
            child,
            port,
            _dir: dir,
            log,
        };
        chrony.wait_serving().await;
        chrony
    }

    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Until one query from a clock without skew gets an answer.
    async fn wait_serving(&self) {
        let clock = TestClock::new(0);
        let server = Server::parse(&self.server()).expect("server");
        let q = Query {
            samples: 1,
            timeout: Duration::from_millis(200),
        };
        for _ in 0..50 {
            if client::query(&clock, &server, q).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "chronyd does not answer on port {}:\n{}",
            self.port,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for Chrony {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What timed did to a [`TestClock`].
#[derive(Debug, Default, Clone)]
pub struct Record {
    pub skew_ns: i64,
    pub steps: Vec<i64>,
    pub slews: Vec<i64>,
    pub rtc_writes: Vec<SystemTime>,
}

/// The host's clock plus `skew_ns`. A step moves the skew at once; a slew is
/// recorded and applied whole (as the kernel would, over time).
pub struct TestClock {
    pub record: Mutex<Record>,
}

impl TestClock {
    pub fn new(skew_ns: i64) -> TestClock {
        TestClock {
            record: Mutex::new(Record {
                skew_ns,
                ..Record::default()
            }),
        }
    }

    pub fn record(&self) -> Record {
        self.record.lock().expect("lock").clone()
    }
}

fn shift(t: SystemTime, ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        t + d
    } else {
        t - d
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        shift(SystemTime::now(), self.record().skew_ns)
    }

    fn step(&self, offset_ns: i64) -> Result<(), ClockError> {
        let mut r = self.record.lock().expect("lock");
        r.skew_ns += offset_ns;
        r.steps.push(offset_ns);
        Ok(())
    }

    fn slew(&self, offset_ns: i64, _poll: Duration) -> Result<(), ClockError> {
        let mut r = self.record.lock().expect("lock");
        r.skew_ns += offset_ns;
        r.slews.push(offset_ns);
        Ok(())
    }

    fn read_rtc(&self) -> Result<SystemTime, ClockError> {
        Ok(self
            .record()
            .rtc_writes
            .last()
            .copied()
            .unwrap_or(SystemTime::UNIX_EPOCH))
    }

    fn write_rtc(&self, time: SystemTime) -> Result<(), ClockError> {
        self.record.lock().expect("lock").rtc_writes.push(time);
        Ok(())
    }
}

/// The repository's example machine config with `time.servers` replaced.
pub fn write_config(path: &Path, servers: &[String]) {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/machine/static-worker.yaml"
    );
    let text = std::fs::read_to_string(example).expect("example config");
    let old = "time:\n  servers:\n    - 10.0.100.2\n    - ntp.example.internal\n";
    assert!(text.contains(old), "the example's time section changed");
    let mut time = String::from("time:\n  servers:\n");
    for s in servers {
        time.push_str(&format!("    - \"{s}\"\n"));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text.replace(old, &time)).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// Short intervals so tests take seconds.
pub fn fast_timing() -> Timing {
    Timing {
        query: Query {
            samples: 4,
            timeout: Duration::from_millis(300),
        },
        min_poll: Duration::from_secs(1),
        max_poll: Duration::from_secs(4),
        retry: Duration::from_millis(300),
        retry_max: Duration::from_millis(1200),
        reread: Duration::from_millis(200),
    }
}

/// timed's daemon on a tokio task, with its files in a tempdir.
pub struct Timed {
    pub clock: Arc<TestClock>,
    pub status: watch::Receiver<Status>,
    pub dir: tempfile::TempDir,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Timed {
    pub fn config(dir: &Path) -> PathBuf {
        dir.join("config.yaml")
    }

    /// Starts the daemon with `servers` in the machine config (none: no
    /// config file).
    pub fn start(skew_ns: i64, servers: &[String], timing: Timing) -> Timed {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_max_level(tracing::Level::DEBUG)
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        if !servers.is_empty() {
            write_config(&Self::config(dir.path()), servers);
        }
        let options = Options {
            sources: Sources {
                config: Self::config(dir.path()),
                netd: dir.path().join("ntp-servers"),
            },
            status_file: dir.path().join("time.json"),
            synced_marker: dir.path().join("time-synced"),
            timing,
        };
        let clock = Arc::new(TestClock::new(skew_ns));
        let (status_tx, status) = watch::channel(Status::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let c = clock.clone();
        let task = tokio::spawn(async move {
            kiln_timed::serve(&*c, options, status_tx, shutdown_rx).await;
        });
        Timed {
            clock,
            status,
            dir,
            shutdown,
            task,
        }
    }

    /// Waits (bounded) for a status that satisfies `pred`.
    pub async fn wait(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Status) -> bool,
    ) -> Status {
        let found = tokio::time::timeout(within, self.status.wait_for(|s| pred(s)))
            .await
            .ok()
            .and_then(|r| r.ok().map(|s| s.clone()));
        found.unwrap_or_else(|| {
            panic!(
                "{what}: not within {within:?}; status: {:?}",
                *self.status.borrow()
            )
        })
    }

    pub fn status_file(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.path().join("time.json")).expect("status file");
        serde_json::from_str(&text).expect("status JSON")
    }

    pub fn marker(&self) -> PathBuf {
        self.dir.path().join("time-synced")
    }

    /// Stops the daemon as SIGTERM does; it must finish promptly.
    pub async fn stop(self) -> (Arc<TestClock>, tempfile::TempDir) {
        self.shutdown.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("timed stops within 5 s")
            .expect("timed's task");
        (self.clock, self.dir)
    }
}
