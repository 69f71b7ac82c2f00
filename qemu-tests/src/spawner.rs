//! Starts QEMU so that it cannot outlive the test process: each child asks
//! the kernel for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`). A test
//! killed by a timeout or ctrl-c then leaves no TCG guest spinning.
//!
//! The kernel sends that signal when the *thread* that forked exits, not the
//! process, and test threads come and go; so every QEMU is forked by one
//! thread that lives as long as the process.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

type Request = (Command, Sender<std::io::Result<Child>>);

static SPAWNER: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();

/// Spawns `cmd` on the long-lived spawner thread.
pub(crate) fn spawn(mut cmd: Command) -> std::io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe system calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::other("test process exited"));
            }
            Ok(())
        });
    }
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<Request>();
        std::thread::Builder::new()
            .name("kiln-qemu-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map_or_else(
                |e| tracing::error!(error = %e, "cannot start the QEMU spawner thread"),
                drop,
            );
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = channel();
    let gone = || std::io::Error::other("the QEMU spawner thread is gone");
    sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| gone())?;
    reply_rx.recv().map_err(|_| gone())?
}
