//! The layer's compression, from its magic bytes (media types are often
//! wrong in the wild), and a reader that hashes the uncompressed stream.

use std::io::{self, BufRead, BufReader, Read};

use sha2::{Digest as _, Sha256};

use crate::image::digest::Digest;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The uncompressed tar stream, hashed as it is read.
pub struct Hashed {
    inner: Box<dyn Read>,
    hasher: Sha256,
}

impl Hashed {
    pub fn digest(self) -> Digest {
        Digest::from_hasher(self.hasher)
    }
}

impl Read for Hashed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Opens the blob as an uncompressed stream.
pub fn open(blob: impl Read + 'static) -> io::Result<(Hashed, Compression)> {
    let mut buf = BufReader::with_capacity(256 * 1024, blob);
    let head = buf.fill_buf()?;
    let compression = if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    };
    let inner: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf)?),
        Compression::None => Box::new(buf),
    };
    Ok((
        Hashed {
            inner,
            hasher: Sha256::new(),
        },
        compression,
    ))
}
