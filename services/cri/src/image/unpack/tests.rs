//! Layer unpack on tars built here, as root (owners, device nodes and
//! trusted.* xattrs need it): file kinds and metadata, whiteouts, opaque
//! directories, hard links, symlinked parents, compression, and refused
//! traversal attempts.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::{apply, Compression, UnpackError};
use crate::image::digest::Digest;

/// A tar built entry by entry; names go into the header raw, so hostile
/// names (`..`, absolute) can be written.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn entry(
        &mut self,
        name: &str,
        kind: EntryType,
        mode: u32,
        data: &[u8],
        link: &str,
    ) -> &mut Self {
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name, EntryType::Regular, 0o644, data, "")
    }

    fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name, EntryType::Directory, 0o755, b"", "")
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            write!(body, "{len} {k}=").unwrap();
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.entry("PaxHeader", EntryType::XHeader, 0o644, &body, "")
    }

    fn bytes(&mut self) -> Vec<u8> {
        self.0
            .get_ref()
            .clone()
            .into_iter()
            .chain([0u8; 1024])
            .collect()
    }
}

fn layer(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    fs::create_dir(&p).unwrap();
    p
}

fn apply_bytes(
    dest: &Path,
    lowers: &[PathBuf],
    data: Vec<u8>,
) -> Result<super::Applied, UnpackError> {
    apply(dest, lowers, std::io::Cursor::new(data))
}

