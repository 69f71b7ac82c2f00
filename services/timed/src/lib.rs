//! timed: the node's time sync. An SNTPv4 client (RFC 4330; NTPv4 packets
//! and arithmetic, RFC 5905) that steps the clock at boot, slews it after,
//! marks "time synced" for the supervisor and writes the RTC at shutdown.
//!
//! - `packet`: the wire format and the checks on a reply;
//! - `sample`: offset and delay from one exchange, the best of several;
//! - `client`: asking one server over UDP;
//! - `clock`: the [`Clock`] trait and the node's [`SystemClock`];
//! - `servers`: where the server list comes from;
//! - `daemon`: the loop; `status`: what it reports.

pub mod client;
pub mod clock;
pub mod daemon;
pub mod packet;
pub mod sample;
pub mod servers;
pub mod status;

use std::path::PathBuf;

pub use clock::{Clock, ClockError, SystemClock};
pub use daemon::{serve, Options, Timing};
pub use status::Status;

use tokio::sync::watch;
use tracing::{info, warn};

/// Where timed reports, for the machine API.
pub const STATUS_FILE: &str = "/run/kiln/time.json";
/// Exists once the clock was synced this boot: the supervisor's health
/// check for timed (`Probe::File`).
pub const SYNCED_MARKER: &str = "/run/kiln/time-synced";
const RTC: &str = "/dev/rtc0";
const RUN_DIR: &str = "/run/kiln";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{RUN_DIR}: {0}")]
    RunDir(std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// The `kiln timed` personality: runs until SIGTERM or SIGINT, then writes
/// the RTC and exits 0.
pub fn run() -> Result<(), Error> {
    std::fs::create_dir_all(RUN_DIR).map_err(Error::RunDir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let clock = SystemClock {
        rtc: PathBuf::from(RTC),
    };
    let system = status::rfc3339(clock.now());
    match clock.read_rtc() {
        Ok(rtc) => info!(
            "at start: system clock {system}, RTC {}",
            status::rfc3339(rtc)
        ),
        Err(e) => warn!("at start: system clock {system}; cannot read the RTC: {e}"),
    }
    let options = Options {
        sources: servers::Sources::on_node(),
        status_file: PathBuf::from(STATUS_FILE),
        synced_marker: PathBuf::from(SYNCED_MARKER),
        timing: Timing::default(),
    };
    rt.block_on(async {
        let (shutdown_tx, shutdown) = watch::channel(false);
        tokio::spawn(async move {
            kiln_stop::requested().await;
            shutdown_tx.send_replace(true);
        });
        let (status, _) = watch::channel(Status::default());
        serve(&clock, options, status, shutdown).await;
    });
    Ok(())
}
