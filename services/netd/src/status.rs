//! Per-link status for the machine API, readiness, and the resolv.conf it
//! implies.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::daemon::Options;
use crate::dhcp::Lease;
use crate::netlink::Route;
use crate::settings::{Dns, IpCidr, MacAddr, Settings};

/// Everything netd configures, one entry per configured link, in settings
/// order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub links: Vec<LinkStatus>,
    /// The kernel's hostname once netd set it (from the settings or a
    /// lease's option 12).
    pub hostname: Option<String>,
    /// Why the stored machine config is not in use (netd then runs on the
    /// kernel command line's settings), naming the field.
    pub problem: Option<String>,
}

impl Status {
    /// "Network ready": at least one link selected, every selected link has
    /// an address, and one of them has a default route.
    pub fn ready(&self) -> bool {
        !self.links.is_empty()
            && self.links.iter().all(|l| !l.addresses.is_empty())
            && self
                .links
                .iter()
                .any(|l| l.routes.iter().any(|r| r.destination.is_default()))
    }
}

/// One configured link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// How the link is selected, as in the settings.
    pub selector: String,
    /// The link it matched, once one did.
    pub name: Option<String>,
    pub index: Option<u32>,
    pub mac: Option<MacAddr>,
    pub carrier: bool,
    pub state: LinkState,
    /// Static and leased, as installed.
    pub addresses: Vec<IpCidr>,
    pub routes: Vec<RouteStatus>,
    pub lease: Option<LeaseStatus>,
    /// The last configuration error, cleared by the next success.
    pub error: Option<String>,
}

impl LinkStatus {
    /// A selector no link matches (yet).
    pub fn waiting(selector: String) -> LinkStatus {
        LinkStatus {
            selector,
            name: None,
            index: None,
            mac: None,
            carrier: false,
            state: LinkState::Waiting,
            addresses: Vec::new(),
            routes: Vec::new(),
            lease: None,
            error: None,
        }
    }
}

/// Where a link is in its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// No link matches the selector (yet).
    Waiting,
    /// Static configuration applied, no DHCP.
    Configured,
    /// DHCP without carrier: nothing to talk to.
    NoCarrier,
    Dhcp(DhcpState),
}

/// RFC 2131 figure 5's client states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpState {
    Init,
    Selecting,
    Requesting,
    InitReboot,
    Rebooting,
    Bound,
    Renewing,
    Rebinding,
}

/// An installed route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteStatus {
    pub destination: IpCidr,
    pub gateway: Option<IpAddr>,
}

impl From<&Route> for RouteStatus {
    fn from(r: &Route) -> Self {
        RouteStatus {
            destination: r.destination,
            gateway: r.gateway,
        }
    }
}

/// The lease in force on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    pub address: IpCidr,
    pub server: std::net::Ipv4Addr,
    /// When the REQUEST that got this lease's last ACK was sent.
    pub obtained: SystemTime,
    pub renew_at: Option<SystemTime>,
    pub rebind_at: Option<SystemTime>,
    /// `None` for an infinite lease.
    pub expires_at: Option<SystemTime>,
    pub dns: Vec<std::net::Ipv4Addr>,
    pub search: Vec<String>,
    pub hostname: Option<String>,
    pub mtu: Option<u16>,
    /// Option 42.
    pub ntp: Vec<std::net::Ipv4Addr>,
}

impl LeaseStatus {
    pub(crate) fn new(lease: &Lease, obtained: SystemTime) -> Self {
        let at = |d: Duration| obtained.checked_add(d);
        LeaseStatus {
            address: lease.address,
            server: lease.server,
            obtained,
            renew_at: at(lease.t1),
            rebind_at: at(lease.t2),
            expires_at: lease.lease_time.and_then(at),
            dns: lease.dns.clone(),
            search: lease.search.clone(),
            hostname: lease.hostname.clone(),
            mtu: lease.mtu,
            ntp: lease.ntp.clone(),
        }
    }
}

/// Shared by the link tasks: updates the status and keeps resolv.conf and
/// the NTP server list in line with it.
#[derive(Clone)]
pub(crate) struct Reporter {
    inner: Arc<Inner>,
}

struct Inner {
    status: watch::Sender<Status>,
    dns: Dns,
    resolv_conf: PathBuf,
    /// What was last written, so unchanged DNS does not rewrite the file.
    written: std::sync::Mutex<Option<String>>,
    /// From `ip=`; listed before the leases'.
    ntp: Vec<std::net::Ipv4Addr>,
    ntp_servers: PathBuf,
    ntp_written: std::sync::Mutex<Option<String>>,
    /// From the settings; wins over leases'. Changes without re-applying
    /// the links (`set_hostname`).
    hostname: std::sync::Mutex<Option<String>>,
    hosts: PathBuf,
    hosts_written: std::sync::Mutex<Option<String>>,
}

