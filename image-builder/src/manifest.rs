//! `manifest.json`: what a build produced, with sizes and sha256, so a
//! download or a PXE server can be checked against it.

use std::path::Path;

use serde::Serialize;

use crate::Error;

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The kernel's version directory, e.g. `6.1.0-56-amd64`.
    pub kernel: String,
    pub files: Vec<FileEntry>,
    /// What went in: the pinned packages and the kiln binary.
    pub inputs: Vec<Input>,
}

#[derive(Debug, Serialize)]
pub struct Input {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

impl FileEntry {
    pub fn of(dir: &Path, name: &str) -> Result<FileEntry, Error> {
        let path = dir.join(name);
        let size = std::fs::metadata(&path)
            .map_err(Error::io("stat", &path))?
            .len();
        Ok(FileEntry {
            name: name.to_string(),
            size,
            sha256: crate::fetch::sha256_file(&path)?,
        })
    }
}

/// Writes `data` to `path` via a temp file, fsync and rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
    f.write_all(data).map_err(Error::io("write", &tmp))?;
    f.sync_all().map_err(Error::io("sync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io("rename", path))
}

/// Moves a finished file into place durably.
pub fn commit(tmp: &Path, path: &Path) -> Result<(), Error> {
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(Error::io("sync", tmp))?;
    std::fs::rename(tmp, path).map_err(Error::io("rename", path))
}
