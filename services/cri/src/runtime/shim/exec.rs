//! `cri-shim exec`: runs one command inside a running container for
//! ExecSync, with libcontainer's tenant builder (which forks: this helper
//! process, not the daemon, is where that happens). It collects the
//! command's output, enforces the timeout (SIGKILL), and prints one JSON
//! `Outcome` on stdout; a failure to run the command at all is a message on
//! stderr and exit status 1.
//!
//! argv: `exec <id> <libcontainer root> <timeout s, 0 = none> <command…>`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// Output kept per stream (the gRPC message limit is 16 MiB).
const MAX_OUTPUT: usize = 4 * 1024 * 1024;
/// How long output may still arrive after the command exited.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// What the helper prints; output base64 (it need not be UTF-8).
#[derive(Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

pub fn main(args: &[String]) -> i32 {
    let [id, root, timeout, command @ ..] = args else {
        eprintln!("usage: cri-shim exec <id> <libcontainer root> <timeout s> <command…>");
        return 2;
    };
    let (Ok(timeout), false) = (timeout.parse::<u64>(), command.is_empty()) else {
        eprintln!("cri-shim exec: the timeout must be a number and the command non-empty");
        return 2;
    };
    match run(id, root.into(), timeout, command.to_vec()) {
        Ok(outcome) => {
            let json = serde_json::to_string(&outcome).unwrap_or_default();
            let _ = std::io::stdout().write_all(json.as_bytes());
            0
        }
        Err(e) => {
            eprintln!("exec in container {id}: {e}");
            1
        }
    }
}

fn run(id: &str, root: PathBuf, timeout: u64, command: Vec<String>) -> Result<Outcome, String> {
    // The command may end up a grandchild: as a subreaper this helper
    // still reaps it.
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("subreaper: {e}"))?;
    let (out_r, out_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let stdin: OwnedFd = File::open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?
        .into();
    let pid = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(root)
        .map_err(|e| format!("libcontainer root: {e}"))?
        .with_stdin(stdin)
        .with_stdout(out_w)
        .with_stderr(err_w)
        .as_tenant()
        .with_container_args(command)
        .with_detach(true)
        .build()
        .map_err(|e| e.to_string())?;
    // libcontainer's pid is of its own nix version.
    let pid = Pid::from_raw(pid.as_raw());
    let bufs = [Arc::default(), Arc::default()];
    let readers = [(out_r, &bufs[0]), (err_r, &bufs[1])].map(|(r, buf)| {
        let buf = Arc::clone(buf);
        std::thread::spawn(move || collect(r, &buf))
    });
    let deadline = (timeout > 0).then(|| Instant::now() + Duration::from_secs(timeout));
    let mut timed_out = false;
    let status = loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => break code,
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => break 128 + sig as i32,
            Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => {
                if deadline.is_some_and(|d| Instant::now() >= d) && !timed_out {
                    timed_out = true;
                    let _ = kill(pid, Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    };
    // A process the command left behind may hold the pipes open: wait a
    // moment for the rest of the output, not for that process.
    let grace = Instant::now() + OUTPUT_GRACE;
    while readers.iter().any(|r| !r.is_finished()) && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(10));
    }
    let [stdout, stderr] =
        bufs.map(|b| std::mem::take(&mut *b.lock().unwrap_or_else(|p| p.into_inner())));
    let b64 = |v: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(v);
    Ok(Outcome {
        exit_code: status,
        stdout: b64(stdout),
        stderr: b64(stderr),
        timed_out,
    })
}

/// Reads a stream to EOF into `kept`, keeping the first `MAX_OUTPUT` bytes.
fn collect(mut r: std::io::PipeReader, kept: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}
