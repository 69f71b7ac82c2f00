//! Inputs: pinned Debian packages, fetched with `apt-get download` into a
//! cache directory once and verified by sha256 every time they are used.
//! Builds running at the same time (parallel tests, two arches) share the
//! cache, so fetching and unpacking happen under an exclusive lock on it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::spec::Package;
use crate::Error;

/// The cached `.deb` for `pkg` on Debian architecture `debarch`, downloaded
/// if missing; its sha256 must match the spec.
pub fn package(cache: &Path, pkg: &Package, debarch: &str) -> Result<PathBuf, Error> {
    // apt writes ':' in versions (epochs) as %3a in file names.
    let file = cache.join(format!(
        "{}_{}_{}.deb",
        pkg.package,
        pkg.version.replace(':', "%3a"),
        debarch
    ));
    if !file.exists() {
        let spec = format!("{}:{}={}", pkg.package, debarch, pkg.version);
        tracing::info!(package = %spec, cache = %cache.display(), "apt-get download");
        let out = Command::new("apt-get")
            .args(["download", "-q", &spec])
            .current_dir(cache)
            .output()
            .map_err(|e| Error::Download {
                package: spec.clone(),
                reason: format!("cannot run apt-get: {e}"),
            })?;
        if !out.status.success() || !file.exists() {
            return Err(Error::Download {
                package: spec,
                reason: format!(
                    "apt-get download failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
    }
    verify(&file, &pkg.sha256)?;
    Ok(file)
}

/// Holds the cache directory for this build until dropped.
#[derive(Debug)]
pub struct CacheLock {
    // Closing the file releases the lock.
    _file: std::fs::File,
}

/// Takes the cache's lock (`<cache>/.kiln-image.lock`), waiting for another
/// build that holds it.
pub fn lock(cache: &Path) -> Result<CacheLock, Error> {
    std::fs::create_dir_all(cache).map_err(Error::io("create cache", cache))?;
    let path = cache.join(".kiln-image.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::io("open", &path))?;
    f.lock().map_err(Error::io("lock", &path))?;
    Ok(CacheLock { _file: f })
}

/// A file's sha256 as lowercase hex, read in a stream.
pub fn sha256_file(file: &Path) -> Result<String, Error> {
    use sha2::Digest;
    let mut f = std::fs::File::open(file).map_err(Error::io("read", file))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(Error::io("read", file))?;
    Ok(crate::hex(&h.finalize()))
}

/// Fails unless `file`'s sha256 is `expected`.
pub fn verify(file: &Path, expected: &str) -> Result<(), Error> {
    let actual = sha256_file(file)?;
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(Error::Checksum {
            path: file.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}
