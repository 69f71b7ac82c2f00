//! One build, in the order a reader would explain it: inputs, modules, root
//! image, initramfs, boot partition, data partitions, disk image, PXE set,
//! manifest. Outputs appear in the output directory only when complete.

use std::path::{Path, PathBuf};

use crate::cpio::{Archive, Data};
use crate::depmod::KernelTree;
use crate::manifest::{FileEntry, Input, Manifest};
use crate::progress::Step;
use crate::spec::{Spec, ARCHES};
use crate::{deb, derived_guid, disk, esp, ext4, fetch, guid_string, manifest, rootfs, Error};

/// What to build.
#[derive(Debug, Clone)]
pub struct Options {
    pub arch: String,
    pub spec: PathBuf,
    pub kiln_binary: PathBuf,
    pub out: PathBuf,
    pub cache: PathBuf,
    /// Every timestamp in the outputs.
    pub epoch: u32,
}

/// Files a build writes into its output directory.
pub fn output_names(arch: &str) -> [String; 6] {
    [
        format!("kiln-{arch}.raw"),
        "vmlinuz".into(),
        "initramfs.img".into(),
        "cmdline".into(),
        "boot.ipxe".into(),
        "manifest.json".into(),
    ]
}

/// zstd level for the initramfs: fast to unpack under emulation, small enough.
const INITRAMFS_ZSTD_LEVEL: i32 = 10;

pub fn build(o: &Options) -> Result<Manifest, Error> {
    let spec = Spec::load(&o.spec)?;
    let a = spec.arch(&o.arch)?;
    let debarch = ARCHES
        .iter()
        .find(|(n, _)| *n == o.arch)
        .map(|(_, d)| *d)
        .ok_or_else(|| Error::Field {
            field: format!("arch.{}", o.arch),
            problem: "unknown architecture (x86_64 or aarch64)".into(),
        })?;
    let efi_arch = if o.arch == "aarch64" { "aa64" } else { "x64" };
    let seed = |what: &str| format!("{}/{}/{}/{what}", spec.name, spec.version, o.arch);

    let step = Step::start("fetching pinned packages");
    let cache_lock = fetch::lock(&o.cache)?;
    let kernel_deb = fetch::package(&o.cache, &a.kernel, debarch)?;
    let loader_deb = fetch::package(&o.cache, &a.bootloader, debarch)?;
    step.done("sha256 verified");

    let step = Step::start(format!("unpacking {}", a.kernel.package));
    let kdir = deb::unpack(&kernel_deb, &a.kernel.sha256, &o.cache)?;
    let bdir = deb::unpack(&loader_deb, &a.bootloader.sha256, &o.cache)?;
    drop(cache_lock);
    step.done("done");

    let step = Step::start("reading kernel modules");
    let tree = KernelTree::scan(&kdir)?;
    let hardware: Vec<(String, String)> = spec
        .modules
        .hardware
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("modules.hardware[{i}]"), p.clone()))
        .chain(
            a.hardware
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("arch.{}.hardware[{i}]", o.arch), p.clone())),
        )
        .collect();
    let selection = tree.select(&spec.modules.load, &hardware)?;
    tracing::debug!(modules = ?selection.names, "initramfs modules");
    step.done(&format!(
        "{} of {} modules selected for {}",
        selection.names.len(),
        tree.modules.len(),
        tree.kver
    ));

    std::fs::create_dir_all(&o.out).map_err(Error::io("create", &o.out))?;
    let work = o.out.join(".work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(Error::io("create", &work))?;

    let step = Step::start("writing the root image (squashfs)");
    let rootfs_img = work.join("rootfs.squashfs");
    rootfs::write(&spec, &o.arch, &o.kiln_binary, o.epoch, &rootfs_img)?;
    step.done(&mib(&rootfs_img));

    let step = Step::start("writing the initramfs (cpio + zstd)");
    let initramfs = work.join("initramfs.img");
    write_initramfs(o, &spec, &tree, &selection, &rootfs_img, &initramfs)?;
    step.done(&mib(&initramfs));

    let vmlinuz = work.join("vmlinuz");
    let kernel_src = kdir.join(format!("boot/vmlinuz-{}", tree.kver));
    std::fs::copy(&kernel_src, &vmlinuz).map_err(Error::io("copy", &kernel_src))?;
    let loader = bdir.join(format!(
        "usr/lib/systemd/boot/efi/systemd-boot{efi_arch}.efi"
    ));
    if !loader.exists() {
        return Err(Error::Package {
            path: loader_deb,
            problem: format!("no {}", loader.display()),
        });
    }

    let step = Step::start("writing the EFI system partition (FAT32, slots A and B)");
    let esp_img = work.join("esp.img");
    let volume_id = derived_guid(&seed("esp"));
    esp::write(
        &esp::Contents {
            loader: &loader,
            efi_arch,
            kernel: &vmlinuz,
            initramfs: &initramfs,
            cmdline: &a.cmdline,
            version: &spec.version,
            volume_id: u32::from_le_bytes([volume_id[0], volume_id[1], volume_id[2], volume_id[3]]),
            epoch: o.epoch,
        },
        spec.partitions.esp_mib << 20,
        &esp_img,
    )?;
    step.done(&format!("{} MiB", spec.partitions.esp_mib));

    let step = Step::start("formatting STATE and EPHEMERAL (ext4)");
    let state_img = work.join("state.img");
    let ephemeral_img = work.join("ephemeral.img");
    ext4::format(
        &state_img,
        "STATE",
        spec.partitions.state_mib << 20,
        &guid_string(&derived_guid(&seed("state-fs"))),
        o.epoch,
    )?;
    ext4::format(
        &ephemeral_img,
        "EPHEMERAL",
        spec.partitions.ephemeral_mib << 20,
        &guid_string(&derived_guid(&seed("ephemeral-fs"))),
        o.epoch,
    )?;
    step.done("done");

    let step = Step::start("writing the GPT disk image");
    let raw_name = format!("kiln-{}.raw", o.arch);
    let raw = work.join(&raw_name);
    let part = |name: &'static str, type_guid: &'static str, image: &Path, mib: u64| disk::Part {
        name,
        type_guid,
        guid: derived_guid(&seed(&format!("part-{}", name.to_lowercase()))),
        image: image.to_path_buf(),
        size: mib << 20,
    };
    let parts = [
        part("EFI", disk::ESP_TYPE, &esp_img, spec.partitions.esp_mib),
        part(
            "STATE",
            disk::LINUX_FS_TYPE,
            &state_img,
            spec.partitions.state_mib,
        ),
        part(
            "EPHEMERAL",
            disk::LINUX_FS_TYPE,
            &ephemeral_img,
            spec.partitions.ephemeral_mib,
        ),
    ];
    let total = disk::write(
        &raw,
        derived_guid(&seed("disk")),
        &parts,
        spec.partitions.disk_mib.map(|m| m << 20),
    )?;
    step.done(&format!("{} MiB", total >> 20));

    std::fs::write(work.join("cmdline"), format!("{}\n", a.cmdline))
        .map_err(Error::io("write", &work))?;
    let ipxe = format!(
        "#!ipxe\nkernel vmlinuz {} initrd=initramfs.img\ninitrd initramfs.img\nboot\n",
        a.cmdline
    );
    std::fs::write(work.join("boot.ipxe"), ipxe).map_err(Error::io("write", &work))?;

    // Only complete files reach the output directory.
    for name in &output_names(&o.arch)[..5] {
        manifest::commit(&work.join(name), &o.out.join(name))?;
    }
    let files = output_names(&o.arch)[..5]
        .iter()
        .map(|n| FileEntry::of(&o.out, n))
        .collect::<Result<Vec<_>, _>>()?;
    let input = |p: &crate::spec::Package| Input {
        name: p.package.clone(),
        version: p.version.clone(),
        sha256: p.sha256.to_lowercase(),
    };
    let m = Manifest {
        name: spec.name.clone(),
        version: spec.version.clone(),
        arch: o.arch.clone(),
        kernel: tree.kver.clone(),
        files,
        inputs: vec![
            input(&a.kernel),
            input(&a.bootloader),
            Input {
                name: "kiln".into(),
                version: spec.version.clone(),
                sha256: fetch::sha256_file(&o.kiln_binary)?,
            },
        ],
    };
    let json = serde_json::to_vec_pretty(&m).map_err(|e| Error::Format {
        what: "manifest",
        problem: e.to_string(),
    })?;
    manifest::write_atomic(&o.out.join("manifest.json"), &json)?;
    std::fs::remove_dir_all(&work).map_err(Error::io("clean", &work))?;
    // The renames above are durable once the directory itself is synced.
    std::fs::File::open(&o.out)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync", &o.out))?;
    Ok(m)
}

