//! The raw disk image: protective MBR, GPT (primary and backup), and the
//! partition images copied in at 1 MiB-aligned offsets. GUIDs come from the
//! spec, so the table is reproducible.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use gptman::{GPTPartitionEntry, GPT};

use crate::Error;

pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const LINUX_FS_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;

/// One partition to place.
pub struct Part {
    pub name: &'static str,
    pub type_guid: &'static str,
    pub guid: [u8; 16],
    pub image: PathBuf,
    pub size: u64,
}

/// The smallest image that holds `parts`: 1 MiB before the first partition
/// (MBR, primary GPT, alignment), the partitions, 1 MiB for the backup GPT.
pub fn needed_size(parts: &[Part]) -> u64 {
    MIB + parts.iter().map(|p| p.size).sum::<u64>() + MIB
}

/// Writes the disk image: partitions in order, starting at 1 MiB. The image
/// is `size` bytes (`partitions.disk_mib`) if given, else [`needed_size`];
/// the backup GPT sits in its last sectors either way.
pub fn write(
    out: &Path,
    disk_guid: [u8; 16],
    parts: &[Part],
    size: Option<u64>,
) -> Result<u64, Error> {
    let fail = |e: gptman::Error| Error::Format {
        what: "GPT",
        problem: e.to_string(),
    };
    let need = needed_size(parts);
    let total = size.unwrap_or(need);
    if total < need {
        return Err(Error::Field {
            field: "partitions.disk_mib".into(),
            problem: format!(
                "{} MiB is too small: the partitions need {} MiB",
                total / MIB,
                need / MIB
            ),
        });
    }
    let _ = std::fs::remove_file(out);
    let mut f = crate::create_sized(out, total)?;
    let mut gpt = GPT::new_from(&mut f, SECTOR, disk_guid).map_err(fail)?;
    gpt.align = MIB / SECTOR;
    let mut offset = MIB;
    for (i, p) in parts.iter().enumerate() {
        let type_guid = crate::guid_bytes(p.type_guid).ok_or_else(|| Error::Format {
            what: "GPT",
            problem: format!("bad type GUID {}", p.type_guid),
        })?;
        gpt[(i + 1) as u32] = GPTPartitionEntry {
            partition_type_guid: type_guid,
            unique_partition_guid: p.guid,
            starting_lba: offset / SECTOR,
            ending_lba: (offset + p.size) / SECTOR - 1,
            attribute_bits: 0,
            partition_name: p.name.into(),
        };
        let mut src = std::fs::File::open(&p.image).map_err(Error::io("open", &p.image))?;
        let len = src.metadata().map_err(Error::io("stat", &p.image))?.len();
        if len > p.size {
            return Err(Error::Format {
                what: "disk image",
                problem: format!(
                    "{} is {len} bytes, its partition {}",
                    p.image.display(),
                    p.size
                ),
            });
        }
        f.seek(SeekFrom::Start(offset))
            .map_err(Error::io("seek", out))?;
        std::io::copy(&mut src, &mut f).map_err(Error::io("write partition into", out))?;
        offset += p.size;
    }
    GPT::write_protective_mbr_into(&mut f, SECTOR).map_err(fail)?;
    gpt.write_into(&mut f).map_err(fail)?;
    f.sync_all().map_err(Error::io("sync", out))?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(dir: &Path) -> Vec<Part> {
        ["EFI", "STATE"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let image = dir.join(name);
                std::fs::write(&image, vec![i as u8 + 1; 4096]).unwrap();
                Part {
                    name,
                    type_guid: if i == 0 { ESP_TYPE } else { LINUX_FS_TYPE },
                    guid: crate::derived_guid(name),
                    image,
                    size: 2 * MIB,
                }
            })
            .collect()
    }

    /// A disk bigger than its partitions (`partitions.disk_mib`) still has
    /// its backup GPT in the last sectors, which sgdisk verifies.
    #[test]
    fn larger_disk_keeps_backup_gpt_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = parts(dir.path());
        let raw = dir.path().join("disk.raw");
        assert_eq!(needed_size(&p), 6 * MIB);
        let total = write(&raw, crate::derived_guid("disk"), &p, Some(10 * MIB)).unwrap();
        assert_eq!(total, 10 * MIB);
        assert_eq!(std::fs::metadata(&raw).unwrap().len(), 10 * MIB);
        let out = std::process::Command::new("sgdisk")
            .arg("-v")
            .arg(&raw)
            .output()
            .expect("sgdisk (gdisk)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("No problems found"), "{text}");
        let data = std::fs::read(&raw).unwrap();
        assert_eq!(&data[(10 * MIB - 512) as usize..][..8], b"EFI PART");
        assert_eq!(data[MIB as usize], 1);
        assert_eq!(data[(3 * MIB) as usize], 2);

        let err = write(&raw, crate::derived_guid("disk"), &p, Some(5 * MIB)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "partitions.disk_mib: 5 MiB is too small: the partitions need 6 MiB"
        );
    }
}
