//! Image records: one JSON file per image, `images/<config digest hex>.json`,
//! written atomically (temp + fsync + rename + fsync of the directory). The
//! image ID is its config digest, as in Docker and containerd. A tag names
//! one image at a time; pulling it again moves it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::manifest::Descriptor;
use crate::fsutil;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// The config digest.
    pub id: Digest,
    /// `registry/repo:tag`, normalised.
    pub repo_tags: Vec<String>,
    /// `registry/repo@sha256:…` of what each pull resolved (the index for
    /// multi-platform images).
    pub repo_digests: Vec<String>,
    /// The platform's manifest, and the index it came from if any.
    pub manifest: Digest,
    pub index: Option<Digest>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// Snapshot keys, bottom layer first.
    pub chain_ids: Vec<Digest>,
    /// The config's `User`, as kubelet wants it back in ImageStatus.
    pub user: Option<String>,
    pub pinned: bool,
}

impl ImageRecord {
    /// Bytes the image takes in the store (compressed, as registries count).
    pub fn size(&self) -> u64 {
        self.config.size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    /// Every blob the image needs kept.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.manifest, &self.config.digest]
            .into_iter()
            .chain(self.index.iter())
            .chain(self.layers.iter().map(|l| &l.digest))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("image record {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("image record {path}: not a valid record: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The records, in memory and on disk.
pub struct Records {
    dir: PathBuf,
    by_id: BTreeMap<Digest, ImageRecord>,
}

impl Records {
    pub fn load(root: &Path) -> Result<Self, RecordError> {
        let dir = root.join("images");
        let io_at = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RecordError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let mut by_id = BTreeMap::new();
        for e in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let path = e.map_err(io_at(&dir))?.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let data = fs::read(&path).map_err(io_at(&path))?;
            let r: ImageRecord =
                serde_json::from_slice(&data).map_err(|source| RecordError::Json {
                    path: path.clone(),
                    source,
                })?;
            by_id.insert(r.id.clone(), r);
        }
        Ok(Self { dir, by_id })
    }

    pub fn all(&self) -> impl Iterator<Item = &ImageRecord> {
        self.by_id.values()
    }

    pub fn get(&self, id: &Digest) -> Option<&ImageRecord> {
        self.by_id.get(id)
    }

    /// Finds an image by ID (`sha256:…` or bare hex), repo tag or repo
    /// digest; `name` is normalised by the caller when it is a reference.
    pub fn find(&self, id: Option<&Digest>, names: &[String]) -> Option<&ImageRecord> {
        if let Some(r) = id.and_then(|d| self.by_id.get(d)) {
            return Some(r);
        }
        self.by_id.values().find(|r| {
            names
                .iter()
                .any(|n| r.repo_tags.contains(n) || r.repo_digests.contains(n))
        })
    }

    /// Stores a record, taking its tags from any other image (each such
    /// image is rewritten too).
    pub fn put(&mut self, rec: ImageRecord) -> Result<(), RecordError> {
        let moved: Vec<Digest> = self
            .by_id
            .values()
            .filter(|o| o.id != rec.id && o.repo_tags.iter().any(|t| rec.repo_tags.contains(t)))
            .map(|o| o.id.clone())
            .collect();
        for id in moved {
            if let Some(mut other) = self.by_id.get(&id).cloned() {
                other.repo_tags.retain(|t| !rec.repo_tags.contains(t));
                self.write(other)?;
            }
        }
        self.write(rec)
    }

    fn write(&mut self, rec: ImageRecord) -> Result<(), RecordError> {
        let path = self.path(&rec.id);
        let data = serde_json::to_vec_pretty(&rec).map_err(|source| RecordError::Json {
            path: path.clone(),
            source,
        })?;
        fsutil::write_atomic(&path, &data).map_err(|source| RecordError::Io { path, source })?;
        self.by_id.insert(rec.id.clone(), rec);
        Ok(())
    }

    pub fn remove(&mut self, id: &Digest) -> Result<(), RecordError> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(RecordError::Io { path, source }),
        }
        fsutil::sync_dir(&self.dir).map_err(|source| RecordError::Io {
            path: self.dir.clone(),
            source,
        })?;
        self.by_id.remove(id);
        Ok(())
    }

    /// Untags or removes: drops `name` from the image's tags; the image
    /// itself goes only when the name was its ID or its last name.
    /// Returns whether the image itself was removed.
    pub fn untag(&mut self, id: &Digest, name: Option<&str>) -> Result<bool, RecordError> {
        let Some(mut rec) = self.by_id.get(id).cloned() else {
            return Ok(false);
        };
        if let Some(name) = name {
            if rec.repo_tags.iter().any(|t| t == name) && rec.repo_tags.len() > 1 {
                rec.repo_tags.retain(|t| t != name);
                self.write(rec)?;
                return Ok(false);
            }
        }
        self.remove(id)?;
        Ok(true)
    }

    fn path(&self, id: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", id.hex()))
    }
}
