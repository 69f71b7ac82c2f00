//! apid: the machine API. A Kiln node has no shell; everything an operator
//! does goes through this gRPC service on TCP 50000.
//!
//! - `server`: the `Machine` service and the serve loop (maintenance or
//!   configured mode, restarted in place when a config changes either).
//! - `access`: which role each call needs (roles come from kiln-pki).
//! - `identity`: apid's TLS certificate (self-signed or machine-CA-signed).
//! - `config`: the machine config as apid uses it; its file on STATE is
//!   kiln-config-store's.
//! - `logs`, `kmsg`, `power`: what the calls read and do on the node.
//! - `stats`: the Stats call's numbers from /proc, statvfs and cgroups.
//! - `events`: apid's own events (configs applied, reverted, confirmed) for
//!   the Events call. Service calls, service events and boot phases come
//!   from PID 1's control channel (`kiln.init.v1.Init` on
//!   /run/kiln/init.sock).
//! - `try_apply`: try mode's timer and the lock every config write takes.
//! - `config_source`: `kiln.config=<URL>`, a node's first config fetched
//!   at boot.
//!
//! Reset is recorded on STATE here and carried out by PID 1 at the next
//! boot (kiln-config-store's `reset`).

pub mod access;
mod config;
pub mod config_source;
mod events;
pub mod identity;
mod kmsg;
mod logs;
mod power;
pub mod server;
pub mod stats;
mod try_apply;

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use nix::unistd::Pid;

pub use kiln_config_store::ConfigStore;
pub use server::{serve, Node};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TLS identity: {0}")]
    Identity(identity::IdentityError),
    #[error("TLS set-up: {0}")]
    Tls(tonic::transport::Error),
    #[error("serving the machine API: {0}")]
    Serve(tonic::transport::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

const LOG_DIR: &str = "/var/log/kiln";
/// Services' cgroups, as PID 1's supervisor makes them.
const CGROUP_ROOT: &str = "/sys/fs/cgroup/kiln";
/// The filesystems Stats reports, when mounted.
const DISKS: [&str; 3] = ["/", "/var", kiln_config_store::STATE_DIR];

/// The `apid` personality: serves until SIGTERM.
pub fn run() -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let store = ConfigStore::on_node();
    if !ConfigStore::on_disk() {
        tracing::warn!(
            "no STATE partition: the config is kept in {} until power-off",
            store.path().display()
        );
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let config_source = config_source::ConfigSource::from_cmdline(&cmdline).unwrap_or_else(|e| {
        tracing::error!("{e}: no config is fetched");
        None
    });
    let node = Arc::new(Node {
        store,
        log_dir: PathBuf::from(LOG_DIR),
        kmsg: PathBuf::from("/dev/kmsg"),
        init: Pid::from_raw(1),
        names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        console: Some(PathBuf::from("/dev/console")),
        control: PathBuf::from(kiln_api_proto::init::SOCKET),
        stats: stats::Sources {
            proc: PathBuf::from("/proc"),
            cgroups: PathBuf::from(CGROUP_ROOT),
            disks: DISKS.iter().map(PathBuf::from).collect(),
        },
        config_source,
    });
    let listen = SocketAddr::from((Ipv6Addr::UNSPECIFIED, kiln_api_proto::PORT));
    rt.block_on(async { serve(node, listen, kiln_stop::requested()).await })
}
