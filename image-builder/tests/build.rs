//! Full builds from the real pinned Debian packages (downloaded by apt into
//! the cache on first use): reproducibility, what the images contain, and
//! the errors a user sees for bad input.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_image::build::{build, output_names, Options};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn options(arch: &str, out: &Path) -> Options {
    Options {
        arch: arch.into(),
        spec: repo().join("configs/image.toml"),
        // Any executable stands in for the kiln binary: the builder only copies it.
        kiln_binary: std::env::current_exe().unwrap(),
        out: out.to_path_buf(),
        cache: PathBuf::from("/var/cache/kiln/debs"),
        epoch: 1_700_000_000,
    }
}

#[test]
fn two_builds_are_byte_identical_and_complete() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    build(&options("x86_64", a.path())).unwrap();
    build(&options("x86_64", b.path())).unwrap();
    for name in output_names("x86_64") {
        let (x, y) = (
            std::fs::read(a.path().join(&name)).unwrap(),
            std::fs::read(b.path().join(&name)).unwrap(),
        );
        assert!(x == y, "{name} differs between two builds");
    }
    let out = a.path();
    check_disk(&out.join("kiln-x86_64.raw"), "BOOTX64.EFI");
    check_initramfs(
        &out.join("initramfs.img"),
        &options("x86_64", out).kiln_binary,
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["kernel"], "6.1.0-56-amd64");
    for f in manifest["files"].as_array().unwrap() {
        let data = std::fs::read(out.join(f["name"].as_str().unwrap())).unwrap();
        assert_eq!(f["sha256"].as_str().unwrap(), kiln_image::sha256_hex(&data));
    }
    let ipxe = std::fs::read_to_string(out.join("boot.ipxe")).unwrap();
    assert!(
        ipxe.starts_with("#!ipxe\nkernel vmlinuz console=ttyS0"),
        "{ipxe}"
    );
}

#[test]
fn aarch64_build() {
    let out = tempfile::tempdir().unwrap();
    let m = build(&options("aarch64", out.path())).unwrap();
    assert_eq!(m.kernel, "6.1.0-56-arm64");
    check_disk(&out.path().join("kiln-aarch64.raw"), "BOOTAA64.EFI");
}