#[test]
fn writes_every_kind_with_its_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = layer(tmp.path(), "l0");
    let mut t = Tar::new();
    t.dir("./")
        .dir("etc/")
        .pax(&[
            ("uid", b"100000"),
            ("gid", b"100001"),
            ("SCHILY.xattr.user.kiln", b"yes"),
        ])
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
        .entry("bin/su", EntryType::Regular, 0o4755, b"su", "")
        .entry("sh", EntryType::Symlink, 0o777, b"", "/bin/busybox")
        .entry("dev/null", EntryType::Char, 0o666, b"", "")
        .entry("fifo", EntryType::Fifo, 0o600, b"", "");
    let applied = apply_bytes(&dest, &[], t.bytes()).unwrap();
    assert_eq!(applied.compression, Compression::None);
    assert_eq!(applied.entries, 7);

    let passwd = fs::metadata(dest.join("etc/passwd")).unwrap();
    assert_eq!(
        (passwd.uid(), passwd.gid(), passwd.mode() & 0o7777),
        (100000, 100001, 0o644)
    );
    assert_eq!(passwd.mtime(), 1_000_000);
    let mut buf = [0u8; 8];
    let n = rustix::fs::lgetxattr(dest.join("etc/passwd"), "user.kiln", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"yes");
    assert_eq!(
        fs::metadata(dest.join("bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    // "bin/" had no entry: an implicit root-owned 0755 directory.
    assert_eq!(
        fs::metadata(dest.join("bin")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        fs::read_link(dest.join("sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    let null = fs::symlink_metadata(dest.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert!(fs::symlink_metadata(dest.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    // Directory mtimes are set after their children are written.
    assert_eq!(fs::metadata(dest.join("etc")).unwrap().mtime(), 1_000_000);
}

#[test]
fn whiteouts_and_opaque_dirs_take_overlay_form() {
    let tmp = tempfile::tempdir().unwrap();
    let lower = layer(tmp.path(), "l0");
    let upper = layer(tmp.path(), "l1");
    let mut t = Tar::new();
    t.dir("a/")
        .file("a/gone", b"1")
        .file("a/kept", b"2")
        .dir("b/")
        .file("b/old", b"3");
    apply_bytes(&lower, &[], t.bytes()).unwrap();

    let mut t = Tar::new();
    t.file("a/.wh.gone", b"")
        .file("b/new", b"4")
        .file("b/.wh..wh..opq", b"");
    apply_bytes(&upper, std::slice::from_ref(&lower), t.bytes()).unwrap();

    let wh = fs::symlink_metadata(upper.join("a/gone")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is a 0:0 char device"
    );
    assert!(
        !upper.join("a/kept").exists(),
        "only the change is in the upper layer"
    );
    assert!(!upper.join("a/.wh.gone").exists());
    let mut buf = [0u8; 2];
    let n = rustix::fs::lgetxattr(upper.join("b"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
    // The opaque marker came after b/new: the layer's own entry stays.
    assert_eq!(fs::read(upper.join("b/new")).unwrap(), b"4");
    assert!(!upper.join("b/.wh..wh..opq").exists());
}

#[test]
fn layers_cannot_forge_overlay_xattrs() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = layer(tmp.path(), "l0");
    let mut t = Tar::new();
    t.pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
        .dir("d/");
    apply_bytes(&dest, &[], t.bytes()).unwrap();
    let mut buf = [0u8; 2];
    assert!(rustix::fs::lgetxattr(dest.join("d"), "trusted.overlay.opaque", &mut buf).is_err());
}

#[test]
fn hard_links_link_within_a_layer_and_copy_across() {
    let tmp = tempfile::tempdir().unwrap();
    let lower = layer(tmp.path(), "l0");
    let upper = layer(tmp.path(), "l1");
    let mut t = Tar::new();
    t.file("bin/busybox", b"BB")
        .entry("bin/ls", EntryType::Link, 0o755, b"", "bin/busybox");
    apply_bytes(&lower, &[], t.bytes()).unwrap();
    let a = fs::metadata(lower.join("bin/busybox")).unwrap();
    let b = fs::metadata(lower.join("bin/ls")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));

    let mut t = Tar::new();
    t.entry("bin/cat", EntryType::Link, 0o755, b"", "bin/busybox");
    apply_bytes(&upper, std::slice::from_ref(&lower), t.bytes()).unwrap();
    assert_eq!(fs::read(upper.join("bin/cat")).unwrap(), b"BB");
    assert_eq!(fs::metadata(upper.join("bin/cat")).unwrap().nlink(), 1);

    let mut t = Tar::new();
    t.entry("x", EntryType::Link, 0o644, b"", "missing");
    let err = apply_bytes(&layer(tmp.path(), "l2"), &[], t.bytes()).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::HardLinkTarget {
                problem: "does not exist",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn symlinked_parents_resolve_inside_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let lower = layer(tmp.path(), "l0");
    let upper = layer(tmp.path(), "l1");
    let mut t = Tar::new();
    t.dir("usr/bin/")
        .entry("bin", EntryType::Symlink, 0o777, b"", "/usr/bin");
    apply_bytes(&lower, &[], t.bytes()).unwrap();
    let mut t = Tar::new();
    t.file("bin/sh", b"sh");
    apply_bytes(&upper, std::slice::from_ref(&lower), t.bytes()).unwrap();
    assert_eq!(fs::read(upper.join("usr/bin/sh")).unwrap(), b"sh");
    assert!(!upper.join("bin").exists());
}

#[test]
fn traversal_attempts_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", Tar::new().file("a/../../outside/x", b"!").bytes()),
        ("absolute", Tar::new().file("/outside/x", b"!").bytes()),
        (
            "symlink escape",
            Tar::new()
                .entry("esc", EntryType::Symlink, 0o777, b"", "../../outside")
                .file("esc/x", b"!")
                .bytes(),
        ),
        (
            "hard link dotdot",
            Tar::new()
                .entry("x", EntryType::Link, 0o644, b"", "../outside/y")
                .bytes(),
        ),
        ("whiteout dotdot", Tar::new().file("d/.wh...", b"").bytes()),
    ];
    for (i, (what, data)) in cases.into_iter().enumerate() {
        let dest = layer(tmp.path(), &format!("l{i}"));
        let err = apply_bytes(&dest, &[], data).unwrap_err();
        let ok = match what {
            "dotdot" | "hard link dotdot" | "whiteout dotdot" => {
                matches!(err, UnpackError::PathTraversal { .. })
            }
            "absolute" => matches!(err, UnpackError::AbsolutePath { .. }),
            _ => matches!(err, UnpackError::SymlinkEscape { .. }),
        };
        assert!(ok, "{what}: {err}");
    }
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
}

#[test]
fn gzip_and_zstd_layers_hash_to_the_same_diff_id() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = Tar::new().file("hello", b"world").bytes();
    let diff_id = Digest::of(&plain);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&plain[..], 3).unwrap();
    for (i, (data, kind)) in [
        (plain.clone(), Compression::None),
        (gz, Compression::Gzip),
        (zst, Compression::Zstd),
    ]
    .into_iter()
    .enumerate()
    {
        let dest = layer(tmp.path(), &format!("l{i}"));
        let applied = apply_bytes(&dest, &[], data).unwrap();
        assert_eq!((applied.compression, &applied.diff_id), (kind, &diff_id));
        assert_eq!(fs::read(dest.join("hello")).unwrap(), b"world");
    }
}
