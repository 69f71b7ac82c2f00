//! A container's files: the OCI bundle (`config.json`, `rootfs/` — an
//! overlay of the image's snapshots under a per-container upper dir) and
//! its record directory; made on CreateContainer, undone on remove.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use prost::Message;

use crate::fsutil::write_atomic;
use crate::proto::v1::ContainerConfig;

use super::container::{io, ContainerRecord, CONFIG, RECORD};
use super::RuntimeError;

/// Directories, the overlay rootfs, the spec, then the record (last: a
/// directory without it is an unfinished creation).
pub(super) fn prepare(
    dir: &Path,
    bundle: &Path,
    layers: &[PathBuf],
    record: &ContainerRecord,
    config: &ContainerConfig,
    build: impl FnOnce(&Path) -> Result<oci_spec::runtime::Spec, RuntimeError>,
) -> Result<(), RuntimeError> {
    let (upper, work, rootfs) = (dir.join("upper"), dir.join("work"), bundle.join("rootfs"));
    for d in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    write_atomic(&dir.join(CONFIG), &config.encode_to_vec()).map_err(io(dir))?;
    let lower = layers
        .iter()
        .map(|l| l.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let options = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| RuntimeError::Io {
        path: rootfs.clone(),
        source: std::io::Error::other(format!("overlay mount: {e}")),
    })?;
    let spec = build(&rootfs)?;
    let data = serde_json::to_vec_pretty(&spec).map_err(|e| RuntimeError::Task(e.to_string()))?;
    write_atomic(&bundle.join("config.json"), &data).map_err(io(bundle))?;
    let data = serde_json::to_vec_pretty(record).map_err(|e| RuntimeError::Task(e.to_string()))?;
    write_atomic(&dir.join(RECORD), &data).map_err(io(dir))
}

/// Unmounts the rootfs and deletes the container's directories.
pub(super) fn unprepare(dir: &Path, bundle: &Path) -> Result<(), RuntimeError> {
    let rootfs = bundle.join("rootfs");
    match umount2(&rootfs, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => {
            return Err(RuntimeError::Io {
                path: rootfs,
                source: std::io::Error::other(format!("unmount: {e}")),
            })
        }
    }
    for d in [bundle, dir] {
        match std::fs::remove_dir_all(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(d)(e)),
        }
    }
    Ok(())
}
