//! kilnctl against a real apid on loopback: what `gen config` makes is what
//! a node takes, maintenance mode by `--insecure`, then contexts and roles,
//! text and JSON output, and exit codes per outcome.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_apid::stats::Sources;
use kiln_apid::{ConfigStore, Node};
use kiln_supervisor::reaper::{self, Reaper};
use kiln_supervisor::{ServiceSpec, Supervisor, SupervisorConfig};
use nix::unistd::Pid;
use serde_json::json;

fn kilnctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kilnctl"))
        .args(args)
        .env_remove("KILNCONFIG")
        .output()
        .expect("kilnctl runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs kilnctl until it succeeds (apid restarts after the first config).
fn until_ok(args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = kilnctl(args);
        if out.status.success() || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The node side, in a child process of this test binary: apid on a
/// loopback port, with PID 1's real control channel over a real supervisor
/// running `sleep` as the services "apid" and "worker", and a `sleep` as
/// "init" receiving power requests. A child process, because the
/// supervisor's reaper reaps every child of its process, and these tests
/// wait for the kilnctl processes they run.
struct Apid {
    endpoint: String,
    node: Child,
    _dir: tempfile::TempDir,
}

const NODE_DIR: &str = "KILNCTL_TEST_NODE_DIR";
const NODE_ADDR: &str = "KILNCTL_TEST_NODE_ADDR";

impl Apid {
    fn start() -> Apid {
        let dir = tempfile::tempdir().unwrap();
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let node = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "node_process", "--nocapture"])
            .env(NODE_DIR, dir.path())
            .env(NODE_ADDR, addr.to_string())
            // The harness's own lines would mix with this one's.
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Apid {
            endpoint: addr.to_string(),
            node,
            _dir: dir,
        }
    }
}

impl Drop for Apid {
    fn drop(&mut self) {
        // SIGTERM: the node process stops its services, then exits.
        let _ = nix::sys::signal::kill(
            Pid::from_raw(self.node.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.node.wait();
    }
}

/// Not a test of its own: the node process for [`Apid`], which runs this
/// test binary again with the node's directory and address in the
/// environment. Without them (a normal test run) it does nothing.
#[test]
fn node_process() {
    let (Some(dir), Some(addr)) = (std::env::var_os(NODE_DIR), std::env::var_os(NODE_ADDR)) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let addr: std::net::SocketAddr = addr.to_str().unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reaper::become_subreaper().unwrap();
        let reaper = Reaper::start();
        let (init, _) = reaper
            .spawn(&reaper::Command::new(["/bin/sleep", "600"]))
            .unwrap();
        let supervisor = Supervisor::new(SupervisorConfig::default(), reaper);
        let sleeper = |id| ServiceSpec::new(id, ["sleep", "600"]).env("PATH", "/usr/bin:/bin");
        supervisor
            .load(vec![sleeper("apid"), sleeper("worker")])
            .await
            .unwrap();
        let control = dir.join("init.sock");
        kiln_init::control::spawn(supervisor.clone(), control.clone(), "apid", vec![]);
        let node = Arc::new(Node {
            store: ConfigStore::new(&dir.join("state")),
            log_dir: dir.join("log"),
            kmsg: "/dev/kmsg".into(),
            init: Pid::from_raw(init),
            names: vec!["127.0.0.1".into()],
            console: None,
            control,
            stats: Sources {
                proc: "/proc".into(),
                cgroups: dir.join("cgroups"),
                disks: vec!["/".into()],
            },
            config_source: None,
        });
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        kiln_apid::serve(node, addr, async move {
            term.recv().await;
        })
        .await
        .unwrap();
        supervisor.shutdown(Duration::from_secs(10)).await;
        let _ = nix::sys::signal::kill(Pid::from_raw(init), nix::sys::signal::Signal::SIGKILL);
    });
}

