//! `KernelLoader` against this machine's kernel: a real module loaded
//! where the kernel allows it; elsewhere the refusal is checked to be the
//! one that says why, and the test says it skipped.
//!
//! Needs root (CAP_SYS_MODULE). `KILN_KMOD_TEST_MODULE` picks the module;
//! by default the first of a few side-effect-free library modules.

use std::path::Path;

use kiln_kmod::{Error, KernelLoader, Kmod, LoadError, Loader, ModuleIndex};

/// Library modules that register nothing and touch no hardware.
const CANDIDATES: &[&str] = &["crc8", "crc7", "crc_itu_t", "crc4"];

fn proc_modules() -> Option<String> {
    std::fs::read_to_string("/proc/modules").ok()
}

fn listed(modules: &str, name: &str) -> bool {
    modules
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// Garbage and a missing file are refused on any kernel, for the right
/// reason.
#[test]
fn refusals_name_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        KernelLoader.load_module(&dir.path().join("missing.ko"), ""),
        Err(LoadError::Open(_))
    ));
    let bogus = dir.path().join("bogus.ko");
    std::fs::write(&bogus, b"not an ELF module").unwrap();
    assert!(matches!(
        KernelLoader.load_module(&bogus, "a\0b"),
        Err(LoadError::BadParams)
    ));
    let Err(LoadError::Kernel(e)) = KernelLoader.load_module(&bogus, "") else {
        panic!("the kernel accepted garbage");
    };
    let expected = if proc_modules().is_none() {
        // No /proc/modules: a kernel built without CONFIG_MODULES.
        vec![libc::ENOSYS]
    } else if !is_root() {
        vec![libc::EPERM]
    } else {
        // ENOEXEC: not ELF; EPERM: lockdown or modules_disabled.
        vec![libc::ENOEXEC, libc::EINVAL, libc::EPERM]
    };
    assert!(
        expected.contains(&e.raw_os_error().unwrap()),
        "{e}, expected one of {expected:?}"
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Loads a real module of the running kernel and finds it in /proc/modules.
#[test]
fn loads_a_real_module_when_the_kernel_allows() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let release = release.trim();
    let Some(before) = proc_modules() else {
        eprintln!(
            "SKIP: kernel {release} has no module support (no /proc/modules; \
             finit_module returns ENOSYS): real loads are tested in the QEMU boot tests"
        );
        return;
    };
    if !is_root() {
        eprintln!("SKIP: loading a module needs root");
        return;
    }
    let dir = Path::new("/lib/modules").join(release);
    let index = match ModuleIndex::load(&dir) {
        Ok(index) => index,
        Err(e) => {
            eprintln!("SKIP: no module index for the running kernel: {e}");
            return;
        }
    };
    let wanted = std::env::var("KILN_KMOD_TEST_MODULE").ok();
    let pick = match &wanted {
        Some(m) => Some(m.as_str()),
        None => CANDIDATES
            .iter()
            .copied()
            .find(|m| index.contains(m) && !listed(&before, m)),
    };
    let Some(module) = pick else {
        eprintln!("SKIP: none of {CANDIDATES:?} is an unloaded module of {release}");
        return;
    };
    let mut kmod = Kmod::new(index, KernelLoader);
    match kmod.load(module) {
        Ok(report) => {
            eprintln!("loaded {module}: {report:?}");
            let after = proc_modules().unwrap();
            assert!(listed(&after, module), "{module} not in /proc/modules");
            // A second load finds it present, through our own bookkeeping.
            let again = kmod.load(module).unwrap();
            assert!(again.inserted.is_empty());
            assert!(again.already_present.contains(&module.to_string()));
        }
        Err(Error::Load {
            source: LoadError::Kernel(e),
            ..
        }) if e.raw_os_error() == Some(libc::EPERM) => {
            eprintln!("SKIP: the kernel refuses module loading here (EPERM: lockdown, modules_disabled or no CAP_SYS_MODULE)");
        }
        Err(e) => panic!("loading {module}: {e}"),
    }
}
