//! The merged view of the layer being written (`dest`) over its lowers:
//! looks paths up the way overlayfs will show them, and resolves an entry's
//! parent directories through symlinks scoped to the root, creating them in
//! `dest` so every written path is a chain of real directories there.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use super::UnpackError;

const OPAQUE: &str = "trusted.overlay.opaque";
const MAX_SYMLINKS: usize = 40;

/// A path found in the merged view.
pub struct Found {
    /// Where it is on the host (in `dest` or a lower).
    pub host: PathBuf,
    pub meta: Metadata,
}

pub struct View {
    /// `dest` first, then the lowers, topmost first.
    layers: Vec<PathBuf>,
}

/// Splits a tar entry name into checked components.
pub fn components(entry: &str, name: &[u8]) -> Result<Vec<OsString>, UnpackError> {
    let path = Path::new(OsStr::from_bytes(name));
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {
                return Err(UnpackError::AbsolutePath {
                    entry: entry.to_string(),
                })
            }
            Component::ParentDir => {
                return Err(UnpackError::PathTraversal {
                    entry: entry.to_string(),
                })
            }
            Component::CurDir | Component::Prefix(_) => {}
            Component::Normal(n) => out.push(n.to_os_string()),
        }
    }
    Ok(out)
}

pub fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(rustix::fs::lgetxattr(path, OPAQUE, &mut buf), Ok(1) if buf[0] == b'y')
}

fn io_err<'a>(entry: &'a str, op: &'static str) -> impl FnOnce(std::io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Io {
        entry: entry.to_string(),
        op,
        source,
    }
}

impl View {
    pub fn new(dest: &Path, lowers: &[PathBuf]) -> Self {
        let mut layers = vec![dest.to_path_buf()];
        layers.extend(lowers.iter().cloned());
        Self { layers }
    }

    pub fn dest(&self) -> &Path {
        &self.layers[0]
    }

    /// Looks `rel` (a path of real directories, no symlinks) up through the
    /// layers: the first layer holding it wins; a whiteout there, or an
    /// opaque directory or a non-directory above it, hides what is below.
    pub fn lookup(&self, rel: &Path) -> Option<Found> {
        let mut visible = self.layers.len();
        // Opaque directories and non-directories along the way cut the view.
        let mut prefix = PathBuf::new();
        let parents: Vec<_> = rel
            .parent()
            .map(|p| p.components().collect())
            .unwrap_or_default();
        for c in parents {
            prefix.push(c);
            for (i, layer) in self.layers[..visible].iter().enumerate() {
                let p = layer.join(&prefix);
                if let Ok(m) = fs::symlink_metadata(&p) {
                    if !m.is_dir() || is_opaque(&p) {
                        visible = i + 1;
                        break;
                    }
                }
            }
        }
        for layer in &self.layers[..visible] {
            let host = layer.join(rel);
            if let Ok(meta) = fs::symlink_metadata(&host) {
                if is_whiteout(&meta) {
                    return None;
                }
                return Some(Found { host, meta });
            }
        }
        None
    }

    /// Resolves `parents` (an entry's directory components) in the merged
    /// view and makes each a real directory in `dest`. Returns the path
    /// relative to `dest`.
    pub fn resolve_dir(&self, entry: &str, parents: &[OsString]) -> Result<PathBuf, UnpackError> {
        let mut todo: VecDeque<OsString> = parents.iter().cloned().collect();
        let mut cur = PathBuf::new();
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            if c == ".." {
                if !cur.pop() {
                    return Err(UnpackError::SymlinkEscape {
                        entry: entry.to_string(),
                        link: cur.display().to_string(),
                    });
                }
                continue;
            }
            if c == "." || c.is_empty() {
                continue;
            }
            let next = cur.join(&c);
            match self.lookup(&next) {
                Some(f) if f.meta.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(UnpackError::SymlinkLoop {
                            entry: entry.to_string(),
                        });
                    }
                    let target =
                        fs::read_link(&f.host).map_err(io_err(entry, "reading a symlink"))?;
                    if target.is_absolute() {
                        cur = PathBuf::new();
                    }
                    let mut front: Vec<OsString> = target
                        .components()
                        .filter_map(|c| match c {
                            Component::Normal(n) => Some(n.to_os_string()),
                            Component::ParentDir => Some("..".into()),
                            _ => None,
                        })
                        .collect();
                    // An escape is judged from where the link sits.
                    let mut depth = cur.components().count() as isize;
                    for f in &front {
                        depth += if f == ".." { -1 } else { 1 };
                        if depth < 0 {
                            return Err(UnpackError::SymlinkEscape {
                                entry: entry.to_string(),
                                link: next.display().to_string(),
                            });
                        }
                    }
                    front.extend(todo.drain(..));
                    todo = front.into();
                }
                Some(f) if f.meta.is_dir() => {
                    self.ensure_dir(entry, &next, Some(&f.meta))?;
                    cur = next;
                }
                Some(_) => {
                    return Err(UnpackError::NotADirectory {
                        entry: entry.to_string(),
                        parent: next.display().to_string(),
                    })
                }
                None => {
                    self.ensure_dir(entry, &next, None)?;
                    cur = next;
                }
            }
        }
        Ok(cur)
    }

    /// Makes `rel` a directory in `dest`, with a lower's owner and mode if
    /// it came from one (overlayfs shows the upper directory's).
    fn ensure_dir(
        &self,
        entry: &str,
        rel: &Path,
        like: Option<&Metadata>,
    ) -> Result<(), UnpackError> {
        let host = self.dest().join(rel);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => fs::remove_file(&host).map_err(io_err(entry, "replacing a whiteout"))?,
            Err(_) => {}
        }
        let mode = like.map_or(0o755, |m| m.mode() & 0o7777);
        fs::DirBuilder::new()
            .mode(mode)
            .create(&host)
            .map_err(io_err(entry, "creating a parent directory"))?;
        if let Some(m) = like {
            std::os::unix::fs::lchown(&host, Some(m.uid()), Some(m.gid()))
                .map_err(io_err(entry, "chown of a parent directory"))?;
            fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(io_err(entry, "chmod of a parent directory"))?;
        }
        Ok(())
    }
}
