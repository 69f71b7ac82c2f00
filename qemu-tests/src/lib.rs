//! A harness that boots Kiln images in QEMU the way a server boots them
//! (UEFI firmware → systemd-boot, or PXE-style direct kernel boot), reads
//! the serial console line by line, and drives QEMU over QMP.
//!
//! Invariants: every wait has a timeout, bounded again by a per-machine
//! deadline, so no test can hang; a failed wait says what it waited for and
//! shows the console's last lines; dropping a [`Machine`] kills QEMU.

mod console;
mod machine;
mod qmp;

pub use console::Match;
pub use machine::{prepare_disk, qemu_command, Arch, Boot, Machine, MachineConfig};

/// What can go wrong driving QEMU.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{binary} not found: install {package} (`cargo xtask setup` does)")]
    MissingBinary {
        binary: &'static str,
        package: &'static str,
    },
    #[error("firmware {path} not found: install {package} (`cargo xtask setup` does)")]
    MissingFirmware {
        path: &'static str,
        package: &'static str,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "timed out after {secs} s waiting for /{pattern}/; console log {log}; last lines:\n{tail}"
    )]
    Timeout {
        pattern: String,
        secs: u64,
        log: String,
        tail: String,
    },
    #[error("QEMU exited ({status}) while waiting for /{pattern}/; console log {log}; last lines:\n{tail}")]
    Exited {
        pattern: String,
        status: String,
        log: String,
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
