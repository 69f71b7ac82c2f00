//! Entropy: credit the seed saved on STATE at the last boot to the kernel's
//! pool, then save a fresh one, so a machine never reuses a seed.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;

use tracing::info;

use super::disks::{Storage, STATE_MOUNT};
use super::{Boot, Error};

const SEED_BYTES: usize = 512;
/// RNDADDENTROPY = _IOW('R', 0x03, int[2])
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;

pub(super) fn seed(boot: &mut Boot) -> Result<(), Error> {
    if !matches!(boot.storage, Storage::Disk { .. }) {
        info!("no STATE partition: entropy comes from the kernel alone");
        return Ok(());
    }
    let path = Path::new(STATE_MOUNT).join("random-seed");
    let credited = match std::fs::read(&path) {
        Ok(old) if !old.is_empty() => {
            credit(&old).map_err(Error::sys("RNDADDENTROPY"))?;
            old.len()
        }
        _ => 0,
    };
    let mut fresh = vec![0u8; SEED_BYTES];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut fresh))
        .map_err(Error::io("read", "/dev/urandom"))?;
    crate::fsutil::write_atomic(&path, &fresh, 0o600).map_err(Error::io("write", &path))?;
    info!(credited_bytes = credited, "entropy seeded");
    Ok(())
}

/// Adds `seed` to the input pool and credits it as full entropy.
fn credit(seed: &[u8]) -> nix::Result<()> {
    let random = File::open("/dev/urandom")
        .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut arg = Vec::with_capacity(8 + seed.len());
    arg.extend_from_slice(&((seed.len() * 8) as i32).to_ne_bytes());
    arg.extend_from_slice(&(seed.len() as i32).to_ne_bytes());
    arg.extend_from_slice(seed);
    // SAFETY: `arg` holds a complete rand_pool_info with `buf_size` bytes of
    // payload and stays alive for the call; the kernel only reads it.
    let rc = unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, arg.as_ptr()) };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}
