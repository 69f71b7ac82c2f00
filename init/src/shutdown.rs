//! The end of a run: services stop in reverse dependency order (the
//! supervisor's job), then everything left is terminated, filesystems are
//! synced and unmounted, and the kernel powers off or reboots.

use std::time::{Duration, Instant};

use kiln_supervisor::Supervisor;
use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{error, info, warn};

use crate::boot::{STATE_MOUNT, VAR_MOUNT};
use crate::power::Action;

/// How long processes outside the supervisor get between SIGTERM and SIGKILL.
const STRAGGLER_GRACE: Duration = Duration::from_secs(2);

/// Stops every service within `deadline`.
pub async fn stop_services(supervisor: Option<&Supervisor>, deadline: Duration) {
    let Some(supervisor) = supervisor else { return };
    info!("stopping services");
    let report = supervisor.shutdown(deadline).await;
    info!("services stopped: {report}");
}

/// Terminates what is left, unmounts and powers off or reboots. Never returns.
pub fn finish(action: Action) -> ! {
    terminate_all();
    nix::unistd::sync();
    for target in [VAR_MOUNT, STATE_MOUNT] {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => info!("unmounted {target} cleanly"),
            Err(nix::Error::EINVAL) => {} // not mounted
            Err(e) => {
                warn!("cannot unmount {target}: {e}; remounting read-only");
                let ro = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                if let Err(e) =
                    nix::mount::mount(None::<&str>, target, None::<&str>, ro, None::<&str>)
                {
                    error!("cannot remount {target} read-only: {e}");
                }
            }
        }
    }
    nix::unistd::sync();
    let mode = match action {
        Action::PowerOff => {
            info!("powering off");
            nix::sys::reboot::RebootMode::RB_POWER_OFF
        }
        Action::Reboot => {
            info!("rebooting");
            nix::sys::reboot::RebootMode::RB_AUTOBOOT
        }
    };
    let Err(e) = nix::sys::reboot::reboot(mode);
    error!("reboot(2) failed: {e}");
    halt_forever()
}

/// SIGTERM to every process but PID 1, a grace period, then SIGKILL;
/// reaps them all.
fn terminate_all() {
    // kill(-1) reaches every process except PID 1 itself.
    if kill(Pid::from_raw(-1), Signal::SIGTERM).is_err() {
        return; // ESRCH: nothing else is running
    }
    let until = Instant::now() + STRAGGLER_GRACE;
    while Instant::now() < until {
        if !reap_available() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    warn!("processes left after SIGTERM: sending SIGKILL");
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    let until = Instant::now() + STRAGGLER_GRACE;
    while Instant::now() < until && reap_available() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reaps every exited child; returns false once no child is left.
fn reap_available() -> bool {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return true,
            Ok(_) => continue,
            Err(_) => return false, // ECHILD
        }
    }
}

/// Where PID 1 ends up if it cannot reboot, or cannot run at all: it keeps
/// reaping so nothing piles up, and never exits (that would panic the kernel).
pub fn halt_forever() -> ! {
    loop {
        if !reap_available() {
            std::thread::sleep(Duration::from_secs(1));
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