impl Reporter {
    /// Starts a fresh status for `settings` (keeping `problem`, which is
    /// the caller's).
    pub fn new(status: watch::Sender<Status>, settings: &Settings, options: &Options) -> Self {
        status.send_modify(|s| {
            s.links = settings
                .links
                .iter()
                .map(|l| LinkStatus::waiting(l.select.to_string()))
                .collect();
        });
        Reporter {
            inner: Arc::new(Inner {
                status,
                dns: settings.dns.clone(),
                resolv_conf: options.resolv_conf.clone(),
                written: std::sync::Mutex::new(None),
                ntp: settings.ntp_servers.clone(),
                ntp_servers: options.ntp_servers.clone(),
                ntp_written: std::sync::Mutex::new(None),
                hostname: std::sync::Mutex::new(settings.hostname.clone()),
                hosts: options.hosts.clone(),
                hosts_written: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Writes resolv.conf, the NTP list, the hostname and hosts as they
    /// stand.
    pub fn write_files(&self) {
        let mut next = self.inner.status.borrow().clone();
        self.write_files_for(&mut next);
        self.inner.status.send_if_modified(|s| {
            let changed = s.hostname != next.hostname;
            s.hostname = next.hostname.take();
            changed
        });
    }

    /// The files `status` implies; records the kernel's hostname in it.
    fn write_files_for(&self, status: &mut Status) {
        self.write_resolv(status);
        self.write_ntp(status);
        status.hostname = self.write_host(status);
    }

    /// Changes link `slot`'s status and rewrites the files that depend on
    /// it, before watchers see the change (so they find the files in line).
    pub fn update(&self, slot: usize, f: impl FnOnce(&mut LinkStatus)) {
        let mut next = self.inner.status.borrow().clone();
        let Some(link) = next.links.get_mut(slot) else {
            return;
        };
        f(link);
        self.write_files_for(&mut next);
        self.inner.status.send_if_modified(|s| {
            let changed = *s != next;
            *s = next;
            changed
        });
    }

    /// Records an error on a link and logs it.
    pub fn error(&self, slot: usize, error: String) {
        tracing::warn!(slot, "{error}");
        self.update(slot, |l| l.error = Some(error));
    }

    /// Static servers first, then each lease's, in link order.
    fn write_resolv(&self, status: &Status) {
        let mut servers = self.inner.dns.servers.clone();
        let mut search = self.inner.dns.search.clone();
        for lease in status.links.iter().filter_map(|l| l.lease.as_ref()) {
            servers.extend(lease.dns.iter().map(|d| IpAddr::V4(*d)));
            search.extend(lease.search.iter().cloned());
        }
        let content = crate::resolv::render(&servers, &search);
        write_if_changed(&self.inner.resolv_conf, &self.inner.written, content);
    }

    /// A new configured hostname (`None`: the leases' again).
    pub fn set_hostname(&self, hostname: Option<String>) {
        if let Ok(mut h) = self.inner.hostname.lock() {
            *h = hostname;
        }
        self.write_files();
    }

    /// Sets the hostname (the settings', else the first lease's option 12)
    /// when it changed, and writes hosts with it and the node's address;
    /// returns the kernel's hostname.
    fn write_host(&self, status: &Status) -> Option<String> {
        let configured = self.inner.hostname.lock().ok().and_then(|h| h.clone());
        let wanted = configured.or_else(|| {
            status
                .links
                .iter()
                .filter_map(|l| l.lease.as_ref())
                .find_map(|l| l.hostname.clone())
        });
        if let Some(name) = wanted {
            let current = nix::unistd::gethostname().ok();
            if current.as_ref().and_then(|c| c.to_str()) != Some(name.as_str()) {
                match nix::unistd::sethostname(&name) {
                    Ok(()) => tracing::info!(hostname = %name, "hostname set"),
                    Err(e) => tracing::warn!(hostname = %name, "cannot set the hostname: {e}"),
                }
            }
        }
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())?;
        let content = crate::hosts::render(&hostname, crate::hosts::node_address(status));
        write_if_changed(&self.inner.hosts, &self.inner.hosts_written, content);
        Some(hostname)
    }

    /// `ip=`'s NTP server first, then each lease's option 42, in link order.
    fn write_ntp(&self, status: &Status) {
        let mut servers = self.inner.ntp.clone();
        for lease in status.links.iter().filter_map(|l| l.lease.as_ref()) {
            servers.extend(&lease.ntp);
        }
        let content = crate::ntp::render(&servers);
        write_if_changed(&self.inner.ntp_servers, &self.inner.ntp_written, content);
    }
}

/// Replaces `path` with `content` unless that is what was last written.
fn write_if_changed(
    path: &std::path::Path,
    written: &std::sync::Mutex<Option<String>>,
    content: String,
) {
    let Ok(mut written) = written.lock() else {
        return;
    };
    if written.as_deref() == Some(content.as_str()) {
        return;
    }
    match crate::resolv::write_atomic(path, &content) {
        Ok(()) => *written = Some(content),
        Err(e) => tracing::warn!(path = %path.display(), "cannot write: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(addresses: &[&str], default_route: bool) -> LinkStatus {
        LinkStatus {
            selector: "x".into(),
            name: None,
            index: None,
            mac: None,
            carrier: true,
            state: LinkState::Configured,
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            routes: if default_route {
                vec![RouteStatus {
                    destination: "0.0.0.0/0".parse().unwrap(),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                }]
            } else {
                Vec::new()
            },
            lease: None,
            error: None,
        }
    }

    #[test]
    fn readiness() {
        assert!(!Status::default().ready());
        let ready = |links| {
            Status {
                links,
                ..Status::default()
            }
            .ready()
        };
        assert!(ready(vec![link(&["10.0.0.2/24"], true)]));
        assert!(!ready(vec![link(&["10.0.0.2/24"], false)]));
        assert!(!ready(vec![link(&[], true)]));
        assert!(ready(vec![
            link(&["10.0.0.2/24"], true),
            link(&["10.1.0.2/24"], false)
        ]));
        assert!(!ready(vec![link(&["10.0.0.2/24"], true), link(&[], false)]));
    }
}
