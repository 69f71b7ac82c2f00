//! Reboot and power-off, asked of PID 1 the way the kernel itself asks it:
//! SIGINT means reboot (ctrl-alt-del), SIGTERM means power off. PID 1 then
//! runs its orderly shutdown (services in reverse order, sync, unmount).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Reboot,
    PowerOff,
}

impl PowerAction {
    fn signal(self) -> Signal {
        match self {
            PowerAction::Reboot => Signal::SIGINT,
            PowerAction::PowerOff => Signal::SIGTERM,
        }
    }
}

/// Signals `init` (PID 1 on a node) to run `action`.
pub fn request(init: Pid, action: PowerAction) -> Result<(), nix::Error> {
    kill(init, action.signal())
}
