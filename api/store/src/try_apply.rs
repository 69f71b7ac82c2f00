//! The record of a config applied in try mode and not yet confirmed:
//! `try.pending` next to `config.yaml`, holding the previous config and the
//! deadline. It is written (atomically) before the new config, so at every
//! instant either no try has begun, or the record can bring the previous
//! config back:
//! - confirmed: the record is removed, the new config stays;
//! - deadline passed (apid's timer), or the node rebooted first (PID 1 at
//!   boot): the previous config is stored again, then the record removed.
//!
//! The deadline is on CLOCK_BOOTTIME, which the time service cannot step
//! and which counts suspended time; it means nothing after a reboot, which
//! reverts anyway.

use std::path::PathBuf;

use crate::{read_optional, remove_durably, write_durably, ConfigStore, StoreError};

/// The record's name in the store's directory.
pub const TRY_FILE: &str = "try.pending";
/// The record's first line starts with this, then the deadline.
const MAGIC: &str = "kiln-try-v1 deadline-boottime-ms=";

/// A try in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTry {
    /// The config to go back to.
    pub previous: Vec<u8>,
    /// When to go back, in milliseconds of CLOCK_BOOTTIME.
    pub deadline_boottime_ms: u64,
}

impl PendingTry {
    fn encode(&self) -> Vec<u8> {
        let mut out = format!("{MAGIC}{}\n", self.deadline_boottime_ms).into_bytes();
        out.extend_from_slice(&self.previous);
        out
    }

    fn decode(path: PathBuf, data: &[u8]) -> Result<PendingTry, StoreError> {
        let invalid = |problem: String| StoreError::Invalid {
            path: path.clone(),
            problem,
        };
        let end = data
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| invalid("no header line".into()))?;
        let header =
            std::str::from_utf8(&data[..end]).map_err(|_| invalid("header: not UTF-8".into()))?;
        let deadline = header
            .strip_prefix(MAGIC)
            .ok_or_else(|| invalid(format!("header: expected {MAGIC:?}…, got {header:?}")))?;
        let deadline_boottime_ms = deadline.parse().map_err(|_| {
            invalid(format!(
                "header: deadline-boottime-ms: {deadline:?} is not a number"
            ))
        })?;
        Ok(PendingTry {
            previous: data[end + 1..].to_vec(),
            deadline_boottime_ms,
        })
    }
}

impl ConfigStore {
    fn try_path(&self) -> PathBuf {
        self.dir.join(TRY_FILE)
    }

    /// Stores `new` as a try: the record (with `previous` and the deadline)
    /// first, then the config, each atomically.
    pub fn begin_try(
        &self,
        new: &[u8],
        previous: &[u8],
        deadline_boottime_ms: u64,
    ) -> Result<(), StoreError> {
        let record = PendingTry {
            previous: previous.to_vec(),
            deadline_boottime_ms,
        };
        write_durably(&self.try_path(), &record.encode())?;
        self.save(new)
    }

    /// The try in progress, if any.
    pub fn pending_try(&self) -> Result<Option<PendingTry>, StoreError> {
        let path = self.try_path();
        read_optional(&path)?
            .map(|data| PendingTry::decode(path, &data))
            .transpose()
    }

    /// Keeps the tried config; whether a try was pending.
    pub fn confirm_try(&self) -> Result<bool, StoreError> {
        remove_durably(&self.try_path())
    }

    /// Stores the previous config again and ends the try; the config
    /// restored, or `None` if no try was pending.
    pub fn revert_try(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(pending) = self.pending_try()? else {
            return Ok(None);
        };
        self.save(&pending.previous)?;
        remove_durably(&self.try_path())?;
        Ok(Some(pending.previous))
    }
}

/// Milliseconds of CLOCK_BOOTTIME: since boot, suspend included.
pub fn boottime_ms() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        // CLOCK_BOOTTIME exists on every kernel Kiln runs (2.6.39+).
        .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    u64::try_from(now.tv_sec()).unwrap_or(0) * 1000
        + u64::try_from(now.tv_nsec()).unwrap_or(0) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirm_keeps_the_new_config() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::new(dir.path());
        store.save(b"old").unwrap();
        store.begin_try(b"new", b"old", 1234).unwrap();
        assert_eq!(store.load().unwrap().as_deref(), Some(&b"new"[..]));
        let pending = store.pending_try().unwrap().unwrap();
        assert_eq!(pending.previous, b"old");
        assert_eq!(pending.deadline_boottime_ms, 1234);
        assert!(store.confirm_try().unwrap());
        assert!(!store.confirm_try().unwrap());
        assert_eq!(store.pending_try().unwrap(), None);
        assert_eq!(store.revert_try().unwrap(), None);
        assert_eq!(store.load().unwrap().as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn revert_restores_the_previous_config() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::new(dir.path());
        store.save(b"old\nwith lines\n").unwrap();
        store.begin_try(b"new", b"old\nwith lines\n", 5).unwrap();
        assert_eq!(
            store.revert_try().unwrap().as_deref(),
            Some(&b"old\nwith lines\n"[..])
        );
        assert_eq!(
            store.load().unwrap().as_deref(),
            Some(&b"old\nwith lines\n"[..])
        );
        assert_eq!(store.pending_try().unwrap(), None);
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::new(dir.path());
        std::fs::write(
            dir.path().join(TRY_FILE),
            "kiln-try-v1 deadline-boottime-ms=soon\nold",
        )
        .unwrap();
        let err = store.pending_try().unwrap_err().to_string();
        assert!(err.contains(TRY_FILE), "{err}");
        assert!(err.contains("deadline-boottime-ms: \"soon\""), "{err}");
        std::fs::write(dir.path().join(TRY_FILE), "something else").unwrap();
        let err = store.pending_try().unwrap_err().to_string();
        assert!(err.contains("no header line"), "{err}");
    }

    #[test]
    fn boottime_moves_forward() {
        let a = boottime_ms();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(boottime_ms() >= a + 20);
    }
}
