//! Full builds from the real pinned Debian packages in /var/cache/kiln/debs:
//! reproducibility, what the disk image, the initramfs and the root image
//! contain (read back with independent tools: sgdisk, fsck.fat, mtools,
//! e2fsck, the kernel's own depmod), and the errors a user sees for bad
//! input. Full builds are slow on two cores, so each is made once (two for
//! x86_64, to compare) and shared by the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kiln_image::build::{build, output_names, Options};

const CACHE: &str = "/var/cache/kiln/debs";
const EPOCH: u32 = 1_700_000_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn spec() -> kiln_image::spec::Spec {
    kiln_image::spec::Spec::load(&repo().join("configs/image.toml")).unwrap()
}

/// Any executable stands in for the kiln binary: the builder only copies it.
fn kiln_binary() -> PathBuf {
    std::env::current_exe().unwrap()
}

fn options(arch: &str, out: &Path) -> Options {
    Options {
        arch: arch.into(),
        spec: repo().join("configs/image.toml"),
        kiln_binary: kiln_binary(),
        out: out.to_path_buf(),
        cache: PathBuf::from(CACHE),
        epoch: EPOCH,
    }
}

/// The pinned packages must be in the cache (cargo xtask setup fetches
/// them); without them these tests say so and pass vacuously.
fn have_debs(arch: &str) -> bool {
    let s = spec();
    let a = s.arch(arch).unwrap();
    let debarch = if arch == "x86_64" { "amd64" } else { "arm64" };
    let missing: Vec<String> = [&a.kernel, &a.bootloader]
        .iter()
        .map(|p| format!("{CACHE}/{}_{}_{debarch}.deb", p.package, p.version))
        .filter(|p| !Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        eprintln!("SKIPPED: pinned packages not downloaded: {missing:?}");
    }
    missing.is_empty()
}

/// A fresh build of `arch` into target/tmp/kiln-image-tests/<name>.
fn build_into(arch: &str, name: &str) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("kiln-image-tests")
        .join(name);
    let _ = std::fs::remove_dir_all(&out);
    let start = std::time::Instant::now();
    build(&options(arch, &out)).unwrap();
    eprintln!("build {name}: {:.1} s", start.elapsed().as_secs_f64());
    out
}

/// Two x86_64 builds, made in parallel, once per test run.
fn x86_64() -> Option<&'static (PathBuf, PathBuf)> {
    static BUILDS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    if !have_debs("x86_64") {
        return None;
    }
    Some(BUILDS.get_or_init(|| {
        std::thread::scope(|s| {
            let a = s.spawn(|| build_into("x86_64", "x86_64-a"));
            let b = s.spawn(|| build_into("x86_64", "x86_64-b"));
            (a.join().unwrap(), b.join().unwrap())
        })
    }))
}

fn aarch64() -> Option<&'static PathBuf> {
    static BUILD: OnceLock<PathBuf> = OnceLock::new();
    if !have_debs("aarch64") {
        return None;
    }
    Some(BUILD.get_or_init(|| build_into("aarch64", "aarch64")))
}

/// Every file in `dir`, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn x86_64_builds_are_byte_identical_and_complete() {
    let Some((a, b)) = x86_64() else { return };
    let (fa, fb) = (files(a), files(b));
    let names: BTreeSet<&String> = fa.keys().collect();
    let want: BTreeSet<String> = output_names("x86_64").into_iter().collect();
    assert_eq!(names, want.iter().collect(), "unexpected output files");
    for (name, data) in &fa {
        assert!(*data == fb[name], "{name} differs between two builds");
    }
    check_manifest(a, "x86_64", "6.1.0-56-amd64");
    let ipxe = std::fs::read_to_string(a.join("boot.ipxe")).unwrap();
    let cmdline = spec().arch("x86_64").unwrap().cmdline.clone();
    assert_eq!(
        ipxe,
        format!(
            "#!ipxe\nkernel vmlinuz {cmdline} initrd=initramfs.img\ninitrd initramfs.img\nboot\n"
        )
    );
    assert_eq!(
        std::fs::read_to_string(a.join("cmdline")).unwrap(),
        format!("{cmdline}\n")
    );
}

