//! Power requests that end the node's run: SIGTERM (power off), SIGINT
//! (reboot; the kernel sends it for ctrl-alt-del) and the power button
//! (ACPI button or gpio-keys, read from evdev — QEMU's `system_powerdown`).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

/// What PID 1 does when the node's run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    PowerOff,
    Reboot,
}

const EV_KEY: u16 = 1;
const KEY_POWER: u32 = 116;

/// Waits until something asks the node to power off or reboot.
pub async fn wait_for_request() -> Action {
    let buttons = power_buttons(Path::new("/sys/class/input"));
    info!(buttons = buttons.len(), "waiting for power events");
    let button = async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        for dev in buttons {
            let tx = tx.clone();
            tokio::spawn(async move {
                match watch_button(&dev).await {
                    Ok(()) => {
                        info!(device = %dev.display(), "power button pressed");
                        let _ = tx.send(()).await;
                    }
                    Err(e) => warn!(device = %dev.display(), "cannot read power button: {e}"),
                }
            });
        }
        drop(tx);
        match rx.recv().await {
            Some(()) => Action::PowerOff,
            None => std::future::pending().await,
        }
    };
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
                info!("SIGTERM: power off");
                Action::PowerOff
            }
            Err(e) => {
                warn!("cannot watch SIGTERM: {e}");
                std::future::pending().await
            }
        }
    };
    let int = async {
        match signal(SignalKind::interrupt()) {
            Ok(mut s) => {
                s.recv().await;
                info!("SIGINT (ctrl-alt-del): reboot");
                Action::Reboot
            }
            Err(e) => {
                warn!("cannot watch SIGINT: {e}");
                std::future::pending().await
            }
        }
    };
    tokio::select! {
        a = button => a,
        a = term => a,
        a = int => a,
    }
}

/// `/dev/input/eventN` devices that report KEY_POWER, found through sysfs.
fn power_buttons(class_input: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(class_input) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("device/capabilities/key"))
                .map(|caps| has_bit(&caps, KEY_POWER))
                .unwrap_or(false)
        })
        .map(|e| Path::new("/dev/input").join(e.file_name()))
        .collect();
    out.sort();
    out
}

/// Whether `bit` is set in a sysfs bitmap: hex words, most significant first,
/// each as wide as a C long.
fn has_bit(bitmap: &str, bit: u32) -> bool {
    let word_bits = usize::BITS;
    let words: Vec<&str> = bitmap.split_whitespace().collect();
    let index = (bit / word_bits) as usize;
    if index >= words.len() {
        return false;
    }
    let word = words[words.len() - 1 - index];
    u64::from_str_radix(word, 16)
        .map(|w| w & (1 << (bit % word_bits)) != 0)
        .unwrap_or(false)
}

/// Returns when the key is pressed.
async fn watch_button(dev: &Path) -> std::io::Result<()> {
    let file = File::open(dev)?;
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    // SAFETY: the AsyncFd owns `file`, so the descriptor stays open for as
    // long as it is registered.
    let fd = unsafe { AsyncFd::register(file) }?;
    // struct input_event: struct timeval (16 bytes on 64-bit), u16 type, u16 code, s32 value.
    let mut ev = [0u8; 24];
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|f| f.get_ref().read(&mut ev)) {
            Ok(Ok(24)) => {
                let kind = u16::from_ne_bytes([ev[16], ev[17]]);
                let code = u16::from_ne_bytes([ev[18], ev[19]]);
                let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
                if kind == EV_KEY && u32::from(code) == KEY_POWER && value == 1 {
                    return Ok(());
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_power_bit_in_sysfs_bitmaps() {
        // The ACPI power button on x86_64: bit 116 in the low word.
        assert!(has_bit("10000000000000 0", KEY_POWER));
        assert!(!has_bit("0", KEY_POWER));
        // A keyboard-like map where bit 116 sits in the second-lowest word.
        assert!(!has_bit("1 0", KEY_POWER));
        assert!(has_bit("ffff 10000000000000 0", KEY_POWER));
        assert!(!has_bit(&format!("{:x}", 1u64 << 52), KEY_POWER));
    }
}
