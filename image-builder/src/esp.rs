//! The EFI system partition: FAT32 with systemd-boot and two boot slots,
//! A and B, each with a kernel and an initramfs. Every entry is stamped
//! with the build's epoch (through fatfs's `TimeProvider`) and the volume id
//! comes from the spec: the partition is reproducible.

use std::io::{Seek, Write};
use std::path::Path;

use fatfs::{Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time};

use crate::{fatfix, Error};

/// What goes on the ESP.
pub struct Contents<'a> {
    /// systemd-boot's EFI binary.
    pub loader: &'a Path,
    /// `x64` or `aa64`: the EFI architecture suffix.
    pub efi_arch: &'a str,
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub cmdline: &'a str,
    pub version: &'a str,
    pub volume_id: u32,
    /// Seconds since 1970 (UTC) for every timestamp.
    pub epoch: u32,
}

/// fatfs asks this for "now": always the build's epoch.
#[derive(Debug)]
struct FixedClock(DateTime);

impl fatfs::TimeProvider for FixedClock {
    fn get_current_date(&self) -> Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

/// Unix seconds as a FAT date and time (UTC), clamped to FAT's 1980–2107.
fn fat_time(epoch: u32) -> DateTime {
    let secs = u64::from(epoch).clamp(315_532_800, 4_354_819_199);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    DateTime {
        date: Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: Time {
            hour: (rem / 3600) as u16,
            min: (rem / 60 % 60) as u16,
            sec: (rem % 60) as u16,
            millis: 0,
        },
    }
}

pub const SLOTS: [&str; 2] = ["a", "b"];

/// Writes a FAT32 image of `size` bytes to `out`.
pub fn write(c: &Contents, size: u64, out: &Path) -> Result<(), Error> {
    let fail = |e: std::io::Error| Error::Format {
        what: "FAT32 ESP",
        problem: e.to_string(),
    };
    let kernel_len = std::fs::metadata(c.kernel)
        .map_err(Error::io("stat", c.kernel))?
        .len();
    let initrd_len = std::fs::metadata(c.initramfs)
        .map_err(Error::io("stat", c.initramfs))?
        .len();
    let loader = std::fs::read(c.loader).map_err(Error::io("read", c.loader))?;
    // Two slots plus the loader, with room for FAT metadata.
    let need = 2 * (kernel_len + initrd_len) + 2 * loader.len() as u64 + (4 << 20);
    if need > size {
        return Err(Error::Field {
            field: "partitions.esp_mib".into(),
            problem: format!(
                "{} MiB is too small for two slots of kernel + initramfs: need {} MiB",
                size >> 20,
                need.div_ceil(1 << 20)
            ),
        });
    }
    let mut file = crate::create_sized(out, size)?;
    fatfs::format_volume(
        &mut file,
        FormatVolumeOptions::new()
            .fat_type(FatType::Fat32)
            .volume_id(c.volume_id)
            .volume_label(*b"EFI        "),
    )
    .map_err(fail)?;
    file.rewind().map_err(Error::io("rewind", out))?;
    // fatfs wants a &'static provider: one small leak per ESP written.
    let clock: &'static FixedClock = Box::leak(Box::new(FixedClock(fat_time(c.epoch))));
    let fs = FileSystem::new(&mut file, FsOptions::new().time_provider(clock)).map_err(fail)?;
    fill(&fs, c)?;
    fs.unmount().map_err(fail)?;
    drop(file);
    let mut image = std::fs::read(out).map_err(Error::io("read", out))?;
    fatfix::repair(&mut image).map_err(|problem| Error::Format {
        what: "FAT32 ESP",
        problem,
    })?;
    crate::manifest::write_atomic(out, &image)
}

/// The loader, its configuration and both slots.
fn fill<T: fatfs::ReadWriteSeek>(fs: &FileSystem<T>, c: &Contents) -> Result<(), Error> {
    let fail = |e: std::io::Error| Error::Format {
        what: "FAT32 ESP",
        problem: e.to_string(),
    };
    let loader = std::fs::read(c.loader).map_err(Error::io("read", c.loader))?;
    let root = fs.root_dir();
    let put = |path: &str, data: &[u8]| -> Result<(), Error> {
        let mut f = root.create_file(path).map_err(fail)?;
        f.truncate().map_err(fail)?;
        f.write_all(data).map_err(fail)
    };
    for d in [
        "EFI",
        "EFI/BOOT",
        "EFI/systemd",
        "loader",
        "loader/entries",
        "kiln",
    ] {
        root.create_dir(d).map_err(fail)?;
    }
    let upper = c.efi_arch.to_uppercase();
    put(&format!("EFI/BOOT/BOOT{upper}.EFI"), &loader)?;
    put(
        &format!("EFI/systemd/systemd-boot{}.efi", c.efi_arch),
        &loader,
    )?;
    put(
        "loader/loader.conf",
        b"default kiln-a.conf\ntimeout 0\neditor no\n",
    )?;
    let kernel = std::fs::read(c.kernel).map_err(Error::io("read", c.kernel))?;
    let initrd = std::fs::read(c.initramfs).map_err(Error::io("read", c.initramfs))?;
    for slot in SLOTS {
        root.create_dir(&format!("kiln/{slot}")).map_err(fail)?;
        put(&format!("kiln/{slot}/vmlinuz"), &kernel)?;
        put(&format!("kiln/{slot}/initramfs.img"), &initrd)?;
        let entry = format!(
            "title Kiln {v} (slot {up})\nversion {v}\nlinux /kiln/{slot}/vmlinuz\ninitrd /kiln/{slot}/initramfs.img\noptions {cmd} kiln.slot={slot}\n",
            v = c.version,
            up = slot.to_uppercase(),
            cmd = c.cmdline
        );
        put(
            &format!("loader/entries/kiln-{slot}.conf"),
            entry.as_bytes(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fat_time;

    #[test]
    fn epoch_to_fat_time() {
        // 2023-11-14 22:13:20 UTC
        let t = fat_time(1_700_000_000);
        let got = (t.date.year, t.date.month, t.date.day);
        assert_eq!(got, (2023, 11, 14));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (22, 13, 20));
        let leap = fat_time(951_782_400); // 2000-02-29 00:00:00
        assert_eq!(
            (leap.date.year, leap.date.month, leap.date.day),
            (2000, 2, 29)
        );
        let early = fat_time(0); // before FAT's epoch: clamped
        assert_eq!(
            (early.date.year, early.date.month, early.date.day),
            (1980, 1, 1)
        );
    }
}