#[test]
fn x86_64_disk() {
    let Some((a, _)) = x86_64() else { return };
    check_disk(a, "x86_64", "BOOTX64.EFI", "systemd-bootx64.efi");
}

#[test]
fn x86_64_initramfs_and_root_image() {
    let Some((a, _)) = x86_64() else { return };
    check_initramfs(a, "x86_64", "6.1.0-56-amd64");
}

#[test]
fn aarch64_build() {
    let Some(out) = aarch64() else { return };
    check_manifest(out, "aarch64", "6.1.0-56-arm64");
    check_disk(out, "aarch64", "BOOTAA64.EFI", "systemd-bootaa64.efi");
    check_initramfs(out, "aarch64", "6.1.0-56-arm64");
}

fn check_manifest(out: &Path, arch: &str, kver: &str) {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["arch"], arch);
    assert_eq!(m["kernel"], kver);
    assert_eq!(m["version"], spec().version);
    let listed: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), output_names(arch).len() - 1, "{listed:?}");
    let s = spec();
    let a = s.arch(arch).unwrap();
    let inputs: Vec<(&str, &str)> = m["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap(), i["sha256"].as_str().unwrap()))
        .collect();
    let kiln = kiln_image::sha256_hex(std::fs::read(kiln_binary()).unwrap());
    assert_eq!(
        inputs,
        [
            (a.kernel.package.as_str(), a.kernel.sha256.as_str()),
            (a.bootloader.package.as_str(), a.bootloader.sha256.as_str()),
            ("kiln", kiln.as_str()),
        ]
    );
    for f in m["files"].as_array().unwrap() {
        let data = std::fs::read(out.join(f["name"].as_str().unwrap())).unwrap();
        assert_eq!(f["size"].as_u64().unwrap(), data.len() as u64);
        assert_eq!(f["sha256"].as_str().unwrap(), kiln_image::sha256_hex(&data));
    }
}

/// The unpacked kernel or boot-loader package, as the builder cached it.
fn unpacked(sha256: &str) -> PathBuf {
    Path::new(CACHE).join("unpacked").join(sha256)
}

