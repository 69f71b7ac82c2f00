//! The boot, as a list of named phases run in order ([`PHASES`]).
//!
//! Each phase logs `phase done` with its duration, or `phase failed` with the
//! reason. A failed *critical* phase ends the boot early (PID 1 stays up and
//! keeps handling power events); any other failure is logged and the boot
//! goes on with what works.

mod disks;
mod entropy;
mod identity;
mod modules;
mod mounts;
mod requests;
mod rootfs;

pub use disks::{Storage, STATE_MOUNT, VAR_MOUNT};

use std::path::PathBuf;
use std::time::SystemTime;

use kiln_api_proto::v1::BootPhase;
use tracing::{error, info};

use crate::clock::boot_ms;
use crate::cmdline::Cmdline;

/// What went wrong in a boot phase. Every variant names the object it failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mount {fstype} on {target}: {errno}")]
    Mount {
        fstype: &'static str,
        target: PathBuf,
        errno: nix::Error,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {errno}")]
    Sys { what: String, errno: nix::Error },
    #[error("kernel modules: {0}")]
    Modules(#[from] kiln_kmod::Error),
    #[error("partition table of {disk}: {reason}")]
    PartitionTable { disk: PathBuf, reason: String },
}

impl Error {
    fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }

    fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
        let what = what.into();
        move |errno| Error::Sys { what, errno }
    }
}

/// What the boot learned, for the phases after it and for the services.
#[derive(Debug, Default)]
pub struct Boot {
    pub cmdline: Cmdline,
    /// Where STATE and /var live.
    pub storage: Storage,
    /// This machine's stable id (hex), from STATE, or fresh each boot without one.
    pub machine_id: String,
    /// Phases that failed, by name.
    pub failed: Vec<&'static str>,
    /// Every phase run, in order, for the machine API's Events.
    pub phases: Vec<BootPhase>,
    /// False when a critical phase failed: services are not started.
    pub complete: bool,
}

/// One step of the boot.
pub struct Phase {
    pub name: &'static str,
    /// A failure here stops the boot: later phases depend on it.
    pub critical: bool,
    pub run: fn(&mut Boot) -> Result<(), Error>,
}

/// The boot, in order.
pub const PHASES: &[Phase] = &[
    Phase {
        name: "early-mounts",
        critical: true,
        run: mounts::early,
    },
    Phase {
        name: "kernel-modules",
        critical: false,
        run: modules::load,
    },
    Phase {
        name: "root-image",
        critical: true,
        run: rootfs::switch_root,
    },
    Phase {
        name: "system-mounts",
        critical: true,
        run: mounts::system,
    },
    Phase {
        name: "disks",
        critical: false,
        run: disks::mount,
    },
    // Entropy first: a fresh machine id reads the kernel's random pool.
    Phase {
        name: "entropy",
        critical: false,
        run: entropy::seed,
    },
    Phase {
        name: "identity",
        critical: false,
        run: identity::apply,
    },
];

/// Runs every phase and returns what the boot found.
pub async fn run() -> Boot {
    let mut boot = Boot::default();
    for phase in PHASES {
        let start = boot_ms();
        let result = (phase.run)(&mut boot);
        let ms = boot_ms() - start;
        boot.phases.push(BootPhase {
            phase: phase.name.to_string(),
            duration_ms: ms,
            error: result
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
            at_unix_ms: crate::control::unix_ms(SystemTime::now()),
        });
        match result {
            Ok(()) => info!(phase = phase.name, ms, "phase done"),
            Err(e) => {
                error!(phase = phase.name, ms, "phase failed: {e}");
                boot.failed.push(phase.name);
                if phase.critical {
                    error!(
                        "boot stopped after critical phase {}; PID 1 stays up",
                        phase.name
                    );
                    return boot;
                }
            }
        }
    }
    boot.complete = true;
    boot
}
