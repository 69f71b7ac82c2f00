//! STATE and EPHEMERAL filesystems. No maintained Rust crate writes ext4,
//! so e2fsprogs' `mke2fs` formats a plain file (no root, no loop device),
//! made reproducible: fixed UUID and directory-hash seed from the spec,
//! fixed time through E2FSPROGS_FAKE_TIME, no lazy initialisation, and our
//! own mke2fs.conf so the host's defaults (which differ between e2fsprogs
//! releases and distributions) cannot change the feature set. PID 1 grows
//! EPHEMERAL online at boot; nothing on the node runs mke2fs.

use std::path::Path;
use std::process::Command;

use crate::Error;

/// The filesystem every Kiln ext4 gets, whatever the host's
/// /etc/mke2fs.conf says. Features are those Linux 6.1 mounts read-write
/// (no orphan_file); `resize_inode` reserves descriptor blocks so EPHEMERAL
/// can grow online. There is no `small` type: a 32 MiB STATE gets 4 KiB
/// blocks and 256-byte inodes (dates past 2038) like a big disk.
const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// Formats a new `size`-byte file at `out` as ext4 labelled `label`.
pub fn format(out: &Path, label: &str, size: u64, uuid: &str, epoch: u32) -> Result<(), Error> {
    let _ = std::fs::remove_file(out);
    drop(crate::create_sized(out, size)?);
    let conf = out.with_extension("mke2fs.conf");
    std::fs::write(&conf, MKE2FS_CONF).map_err(Error::io("write", &conf))?;
    tracing::debug!(image = %out.display(), label, uuid, "mke2fs");
    let output = Command::new("mke2fs")
        .args(["-t", "ext4", "-q", "-F", "-L", label, "-U", uuid, "-m", "0"])
        .arg("-E")
        .arg(format!(
            "hash_seed={uuid},lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0"
        ))
        .arg(out)
        .env("MKE2FS_CONFIG", &conf)
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .env("MKE2FS_DEVICE_SECTSIZE", "512")
        .output()
        .map_err(|e| Error::Tool {
            tool: "mke2fs",
            problem: format!("cannot run it ({e}); install e2fsprogs"),
        })?;
    let _ = std::fs::remove_file(&conf);
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

#[cfg(test)]
mod tests {
    /// Our configuration, not the host's, decides the features: the result
    /// has exactly the pinned set, and two runs give the same bytes.
    #[test]
    fn pinned_features_and_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let uuid = "0b6a4c3e-6c1f-4d2a-9f3e-1a2b3c4d5e6f";
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        super::format(&a, "STATE", 32 << 20, uuid, 1_700_000_000).unwrap();
        super::format(&b, "STATE", 32 << 20, uuid, 1_700_000_000).unwrap();
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
        let out = std::process::Command::new("dumpe2fs")
            .arg("-h")
            .arg(&a)
            .output()
            .expect("dumpe2fs (e2fsprogs)");
        let info = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in\n{info}"))
        };
        let mut features: Vec<String> = field("Filesystem features")
            .split_whitespace()
            .map(String::from)
            .collect();
        features.sort();
        assert_eq!(
            features,
            [
                "64bit",
                "dir_index",
                "dir_nlink",
                "ext_attr",
                "extent",
                "extra_isize",
                "filetype",
                "flex_bg",
                "has_journal",
                "huge_file",
                "large_file",
                "metadata_csum",
                "resize_inode",
                "sparse_super",
            ]
        );
        assert_eq!(field("Block size"), "4096");
        assert_eq!(field("Inode size"), "256");
        assert_eq!(field("Filesystem UUID"), uuid);
        assert_eq!(field("Filesystem volume name"), "STATE");
    }
}
