//! Disks: find the STATE and EPHEMERAL partitions by their GPT names, grow
//! EPHEMERAL to the end of its disk (first boot on a bigger disk), and mount
//! them: STATE at /system/state, EPHEMERAL at /var. Without them (a PXE boot
//! with no Kiln disk) /var is a tmpfs and nothing persists. Once both are
//! mounted, what the last boot left on STATE is carried out (`requests`: a
//! reset, an unconfirmed try) before /var is used.
//!
//! Growing needs no tools: the GPT is rewritten in place (backup header moved
//! to the new end), the kernel is told the new partition size (BLKPG), and
//! ext4 grows itself online (EXT4_IOC_RESIZE_FS) once mounted.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use tracing::{info, warn};

use super::mounts::mount_fs;
use super::{Boot, Error};

pub const STATE_LABEL: &str = "STATE";
pub const EPHEMERAL_LABEL: &str = "EPHEMERAL";
pub const STATE_MOUNT: &str = "/system/state";
pub const VAR_MOUNT: &str = "/var";

/// How long to wait for the Kiln partitions to show up (`kiln.disk_wait_ms`).
const DEFAULT_WAIT: Duration = Duration::from_secs(8);
/// With no Kiln partition yet, give up once the set of block devices has not
/// changed for this long: drivers have finished probing.
const SETTLE: Duration = Duration::from_millis(1500);

/// Where the node keeps its data.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Storage {
    /// The disks phase has not run or failed.
    #[default]
    Unknown,
    /// STATE and EPHEMERAL partitions of `disk` are mounted.
    Disk {
        disk: PathBuf,
        state: PathBuf,
        ephemeral: PathBuf,
    },
    /// No Kiln disk: /var is a tmpfs, STATE is absent.
    Tmpfs,
}

/// A partition found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Partition {
    /// e.g. `vda3`
    dev: String,
    /// Parent disk, e.g. `vda`
    disk: String,
    number: u32,
}

pub(super) fn mount(boot: &mut Boot) -> Result<(), Error> {
    let wait = boot
        .cmdline
        .get("kiln.disk_wait_ms")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_WAIT);
    let Some((state, ephemeral)) = wait_for_partitions(Path::new("/sys/class/block"), wait) else {
        mount_fs(
            "tmpfs",
            VAR_MOUNT,
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )?;
        warn!("no {STATE_LABEL}/{EPHEMERAL_LABEL} partitions found: /var is tmpfs, nothing will persist");
        boot.storage = Storage::Tmpfs;
        prepare_var()?;
        return Ok(());
    };
    let disk = PathBuf::from("/dev").join(&ephemeral.disk);
    let ephemeral_dev = PathBuf::from("/dev").join(&ephemeral.dev);
    let state_dev = PathBuf::from("/dev").join(&state.dev);
    if let Err(e) = grow_partition(&disk, ephemeral.number) {
        warn!("cannot grow {EPHEMERAL_LABEL}: {e}");
    }
    let data = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_fs(
        &state_dev.to_string_lossy(),
        STATE_MOUNT,
        "ext4",
        data | MsFlags::MS_NOEXEC,
        None,
    )?;
    mount_fs(
        &ephemeral_dev.to_string_lossy(),
        VAR_MOUNT,
        "ext4",
        data,
        None,
    )?;
    if let Err(e) = grow_ext4(&ephemeral_dev, Path::new(VAR_MOUNT)) {
        warn!("cannot grow the {EPHEMERAL_LABEL} filesystem: {e}");
    }
    // A reset or an unconfirmed try from the last boot, before /var is used.
    super::requests::carry_out(Path::new(STATE_MOUNT), Path::new(VAR_MOUNT));
    info!(
        state = %state_dev.display(),
        ephemeral = %ephemeral_dev.display(),
        ephemeral_mib = fs_size(Path::new(VAR_MOUNT)) >> 20,
        "{STATE_LABEL} mounted on {STATE_MOUNT}, {EPHEMERAL_LABEL} on {VAR_MOUNT}"
    );
    boot.storage = Storage::Disk {
        disk,
        state: state_dev,
        ephemeral: ephemeral_dev,
    };
    prepare_var()
}

