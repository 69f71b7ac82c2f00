//! Layer snapshots: `snapshots/sha256/<chain id hex>/fs` holds one layer's
//! changes in overlayfs form; a container's root will be an overlay mount
//! with the image's snapshots, topmost first, as `lowerdir`. Keyed by chain
//! ID, a snapshot is shared by every image with the same layers below it.
//!
//! A layer is unpacked into `snapshots/tmp/`, checked against its diff ID,
//! flushed (syncfs) and renamed into place: a snapshot that exists is whole.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::digest::Digest;
use super::unpack::{self, UnpackError};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("layer {layer}: {source}")]
    Unpack { layer: Digest, source: UnpackError },
    #[error("layer {layer}: diff ID mismatch: the image config says {expected}, the uncompressed layer hashes to {actual}")]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("snapshot store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct Snapshots {
    committed: PathBuf,
    tmp: PathBuf,
    seq: AtomicU64,
}

/// One layer to unpack.
pub struct LayerJob<'a> {
    pub chain: &'a Digest,
    pub diff_id: &'a Digest,
    /// The compressed blob's digest (for errors) and file.
    pub blob_digest: &'a Digest,
    pub blob: &'a Path,
    /// Chain IDs of the layers below, topmost first.
    pub parents: &'a [Digest],
}

impl Snapshots {
    /// Opens the store and drops unpacks a crash left half done.
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        let committed = root.join("snapshots/sha256");
        let tmp = root.join("snapshots/tmp");
        fs::create_dir_all(&committed).map_err(io_at(&committed))?;
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_at(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io_at(&tmp))?;
        Ok(Self {
            committed,
            tmp,
            seq: AtomicU64::new(0),
        })
    }

    /// The directory overlayfs uses as this snapshot's layer.
    pub fn fs_dir(&self, chain: &Digest) -> PathBuf {
        self.committed.join(chain.hex()).join("fs")
    }

    pub fn exists(&self, chain: &Digest) -> bool {
        self.fs_dir(chain).is_dir()
    }

    /// Unpacks a layer into a new snapshot (blocking: run it off the async
    /// runtime).
    pub fn create(&self, job: &LayerJob<'_>) -> Result<(), SnapshotError> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let work = self.tmp.join(format!("{}-{n}", job.chain.hex()));
        let result = self.unpack_into(&work, job);
        if result.is_err() {
            let _ = fs::remove_dir_all(&work);
        }
        result
    }

    fn unpack_into(&self, work: &Path, job: &LayerJob<'_>) -> Result<(), SnapshotError> {
        let fs_dir = work.join("fs");
        fs::create_dir_all(&fs_dir).map_err(io_at(&fs_dir))?;
        let lowers: Vec<PathBuf> = job.parents.iter().map(|p| self.fs_dir(p)).collect();
        let blob = File::open(job.blob).map_err(io_at(job.blob))?;
        let applied =
            unpack::apply(&fs_dir, &lowers, blob).map_err(|source| SnapshotError::Unpack {
                layer: job.blob_digest.clone(),
                source,
            })?;
        if &applied.diff_id != job.diff_id {
            return Err(SnapshotError::DiffIdMismatch {
                layer: job.blob_digest.clone(),
                expected: job.diff_id.clone(),
                actual: applied.diff_id,
            });
        }
        tracing::debug!(layer = %job.blob_digest, entries = applied.entries, compression = ?applied.compression, "layer unpacked");
        // One syncfs makes every file of the snapshot durable before its
        // name appears.
        let dir = File::open(work).map_err(io_at(work))?;
        rustix::fs::syncfs(&dir).map_err(|e| io_at(work)(e.into()))?;
        let target = self.committed.join(job.chain.hex());
        crate::fsutil::rename_durable(work, &target).map_err(io_at(&target))
    }

    /// Every committed snapshot.
    pub fn list(&self) -> Result<Vec<Digest>, SnapshotError> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.committed).map_err(io_at(&self.committed))? {
            let e = e.map_err(io_at(&self.committed))?;
            match Digest::from_hex(&e.file_name().to_string_lossy()) {
                Ok(d) => out.push(d),
                Err(_) => tracing::warn!(dir = ?e.path(), "stray entry in the snapshot store"),
            }
        }
        Ok(out)
    }

    /// Removes a snapshot: renamed away first, so no half-deleted snapshot
    /// is ever visible under its name.
    pub fn remove(&self, chain: &Digest) -> Result<(), SnapshotError> {
        let from = self.committed.join(chain.hex());
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let trash = self.tmp.join(format!("rm-{}-{n}", chain.hex()));
        fs::rename(&from, &trash).map_err(io_at(&from))?;
        fs::remove_dir_all(&trash).map_err(io_at(&trash))
    }
}
