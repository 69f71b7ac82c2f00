//! Time since the kernel started (CLOCK_BOOTTIME), the clock boot timings use.

use nix::time::{clock_gettime, ClockId};

/// Milliseconds since the kernel started, or 0 if the clock cannot be read.
pub fn boot_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}
