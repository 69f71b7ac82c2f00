//! The one system call: `finit_module(2)`, behind a trait so the loading
//! logic is testable without root (as youki does with its `Syscall` trait).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Why the kernel did not load a module file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// EEXIST: the kernel has it already. Callers treat this as success.
    #[error("already loaded")]
    AlreadyLoaded,
    #[error("open: {0}")]
    Open(std::io::Error),
    #[error("parameters contain a NUL byte")]
    BadParams,
    #[error("finit_module: {0}")]
    Kernel(std::io::Error),
}

/// Inserts one module file into the kernel.
pub trait Loader {
    fn load_module(&self, path: &Path, params: &str) -> Result<(), LoadError>;
}

/// The real kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelLoader;

/// From <linux/module.h>: the file is compressed; the kernel decompresses it.
const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;

impl Loader for KernelLoader {
    fn load_module(&self, path: &Path, params: &str) -> Result<(), LoadError> {
        let file = File::open(path).map_err(LoadError::Open)?;
        let params = CString::new(params).map_err(|_| LoadError::BadParams)?;
        let flags = if is_compressed(path) {
            MODULE_INIT_COMPRESSED_FILE
        } else {
            0
        };
        // SAFETY: finit_module takes an open fd, a NUL-terminated string that
        // outlives the call, and flags; it does not keep the pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                file.as_raw_fd(),
                params.as_ptr(),
                flags,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EEXIST) {
            Err(LoadError::AlreadyLoaded)
        } else {
            Err(LoadError::Kernel(err))
        }
    }
}

/// Compressed modules as depmod names them; the kernel (5.17+) inflates
/// them itself when asked to.
fn is_compressed(path: &Path) -> bool {
    let name = path.to_string_lossy();
    [".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_suffixes() {
        assert!(is_compressed(Path::new("kernel/a/b.ko.xz")));
        assert!(is_compressed(Path::new("b.ko.zst")));
        assert!(is_compressed(Path::new("b.ko.gz")));
        assert!(!is_compressed(Path::new("kernel/a/b.ko")));
        assert!(!is_compressed(Path::new("kernel/a/b.xz")));
    }
}