/// GPT (sgdisk), ESP (fsck.fat, mtools), STATE and EPHEMERAL (e2fsck).
fn check_disk(out: &Path, arch: &str, boot_name: &str, loader_name: &str) {
    let raw = out.join(format!("kiln-{arch}.raw"));
    let raw_s = raw.to_str().unwrap();
    let s = spec();
    let verify = run("sgdisk", &["-v", raw_s]);
    assert!(verify.contains("No problems found"), "{verify}");
    let p = &s.partitions;
    let want = [
        ("EFI", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", p.esp_mib),
        ("STATE", "0FC63DAF-8483-4772-8E79-3D69D8477DE4", p.state_mib),
        (
            "EPHEMERAL",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            p.ephemeral_mib,
        ),
    ];
    let table = run("sgdisk", &["-p", raw_s]);
    assert_eq!(
        table
            .lines()
            .skip_while(|l| !l.starts_with("Number"))
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .count(),
        3,
        "{table}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut next = 2048u64;
    for (i, (name, type_guid, mib)) in want.iter().enumerate() {
        let info = run("sgdisk", &["-i", &(i + 1).to_string(), raw_s]);
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {info}"))
                .trim()
                .to_string()
        };
        assert!(
            field("Partition GUID code:").starts_with(type_guid),
            "{info}"
        );
        assert_eq!(field("Partition name:"), format!("'{name}'"));
        let first: u64 = field("First sector:")
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let last: u64 = field("Last sector:")
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(first % 2048, 0, "{name} not 1 MiB aligned");
        assert_eq!(first, next, "{name} does not follow the previous partition");
        assert_eq!((last + 1 - first) * 512, mib << 20, "{name} size");
        next = last + 1;
        let guid = kiln_image::guid_string(&kiln_image::derived_guid(&format!(
            "{}/{}/{arch}/part-{}",
            s.name,
            s.version,
            name.to_lowercase()
        )));
        assert_eq!(field("Partition unique GUID:").to_lowercase(), guid);
        extract(
            &raw,
            first * 512,
            (last + 1 - first) * 512,
            &dir.path().join(name),
        );
    }
    assert_eq!(
        std::fs::metadata(&raw).unwrap().len(),
        (next + 2048) * 512,
        "1 MiB after the last partition for the backup GPT"
    );

    let esp = dir.path().join("EFI");
    let esp_s = esp.to_str().unwrap();
    run("fsck.vfat", &["-n", esp_s]);
    let mtype = |path: &str| run("mtype", &["-i", esp_s, &format!("::{path}")]);
    assert_eq!(
        mtype("/loader/loader.conf"),
        "default kiln-a.conf\ntimeout 0\neditor no\n"
    );
    let cmdline = &s.arch(arch).unwrap().cmdline;
    for slot in ["a", "b"] {
        let entry = mtype(&format!("/loader/entries/kiln-{slot}.conf"));
        for line in [
            format!("title Kiln {} (slot {})", s.version, slot.to_uppercase()),
            format!("linux /kiln/{slot}/vmlinuz"),
            format!("initrd /kiln/{slot}/initramfs.img"),
            format!("options {cmdline} kiln.slot={slot}"),
        ] {
            assert!(entry.lines().any(|l| l == line), "{line:?} not in\n{entry}");
        }
    }
    let loader = unpacked(&s.arch(arch).unwrap().bootloader.sha256)
        .join("usr/lib/systemd/boot/efi")
        .join(loader_name);
    let copies = [
        (format!("/EFI/BOOT/{boot_name}"), loader.clone()),
        (format!("/EFI/systemd/{loader_name}"), loader),
        ("/kiln/a/vmlinuz".into(), out.join("vmlinuz")),
        ("/kiln/b/vmlinuz".into(), out.join("vmlinuz")),
        ("/kiln/a/initramfs.img".into(), out.join("initramfs.img")),
        ("/kiln/b/initramfs.img".into(), out.join("initramfs.img")),
    ];
    for (path, want) in copies {
        let got = dir.path().join("copy");
        run(
            "mcopy",
            &[
                "-o",
                "-i",
                esp_s,
                &format!("::{path}"),
                got.to_str().unwrap(),
            ],
        );
        assert!(
            std::fs::read(&got).unwrap() == std::fs::read(&want).unwrap(),
            "{path} on the ESP is not {}",
            want.display()
        );
    }
    // Entries carry the build's epoch (2023-11-14), not 1980 or "now".
    let listing = run("mdir", &["-i", esp_s, "::/loader/entries"]);
    assert!(listing.contains("2023-11-14"), "{listing}");

    for label in ["STATE", "EPHEMERAL"] {
        let img = dir.path().join(label);
        run("e2fsck", &["-fn", img.to_str().unwrap()]);
        let info = run("dumpe2fs", &["-h", img.to_str().unwrap()]);
        assert!(
            info.contains(&format!("Filesystem volume name:   {label}\n")),
            "{info}"
        );
        assert!(info.contains("resize_inode"), "{label} cannot grow online");
    }
}

fn extract(raw: &Path, offset: u64, len: u64, to: &Path) {
    let mut src = std::fs::File::open(raw).unwrap();
    std::io::Seek::seek(&mut src, std::io::SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len as usize];
    src.read_exact(&mut buf).unwrap();
    std::fs::write(to, buf).unwrap();
}

/// One newc cpio entry.
struct Entry {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

/// Parses a newc archive, in archive order.
fn parse_cpio(mut b: &[u8]) -> Vec<(String, Entry)> {
    let mut out = Vec::new();
    let align = |n: usize| n.div_ceil(4) * 4;
    loop {
        assert_eq!(&b[..6], b"070701", "bad cpio magic");
        let field = |i: usize| {
            u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                .unwrap()
        };
        let (namesize, filesize) = (field(11) as usize, field(6) as usize);
        let name = std::str::from_utf8(&b[110..110 + namesize - 1])
            .unwrap()
            .to_string();
        let data_at = align(110 + namesize);
        let e = Entry {
            ino: field(0),
            mode: field(1),
            uid: field(2),
            gid: field(3),
            mtime: field(5),
            rdev: (field(9), field(10)),
            data: b[data_at..data_at + filesize].to_vec(),
        };
        b = &b[align(data_at + filesize)..];
        if name == "TRAILER!!!" {
            return out;
        }
        out.push((name, e));
    }
}

/// The initramfs: sorted and stamped, /init, the console node, the module
/// set and index (checked against the kernel's own depmod), and the root
/// image with nothing in it but Kiln.
fn check_initramfs(out: &Path, arch: &str, kver: &str) {
    let s = spec();
    let cpio = zstd::decode_all(std::fs::File::open(out.join("initramfs.img")).unwrap()).unwrap();
    let entries = parse_cpio(&cpio);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted, "entries not sorted or not unique");
    for (i, (name, e)) in entries.iter().enumerate() {
        assert_eq!(e.ino, i as u32 + 1, "{name}: inode numbers not sequential");
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, EPOCH), "{name}");
    }
    let get = |n: &str| {
        &entries
            .iter()
            .find(|(name, _)| name == n)
            .unwrap_or_else(|| panic!("no {n} in the initramfs"))
            .1
    };
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "sysroot",
        "etc",
        "etc/kiln",
        "lib",
        "lib/modules",
    ] {
        assert_eq!(get(d).mode & 0o170000, 0o040000, "{d} is not a directory");
    }
    let console = get("dev/console");
    assert_eq!((console.mode, console.rdev), (0o020600, (5, 1)));
    let init = get("init");
    assert_eq!(init.mode, 0o100755);
    assert!(init.data == std::fs::read(kiln_binary()).unwrap());
    assert_eq!(
        String::from_utf8_lossy(&get("etc/kiln/modules.load").data),
        s.modules
            .load
            .iter()
            .map(|m| format!("{m}\n"))
            .collect::<String>()
    );
    let image: serde_json::Value =
        serde_json::from_slice(&get("etc/kiln/image.json").data).unwrap();
    assert_eq!(
        image,
        serde_json::json!({"name": s.name, "version": s.version, "arch": arch, "kernel": kver})
    );

    // Lay the modules out as on the node, for depmod and for path checks.
    let dir = tempfile::tempdir().unwrap();
    let mods_prefix = format!("lib/modules/{kver}/");
    for (name, e) in &entries {
        if let Some(rel) = name.strip_prefix(&mods_prefix) {
            if e.mode & 0o170000 == 0o100000 {
                let p = dir.path().join(name);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, &e.data).unwrap();
            }
            assert!(!rel.starts_with('/'));
        }
    }
    let mods = dir.path().join(&mods_prefix);
    let read = |f: &str| std::fs::read_to_string(mods.join(f)).unwrap();
    let dep = read("modules.dep");
    let ext4 = dep
        .lines()
        .find(|l| l.starts_with("kernel/fs/ext4/ext4.ko:"))
        .expect("ext4 in modules.dep");
    for d in [
        "kernel/fs/jbd2/jbd2.ko",
        "kernel/fs/mbcache.ko",
        "kernel/lib/crc16.ko",
    ] {
        assert!(ext4.split_whitespace().any(|w| w == d), "{d} not in {ext4}");
    }
    let mut shipped = BTreeSet::new();
    for line in dep.lines() {
        let (module, deps) = line.split_once(':').unwrap();
        for f in std::iter::once(module).chain(deps.split_whitespace()) {
            assert!(mods.join(f).is_file(), "{f} listed but not shipped");
        }
        shipped.insert(
            module
                .rsplit('/')
                .next()
                .unwrap()
                .trim_end_matches(".ko")
                .replace('-', "_"),
        );
    }
    let builtin = read("modules.builtin");
    for m in &s.modules.load {
        assert!(
            shipped.contains(m) || builtin.lines().any(|l| l.ends_with(&format!("/{m}.ko"))),
            "modules.load names {m}, which is neither shipped nor built in"
        );
    }
    for hw in &s.modules.hardware {
        if hw.ends_with(".ko") {
            let name = hw.rsplit('/').next().unwrap().trim_end_matches(".ko");
            assert!(
                shipped.contains(name) || builtin.contains(hw.as_str()),
                "{hw} not shipped"
            );
        }
    }
    let alias = read("modules.alias");
    assert!(
        alias
            .lines()
            .any(|l| l == "alias virtio:d00000002v* virtio_blk"),
        "no virtio_blk alias"
    );
    assert!(
        alias
            .lines()
            .any(|l| l.starts_with("alias pci:v00001AF4d") && l.ends_with(" virtio_pci")),
        "no virtio_pci PCI alias"
    );
    let softdep = read("modules.softdep");
    assert!(
        softdep.contains("softdep ext4 pre: crypto-crc32c"),
        "{softdep}"
    );
    let package = unpacked(&s.arch(arch).unwrap().kernel.sha256).join(&mods_prefix);
    for copied in ["modules.builtin", "modules.builtin.modinfo"] {
        assert!(
            std::fs::read(mods.join(copied)).unwrap()
                == std::fs::read(package.join(copied)).unwrap(),
            "{copied} is not the package's"
        );
    }
    check_against_depmod(dir.path(), kver, &dep);

    check_root_image(&get("rootfs.squashfs").data, &s.version);
}