/// Directories every service may rely on, and the boot counter.
fn prepare_var() -> Result<(), Error> {
    for d in ["/var/log/kiln", "/var/lib/kiln"] {
        std::fs::create_dir_all(d).map_err(Error::io("create", d))?;
    }
    let counter = Path::new("/var/lib/kiln/boot-count");
    let n: u64 = std::fs::read_to_string(counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
        + 1;
    crate::fsutil::write_atomic(counter, format!("{n}\n").as_bytes(), 0o644)
        .map_err(Error::io("write", counter))?;
    info!(boot_count = n, "boot counted on /var");
    Ok(())
}

/// Polls sysfs until STATE and EPHEMERAL of one disk appear, the block
/// devices settle without them, or `limit` passes.
fn wait_for_partitions(class_block: &Path, limit: Duration) -> Option<(Partition, Partition)> {
    let start = Instant::now();
    let mut last_seen = BTreeMap::new();
    let mut last_change = start;
    loop {
        let seen = scan(class_block);
        if let Some(found) = pick(&seen) {
            return Some(found);
        }
        if seen != last_seen {
            last_seen = seen;
            last_change = Instant::now();
        }
        if start.elapsed() >= limit || last_change.elapsed() >= SETTLE {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Partitions by device name, with their GPT names (from `uevent`).
fn scan(class_block: &Path) -> BTreeMap<String, (Option<String>, Partition)> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(class_block) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(uevent) = std::fs::read_to_string(path.join("uevent")) else {
            continue;
        };
        let field = |k: &str| {
            uevent
                .lines()
                .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .map(String::from)
        };
        let dev = entry.file_name().to_string_lossy().into_owned();
        let number = field("PARTN").and_then(|n| n.parse().ok());
        // The parent directory of a partition in /sys/devices is its disk.
        let disk = std::fs::canonicalize(&path).ok().and_then(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .map(|d| d.to_string_lossy().into_owned())
        });
        match (number, disk) {
            (Some(number), Some(disk)) => {
                out.insert(
                    dev.clone(),
                    (field("PARTNAME"), Partition { dev, disk, number }),
                );
            }
            _ => {
                out.insert(
                    dev.clone(),
                    (
                        None,
                        Partition {
                            dev,
                            disk: String::new(),
                            number: 0,
                        },
                    ),
                );
            }
        }
    }
    out
}

/// STATE and EPHEMERAL on the same disk, the first such disk by name.
fn pick(seen: &BTreeMap<String, (Option<String>, Partition)>) -> Option<(Partition, Partition)> {
    let named = |label: &'static str| -> Vec<Partition> {
        seen.values()
            .filter(|(name, _)| name.as_deref() == Some(label))
            .map(|(_, p)| p.clone())
            .collect()
    };
    let ephemeral = named(EPHEMERAL_LABEL);
    named(STATE_LABEL).into_iter().find_map(|s| {
        ephemeral
            .iter()
            .find(|e| e.disk == s.disk)
            .map(|e| (s, e.clone()))
    })
}

/// Extends partition `number` of `disk` to the last usable sector if it is
/// the last partition and the disk has grown; tells the kernel the new size.
fn grow_partition(disk: &Path, number: u32) -> Result<(), Error> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(Error::io("open", disk))?;
    let grown = grow_table(&mut f, number).map_err(|reason| Error::PartitionTable {
        disk: disk.to_path_buf(),
        reason,
    })?;
    let Some(g) = grown else { return Ok(()) };
    f.sync_all().map_err(Error::io("sync", disk))?;
    resize_kernel_partition(&f, number, g.start, g.new_len).map_err(Error::sys(format!(
        "BLKPG resize partition {number} of {}",
        disk.display()
    )))?;
    info!(
        disk = %disk.display(),
        from_mib = g.old_len >> 20,
        to_mib = g.new_len >> 20,
        "grew {EPHEMERAL_LABEL} partition to the end of the disk"
    );
    Ok(())
}

