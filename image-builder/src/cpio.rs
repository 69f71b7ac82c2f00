//! The initramfs format: "newc" cpio (what the kernel unpacks), with
//! entries sorted, a fixed mtime, uid/gid 0 and sequential inode numbers,
//! so the same inputs give the same bytes. Device nodes need no root here:
//! they are only headers.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum Data {
    Bytes(Vec<u8>),
    Path(PathBuf),
}

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(Data),
    Symlink(String),
    CharDevice(u32, u32),
}

/// An archive being assembled.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, (u32, Kind)>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Archive {
    fn insert(&mut self, path: &str, perm: u32, kind: Kind) {
        let path = path.trim_start_matches('/').to_string();
        // Parents first: the kernel creates entries in archive order.
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, p)| p)
            .unwrap_or(&[])
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries
                .entry(parent.clone())
                .or_insert((0o755, Kind::Dir));
        }
        self.entries.insert(path, (perm, kind));
    }

    pub fn dir(&mut self, path: &str, perm: u32) {
        self.insert(path, perm, Kind::Dir);
    }

    pub fn file(&mut self, path: &str, perm: u32, data: Data) {
        self.insert(path, perm, Kind::File(data));
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, 0o777, Kind::Symlink(target.to_string()));
    }

    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.insert(path, perm, Kind::CharDevice(major, minor));
    }

    /// Writes the archive; every entry gets `mtime`.
    pub fn write(&self, mtime: u32, out: &mut impl Write) -> io::Result<()> {
        for (ino, (path, (perm, kind))) in (1u32..).zip(self.entries.iter()) {
            let (mode, data, rdev): (u32, Vec<u8>, (u32, u32)) = match kind {
                Kind::Dir => (S_IFDIR | perm, Vec::new(), (0, 0)),
                Kind::File(Data::Bytes(b)) => (S_IFREG | perm, b.clone(), (0, 0)),
                Kind::File(Data::Path(p)) => (
                    S_IFREG | perm,
                    std::fs::read(p)
                        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?,
                    (0, 0),
                ),
                Kind::Symlink(t) => (S_IFLNK | perm, t.as_bytes().to_vec(), (0, 0)),
                Kind::CharDevice(ma, mi) => (S_IFCHR | perm, Vec::new(), (*ma, *mi)),
            };
            let nlink = if matches!(kind, Kind::Dir) { 2 } else { 1 };
            entry(out, ino, mode, nlink, mtime, rdev, path, &data)?;
        }
        entry(out, 0, 0, 1, 0, (0, 0), "TRAILER!!!", &[])
    }
}

#[allow(clippy::too_many_arguments)]
fn entry(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) -> io::Result<()> {
    let namesize = name.len() + 1;
    let header = format!(
        "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{mtime:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
        0,
        0,
        data.len(),
        0,
        0,
        rdev.0,
        rdev.1,
        0
    );
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad(out, 110 + namesize)?;
    out.write_all(data)?;
    pad(out, data.len())
}

fn pad(out: &mut impl Write, len: usize) -> io::Result<()> {
    let n = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's `cpio` tool reads what we write (apt install cpio).
    #[test]
    fn gnu_cpio_lists_the_archive() {
        let mut a = Archive::default();
        a.file(
            "etc/kiln/modules.load",
            0o644,
            Data::Bytes(b"ext4\n".to_vec()),
        );
        a.char_device("dev/console", 0o600, 5, 1);
        a.symlink("sbin/init", "/init");
        let mut buf = Vec::new();
        a.write(1_700_000_000, &mut buf).unwrap();
        assert_eq!(buf.len() % 4, 0);
        let mut again = Vec::new();
        a.write(1_700_000_000, &mut again).unwrap();
        assert_eq!(buf, again);
        let Ok(mut child) = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            panic!("cpio is needed for this test (apt install cpio)");
        };
        child.stdin.take().unwrap().write_all(&buf).unwrap();
        let out = child.wait_with_output().unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{listing}");
        for want in [
            "dev\n",
            "etc/kiln/modules.load",
            "crw-------",
            "sbin/init -> /init",
        ] {
            assert!(
                listing.contains(want.trim_end()),
                "missing {want:?} in\n{listing}"
            );
        }
    }
}
