//! The stored machine config: one file on STATE, replaced atomically
//! (temp file, fsync, rename, fsync of the directory) so a power cut leaves
//! the old config or the new one, never a mix. Readable by root only: it
//! holds the machine CA key and the join token.
//!
//! apid writes it; services that follow the config (timed) read it through
//! [`ConfigStore::on_node`], so the node's choice of directory is made in
//! one place.
//!
//! Next to it, two records that outlive apid and a reboot:
//! - [`try_apply`]: a config applied in try mode and not yet confirmed (the
//!   previous config and the deadline), so an unconfirmed try is undone
//!   after an apid restart or a reboot;
//! - [`reset`]: a reset asked for, carried out by PID 1 at the next boot.

pub mod reset;
pub mod try_apply;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// Where a node keeps its config: STATE when the node has a disk, else
/// /run (a diskless PXE node keeps its config until it powers off).
pub const STATE_DIR: &str = "/system/state";
pub const RUN_DIR: &str = "/run/kiln/state";

/// Where the node's config lives.
pub struct ConfigStore {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigStore {
    /// The node's store: in [`STATE_DIR`] when STATE is mounted there, else
    /// in [`RUN_DIR`].
    pub fn on_node() -> ConfigStore {
        ConfigStore::new(Path::new(Self::node_dir()))
    }

    /// Whether the node keeps its config on disk (STATE is mounted).
    pub fn on_disk() -> bool {
        is_mount_point(Path::new(STATE_DIR))
    }

    fn node_dir() -> &'static str {
        if Self::on_disk() {
            STATE_DIR
        } else {
            RUN_DIR
        }
    }

    /// The config file `config.yaml` in `dir` (created on first save).
    pub fn new(dir: &Path) -> ConfigStore {
        ConfigStore {
            dir: dir.to_path_buf(),
            path: dir.join("config.yaml"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory the config and its records are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The stored config, or `None` if the node has none yet.
    pub fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        read_optional(&self.path)
    }

    /// Replaces the stored config with `data`, atomically and durably.
    pub fn save(&self, data: &[u8]) -> Result<(), StoreError> {
        write_durably(&self.path, data)
    }
}

/// A file's bytes, or `None` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match std::fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replaces `path` with `data` (mode 0600): temp file, fsync, rename, fsync
/// of the directory.
///
/// The temporary name is fixed (`.NAME.tmp`), not random: PID 1 writes here
/// in the disks phase, before the kernel's random pool is ready (a random
/// name would block in getrandom), and there is one writer at a time (apid
/// serialises its writes; PID 1 writes before apid starts).
fn write_durably(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(err)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .ok_or_else(|| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no file name",
            ))
        })?;
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        // One left by a power cut keeps its mode: make sure.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
        file.write_all(data).map_err(err)?;
        file.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)
}

/// Removes `path` if it exists, durably (fsync of the directory). Whether
/// it existed.
fn remove_durably(path: &Path) -> Result<bool, StoreError> {
    let err = |source| StoreError::Remove {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(err(e)),
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    Ok(true)
}

/// Whether `path` is a mount point (a different device from its parent).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(own), Some(Ok(parent))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    own.dev() != parent.dev()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn none_until_saved_then_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::new(&dir.path().join("state"));
        assert_eq!(store.load().unwrap(), None);
        store.save(b"one").unwrap();
        store.save(b"two").unwrap();
        assert_eq!(store.load().unwrap().as_deref(), Some(&b"two"[..]));
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Only the config itself: no temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.yaml")]);
    }

    #[test]
    fn a_temporary_file_left_by_a_power_cut_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join(".config.yaml.tmp");
        std::fs::write(&tmp, "half a config that never got renamed").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = ConfigStore::new(dir.path());
        store.save(b"whole").unwrap();
        assert_eq!(store.load().unwrap().as_deref(), Some(&b"whole"[..]));
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!tmp.exists());
    }

    #[test]
    fn mount_points() {
        assert!(is_mount_point(Path::new("/proc")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()));
        assert!(!is_mount_point(&dir.path().join("missing")));
    }

    #[test]
    fn unreadable_store_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be.
        std::fs::create_dir_all(dir.path().join("config.yaml")).unwrap();
        let err = ConfigStore::new(dir.path()).load().unwrap_err();
        assert!(err.to_string().contains("config.yaml"), "{err}");
    }
}
