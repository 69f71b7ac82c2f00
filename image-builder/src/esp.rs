//! The EFI system partition: FAT32 with systemd-boot and two boot slots,
//! A and B, each with a kernel and an initramfs. Built without the `chrono`
//! feature, fatfs stamps every entry with its fixed epoch (1980-01-01), and
//! the volume id comes from the spec: the partition is reproducible.

use std::io::{Seek, Write};
use std::path::Path;

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};

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
    let fs = FileSystem::new(&mut file, FsOptions::new()).map_err(fail)?;
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
