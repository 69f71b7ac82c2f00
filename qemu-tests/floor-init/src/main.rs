//! The floor of the boot benchmark: the least an /init can do. Booting the
//! same kernel with this instead of Kiln's PID 1 shows how much of the boot
//! time is the kernel's and how much is Kiln's.

use nix::mount::{mount, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};
use nix::time::{clock_gettime, ClockId};

fn main() {
    let _ = std::fs::create_dir_all("/proc");
    if let Err(e) = mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::empty(),
        None::<&str>,
    ) {
        println!("floor: mount /proc: {e}");
    }
    let ms = clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0);
    println!("floor: init reached boot_ms={ms}");
    let _ = reboot(RebootMode::RB_POWER_OFF);
    // reboot(2) only returns on failure; PID 1 must not exit.
    loop {
        std::thread::park();
    }
}
