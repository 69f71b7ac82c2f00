//! Writes one tar entry into the layer's directory: files, directories,
//! symlinks, hard links, device nodes and FIFOs with their owner, mode,
//! xattrs and mtime, and whiteouts in overlayfs form.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags, CWD};
use tar::EntryType;

use super::view::{components, View};
use super::UnpackError;

const WHITEOUT: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

pub struct Writer {
    view: View,
    /// Directory mtimes, set last: writing children changes them.
    dir_times: Vec<(PathBuf, i64)>,
}

/// An entry's metadata, PAX records applied.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Writer {
    pub fn new(view: View) -> Self {
        Self {
            view,
            dir_times: Vec::new(),
        }
    }

    pub fn write<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = e.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let meta = read_meta(&name, &mut e)?;
        let mut comps = components(&name, &raw)?;
        let Some(last) = comps.pop() else {
            // "./": the layer's root directory.
            return self.apply_meta(&name, self.view.dest(), &meta, true);
        };
        let parent = self.view.resolve_dir(&name, &comps)?;
        let dest = self.view.dest().to_path_buf();
        let last_str = last.to_string_lossy().into_owned();
        if last_str == OPAQUE_MARKER {
            return set_xattr(&name, &dest.join(&parent), OPAQUE_XATTR.as_ref(), b"y");
        }
        if let Some(hidden) = last_str.strip_prefix(WHITEOUT) {
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(UnpackError::PathTraversal { entry: name });
            }
            let path = dest.join(&parent).join(hidden);
            remove_existing(&name, &path)?;
            return mknod(&name, &path, FileType::CharacterDevice, 0, 0);
        }
        let path = dest.join(&parent).join(&last);
        let kind = e.header().entry_type();
        if kind != EntryType::Directory || !path.is_dir() || path.is_symlink() {
            remove_existing(&name, &path)?;
        }
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_err(&name, "creating a file"))?;
                io::copy(&mut e, &mut f).map_err(io_err(&name, "writing a file"))?;
            }
            EntryType::Directory => {
                if !path.is_dir() {
                    fs::create_dir(&path).map_err(io_err(&name, "creating a directory"))?;
                }
                self.apply_meta(&name, &path, &meta, false)?;
                self.dir_times.push((path, meta.mtime));
                return Ok(());
            }
            EntryType::Symlink => {
                let target = link_name(&name, &e)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &path)
                    .map_err(io_err(&name, "creating a symlink"))?;
            }
            EntryType::Link => return self.hard_link(&name, &e, &path),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let ft = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let h = e.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                mknod(&name, &path, ft, major, minor)?;
            }
            other => {
                return Err(UnpackError::Unsupported {
                    entry: name,
                    kind: format!("{other:?}"),
                })
            }
        }
        self.apply_meta(&name, &path, &meta, kind == EntryType::Symlink)
    }

    /// A hard link to a file of this layer is a link; to a file of a lower
    /// layer it is a copy (overlayfs cannot link across layers).
    fn hard_link<R: Read>(
        &mut self,
        name: &str,
        e: &tar::Entry<'_, R>,
        path: &Path,
    ) -> Result<(), UnpackError> {
        let raw = link_name(name, e)?;
        let target_name = String::from_utf8_lossy(&raw).into_owned();
        let bad = |problem| UnpackError::HardLinkTarget {
            entry: name.to_string(),
            target: target_name.clone(),
            problem,
        };
        let mut comps = components(name, &raw)?;
        let last = comps.pop().ok_or_else(|| bad("is the root"))?;
        let parent = self.view.resolve_dir(name, &comps)?;
        let rel = parent.join(last);
        let found = self
            .view
            .lookup(&rel)
            .ok_or_else(|| bad("does not exist"))?;
        if found.meta.is_dir() {
            return Err(bad("is a directory"));
        }
        if found.host.starts_with(self.view.dest()) {
            return fs::hard_link(&found.host, path).map_err(io_err(name, "creating a hard link"));
        }
        if !found.meta.is_file() {
            return Err(bad("is in a lower layer and not a regular file"));
        }
        let mut src = File::open(&found.host).map_err(io_err(name, "copying a lower file"))?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_err(name, "copying a lower file"))?;
        io::copy(&mut src, &mut dst).map_err(io_err(name, "copying a lower file"))?;
        let m = &found.meta;
        let meta = Meta {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            mtime: m.mtime(),
            xattrs: Vec::new(),
        };
        self.apply_meta(name, path, &meta, false)
    }

    fn apply_meta(
        &self,
        name: &str,
        path: &Path,
        m: &Meta,
        symlink: bool,
    ) -> Result<(), UnpackError> {
        std::os::unix::fs::lchown(path, Some(m.uid), Some(m.gid)).map_err(io_err(name, "chown"))?;
        if !symlink {
            // After chown, which clears set-id bits.
            fs::set_permissions(path, fs::Permissions::from_mode(m.mode & 0o7777))
                .map_err(io_err(name, "chmod"))?;
        }
        for (k, v) in &m.xattrs {
            set_xattr(name, path, k, v)?;
        }
        set_mtime(name, path, m.mtime)
    }

    /// Sets directory mtimes, deepest first.
    pub fn finish(&mut self) -> Result<(), UnpackError> {
        for (path, mtime) in self.dir_times.drain(..).rev() {
            set_mtime(&path.display().to_string(), &path, mtime)?;
        }
        Ok(())
    }
}

