//! File I/O with the guarantees the CLI promises: bounded reads; writes that
//! are atomic and durable (temp file, fsync, rename, fsync the directory);
//! secrets created with their final mode (never chmod-ed after, so no window
//! where a key is readable); no overwrite unless asked.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Larger inputs are refused: configs and PEM files are a few KiB.
const MAX_INPUT: u64 = 1 << 20;

/// Reads a UTF-8 text file of at most 1 MiB.
pub fn read_text(path: &Path) -> Result<String> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    let read = file
        .take(MAX_INPUT + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {} (must be UTF-8 text)", path.display()))?;
    if read as u64 > MAX_INPUT {
        bail!("{} is larger than {MAX_INPUT} bytes", path.display());
    }
    Ok(text)
}

/// A file to write.
pub struct OutFile {
    pub name: &'static str,
    pub contents: String,
    pub mode: u32,
}

/// Writes `files` into `dir` (created 0700 if missing). Without `force`,
/// refuses before writing anything if any already exists. Returns the paths.
pub fn write_all(dir: &Path, files: &[OutFile], force: bool) -> Result<Vec<PathBuf>> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    if !force {
        let existing: Vec<String> = files
            .iter()
            .map(|f| dir.join(f.name))
            .filter(|p| p.symlink_metadata().is_ok())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already exist(s); use --force to replace",
                existing.join(", ")
            );
        }
    }
    let mut written = Vec::new();
    for f in files {
        written.push(write_atomic(dir, f, force)?);
    }
    // The renames are durable only once the directory is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(written)
}

fn write_atomic(dir: &Path, f: &OutFile, force: bool) -> Result<PathBuf> {
    let target = dir.join(f.name);
    let tmp = dir.join(format!(".{}.tmp.{}", f.name, std::process::id()));
    let result = (|| -> Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(f.contents.as_bytes())?;
        file.sync_all()?;
        if force {
            fs::rename(&tmp, &target)?;
        } else {
            // A hard link fails if the target appeared meanwhile: no clobbering.
            fs::hard_link(&tmp, &target).map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => anyhow::anyhow!("{} already exists", target.display()),
                _ => e.into(),
            })?;
            fs::remove_file(&tmp)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e.context(format!("writing {}", target.display())));
    }
    tracing::info!(path = %target.display(), mode = format!("{:o}", f.mode), "wrote");
    Ok(target)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn writes_with_mode_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("new");
        let files = [OutFile {
            name: "secret",
            contents: "s".into(),
            mode: 0o600,
        }];
        write_all(&out, &files, false).expect("first write");
        let meta = fs::metadata(out.join("secret")).expect("written");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(&out).expect("dir").permissions().mode() & 0o777,
            0o700
        );
        let again = [OutFile {
            name: "secret",
            contents: "t".into(),
            mode: 0o600,
        }];
        let err = write_all(&out, &again, false).expect_err("exists");
        assert!(err.to_string().contains("already exist"), "{err}");
        assert_eq!(fs::read_to_string(out.join("secret")).expect("read"), "s");
        write_all(&out, &again, true).expect("forced");
        assert_eq!(fs::read_to_string(out.join("secret")).expect("read"), "t");
        let names: Vec<_> = fs::read_dir(&out)
            .expect("ls")
            .map(|e| e.expect("e").file_name())
            .collect();
        assert_eq!(names, ["secret"], "no temp file left");
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big");
        fs::write(&big, vec![b'a'; (MAX_INPUT + 1) as usize]).expect("write");
        assert!(read_text(&big).is_err());
        fs::write(&big, [0xff, 0xfe]).expect("write");
        assert!(read_text(&big).is_err());
    }
}
