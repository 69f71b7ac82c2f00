//! Kmod's loading logic over a fixture index, with a loader that records
//! what would be inserted.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use kiln_kmod::{Error, KernelLoader, Kmod, LoadError, Loader, ModuleIndex};

/// Records attempted and inserted files; fails for names in `broken`, says
/// EEXIST for `present`.
#[derive(Default)]
struct Recorder {
    inserted: RefCell<Vec<String>>,
    attempted: RefCell<Vec<String>>,
    broken: Vec<&'static str>,
    present: Vec<&'static str>,
}

impl Loader for &Recorder {
    fn load_module(&self, path: &Path, _params: &str) -> Result<(), LoadError> {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        self.attempted.borrow_mut().push(name.clone());
        if self.broken.contains(&name.as_str()) {
            return Err(LoadError::Kernel(std::io::Error::from_raw_os_error(
                ENOEXEC,
            )));
        }
        if self.present.contains(&name.as_str()) {
            return Err(LoadError::AlreadyLoaded);
        }
        self.inserted.borrow_mut().push(name);
        Ok(())
    }
}

const ENOEXEC: i32 = 8;

/// A Kmod that believes exactly `loaded` is in the kernel (the host's own
/// /proc/modules must not leak into these tests).
fn kmod_with<'a>(index: ModuleIndex, rec: &'a Recorder, loaded: &[&str]) -> Kmod<&'a Recorder> {
    let dir = tempfile::tempdir().unwrap();
    let proc_modules = dir.path().join("modules");
    let lines: String = loaded
        .iter()
        .map(|m| format!("{m} 16384 0 - Live 0x0000000000000000\n"))
        .collect();
    std::fs::write(&proc_modules, lines).unwrap();
    Kmod::with_proc_modules(index, rec, &proc_modules)
}

fn index() -> (tempfile::TempDir, ModuleIndex) {
    let dir = tempfile::tempdir().unwrap();
    let w = |n: &str, s: &str| std::fs::write(dir.path().join(n), s).unwrap();
    w(
        "modules.dep",
        "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko\n\
         kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n\
         kernel/drivers/block/virtio_blk.ko:\n\
         kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko\n\
         kernel/net/core/failover.ko:\n\
         kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\
         kernel/lib/crc16.ko:\nkernel/fs/jbd2/jbd2.ko:\nkernel/crypto/crc32c_generic.ko:\n",
    );
    w("modules.softdep", "softdep ext4 pre: crypto-crc32c\n");
    w(
        "modules.builtin",
        "kernel/fs/mbcache.ko\nkernel/drivers/virtio/virtio.ko\n",
    );
    w(
        "modules.alias",
        "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
         alias virtio:d00000002v* virtio_blk\n\
         alias virtio:d00000001v* virtio_net\n\
         alias crypto-crc32c crc32c_generic\n",
    );
    let index = ModuleIndex::load(dir.path()).unwrap();
    (dir, index)
}

/// A fake /sys: a PCI device whose driver reveals a virtio device.
fn sys_tree(root: &Path) -> PathBuf {
    let pci = root.join("devices/pci0000:00/0000:00:04.0");
    std::fs::create_dir_all(&pci).unwrap();
    std::fs::write(
        pci.join("modalias"),
        "pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00\n",
    )
    .unwrap();
    // A symlink loop like sysfs's subsystem links: must not be followed.
    std::os::unix::fs::symlink(root.join("devices"), pci.join("subsystem")).unwrap();
    // A modalias that is not text, and a symlink named modalias: skipped.
    let odd = root.join("devices/platform/odd");
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::write(odd.join("modalias"), b"\xff\xfe\n").unwrap();
    let linked = root.join("devices/platform/linked");
    std::fs::create_dir_all(&linked).unwrap();
    std::os::unix::fs::symlink(pci.join("modalias"), linked.join("modalias")).unwrap();
    pci
}

#[test]
fn load_inserts_dependencies_first_and_only_once() {
    let (_d, index) = index();
    let rec = Recorder::default();
    let mut kmod = kmod_with(index, &rec, &[]);
    let r = kmod.load("virtio-net").unwrap();
    assert_eq!(r.inserted, ["failover", "virtio_net"]);
    let r = kmod.load("virtio_net").unwrap();
    assert!(r.inserted.is_empty());
    assert_eq!(r.already_present, ["failover", "virtio_net"]);
    assert_eq!(*rec.inserted.borrow(), ["failover", "virtio_net"]);
}

