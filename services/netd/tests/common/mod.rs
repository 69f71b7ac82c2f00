//! Test network: a server namespace and a client namespace joined by veth
//! pairs, Debian's dnsmasq as DHCP server, netd's library in the client
//! namespace. Every name is unique per test and process; guards undo
//! everything on drop, also when a test fails.
//!
//! The tests use `ip` to build and inspect the network; netd does not.

#![allow(dead_code)] // each test file uses part of the harness

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use kiln_netd::{Options, Settings, Status};
use tokio::sync::watch;

/// Generous: dnsmasq pings an address before offering it, and the host is
/// shared with QEMU runs.
pub const DEADLINE: Duration = Duration::from_secs(60);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A number unique to this test in this process (names, subnets).
pub fn unique() -> u32 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs `ip` with arguments; panics with its stderr on failure.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        Netns { name }
    }

    /// `ip -n <ns> args…`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces, `links` veth pairs between them, and a /24 for each.
pub struct TestNet {
    pub id: u32,
    pub client: Netns,
    pub server: Netns,
    /// Client-side and server-side link names, pair by pair.
    pub pairs: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
}

impl TestNet {
    /// Both ends start down; `serve(i)` addresses and raises a server end.
    pub fn new(links: usize) -> TestNet {
        let id = unique();
        let pid = std::process::id() % 100_000;
        let client = Netns::new(format!("netd-{pid}-{id}-c"));
        let server = Netns::new(format!("netd-{pid}-{id}-s"));
        let mut pairs = Vec::new();
        for i in 0..links {
            // At most 15 bytes: "nd" + 5 + 2 + 1 + 1 + 1.
            let c = format!("nd{pid}{id:02}{i}c");
            let s = format!("nd{pid}{id:02}{i}s");
            ip(&["link", "add", &c, "type", "veth", "peer", "name", &s]);
            ip(&["link", "set", &c, "netns", &client.name]);
            ip(&["link", "set", &s, "netns", &server.name]);
            pairs.push((c, s));
        }
        server.ip(&["link", "set", "lo", "up"]);
        client.ip(&["link", "set", "lo", "up"]);
        TestNet {
            id,
            client,
            server,
            pairs,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// `10.<200+pair>.<id>.<host>`: distinct per test and pair.
    pub fn addr(&self, pair: usize, host: u8) -> String {
        format!("10.{}.{}.{host}", 200 + pair, self.id)
    }

    /// Gives the server end of `pair` its .1 address and raises it.
    pub fn serve(&self, pair: usize) {
        let s = &self.pairs[pair].1;
        let a = format!("{}/24", self.addr(pair, 1));
        self.server.ip(&["addr", "add", &a, "dev", s]);
        self.server.ip(&["link", "set", s, "up"]);
    }

    /// The client's IPv4 addresses on `dev`, as `a.b.c.d/len`.
    pub fn client_addrs(&self, dev: &str) -> Vec<String> {
        self.client
            .ip(&["-4", "-o", "addr", "show", "dev", dev])
            .lines()
            .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
            .map(str::to_string)
            .collect()
    }

    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.path().join("resolv.conf")
    }

    pub fn ntp_servers(&self) -> PathBuf {
        self.dir.path().join("ntp-servers")
    }

    pub fn hosts(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    pub fn options(&self) -> Options {
        Options {
            resolv_conf: self.resolv_conf(),
            ntp_servers: self.ntp_servers(),
            hosts: self.hosts(),
        }
    }
}

/// Debian's dnsmasq as DHCP server in the server namespace; killed on drop.
pub struct Dnsmasq {
    child: Child,
    pub log: PathBuf,
}

impl Dnsmasq {
    /// Serves `range` (e.g. "10.200.1.50,10.200.1.60,255.255.255.0,2m") on
    /// `dev` with extra `args`; `leases` is the lease file.
    pub fn start(net: &TestNet, dev: &str, range: &str, leases: &Path, args: &[&str]) -> Dnsmasq {
        let log = net.dir.path().join(format!("dnsmasq-{}.log", unique()));
        let out = File::create(&log).expect("dnsmasq log");
        let err = out.try_clone().expect("dnsmasq log");
        let pid = net.dir.path().join(format!("dnsmasq-{}.pid", unique()));
        let child = Command::new("ip")
            .args(["netns", "exec", &net.server.name, "dnsmasq"])
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--bind-interfaces",
                "--log-dhcp",
                "--user=root",
            ])
            .arg(format!("--interface={dev}"))
            .arg(format!("--dhcp-range={range}"))
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg(format!("--pid-file={}", pid.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start dnsmasq (apt-get install dnsmasq-base)");
        let d = Dnsmasq { child, log };
        d.wait_log("DHCP, sockets bound", 1);
        d
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the log containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until `needle` appears `n` times (dnsmasq has no event API).
    pub fn wait_log(&self, needle: &str, n: usize) {
        let end = std::time::Instant::now() + DEADLINE;
        while self.count(needle) < n {
            assert!(
                std::time::Instant::now() < end,
                "dnsmasq never logged {needle:?} {n} times:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// netd's library serving `settings` inside the client namespace, on its
/// own thread (setns only moves the calling thread), with its own UTS
/// namespace (netd sets the hostname; the host's must stay); stopped on
/// drop.
pub struct Netd {
    pub status: watch::Receiver<Status>,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Netd {
    pub fn start(net: &TestNet, settings: Settings) -> Netd {
        let options = net.options();
        Self::start_with(net, move |status_tx, shutdown_rx| {
            Box::pin(kiln_netd::serve(settings, options, status_tx, shutdown_rx))
        })
    }

    /// netd following a stored machine config at `config`, with `cmdline`
    /// as the kernel command line.
    pub fn start_config(net: &TestNet, config: PathBuf, cmdline: &str) -> Netd {
        let options = net.options();
        let source = kiln_netd::Source {
            config,
            cmdline: cmdline.to_string(),
        };
        Self::start_with(net, move |status_tx, shutdown_rx| {
            Box::pin(kiln_netd::serve_config(
                source,
                options,
                status_tx,
                shutdown_rx,
            ))
        })
    }

    fn start_with(
        net: &TestNet,
        serve: impl FnOnce(
                watch::Sender<Status>,
                watch::Receiver<bool>,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<(), kiln_netd::Error>>>,
            > + Send
            + 'static,
    ) -> Netd {
        // netd's log in the test output (shown for failing tests).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_max_level(tracing::Level::DEBUG)
            .try_init();
        let ns = File::open(format!("/run/netns/{}", net.client.name)).expect("netns file");
        let (status_tx, status) = watch::channel(Status::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let thread = std::thread::spawn(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns: {e}"))?;
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS)
                .map_err(|e| format!("unshare UTS: {e}"))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(serve(status_tx, shutdown_rx))
                .map_err(|e| e.to_string())
        });
        Netd {
            status,
            shutdown,
            thread: Some(thread),
        }
    }

    /// Waits (up to `deadline`) for a status that satisfies `pred`.
    pub fn wait(
        &mut self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&Status) -> bool,
    ) -> Status {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let status = &mut self.status;
        let r = rt.block_on(async {
            tokio::time::timeout(deadline, async {
                status.wait_for(|s| pred(s)).await.map(|s| s.clone())
            })
            .await
        });
        match r {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => panic!(
                "netd stopped while waiting for {what}: {:?}",
                self.stop_now()
            ),
            Err(_) => panic!(
                "timed out waiting for {what}; status: {:#?}",
                *self.status.borrow()
            ),
        }
    }

    /// Stops netd (it releases its leases) and returns how it ended.
    pub fn stop(mut self) -> Result<(), String> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> Result<(), String> {
        self.shutdown.send_replace(true);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| "netd thread panicked".to_string())?,
            None => Ok(()),
        }
    }
}

impl Drop for Netd {
    fn drop(&mut self) {
        let _ = self.stop_now();
    }
}
