//! The root image: a squashfs (read-only by construction) with the `kiln`
//! binary, os-release, and the mount points PID 1 needs. No shell, no
//! busybox: nothing on a node runs but Kiln's own binary.

use std::io::Cursor;
use std::path::Path;

use backhand::compression::Compressor;
use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};

use crate::spec::Spec;
use crate::Error;

/// Empty directories that are mount points or must exist on a read-only root.
pub const MOUNT_POINTS: &[(&str, u16)] = &[
    ("dev", 0o755),
    ("etc", 0o755),
    ("etc/kiln", 0o755),
    ("lib", 0o755),
    ("lib/modules", 0o755),
    ("opt", 0o755),
    ("opt/cni", 0o755),
    ("opt/cni/bin", 0o755),
    ("proc", 0o555),
    ("run", 0o755),
    ("sbin", 0o755),
    ("sys", 0o555),
    ("system", 0o755),
    ("system/state", 0o700),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/lib", 0o755),
    ("var", 0o755),
];

/// Symlinks: (path, target). `/sbin/modprobe` is what the kernel runs for
/// its own module requests.
pub const SYMLINKS: &[(&str, &str)] = &[
    ("sbin/init", "/usr/bin/kiln"),
    ("sbin/modprobe", "/usr/bin/kiln"),
    ("etc/os-release", "../usr/lib/os-release"),
    ("etc/resolv.conf", "/run/kiln/resolv.conf"),
    ("etc/hosts", "/run/kiln/hosts"),
    // Kiln's CNI plugins, where runtimes look for them.
    ("opt/cni/bin/kiln-bridge", "/usr/bin/kiln"),
    ("opt/cni/bin/kiln-host-local", "/usr/bin/kiln"),
    ("opt/cni/bin/kiln-loopback", "/usr/bin/kiln"),
    ("opt/cni/bin/kiln-portmap", "/usr/bin/kiln"),
];

/// Writes the squashfs root image to `out`.
pub fn write(spec: &Spec, arch: &str, kiln: &Path, mtime: u32, out: &Path) -> Result<(), Error> {
    let fail = |e: backhand::BackhandError| Error::Format {
        what: "squashfs",
        problem: e.to_string(),
    };
    let binary = std::fs::read(kiln).map_err(Error::io("read kiln binary", kiln))?;
    let os_release = format!(
        "NAME=\"Kiln\"\nID=kiln\nVERSION_ID={v}\nPRETTY_NAME=\"Kiln {v} ({arch})\"\nHOME_URL=\"https://kiln.invalid/\"\n",
        v = spec.version
    );
    let mut fs = FilesystemWriter::default();
    // The superblock and every entry get `mtime`; the root directory keeps
    // 0, as backhand 0.25 has no setter for it (still reproducible).
    fs.set_time(mtime);
    fs.set_root_mode(0o755);
    fs.set_root_uid(0);
    fs.set_root_gid(0);
    fs.set_compressor(FilesystemCompressor::new(Compressor::Zstd, None).map_err(fail)?);
    let header = |permissions: u16| NodeHeader {
        permissions,
        uid: 0,
        gid: 0,
        mtime,
    };
    for (dir, mode) in MOUNT_POINTS {
        fs.push_dir(dir, header(*mode)).map_err(fail)?;
    }
    fs.push_file(Cursor::new(binary), "usr/bin/kiln", header(0o755))
        .map_err(fail)?;
    fs.push_file(
        Cursor::new(os_release.into_bytes()),
        "usr/lib/os-release",
        header(0o644),
    )
    .map_err(fail)?;
    for (path, target) in SYMLINKS {
        fs.push_symlink(*target, path, header(0o777))
            .map_err(fail)?;
    }
    let tmp = out.with_extension("partial");
    let file = std::fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
    let mut w = std::io::BufWriter::new(file);
    fs.write(&mut w).map_err(fail)?;
    drop(w);
    std::fs::rename(&tmp, out).map_err(Error::io("rename", out))
}
