//! netd: the node's host networking, over netlink.
//!
//! Selects links (by name, MAC, or the first with carrier), brings them up,
//! applies static addresses, routes, MTU, VLANs and bonds, runs a DHCPv4
//! client where asked, keeps resolv.conf, the hostname and hosts in line
//! with them, hands the NTP servers it learns to timed, and reports
//! per-link status. Settings come from the stored machine config, else the
//! kernel command line. No `ip` or `dhclient` binary is involved.

mod daemon;
pub mod dhcp;
pub mod from_config;
pub mod hosts;
mod link;
pub mod netlink;
pub mod ntp;
pub mod resolv;
pub mod settings;
pub mod source;
pub mod status;

use std::path::Path;

pub use daemon::{serve, Options};
pub use settings::{Settings, SettingsError};
pub use source::{serve_config, Source};
pub use status::Status;

use tokio::sync::watch;
use tracing::info;

/// Why netd stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kernel command line: {0}")]
    Cmdline(std::io::Error),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("netlink connection: {0}")]
    Connect(std::io::Error),
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error("netlink link events ended")]
    EventsEnded,
    #[error("{path}: {source}")]
    Runtime {
        path: &'static str,
        source: std::io::Error,
    },
}

/// Where the node's /etc/resolv.conf points.
const RESOLV_CONF: &str = "/run/kiln/resolv.conf";
/// Where the node's /etc/hosts points.
const HOSTS: &str = "/run/kiln/hosts";

/// The `kiln netd` personality: settings from the stored machine config
/// (re-applied when it changes), else the kernel command line; runs until
/// SIGTERM or SIGINT, then releases its leases.
pub fn run() -> Result<(), Error> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(Error::Cmdline)?;
    let source = Source {
        config: kiln_config_store::ConfigStore::on_node()
            .path()
            .to_path_buf(),
        cmdline,
    };
    std::fs::create_dir_all("/run/kiln").map_err(|source| Error::Runtime {
        path: "/run/kiln",
        source,
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Runtime {
            path: "tokio runtime",
            source,
        })?;
    rt.block_on(async {
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (status_tx, mut status) = watch::channel(Status::default());
        tokio::spawn(async move {
            kiln_stop::requested().await;
            info!("stopping: releasing leases");
            shutdown_tx.send_replace(true);
        });
        // Readiness is logged until the supervisor can ask for it.
        tokio::spawn(async move {
            let mut ready = false;
            while status.changed().await.is_ok() {
                let now = status.borrow_and_update().ready();
                if now != ready {
                    ready = now;
                    info!(ready, "network readiness changed");
                }
            }
        });
        let options = Options {
            resolv_conf: Path::new(RESOLV_CONF).to_path_buf(),
            ntp_servers: Path::new(ntp::NTP_SERVERS).to_path_buf(),
            hosts: Path::new(HOSTS).to_path_buf(),
        };
        serve_config(source, options, status_tx, shutdown).await
    })
}
