//! STATE and EPHEMERAL filesystems. No maintained Rust crate writes ext4,
//! so e2fsprogs' `mke2fs` formats a plain file (no root, no loop device),
//! made reproducible: fixed UUID and directory-hash seed from the spec,
//! fixed time through E2FSPROGS_FAKE_TIME, no lazy initialisation. PID 1
//! grows EPHEMERAL online at boot; nothing on the node runs mke2fs.

use std::path::Path;
use std::process::Command;

use crate::Error;

/// Formats a new `size`-byte file at `out` as ext4 labelled `label`.
pub fn format(out: &Path, label: &str, size: u64, uuid: &str, epoch: u32) -> Result<(), Error> {
    let _ = std::fs::remove_file(out);
    drop(crate::create_sized(out, size)?);
    let output = Command::new("mke2fs")
        .args([
            "-t", "ext4", "-q", "-F", "-L", label, "-U", uuid, "-b", "4096", "-m", "0",
        ])
        .arg("-E")
        .arg(format!(
            "hash_seed={uuid},lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0"
        ))
        .arg(out)
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .env("MKE2FS_DEVICE_SECTSIZE", "512")
        .output()
        .map_err(|e| Error::Tool {
            tool: "mke2fs",
            problem: format!("cannot run it ({e}); install e2fsprogs"),
        })?;
    if !output.status.success() {
        return Err(Error::Tool {
            tool: "mke2fs",
            problem: format!(
                "{} on {}: {}",
                output.status,
                out.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(())
}