/// A partition that [`grow_table`] extended, in bytes.
#[derive(Debug, PartialEq, Eq)]
struct Grown {
    start: u64,
    old_len: u64,
    new_len: u64,
}

/// Rewrites the GPT on `dev` so partition `number` ends at the last usable
/// sector, with the backup header moved to the device's real end. `None` when
/// it already does. The partition must be the last one on the disk.
fn grow_table<D: Read + std::io::Write + Seek>(
    dev: &mut D,
    number: u32,
) -> Result<Option<Grown>, String> {
    let mut gpt = gptman::GPT::find_from(dev).map_err(|e| e.to_string())?;
    let sector = gpt.sector_size;
    if number == 0 || number > gpt.header.number_of_partition_entries || gpt[number].is_unused() {
        return Err(format!("no partition {number}"));
    }
    gpt.header
        .update_from(dev, sector)
        .map_err(|e| e.to_string())?;
    let last_usable = gpt.header.last_usable_lba;
    let (start, end) = (gpt[number].starting_lba, gpt[number].ending_lba);
    if gpt
        .iter()
        .any(|(_, p)| p.is_used() && p.starting_lba > start)
    {
        return Err(format!("partition {number} is not the last one"));
    }
    if end >= last_usable {
        return Ok(None);
    }
    gpt[number].ending_lba = last_usable;
    gpt.write_into(dev).map_err(|e| e.to_string())?;
    Ok(Some(Grown {
        start: start * sector,
        old_len: (end - start + 1) * sector,
        new_len: (last_usable - start + 1) * sector,
    }))
}

// From <linux/blkpg.h>.
const BLKPG: libc::c_ulong = 0x1269;
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;

#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// Tells the kernel partition `number` now spans `length` bytes from `start`.
fn resize_kernel_partition(disk: &File, number: u32, start: u64, length: u64) -> nix::Result<()> {
    let mut part = BlkpgPartition {
        start: start as i64,
        length: length as i64,
        pno: number as i32,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as i32,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: BLKPG reads a `struct blkpg_ioctl_arg` whose `data` points to a
    // `struct blkpg_partition`; both mirror the kernel layout and outlive the call.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG, &arg as *const BlkpgIoctlArg) };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// EXT4_IOC_RESIZE_FS = _IOW('f', 16, __u64)
const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;

/// Grows the ext4 filesystem mounted at `mountpoint` to fill `dev`.
fn grow_ext4(dev: &Path, mountpoint: &Path) -> Result<(), Error> {
    let (blocks, block_size) = ext4_geometry(dev)?;
    let mut f = File::open(dev).map_err(Error::io("open", dev))?;
    let dev_bytes = f.seek(SeekFrom::End(0)).map_err(Error::io("size", dev))?;
    let target = dev_bytes / block_size;
    if target <= blocks {
        return Ok(());
    }
    let dir = File::open(mountpoint).map_err(Error::io("open", mountpoint))?;
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 (the new block count) through
    // a pointer valid for the call.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS, &target as *const u64) };
    if rc < 0 {
        return Err(Error::Sys {
            what: format!("EXT4_IOC_RESIZE_FS {}", dev.display()),
            errno: nix::Error::last(),
        });
    }
    info!(
        from_mib = (blocks * block_size) >> 20,
        to_mib = (target * block_size) >> 20,
        "grew ext4 on {}",
        dev.display()
    );
    Ok(())
}

/// Block count and block size from an ext4 superblock.
fn ext4_geometry(dev: &Path) -> Result<(u64, u64), Error> {
    let mut sb = [0u8; 1024];
    let mut f = File::open(dev).map_err(Error::io("open", dev))?;
    f.seek(SeekFrom::Start(1024))
        .and_then(|_| f.read_exact(&mut sb))
        .map_err(Error::io("read superblock of", dev))?;
    parse_ext4_superblock(&sb).ok_or_else(|| Error::Io {
        what: "no ext4 superblock on",
        path: dev.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "bad magic"),
    })
}

/// (blocks, block size) from the 1024-byte superblock, if its magic is right.
fn parse_ext4_superblock(sb: &[u8; 1024]) -> Option<(u64, u64)> {
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return None;
    }
    let incompat_64bit = u32_at(0x60) & 0x80 != 0;
    let hi = if incompat_64bit {
        u64::from(u32_at(0x150))
    } else {
        0
    };
    let blocks = (hi << 32) | u64::from(u32_at(0x04));
    let block_size = 1024u64 << u32_at(0x18).min(6);
    Some((blocks, block_size))
}

