//! Applies one layer tar (gzip, zstd or uncompressed, told apart by their
//! magic bytes) to an empty snapshot directory, in overlayfs form: the
//! directory holds only this layer's changes, with OCI whiteouts
//! (`.wh.<name>`) turned into 0:0 character devices and opaque markers
//! (`.wh..wh..opq`) into the `trusted.overlay.opaque` xattr. The layers
//! below (`lowers`, topmost first) are read, never written: parent paths and
//! symlinks resolve through the merged view, and a hard link to a file of a
//! lower layer becomes a copy.
//!
//! Entry names with `..`, absolute names, and paths that a symlink would
//! lead above the root are refused with a named error.

mod decompress;
mod entry;
mod view;

use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use decompress::Compression;

use super::digest::Digest;

/// Why a layer cannot be applied; each variant names the entry.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer stream: {0}")]
    Read(io::Error),
    #[error("layer tar entry {entry:?}: name contains \"..\" (path traversal refused)")]
    PathTraversal { entry: String },
    #[error("layer tar entry {entry:?}: absolute name refused")]
    AbsolutePath { entry: String },
    #[error("layer tar entry {entry:?}: symlink {link:?} leads outside the root (symlink escape refused)")]
    SymlinkEscape { entry: String, link: String },
    #[error("layer tar entry {entry:?}: more than 40 symlinks while resolving its path")]
    SymlinkLoop { entry: String },
    #[error("layer tar entry {entry:?}: parent {parent:?} is not a directory")]
    NotADirectory { entry: String, parent: String },
    #[error("layer tar entry {entry:?}: hard link target {target:?} {problem}")]
    HardLinkTarget {
        entry: String,
        target: String,
        problem: &'static str,
    },
    #[error("layer tar entry {entry:?}: unsupported entry type {kind:?}")]
    Unsupported { entry: String, kind: String },
    #[error("layer tar entry {entry:?}: field {field} is invalid: {source}")]
    Header {
        entry: String,
        field: &'static str,
        source: io::Error,
    },
    #[error("layer tar entry {entry:?}: {op}: {source}")]
    Io {
        entry: String,
        op: &'static str,
        source: io::Error,
    },
}

/// What applying a layer found.
#[derive(Debug)]
pub struct Applied {
    /// sha256 of the uncompressed tar: must equal the config's diff ID.
    pub diff_id: Digest,
    pub compression: Compression,
    pub entries: u64,
}

/// Applies the layer read from `blob` to `dest` over `lowers`.
pub fn apply(
    dest: &Path,
    lowers: &[PathBuf],
    blob: impl Read + 'static,
) -> Result<Applied, UnpackError> {
    let (stream, compression) = decompress::open(blob).map_err(UnpackError::Read)?;
    let mut archive = tar::Archive::new(stream);
    let mut writer = entry::Writer::new(view::View::new(dest, lowers));
    let mut entries = 0;
    for item in archive.entries().map_err(UnpackError::Read)? {
        let item = item.map_err(UnpackError::Read)?;
        writer.write(item)?;
        entries += 1;
    }
    writer.finish()?;
    let mut stream = archive.into_inner();
    // The diff ID covers the whole stream, tar padding included.
    io::copy(&mut stream, &mut io::sink()).map_err(UnpackError::Read)?;
    Ok(Applied {
        diff_id: stream.digest(),
        compression,
        entries,
    })
}

#[cfg(test)]
mod tests;