/// The kernel's own depmod (kmod), run on the shipped modules, must find
/// the same dependencies our depmod wrote.
fn check_against_depmod(base: &Path, kver: &str, ours: &str) {
    let theirs_dir = tempfile::tempdir().unwrap();
    let copy = theirs_dir.path().join("lib/modules").join(kver);
    std::fs::create_dir_all(&copy).unwrap();
    run(
        "cp",
        &[
            "-a",
            &format!("{}/lib/modules/{kver}/kernel", base.display()),
            copy.to_str().unwrap(),
        ],
    );
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        let src = base.join("lib/modules").join(kver).join(f);
        if src.exists() {
            std::fs::copy(src, copy.join(f)).unwrap();
        }
    }
    run("depmod", &["-b", theirs_dir.path().to_str().unwrap(), kver]);
    let parse = |text: &str| -> BTreeMap<String, BTreeSet<String>> {
        text.lines()
            .map(|l| {
                let (m, d) = l.split_once(':').unwrap();
                (
                    m.to_string(),
                    d.split_whitespace().map(String::from).collect(),
                )
            })
            .collect()
    };
    let theirs = std::fs::read_to_string(copy.join("modules.dep")).unwrap();
    assert_eq!(
        parse(ours),
        parse(&theirs),
        "modules.dep differs from depmod's"
    );
    let lines = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(String::from)
            .collect()
    };
    let their_alias = std::fs::read_to_string(copy.join("modules.alias")).unwrap();
    let our_alias =
        std::fs::read_to_string(base.join("lib/modules").join(kver).join("modules.alias")).unwrap();
    assert_eq!(
        lines(&our_alias),
        lines(&their_alias),
        "modules.alias differs from depmod's"
    );
}

