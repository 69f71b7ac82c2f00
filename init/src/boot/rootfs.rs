//! The read-only root: the squashfs image carried in the initramfs is
//! attached to a loop device, mounted at /sysroot and made the root, like
//! `switch_root` (the initramfs cannot be pivoted away from, so the new root
//! is moved over `/` and chrooted into).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use tracing::info;

use super::{Boot, Error};

/// The root image inside the initramfs.
const ROOT_IMAGE: &str = "/rootfs.squashfs";
const SYSROOT: &str = "/sysroot";
/// Mounts made in the initramfs that move into the new root.
const CARRIED_MOUNTS: [&str; 4] = ["/dev", "/proc", "/sys", "/run"];

// From <linux/loop.h>.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

pub(super) fn switch_root(_boot: &mut Boot) -> Result<(), Error> {
    if !Path::new(ROOT_IMAGE).exists() {
        // Not started from a Kiln initramfs (e.g. a test root): stay put.
        info!("no {ROOT_IMAGE}: already on the final root");
        return Ok(());
    }
    let image = File::open(ROOT_IMAGE).map_err(Error::io("open", ROOT_IMAGE))?;
    let (loop_path, _loop_dev) = attach_loop(&image)?;
    super::mounts::mount_fs(
        &loop_path,
        SYSROOT,
        "squashfs",
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        None,
    )?;

    // Modules stay in the initramfs; the root image has an empty mount point.
    let modules = format!("{SYSROOT}/lib/modules");
    bind_readonly("/lib/modules", &modules)?;
    for m in CARRIED_MOUNTS {
        let target = format!("{SYSROOT}{m}");
        mount(
            Some(m),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(Error::sys(format!("move {m} to {target}")))?;
    }
    nix::unistd::chdir(SYSROOT).map_err(Error::sys("chdir /sysroot"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(Error::sys("move /sysroot over /"))?;
    nix::unistd::chroot(".").map_err(Error::sys("chroot"))?;
    nix::unistd::chdir("/").map_err(Error::sys("chdir /"))?;
    info!(device = %loop_path, "root image mounted read-only");
    Ok(())
}

/// Binds `src` onto `dst` and makes the bind read-only.
fn bind_readonly(src: &str, dst: &str) -> Result<(), Error> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(Error::sys(format!("bind {src} on {dst}")))?;
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(None::<&str>, dst, None::<&str>, ro, None::<&str>)
        .map_err(Error::sys(format!("remount {dst} read-only")))
}

/// Attaches `image` read-only to a free loop device; returns its path and
/// the open device (which must stay open until the filesystem is mounted).
fn attach_loop(image: &File) -> Result<(String, File), Error> {
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(Error::io("open", "/dev/loop-control"))?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
    let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if n < 0 {
        return Err(Error::Sys {
            what: "LOOP_CTL_GET_FREE".into(),
            errno: nix::Error::last(),
        });
    }
    let path = format!("/dev/loop{n}");
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(Error::io("open", &path))?;
    // SAFETY: LoopConfig is plain data; all-zero is a valid value.
    let mut config: LoopConfig = unsafe { std::mem::zeroed() };
    config.fd = image.as_raw_fd() as u32;
    config.info.flags = LO_FLAGS_READ_ONLY;
    // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which LoopConfig
    // mirrors, through a pointer valid for the duration of the call.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_CONFIGURE,
            &config as *const LoopConfig,
        )
    };
    if rc < 0 {
        return Err(Error::Sys {
            what: format!("LOOP_CONFIGURE {path}"),
            errno: nix::Error::last(),
        });
    }
    Ok((path, dev))
}
