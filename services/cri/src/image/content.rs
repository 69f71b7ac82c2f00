//! The content-addressed blob store: `blobs/sha256/<hex>` holds verified
//! blobs only. A download goes to `ingest/<hex>.partial`, is hashed as it is
//! written, and is renamed into place (after fsync) only when its size and
//! digest match; an interrupted one is resumed from the partial file.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::digest::Digest;
use crate::fsutil;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("blob {digest}: digest mismatch: the registry sent content hashing to {actual}")]
    DigestMismatch { digest: Digest, actual: Digest },
    #[error("blob {digest}: size mismatch: expected {expected} bytes, got {got}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        got: u64,
    },
    #[error("content store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ContentError + '_ {
    move |source| ContentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        let blobs = root.join("blobs/sha256");
        let ingest = root.join("ingest");
        for d in [&blobs, &ingest] {
            fs::create_dir_all(d).map_err(io_at(d))?;
        }
        Ok(Self { blobs, ingest })
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, ContentError> {
        let p = self.path(d);
        fs::read(&p).map_err(io_at(&p))
    }

    /// Stores a blob held in memory (manifests), after checking its digest.
    pub fn put(&self, d: &Digest, data: &[u8]) -> Result<(), ContentError> {
        let actual = Digest::of(data);
        if &actual != d {
            return Err(ContentError::DigestMismatch {
                digest: d.clone(),
                actual,
            });
        }
        if self.has(d) {
            return Ok(());
        }
        let p = self.path(d);
        fsutil::write_atomic(&p, data).map_err(io_at(&p))
    }

    /// Starts or resumes the download of `d`.
    pub fn ingest(&self, d: &Digest, size: u64) -> Result<Ingest, ContentError> {
        let path = self.ingest.join(format!("{}.partial", d.hex()));
        let mut file = fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_at(&path))?;
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(io_at(&path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            written += n as u64;
        }
        let mut ingest = Ingest {
            file,
            path,
            target: self.path(d),
            digest: d.clone(),
            size,
            hasher,
            written,
        };
        if written > size {
            ingest.restart()?;
        }
        Ok(ingest)
    }

    /// Every stored blob.
    pub fn list(&self) -> Result<Vec<Digest>, ContentError> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.blobs).map_err(io_at(&self.blobs))? {
            let e = e.map_err(io_at(&self.blobs))?;
            match Digest::from_hex(&e.file_name().to_string_lossy()) {
                Ok(d) => out.push(d),
                Err(_) => tracing::warn!(file = ?e.path(), "stray file in the blob store"),
            }
        }
        Ok(out)
    }

    pub fn remove(&self, d: &Digest) -> Result<(), ContentError> {
        let p = self.path(d);
        fs::remove_file(&p).map_err(io_at(&p))
    }

    /// Drops partial downloads older than `max_age` (only when none is
    /// running): younger ones stay for a later pull, or the next start, to
    /// resume. Returns how many went.
    pub fn clear_ingest(&self, max_age: std::time::Duration) -> Result<usize, ContentError> {
        let mut removed = 0;
        for e in fs::read_dir(&self.ingest).map_err(io_at(&self.ingest))? {
            let p = e.map_err(io_at(&self.ingest))?.path();
            let age = fs::symlink_metadata(&p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if age.is_none_or(|a| a > max_age) {
                fs::remove_file(&p).map_err(io_at(&p))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A blob being written.
pub struct Ingest {
    file: File,
    path: PathBuf,
    target: PathBuf,
    digest: Digest,
    size: u64,
    hasher: Sha256,
    written: u64,
}

impl Ingest {
    /// Bytes already held: where a resumed download starts.
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// Starts over (the registry ignored the range, or the partial is bad).
    pub fn restart(&mut self) -> Result<(), ContentError> {
        self.file.set_len(0).map_err(io_at(&self.path))?;
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }

    pub fn write(&mut self, chunk: &[u8]) -> Result<(), ContentError> {
        let got = self.written + chunk.len() as u64;
        if got > self.size {
            let _ = fs::remove_file(&self.path);
            return Err(ContentError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.size,
                got,
            });
        }
        self.file.write_all(chunk).map_err(io_at(&self.path))?;
        self.hasher.update(chunk);
        self.written = got;
        Ok(())
    }

    /// Verifies and moves the blob into the store. A mismatch deletes the
    /// partial file: bad content is never kept.
    pub fn commit(self) -> Result<(), ContentError> {
        if self.written != self.size {
            return Err(ContentError::SizeMismatch {
                digest: self.digest,
                expected: self.size,
                got: self.written,
            });
        }
        let actual = Digest::from_hasher(self.hasher);
        if actual != self.digest {
            let _ = fs::remove_file(&self.path);
            return Err(ContentError::DigestMismatch {
                digest: self.digest,
                actual,
            });
        }
        self.file.sync_all().map_err(io_at(&self.path))?;
        fsutil::rename_durable(&self.path, &self.target).map_err(io_at(&self.target))
    }
}
