//! Reads Debian packages directly: an `ar` archive whose `data.tar{,.xz,.zst}`
//! member holds the files. Unpacked once into a cache directory keyed by the
//! package's sha256.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::Error;

/// Unpacks `deb`'s data into `<cache>/unpacked/<sha256>/` (once; a marker
/// file records completion) and returns that directory. The caller holds
/// the cache's lock ([`crate::fetch::lock`]).
pub fn unpack(deb: &Path, sha256: &str, cache: &Path) -> Result<PathBuf, Error> {
    let dest = cache.join("unpacked").join(sha256);
    let done = dest.join(".kiln-unpacked");
    if done.exists() {
        return Ok(dest);
    }
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(Error::io("clean", &dest))?;
    }
    let partial = cache.join("unpacked").join(format!("{sha256}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(Error::io("clean", &partial))?;
    }
    std::fs::create_dir_all(&partial).map_err(Error::io("create", &partial))?;
    let bad = |problem: String| Error::Package {
        path: deb.to_path_buf(),
        problem,
    };
    let file = std::fs::File::open(deb).map_err(Error::io("open", deb))?;
    let mut archive = ar::Archive::new(file);
    let mut found = false;
    while let Some(entry) = archive.next_entry() {
        let entry = entry.map_err(|e| bad(format!("not an ar archive: {e}")))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let reader: Box<dyn Read> = match name.as_str() {
            "data.tar.xz" => Box::new(liblzma::read::XzDecoder::new(entry)),
            "data.tar.zst" => {
                Box::new(zstd::stream::read::Decoder::new(entry).map_err(|e| bad(e.to_string()))?)
            }
            "data.tar" => Box::new(entry),
            _ => continue,
        };
        let mut tar = tar::Archive::new(reader);
        tar.set_preserve_permissions(true);
        tar.set_overwrite(true);
        tar.unpack(&partial)
            .map_err(|e| bad(format!("{name}: {e}")))?;
        found = true;
        break;
    }
    if !found {
        return Err(bad("no data.tar, data.tar.xz or data.tar.zst member".into()));
    }
    std::fs::write(partial.join(".kiln-unpacked"), b"").map_err(Error::io("write", &partial))?;
    std::fs::rename(&partial, &dest).map_err(Error::io("rename", &dest))?;
    Ok(dest)
}
