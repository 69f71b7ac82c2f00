//! kilnctl against a real apid on loopback: what `gen config` makes is what
//! a node takes, maintenance mode by `--insecure`, then contexts and roles,
//! text and JSON output, and exit codes per outcome.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_apid::{ConfigStore, Node};
use nix::unistd::Pid;

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

/// apid on a loopback port in a thread of its own; `init` receives power
/// requests.
struct Apid {
    endpoint: String,
    init: Child,
    _dir: tempfile::TempDir,
}

impl Apid {
    fn start() -> Apid {
        let dir = tempfile::tempdir().unwrap();
        let init = Command::new("sleep").arg("60").spawn().unwrap();
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let node = Arc::new(Node {
            store: ConfigStore::new(&dir.path().join("state")),
            log_dir: dir.path().join("log"),
            kmsg: "/dev/kmsg".into(),
            init: Pid::from_raw(init.id() as i32),
            names: vec!["127.0.0.1".into()],
            console: None,
        });
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(kiln_apid::serve(node, addr, std::future::pending()))
        });
        Apid {
            endpoint: addr.to_string(),
            init,
            _dir: dir,
        }
    }
}

impl Drop for Apid {
    fn drop(&mut self) {
        let _ = self.init.kill();
        let _ = self.init.wait();
    }
}

#[test]
fn maintenance_apply_then_contexts_and_roles() {
    let apid = Apid::start();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
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
