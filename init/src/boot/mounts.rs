//! Pseudo-filesystems: the early set in the initramfs (moved into the real
//! root by `root-image`) and the rest once the real root is in place.

use std::path::Path;

use nix::mount::{mount, MsFlags};
use tracing::info;

use super::{Boot, Error};
use crate::cmdline::Cmdline;

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Mounts `fstype` at `target`, creating the directory. Mounting over an
/// existing mount of the same kind is not an error (EBUSY).
pub(super) fn mount_fs(
    source: &str,
    target: &str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), Error> {
    std::fs::create_dir_all(target).map_err(Error::io("create mount point", target))?;
    match mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) | Err(nix::Error::EBUSY) => Ok(()),
        Err(errno) => Err(Error::Mount {
            fstype,
            target: target.into(),
            errno,
        }),
    }
}

/// /proc, /sys, /dev and /run: what the next phases need.
pub(super) fn early(boot: &mut Boot) -> Result<(), Error> {
    mount_fs("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, None)?;
    mount_fs("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, None)?;
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mount_fs(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    if let Err(e) = crate::log::attach_kmsg() {
        tracing::warn!("no kernel log: /dev/kmsg: {e}");
    }
    boot.cmdline = Cmdline::read();
    Ok(())
}

/// /dev/pts, /dev/shm, /tmp and cgroup2 with every controller delegated to
/// children, so services and pods get their own cgroups.
pub(super) fn system(_boot: &mut Boot) -> Result<(), Error> {
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0620,ptmxmode=0666"),
    )?;
    mount_fs(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        Some("mode=1777"),
    )?;
    mount_fs(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    mount_fs(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        NOSUID_NODEV_NOEXEC,
        Some("nsdelegate"),
    )?;
    let controllers = enable_controllers(Path::new("/sys/fs/cgroup"))?;
    info!(controllers = %controllers, "cgroup2 ready");
    Ok(())
}

/// Writes `+ctrl` for every available controller into subtree_control and
/// returns the list. Controllers the kernel refuses are skipped.
fn enable_controllers(root: &Path) -> Result<String, Error> {
    let avail = root.join("cgroup.controllers");
    let list = std::fs::read_to_string(&avail).map_err(Error::io("read", &avail))?;
    let control = root.join("cgroup.subtree_control");
    let mut enabled = Vec::new();
    for c in list.split_whitespace() {
        if std::fs::write(&control, format!("+{c}")).is_ok() {
            enabled.push(c);
        }
    }
    Ok(enabled.join(" "))
}
