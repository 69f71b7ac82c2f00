//! A harness that boots Kiln images in QEMU the way a server boots them
//! (UEFI firmware → systemd-boot, or PXE-style direct kernel boot), reads
//! the serial console line by line, and drives QEMU over QMP.
//!
//! Invariants: every wait has a timeout, bounded again by a per-machine
//! deadline, so no test can hang; a failed wait says what it waited for and
//! shows the console's last lines; dropping a [`Machine`] kills and reaps
//! QEMU, keeping its directory (console log, QEMU's stderr) when the test is
//! failing or `KILN_KEEP_ARTIFACTS=1`.
//!
//! ```no_run
//! use std::time::Duration;
//! use kiln_qemu_tests::{Arch, Boot, Machine, MachineConfig};
//! use regex::Regex;
//!
//! let boot = Boot::Direct {
//!     kernel: "out/x86_64/vmlinuz".into(),
//!     initrd: Some("out/x86_64/initramfs.img".into()),
//!     cmdline: "console=ttyS0 panic=-1".into(),
//! };
//! let mut m = Machine::launch(MachineConfig::new(Arch::X86_64, boot))?;
//! let hit = m.wait_for(&Regex::new(r"Linux version (\S+)")?, Duration::from_secs(60))?;
//! println!("kernel {:?} after {:?}", hit.captures[1], hit.at);
//! m.system_powerdown()?;
//! m.wait_exit(Duration::from_secs(60))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod console;
mod machine;
mod qmp;
mod spawner;

use std::path::PathBuf;
use std::time::Duration;

pub use console::{Line, Match};
pub use machine::{
    free_loopback_port, prepare_disk, qemu_command, Arch, Boot, Machine, MachineConfig,
};

/// What can go wrong driving QEMU.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{binary} not found on PATH: install Debian's {package} (`cargo xtask setup` does)")]
    MissingBinary {
        binary: &'static str,
        package: &'static str,
    },
    #[error("firmware {path} not found: install Debian's {package} (`cargo xtask setup` does)")]
    MissingFirmware {
        path: &'static str,
        package: &'static str,
    },
    #[error("{what} {path} does not exist")]
    MissingFile { what: &'static str, path: PathBuf },
    #[error("machine config: {field}: {problem}")]
    Config {
        field: &'static str,
        problem: String,
    },
    #[error("unknown architecture {0:?} (expected x86_64/amd64 or aarch64/arm64)")]
    UnknownArch(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "timed out after {waited:.1?} waiting for {pattern}; console log {log}; last console lines:\n{tail}"
    )]
    Timeout {
        /// The pattern(s) waited for, as `/re/` (several joined by ` or `).
        pattern: String,
        waited: Duration,
        log: String,
        tail: String,
    },
    #[error("QEMU exited ({status}) while waiting for {pattern}; console log {log}; QEMU stderr:\n{stderr}\nlast console lines:\n{tail}")]
    Exited {
        pattern: String,
        status: String,
        log: String,
        stderr: String,
        tail: String,
    },
    #[error("QMP {command}: {reason}")]
    Qmp { command: String, reason: String },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
