//! A reset asked for through the machine API: `reset.request` next to the
//! config, written atomically before the reboot. PID 1 carries it out early
//! in the next boot, before any service uses the disks (apid cannot empty
//! /var under running services), and removes it last, so a power cut during
//! the wipe only means the wipe runs again.

use std::path::PathBuf;

use crate::{read_optional, remove_durably, write_durably, ConfigStore, StoreError};

/// The request's name in the store's directory.
pub const RESET_FILE: &str = "reset.request";

/// What a reset wipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetRequest {
    /// EPHEMERAL is always wiped; STATE (config, machine id) only if this
    /// is set.
    pub wipe_state: bool,
}

impl ResetRequest {
    fn encode(self) -> &'static [u8] {
        if self.wipe_state {
            b"wipe=ephemeral,state\n"
        } else {
            b"wipe=ephemeral\n"
        }
    }

    fn decode(path: PathBuf, data: &[u8]) -> Result<ResetRequest, StoreError> {
        match data {
            b"wipe=ephemeral,state\n" => Ok(ResetRequest { wipe_state: true }),
            b"wipe=ephemeral\n" => Ok(ResetRequest { wipe_state: false }),
            other => Err(StoreError::Invalid {
                path,
                problem: format!(
                    "wipe: expected \"ephemeral\" or \"ephemeral,state\", got {:?}",
                    String::from_utf8_lossy(other)
                ),
            }),
        }
    }
}

impl ConfigStore {
    fn reset_path(&self) -> PathBuf {
        self.dir.join(RESET_FILE)
    }

    /// Records a reset for the next boot.
    pub fn request_reset(&self, request: ResetRequest) -> Result<(), StoreError> {
        write_durably(&self.reset_path(), request.encode())
    }

    /// The reset asked for, if any.
    pub fn reset_request(&self) -> Result<Option<ResetRequest>, StoreError> {
        let path = self.reset_path();
        read_optional(&path)?
            .map(|data| ResetRequest::decode(path, &data))
            .transpose()
    }

    /// Marks the reset done; whether one was asked for.
    pub fn clear_reset(&self) -> Result<bool, StoreError> {
        remove_durably(&self.reset_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_read_back_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::new(dir.path());
        assert_eq!(store.reset_request().unwrap(), None);
        for wipe_state in [false, true] {
            store.request_reset(ResetRequest { wipe_state }).unwrap();
            assert_eq!(
                store.reset_request().unwrap(),
                Some(ResetRequest { wipe_state })
            );
        }
        assert!(store.clear_reset().unwrap());
        assert!(!store.clear_reset().unwrap());
        assert_eq!(store.reset_request().unwrap(), None);
    }

    #[test]
    fn a_damaged_request_names_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RESET_FILE), "wipe=everything\n").unwrap();
        let err = ConfigStore::new(dir.path())
            .reset_request()
            .unwrap_err()
            .to_string();
        assert!(err.contains(RESET_FILE), "{err}");
        assert!(err.contains("wipe: expected"), "{err}");
    }
}
