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

/// Writes the disk image: partitions in order, starting at 1 MiB, with 1 MiB
/// left at the end for the backup GPT.
pub fn write(out: &Path, disk_guid: [u8; 16], parts: &[Part]) -> Result<u64, Error> {
    let fail = |e: gptman::Error| Error::Format {
        what: "GPT",
        problem: e.to_string(),
    };
    let total = MIB + parts.iter().map(|p| p.size).sum::<u64>() + MIB;
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