fn write_initramfs(
    o: &Options,
    spec: &Spec,
    tree: &KernelTree,
    selection: &crate::depmod::Selection,
    rootfs_img: &Path,
    out: &Path,
) -> Result<(), Error> {
    let mut a = Archive::default();
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "sysroot",
        "etc/kiln",
        "lib/modules",
    ] {
        a.dir(d, 0o755);
    }
    a.char_device("dev/console", 0o600, 5, 1);
    a.file("init", 0o755, Data::Path(o.kiln_binary.clone()));
    let load: String = spec.modules.load.iter().map(|m| format!("{m}\n")).collect();
    a.file(
        "etc/kiln/modules.load",
        0o644,
        Data::Bytes(load.into_bytes()),
    );
    let image = serde_json::json!({ "name": spec.name, "version": spec.version, "arch": o.arch, "kernel": tree.kver });
    a.file(
        "etc/kiln/image.json",
        0o644,
        Data::Bytes(format!("{image}\n").into_bytes()),
    );
    let mods = format!("lib/modules/{}", tree.kver);
    for name in &selection.names {
        if let Some(info) = tree.modules.get(name) {
            a.file(
                &format!("{mods}/{}", info.rel),
                0o644,
                Data::Path(tree.root.join(&info.rel)),
            );
        }
    }
    for (file, data) in tree.index_files(selection)? {
        a.file(&format!("{mods}/{file}"), 0o644, Data::Bytes(data));
    }
    a.file(
        "rootfs.squashfs",
        0o444,
        Data::Path(rootfs_img.to_path_buf()),
    );
    let f = std::fs::File::create(out).map_err(Error::io("create", out))?;
    let mut enc =
        zstd::stream::write::Encoder::new(std::io::BufWriter::new(f), INITRAMFS_ZSTD_LEVEL)
            .map_err(Error::io("compress", out))?;
    enc.include_checksum(true)
        .map_err(Error::io("compress", out))?;
    a.write(o.epoch, &mut enc)
        .map_err(Error::io("write", out))?;
    enc.finish().map_err(Error::io("compress", out))?;
    Ok(())
}

fn mib(p: &Path) -> String {
    let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    format!("{:.1} MiB", len as f64 / (1 << 20) as f64)
}