#[test]
fn softdeps_dependencies_and_builtins_in_order() {
    let (_d, index) = index();
    let rec = Recorder::default();
    let mut kmod = kmod_with(index, &rec, &["jbd2"]);
    let r = kmod.load("ext4").unwrap();
    // mbcache is built in; jbd2 was in /proc/modules; the softdep names an alias.
    assert_eq!(r.inserted, ["crc32c_generic", "crc16", "ext4"]);
    assert_eq!(r.already_present, ["jbd2"]);
    assert_eq!(*rec.inserted.borrow(), ["crc32c_generic", "crc16", "ext4"]);
    let r = kmod.load("mbcache").unwrap();
    assert!(r.inserted.is_empty());
    assert_eq!(r.already_present, ["mbcache"]);
    assert!(kmod.is_loaded("virtio") && kmod.is_loaded("ext4") && !kmod.is_loaded("failover"));
}

#[test]
fn a_failing_soft_dependency_is_survived_with_what_needs_it() {
    let (d, _) = index();
    std::fs::write(
        d.path().join("modules.softdep"),
        "softdep virtio_blk pre: virtio_pci\n",
    )
    .unwrap();
    let index = ModuleIndex::load(d.path()).unwrap();
    let rec = Recorder {
        broken: vec!["virtio_pci_modern_dev"],
        ..Default::default()
    };
    let mut kmod = kmod_with(index, &rec, &[]);
    let r = kmod.load("virtio_blk").unwrap();
    // virtio_pci needs the broken module: not even tried.
    assert_eq!(r.inserted, ["virtio_blk"]);
    assert_eq!(*rec.inserted.borrow(), ["virtio_blk"]);
    assert_eq!(
        *rec.attempted.borrow(),
        ["virtio_pci_modern_dev", "virtio_blk"]
    );
}

#[test]
fn eexist_is_success_and_a_failing_dependency_is_named() {
    let (_d, index) = index();
    let rec = Recorder {
        present: vec!["virtio_pci_modern_dev"],
        ..Default::default()
    };
    let mut kmod = kmod_with(index, &rec, &[]);
    let r = kmod.load("virtio_pci").unwrap();
    assert_eq!(r.inserted, ["virtio_pci"]);
    assert_eq!(r.already_present, ["virtio_pci_modern_dev"]);

    let (_d, index) = self::index();
    let rec = Recorder {
        broken: vec!["failover"],
        ..Default::default()
    };
    let mut kmod = kmod_with(index, &rec, &[]);
    let err = kmod.load("virtio_net").unwrap_err();
    match &err {
        Error::Load {
            module,
            dependency,
            file,
            ..
        } => {
            assert_eq!(
                (module.as_str(), dependency.as_str()),
                ("virtio_net", "failover")
            );
            assert!(file.ends_with("failover.ko"));
        }
        other => panic!("expected a load error, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("virtio_net") && msg.contains("failover"),
        "{msg}"
    );
    // Nothing after the failed dependency was tried.
    assert!(rec.inserted.borrow().is_empty());
    assert!(matches!(kmod.load("nope"), Err(Error::UnknownModule(_))));
}

#[test]
fn a_dependency_file_missing_from_disk_is_named() {
    let (d, index) = index();
    let mut kmod = Kmod::with_proc_modules(index, KernelLoader, &d.path().join("no-such-file"));
    match kmod.load("virtio_net") {
        Err(Error::Load {
            dependency,
            source: LoadError::Open(e),
            ..
        }) => {
            assert_eq!(dependency, "failover");
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected an open error for failover, got {other:?}"),
    }
}

#[test]
fn coldplug_follows_new_devices_until_stable() {
    let (_d, index) = index();
    let sys = tempfile::tempdir().unwrap();
    let pci = sys_tree(sys.path());
    let rec = Recorder::default();
    let mut kmod = kmod_with(index, &rec, &[]);
    let first = kmod.coldplug(sys.path());
    assert_eq!(first.loaded, ["virtio_pci_modern_dev", "virtio_pci"]);
    assert_eq!((first.devices, first.matched), (1, 1));

    // The PCI driver "probes" and a virtio block device appears behind it.
    let vdev = pci.join("virtio0");
    std::fs::create_dir_all(&vdev).unwrap();
    std::fs::write(vdev.join("modalias"), "virtio:d00000002v00001AF4\n").unwrap();
    let report = kmod.coldplug_until_stable(sys.path(), 5);
    assert_eq!(report.loaded, ["virtio_blk"]);
    assert_eq!(report.devices, 2);
    assert!(report.failed.is_empty());
}

#[test]
fn coldplug_reports_failures_and_goes_on() {
    let (_d, index) = index();
    let sys = tempfile::tempdir().unwrap();
    let pci = sys_tree(sys.path());
    let net = pci.join("virtio1");
    std::fs::create_dir_all(&net).unwrap();
    std::fs::write(net.join("modalias"), "virtio:d00000001v00001AF4\n").unwrap();
    let rec = Recorder {
        broken: vec!["failover"],
        ..Default::default()
    };
    let mut kmod = kmod_with(index, &rec, &[]);
    let report = kmod.coldplug(sys.path());
    assert_eq!(report.loaded, ["virtio_pci_modern_dev", "virtio_pci"]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, "virtio_net");
}