/// Size in bytes of the filesystem at `path`, 0 if unknown.
fn fs_size(path: &Path) -> u64 {
    nix::sys::statvfs::statvfs(path)
        .map(|s| s.blocks() * s.fragment_size())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_requires_both_labels_on_one_disk() {
        let part = |dev: &str, disk: &str, n| Partition {
            dev: dev.into(),
            disk: disk.into(),
            number: n,
        };
        let mut seen = BTreeMap::new();
        seen.insert(
            "sda2".into(),
            (Some("STATE".into()), part("sda2", "sda", 2)),
        );
        seen.insert(
            "vdb3".into(),
            (Some("EPHEMERAL".into()), part("vdb3", "vdb", 3)),
        );
        assert_eq!(pick(&seen), None);
        seen.insert(
            "sda3".into(),
            (Some("EPHEMERAL".into()), part("sda3", "sda", 3)),
        );
        let (s, e) = pick(&seen).unwrap();
        assert_eq!((s.dev.as_str(), e.dev.as_str()), ("sda2", "sda3"));
    }

    /// A real GPT made by sgdisk on a file, then the "disk" grows.
    #[test]
    fn grows_last_partition_and_moves_backup_header() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.raw");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let sgdisk = |args: &[&str]| {
            let out = std::process::Command::new("sgdisk")
                .args(args)
                .arg(&img)
                .output();
            let out = out.expect("sgdisk (apt install gdisk) is needed for this test");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        assert!(
            sgdisk(&[
                "-n",
                "1:2048:+8M",
                "-c",
                "1:EFI",
                "-n",
                "2:0:+8M",
                "-c",
                "2:STATE",
                "-n",
                "3:0:+16M",
                "-c",
                "3:EPHEMERAL"
            ])
            .0
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(&img)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();

        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        assert!(grow_table(&mut f, 2).unwrap_err().contains("not the last"));
        let g = grow_table(&mut f, 3).unwrap().unwrap();
        assert_eq!(g.old_len, 16 << 20);
        // 256 MiB minus the start and the 33-sector backup GPT.
        assert_eq!(g.start + g.new_len, (256 << 20) - 33 * 512);
        assert_eq!(
            grow_table(&mut f, 3).unwrap(),
            None,
            "second run must be a no-op"
        );
        drop(f);

        let (ok, report) = sgdisk(&["-v"]);
        assert!(ok && report.contains("No problems found"), "{report}");
        let (_, info) = sgdisk(&["-i", "3"]);
        assert!(info.contains("Partition name: 'EPHEMERAL'"), "{info}");
    }

    #[test]
    fn superblock_geometry() {
        let mut sb = [0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb[0x04..0x08].copy_from_slice(&32768u32.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(parse_ext4_superblock(&sb), Some((32768, 4096)));
        sb[0x38] = 0;
        assert_eq!(parse_ext4_superblock(&sb), None);
    }
}