/// GPT layout (sgdisk), ESP contents (mtools, fsck.vfat), clean ext4 (e2fsck).
fn check_disk(raw: &Path, loader: &str) {
    let verify = run("sgdisk", &["-v", raw.to_str().unwrap()]);
    assert!(verify.contains("No problems found"), "{verify}");
    let table = run("sgdisk", &["-p", raw.to_str().unwrap()]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip_while(|l| !l.starts_with("Number"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r[r.len() - 1]).collect();
    assert_eq!(names, ["EFI", "STATE", "EPHEMERAL"], "{table}");
    assert_eq!(rows[0][5], "EF00");
    for r in &rows {
        let start: u64 = r[1].parse().unwrap();
        assert_eq!(start % 2048, 0, "partition not 1 MiB aligned: {table}");
    }
    let dir = tempfile::tempdir().unwrap();
    for (i, r) in rows.iter().enumerate() {
        let (start, end): (u64, u64) = (r[1].parse().unwrap(), r[2].parse().unwrap());
        let part = dir.path().join(format!("p{}", i + 1));
        let mut src = std::fs::File::open(raw).unwrap();
        std::io::Seek::seek(&mut src, std::io::SeekFrom::Start(start * 512)).unwrap();
        let mut buf = vec![0u8; ((end - start + 1) * 512) as usize];
        src.read_exact(&mut buf).unwrap();
        std::fs::write(&part, buf).unwrap();
    }
    let esp = dir.path().join("p1");
    run("fsck.vfat", &["-n", esp.to_str().unwrap()]);
    let entry = run(
        "mtype",
        &["-i", esp.to_str().unwrap(), "::/loader/entries/kiln-b.conf"],
    );
    assert!(
        entry.contains("linux /kiln/b/vmlinuz") && entry.contains("kiln.slot=b"),
        "{entry}"
    );
    let listing = run("mdir", &["-i", esp.to_str().unwrap(), "-b", "::/EFI/BOOT"]);
    assert!(listing.contains(loader), "{listing}");
    for (p, label) in [("p2", "STATE"), ("p3", "EPHEMERAL")] {
        let img = dir.path().join(p);
        run("e2fsck", &["-fn", img.to_str().unwrap()]);
        let info = run("dumpe2fs", &["-h", img.to_str().unwrap()]);
        assert!(
            info.contains(&format!("Filesystem volume name:   {label}")),
            "{info}"
        );
    }
}

/// The initramfs: /init is the binary, the console node, the module index
/// with ext4's dependencies, and a root image with no shell in it.
fn check_initramfs(img: &Path, kiln: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let cpio = zstd::decode_all(std::fs::File::open(img).unwrap()).unwrap();
    let mut child = Command::new("cpio")
        .args(["-i", "-d", "--quiet", "--no-absolute-filenames"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &cpio).unwrap();
    assert!(child.wait().unwrap().success());
    let root = dir.path();
    assert_eq!(
        std::fs::read(root.join("init")).unwrap(),
        std::fs::read(kiln).unwrap()
    );
    let console = std::fs::symlink_metadata(root.join("dev/console"));
    assert!(
        console.is_ok() || !nix_is_root(),
        "no /dev/console in the initramfs"
    );
    let mods = root.join("lib/modules/6.1.0-56-amd64");
    let dep = std::fs::read_to_string(mods.join("modules.dep")).unwrap();
    let ext4 = dep
        .lines()
        .find(|l| l.starts_with("kernel/fs/ext4/ext4.ko:"))
        .expect("ext4 in modules.dep");
    for d in ["jbd2.ko", "mbcache.ko", "crc16.ko"] {
        assert!(ext4.contains(d), "{ext4}");
    }
    for line in dep.lines() {
        let file = line.split(':').next().unwrap();
        assert!(mods.join(file).exists(), "{file} listed but not shipped");
    }
    let alias = std::fs::read_to_string(mods.join("modules.alias")).unwrap();
    assert!(
        alias
            .lines()
            .any(|l| l.starts_with("alias pci:v00001AF4") && l.ends_with(" virtio_pci")),
        "no virtio_pci alias"
    );
    let softdep = std::fs::read_to_string(mods.join("modules.softdep")).unwrap();
    assert!(
        softdep.contains("softdep ext4 pre: crypto-crc32c"),
        "{softdep}"
    );

    // The root image: exactly the expected files, no shell anywhere.
    let sq = root.join("rootfs.squashfs");
    let file = std::io::BufReader::new(std::fs::File::open(&sq).unwrap());
    let fs = backhand::FilesystemReader::from_reader(file).unwrap();
    let mut paths = Vec::new();
    for node in fs.files() {
        let p = node.fullpath.to_string_lossy().into_owned();
        let base = p.rsplit('/').next().unwrap_or("").to_string();
        assert!(
            !["sh", "bash", "ash", "dash", "busybox", "zsh"].contains(&base.as_str()),
            "shell in the root image: {p}"
        );
        if let backhand::InnerNode::File(f) = &node.inner {
            if p == "/usr/bin/kiln" {
                let mut data = Vec::new();
                fs.file(f).reader().read_to_end(&mut data).unwrap();
                assert_eq!(data, std::fs::read(kiln).unwrap());
            }
        }
        paths.push(p);
    }
    let files: Vec<&String> = paths
        .iter()
        .filter(|p| p.starts_with("/usr/bin/") || p.starts_with("/bin"))
        .collect();
    assert_eq!(
        files,
        ["/usr/bin/kiln"],
        "unexpected executables: {files:?}"
    );
    assert!(paths.contains(&"/sbin/modprobe".to_string()));
}

/// cpio creates device nodes only as root.
fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (cargo xtask setup installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?} failed:\n{text}");
    text
}

#[test]
fn bad_input_is_named() {
    let out = tempfile::tempdir().unwrap();
    // A spec whose pinned digest is wrong: the download is refused by name.
    let text = std::fs::read_to_string(repo().join("configs/image.toml")).unwrap();
    let spec = out.path().join("bad.toml");
    std::fs::write(
        &spec,
        text.replace(
            "a86e2049672f52354c4536a089203b6c82639420424d31c91cf31a181fd4d8f1",
            &"0".repeat(64),
        ),
    )
    .unwrap();
    let mut o = options("x86_64", &out.path().join("out"));
    o.spec = spec.clone();
    let err = build(&o).unwrap_err().to_string();
    assert!(
        err.contains("linux-image-6.1.0-56-amd64") && err.contains("sha256 is a86e2049"),
        "{err}"
    );

    std::fs::write(
        &spec,
        text.replace("\"overlay\",", "\"overlay\", \"no_such_module\","),
    )
    .unwrap();
    let err = build(&o).unwrap_err().to_string();
    assert!(
        err.contains("module no_such_module: not in kernel 6.1.0-56-amd64"),
        "{err}"
    );

    std::fs::write(&spec, text.replace("esp_mib = 160", "esp_mib = 36")).unwrap();
    let err = build(&o).unwrap_err().to_string();
    assert!(
        err.contains("partitions.esp_mib: 36 MiB is too small for two slots"),
        "{err}"
    );

    o.spec = repo().join("configs/image.toml");
    o.arch = "riscv64".into();
    let err = build(&o).unwrap_err().to_string();
    assert!(err.contains("arch.riscv64: not in the spec"), "{err}");
}