#[test]
fn maintenance_apply_then_contexts_and_roles() {
    let apid = Apid::start();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    gen_config(dir);
    let node_yaml = Path::new(dir).join("node.yaml");
    let kilnconfig = Path::new(dir).join("kilnconfig");
    let (kc, n) = (kilnconfig.to_str().unwrap(), apid.endpoint.as_str());

    let v = until_ok(&["--insecure", "-n", n, "version"]);
    assert!(v.status.success(), "{}", text(&v.stderr));
    assert!(
        text(&v.stdout).contains("maintenance"),
        "{}",
        text(&v.stdout)
    );

    // --insecure needs nodes; a bad -o is a usage error.
    assert_eq!(kilnctl(&["--insecure", "version"]).status.code(), Some(2));
    assert_eq!(
        kilnctl(&["--insecure", "-n", n, "-o", "yaml", "version"])
            .status
            .code(),
        Some(2)
    );

    let apply = kilnctl(&["--insecure", "-n", n, "apply", node_yaml.to_str().unwrap()]);
    assert!(apply.status.success(), "{}", text(&apply.stderr));
    assert!(text(&apply.stdout).contains("leaves maintenance mode"));

    // Now the admin context (the default) gets in, as JSON too.
    let v = until_ok(&["--kilnconfig", kc, "-n", n, "-o", "json", "version"]);
    assert!(v.status.success(), "{}", text(&v.stderr));
    let line: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(line["mode"], "configured");
    assert_eq!(line["node"], n);

    // The reader sees a redacted config and may not reboot (exit 1).
    let get = kilnctl(&[
        "--kilnconfig",
        kc,
        "--context",
        "lab-reader",
        "-n",
        n,
        "get-config",
    ]);
    assert!(get.status.success(), "{}", text(&get.stderr));
    let shown = text(&get.stdout);
    assert!(
        shown.contains("<redacted>") && !shown.contains("PRIVATE KEY"),
        "{shown}"
    );
    let reboot = kilnctl(&[
        "--kilnconfig",
        kc,
        "--context",
        "lab-reader",
        "-n",
        n,
        "reboot",
    ]);
    assert_eq!(reboot.status.code(), Some(1));
    assert!(
        text(&reboot.stderr).contains("PermissionDenied"),
        "{}",
        text(&reboot.stderr)
    );

    // Maintenance-mode trust no longer works; an unknown context is named.
    assert_eq!(
        kilnctl(&["--insecure", "-n", n, "version"]).status.code(),
        Some(1)
    );
    let ctx = kilnctl(&["--kilnconfig", kc, "--context", "nope", "-n", n, "version"]);
    assert_eq!(ctx.status.code(), Some(1));
    assert!(
        text(&ctx.stderr).contains("no context \"nope\""),
        "{}",
        text(&ctx.stderr)
    );

    // Two nodes (the same one twice): each result labelled.
    let both = format!("{n},{n}");
    let v = kilnctl(&["--kilnconfig", kc, "-n", &both, "version"]);
    assert!(v.status.success());
    assert_eq!(
        text(&v.stdout)
            .lines()
            .filter(|l| l.starts_with(&format!("{n}: Kiln")))
            .count(),
        2
    );
}

/// `kilnctl gen config` for the test cluster into `dir`.
fn gen_config(dir: &str) {
    let gen = kilnctl(&[
        "gen",
        "config",
        "--cluster",
        "lab",
        "--endpoint",
        "https://10.0.0.1:6443",
        "--out",
        dir,
    ]);
    assert!(gen.status.success(), "{}", text(&gen.stderr));
}

/// A configured node and its client config: (apid, kilnconfig dir).
fn configured() -> (Apid, tempfile::TempDir) {
    let apid = Apid::start();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    gen_config(dir);
    let node_yaml = out.path().join("node.yaml");
    let n = apid.endpoint.as_str();
    let apply = until_ok(&["--insecure", "-n", n, "apply", node_yaml.to_str().unwrap()]);
    assert!(apply.status.success(), "{}", text(&apply.stderr));
    (apid, out)
}