/// The root image holds exactly Kiln's files: no shell, no busybox.
fn check_root_image(squashfs: &[u8], version: &str) {
    let fs = backhand::FilesystemReader::from_reader(std::io::Cursor::new(squashfs)).unwrap();
    let mut got = BTreeMap::new();
    for node in fs.files() {
        let path = node.fullpath.to_string_lossy().into_owned();
        let base = path.rsplit('/').next().unwrap_or("");
        assert!(
            !["sh", "bash", "ash", "dash", "busybox", "zsh"].contains(&base),
            "shell in the root image: {path}"
        );
        // backhand 0.25 cannot set the root directory's mtime: it stays 0.
        let mtime = if path == "/" { 0 } else { EPOCH };
        assert_eq!(
            (node.header.uid, node.header.gid, node.header.mtime),
            (0, 0, mtime),
            "{path}"
        );
        let what = match &node.inner {
            backhand::InnerNode::Dir(_) => format!("dir {:o}", node.header.permissions),
            backhand::InnerNode::Symlink(l) => format!("-> {}", l.link.display()),
            backhand::InnerNode::File(f) => {
                let mut data = Vec::new();
                fs.file(f).reader().read_to_end(&mut data).unwrap();
                if path == "/usr/bin/kiln" {
                    assert!(
                        data == std::fs::read(kiln_binary()).unwrap(),
                        "/usr/bin/kiln is not the input binary"
                    );
                }
                if path == "/usr/lib/os-release" {
                    let text = String::from_utf8(data).unwrap();
                    for want in [
                        "NAME=\"Kiln\"\n",
                        "ID=kiln\n",
                        &format!("VERSION_ID={version}\n"),
                        "PRETTY_NAME=\"Kiln ",
                    ] {
                        assert!(text.contains(want), "{want:?} not in os-release:\n{text}");
                    }
                }
                format!("file {:o}", node.header.permissions)
            }
            _ => "other".to_string(),
        };
        got.insert(path, what);
    }
    let mut want: BTreeMap<String, String> = [
        ("/", "dir 755"),
        ("/dev", "dir 755"),
        ("/etc", "dir 755"),
        ("/etc/kiln", "dir 755"),
        ("/etc/hosts", "-> /run/kiln/hosts"),
        ("/etc/os-release", "-> ../usr/lib/os-release"),
        ("/etc/resolv.conf", "-> /run/kiln/resolv.conf"),
        ("/lib", "dir 755"),
        ("/lib/modules", "dir 755"),
        ("/opt", "dir 755"),
        ("/opt/cni", "dir 755"),
        ("/opt/cni/bin", "dir 755"),
        ("/opt/cni/bin/kiln-bridge", "-> /usr/bin/kiln"),
        ("/opt/cni/bin/kiln-host-local", "-> /usr/bin/kiln"),
        ("/opt/cni/bin/kiln-loopback", "-> /usr/bin/kiln"),
        ("/opt/cni/bin/kiln-portmap", "-> /usr/bin/kiln"),
        ("/proc", "dir 555"),
        ("/run", "dir 755"),
        ("/sbin", "dir 755"),
        ("/sbin/init", "-> /usr/bin/kiln"),
        ("/sbin/modprobe", "-> /usr/bin/kiln"),
        ("/sys", "dir 555"),
        ("/system", "dir 755"),
        ("/system/state", "dir 700"),
        ("/tmp", "dir 1777"),
        ("/usr", "dir 755"),
        ("/usr/bin", "dir 755"),
        ("/usr/bin/kiln", "file 755"),
        ("/usr/lib", "dir 755"),
        ("/usr/lib/os-release", "file 644"),
        ("/var", "dir 755"),
    ]
    .iter()
    .map(|(p, w)| (p.to_string(), w.to_string()))
    .collect();
    if !got.contains_key("/") {
        want.remove("/");
    }
    assert_eq!(got, want, "the root image holds unexpected entries");
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
    if !have_debs("x86_64") {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("configs/image.toml")).unwrap();
    let spec = out.path().join("bad.toml");
    let mut o = options("x86_64", &out.path().join("out"));
    o.spec = spec.clone();

    // A wrong pinned digest: the file, the expected and the actual digest.
    let real = "a86e2049672f52354c4536a089203b6c82639420424d31c91cf31a181fd4d8f1";
    std::fs::write(&spec, text.replace(real, &"0".repeat(64))).unwrap();
    let err = build(&o).unwrap_err().to_string();
    assert!(
        err.contains("linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb")
            && err.contains(&format!("sha256 is {real}"))
            && err.contains(&"0".repeat(64)),
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

    std::fs::write(
        &spec,
        text.replace("\"kernel/drivers/nvme\"", "\"kernel/drivers/no_such_dir\""),
    )
    .unwrap();
    let err = build(&o).unwrap_err().to_string();
    assert!(
        err.contains("modules.hardware[4]: kernel/drivers/no_such_dir is not in kernel"),
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
    assert!(
        !out.path().join("out/kiln-x86_64.raw").exists(),
        "a failed build left an image"
    );
}
