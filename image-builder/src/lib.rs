//! Kiln's image builder: Debian's kernel and systemd-boot packages plus the
//! static `kiln` binary become a GPT disk image and a PXE set, in Rust,
//! without root, loop devices or mounts, byte-for-byte reproducibly.
//!
//! Each module writes one format: [`deb`] reads packages, [`depmod`] selects
//! modules and writes their index, [`cpio`] the initramfs, [`rootfs`] the
//! squashfs root, [`esp`] the FAT32 boot partition, [`ext4`] the data
//! partitions, [`disk`] the GPT image; [`build`] runs them in order.

pub mod build;
pub mod cpio;
pub mod deb;
pub mod depmod;
pub mod disk;
pub mod esp;
pub mod ext4;
pub mod fatfix;
pub mod fetch;
pub mod manifest;
pub mod progress;
pub mod rootfs;
pub mod spec;

use std::path::PathBuf;

/// Everything that can stop a build. Each variant names what it failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("spec {path}: {problem}")]
    Spec { path: PathBuf, problem: String },
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: sha256 is {actual}, the spec pins {expected}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("cannot download {package}: {reason}")]
    Download { package: String, reason: String },
    #[error("package {path}: {problem}")]
    Package { path: PathBuf, problem: String },
    #[error("module {module}: {problem}")]
    Module { module: String, problem: String },
    #[error("{what}: {problem}")]
    Format { what: &'static str, problem: String },
    #[error("{tool}: {problem}")]
    Tool { tool: &'static str, problem: String },
}

impl Error {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }
}

/// Creates (or truncates) `path` as a sparse file of `len` bytes.
pub(crate) fn create_sized(path: &std::path::Path, len: u64) -> Result<std::fs::File, Error> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(Error::io("create", path))?;
    f.set_len(len).map_err(Error::io("size", path))?;
    Ok(f)
}

/// A sha256 digest as lowercase hex.
pub fn sha256_hex(data: impl AsRef<[u8]>) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stable GUID for `what` in this build: the same inputs give the same
/// disk and partition GUIDs, so images are reproducible. Returned as the
/// on-disk (mixed-endian) byte order GPT uses; the textual form is the same
/// bytes read as a UUID.
pub fn derived_guid(seed: &str) -> [u8; 16] {
    use sha2::Digest;
    let d = sha2::Sha256::digest(seed.as_bytes());
    let mut g = [0u8; 16];
    g.copy_from_slice(&d[..16]);
    g[7] = (g[7] & 0x0f) | 0x40; // version 4 (byte 7 is the high byte of time_hi, little-endian)
    g[8] = (g[8] & 0x3f) | 0x80; // RFC 4122 variant
    g
}

/// The canonical text form of an on-disk GUID (first three fields little-endian).
pub fn guid_string(g: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{}",
        g[3],
        g[2],
        g[1],
        g[0],
        g[5],
        g[4],
        g[7],
        g[6],
        g[8],
        g[9],
        hex(&g[10..])
    )
}

/// Parses `C12A7328-F81F-11D2-BA4B-00A0C93EC93B` into on-disk bytes.
pub fn guid_bytes(s: &str) -> Option<[u8; 16]> {
    let h: String = s.chars().filter(|c| *c != '-').collect();
    if h.len() != 32 {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok()?;
    }
    b[..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trip_and_esp_bytes() {
        let esp = guid_bytes("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(esp[..4], [0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(guid_string(&esp), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        let g = derived_guid("kiln/0.1.0/x86_64/disk");
        assert_eq!(g, derived_guid("kiln/0.1.0/x86_64/disk"));
        assert_ne!(g, derived_guid("kiln/0.1.0/aarch64/disk"));
        assert_eq!(guid_string(&g).as_bytes()[14], b'4');
    }
}