fn read_meta<R: Read>(name: &str, e: &mut tar::Entry<'_, R>) -> Result<Meta, UnpackError> {
    let header = |field, source| UnpackError::Header {
        entry: name.to_string(),
        field,
        source,
    };
    let h = e.header();
    let mut m = Meta {
        mode: h.mode().map_err(|s| header("mode", s))?,
        uid: h.uid().map_err(|s| header("uid", s))? as u32,
        gid: h.gid().map_err(|s| header("gid", s))? as u32,
        mtime: h.mtime().map_err(|s| header("mtime", s))? as i64,
        xattrs: Vec::new(),
    };
    let Some(pax) = e.pax_extensions().map_err(|s| header("pax", s))? else {
        return Ok(m);
    };
    for ext in pax {
        let ext = ext.map_err(|s| header("pax", s))?;
        let Ok(key) = ext.key() else { continue };
        let num = || {
            ext.value()
                .ok()
                .and_then(|v| v.split('.').next()?.parse::<u64>().ok())
                .ok_or_else(|| {
                    header(
                        "pax",
                        io::Error::new(io::ErrorKind::InvalidData, key.to_string()),
                    )
                })
        };
        match key {
            "uid" => m.uid = num()? as u32,
            "gid" => m.gid = num()? as u32,
            "mtime" => m.mtime = num()? as i64,
            _ => {
                if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                    // A layer must not forge overlayfs's own attributes.
                    if x.starts_with("trusted.overlay.") {
                        tracing::warn!(entry = name, xattr = x, "layer xattr ignored");
                        continue;
                    }
                    m.xattrs.push((x.into(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(m)
}

fn link_name<R: Read>(name: &str, e: &tar::Entry<'_, R>) -> Result<Vec<u8>, UnpackError> {
    match e.link_name_bytes() {
        Some(l) if !l.is_empty() => Ok(l.into_owned()),
        _ => Err(UnpackError::Header {
            entry: name.to_string(),
            field: "linkname",
            source: io::Error::new(io::ErrorKind::InvalidData, "empty"),
        }),
    }
}

/// Removes what a new entry replaces (a directory only when the new entry
/// is not one: tar semantics).
fn remove_existing(name: &str, path: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).map_err(io_err(name, "replacing a directory"))
        }
        Ok(_) => fs::remove_file(path).map_err(io_err(name, "replacing a file")),
        Err(_) => Ok(()),
    }
}

fn mknod(name: &str, path: &Path, ft: FileType, major: u32, minor: u32) -> Result<(), UnpackError> {
    rustix::fs::mknodat(
        CWD,
        path,
        ft,
        Mode::from_raw_mode(0o600),
        rustix::fs::makedev(major, minor),
    )
    .map_err(|e| io_err(name, "mknod")(e.into()))
}

fn set_xattr(
    name: &str,
    path: &Path,
    key: &std::ffi::OsStr,
    value: &[u8],
) -> Result<(), UnpackError> {
    rustix::fs::lsetxattr(path, key, value, XattrFlags::empty())
        .map_err(|e| io_err(name, "setting an xattr")(e.into()))
}

fn set_mtime(name: &str, path: &Path, mtime: i64) -> Result<(), UnpackError> {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_err(name, "setting mtime")(e.into()))
}

fn io_err<'a>(entry: &'a str, op: &'static str) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Io {
        entry: entry.to_string(),
        op,
        source,
    }
}
