//! Identity: a stable machine id kept on STATE (fresh each boot without a
//! disk) and the hostname derived from it, unless `kiln.hostname=` says
//! otherwise. The machine config (later) may set the hostname too.

use std::io::Read;
use std::path::Path;

use tracing::info;

use super::disks::{Storage, STATE_MOUNT};
use super::{Boot, Error};

const RUN_MACHINE_ID: &str = "/run/kiln/machine-id";

pub(super) fn apply(boot: &mut Boot) -> Result<(), Error> {
    let stored = Path::new(STATE_MOUNT).join("machine-id");
    let persistent = matches!(boot.storage, Storage::Disk { .. });
    let existing = std::fs::read_to_string(&stored)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()));
    let id = match existing {
        Some(id) if persistent => id,
        _ => {
            let id = random_hex(16).map_err(Error::io("read", "/dev/urandom"))?;
            if persistent {
                crate::fsutil::write_atomic(&stored, format!("{id}\n").as_bytes(), 0o444)
                    .map_err(Error::io("write", &stored))?;
            }
            id
        }
    };
    std::fs::create_dir_all("/run/kiln").map_err(Error::io("create", "/run/kiln"))?;
    std::fs::write(RUN_MACHINE_ID, format!("{id}\n"))
        .map_err(Error::io("write", RUN_MACHINE_ID))?;
    let hostname = boot
        .cmdline
        .get("kiln.hostname")
        .filter(|h| valid_hostname(h))
        .map(String::from)
        .unwrap_or_else(|| format!("kiln-{}", &id[..6]));
    nix::unistd::sethostname(&hostname).map_err(Error::sys(format!("sethostname {hostname}")))?;
    info!(machine_id = %id, hostname = %hostname, persistent, "identity set");
    boot.machine_id = id;
    Ok(())
}

/// `n` random bytes from the kernel, as lowercase hex.
pub(super) fn random_hex(n: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// RFC 1123 host name: 1–63 of [a-z0-9-], not starting or ending with '-'.
fn valid_hostname(h: &str) -> bool {
    (1..=63).contains(&h.len())
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !h.starts_with('-')
        && !h.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(valid_hostname("kiln-abc123"));
        assert!(!valid_hostname("-bad"));
        assert!(!valid_hostname("has space"));
        assert!(!valid_hostname(""));
        assert!(!valid_hostname(&"a".repeat(64)));
    }
}