#[test]
fn services_events_and_stats() {
    let (apid, out) = configured();
    let kc = out.path().join("kilnconfig");
    let (kc, n) = (kc.to_str().unwrap(), apid.endpoint.as_str());
    let admin = |args: &[&str]| kilnctl(&[&["--kilnconfig", kc, "-n", n][..], args].concat());
    let reader = |args: &[&str]| {
        kilnctl(
            &[
                &["--kilnconfig", kc, "--context", "lab-reader", "-n", n][..],
                args,
            ]
            .concat(),
        )
    };
    let healthy = |id: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = admin(&["-o", "json", "services"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let up = text(&out.stdout).lines().any(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["id"] == id && v["state"] == "healthy"
            });
            if up {
                return;
            }
            assert!(Instant::now() < deadline, "{id} never healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // apid restarts in configured mode after the first config.
    let up = until_ok(&["--kilnconfig", kc, "-n", n, "version"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    healthy("worker");

    // The list, as text (a header, a row per service) and as JSON.
    let list = reader(&["services"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let rows = text(&list.stdout);
    assert!(
        rows.lines().next().unwrap().starts_with("SERVICE"),
        "{rows}"
    );
    assert!(
        rows.lines()
            .any(|l| l.starts_with("worker") && l.contains("healthy")),
        "{rows}"
    );
    let json = admin(&["-o", "json", "services"]);
    let ids: Vec<String> = text(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            assert_eq!(v["node"], n);
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids, ["apid", "worker"]);

    // A reader cannot stop a service (exit 1); an admin can.
    let refused = reader(&["service", "stop", "worker"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("PermissionDenied"),
        "{}",
        text(&refused.stderr)
    );
    let stop = admin(&["service", "stop", "worker"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    assert!(
        text(&stop.stdout).starts_with("worker: stopped"),
        "{}",
        text(&stop.stdout)
    );
    let start = admin(&["-o", "json", "service", "start", "worker"]);
    assert!(start.status.success(), "{}", text(&start.stderr));
    let v: serde_json::Value = serde_json::from_slice(&start.stdout).unwrap();
    assert_eq!(v["id"], "worker");
    healthy("worker");
    let restart = admin(&["service", "restart", "worker"]);
    assert!(restart.status.success(), "{}", text(&restart.stderr));
    for (args, says) in [
        (&["service", "stop", "apid"][..], "FailedPrecondition"),
        (&["service", "restart", "nope"], "NotFound"),
    ] {
        let out = admin(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // Missing id: a usage error.
    assert_eq!(admin(&["service", "stop"]).status.code(), Some(2));

    // Events without -f: the config applied and every current state, then
    // the end.
    let events = reader(&["events"]);
    assert!(events.status.success(), "{}", text(&events.stderr));
    let lines = text(&events.stdout);
    assert!(lines.contains("config applied"), "{lines}");
    assert!(lines.lines().any(|l| l.contains(" worker ")), "{lines}");

    // events -f follows until ctrl-c (SIGINT), then exits 0.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_kilnctl"))
        .args(["--kilnconfig", kc, "-n", n, "-o", "json", "events", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            let _ = lines_tx.send(v);
        }
    });
    let wait = Duration::from_secs(20);
    // The current states come first: the stream is up.
    let first = lines
        .recv_timeout(wait)
        .expect("events -f prints the current states");
    assert_eq!(first["node"], n);
    let stop = admin(&["service", "stop", "worker"]);
    assert!(stop.status.success());
    loop {
        let v = lines.recv_timeout(wait).expect("worker's stop is followed");
        if v["service"] == "worker" && v["state"] == "stopped" {
            break;
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(follow.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = follow.wait().unwrap();
    assert_eq!(status.code(), Some(0), "ctrl-c ends follow cleanly");

    // Stats, as text and as JSON.
    let stats = reader(&["stats"]);
    assert!(stats.status.success(), "{}", text(&stats.stderr));
    let shown = text(&stats.stdout);
    assert!(shown.starts_with("memory "), "{shown}");
    assert!(
        shown.lines().any(|l| l.starts_with("disk     / ")),
        "{shown}"
    );
    assert!(
        shown.lines().any(|l| l.starts_with("service  apid ")),
        "{shown}"
    );
    let stats = reader(&["-o", "json", "stats"]);
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert!(v["memory"]["totalBytes"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["cpus"][0]["name"], "cpu");
    assert_eq!(v["node"], n);

    // Two nodes (the same one twice): each line labelled.
    let both = format!("{n},{n}");
    let out = kilnctl(&["--kilnconfig", kc, "-n", &both, "services"]);
    assert!(out.status.success());
    let labelled = text(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{n}: apid ")))
        .count();
    assert_eq!(labelled, 2, "{}", text(&out.stdout));
}

#[test]
fn try_confirm_and_reset() {
    let (apid, out) = configured();
    let kc = out.path().join("kilnconfig");
    let (kc, n) = (kc.to_str().unwrap(), apid.endpoint.as_str());
    let admin = |args: &[&str]| kilnctl(&[&["--kilnconfig", kc, "-n", n][..], args].concat());
    let up = until_ok(&["--kilnconfig", kc, "-n", n, "version"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    // A live change (the hostname), tried for 30 s.
    let node_yaml = std::fs::read_to_string(out.path().join("node.yaml")).unwrap();
    let tried = out.path().join("tried.yaml");
    std::fs::write(&tried, format!("{node_yaml}hostname: tried-1\n")).unwrap();
    let tried = tried.to_str().unwrap();
    assert_eq!(
        admin(&["apply", "--timeout", "30s", tried]).status.code(),
        Some(2)
    );
    assert_eq!(
        admin(&["apply", "--mode", "try", "--timeout", "soon", tried])
            .status
            .code(),
        Some(2)
    );
    let applied = admin(&["apply", "--mode", "try", "--timeout", "30s", tried]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let said = text(&applied.stdout);
    assert!(said.contains("~ hostname (live)"), "{said}");
    assert!(said.contains("reverts at "), "{said}");
    let confirm = admin(&["confirm"]);
    assert!(confirm.status.success(), "{}", text(&confirm.stderr));
    assert_eq!(text(&confirm.stdout), "config confirmed\n");
    // Nothing left to confirm: exit 1, the node's reason shown.
    let again = admin(&["confirm"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("FailedPrecondition"),
        "{}",
        text(&again.stderr)
    );
    let events = admin(&["events"]);
    assert!(
        text(&events.stdout).contains("config confirmed"),
        "{}",
        text(&events.stdout)
    );
    let reset = admin(&["-o", "json", "reset", "--wipe-state"]);
    assert!(reset.status.success(), "{}", text(&reset.stderr));
    let v: serde_json::Value = serde_json::from_slice(&reset.stdout).unwrap();
    assert_eq!(
        (v["reset"].clone(), v["wipeState"].clone()),
        (json!(true), json!(true))
    );
}
