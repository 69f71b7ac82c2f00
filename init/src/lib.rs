//! Kiln's PID 1.
//!
//! The kernel runs `/init` from the initramfs. From there the boot reads like
//! the list in [`boot::PHASES`]: early mounts, kernel modules, the read-only
//! root image, system mounts, disks, identity, entropy, then the supervised
//! services. PID 1 then waits for a power event (signal or power button) and
//! shuts down in order ([`shutdown`]).
//!
//! Invariants: PID 1 never exits and never panics on a fallible path; every
//! failure is logged to the console and /dev/kmsg and the node stays up.

pub mod boot;
pub mod clock;
pub mod cmdline;
pub mod control;
pub mod fsutil;
pub mod log;
pub mod power;
pub mod services;
pub mod shutdown;

use std::time::Duration;

use tracing::{error, info, warn};

/// How long shutdown waits for services to stop before killing what is left.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

/// Runs PID 1. Never returns: the last act of PID 1 is `reboot(2)`.
pub fn run() -> ! {
    log::init();
    info!(
        boot_ms = clock::boot_ms(),
        "Kiln {} PID 1 starting",
        env!("CARGO_PKG_VERSION")
    );
    // The kernel must not reboot on ctrl-alt-del: it sends PID 1 SIGINT instead.
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        warn!("cannot route ctrl-alt-del to PID 1: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the async runtime: {e}; halting in place");
            shutdown::halt_forever();
        }
    };
    let action = runtime.block_on(async {
        let boot = boot::run().await;
        // Listen for power events before services start, so a press while
        // they come up is not lost.
        let power = tokio::spawn(power::wait_for_request());
        let reaper = kiln_supervisor::reaper::Reaper::start();
        let supervisor = services::start(&boot, reaper).await;
        info!(boot_ms = clock::boot_ms(), "boot complete");
        let action = power.await.unwrap_or_else(|e| {
            error!("power event listener failed: {e}; powering off");
            power::Action::PowerOff
        });
        shutdown::stop_services(supervisor.as_ref(), SHUTDOWN_DEADLINE).await;
        action
    });
    // Dropping the runtime ends every task, closing the log files services
    // wrote on /var so it can be unmounted.
    drop(runtime);
    shutdown::finish(action)
}
