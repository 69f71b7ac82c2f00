//! Matches links to settings as netlink reports them and runs one task per
//! matched link.
//!
//! Everything is driven by RTMGRP_LINK events (subscribed before the first
//! dump, so nothing falls between): a link appearing binds a waiting
//! selector (or joins its bond), carrier changes go to the link's task, a
//! link going away ends its task and frees the selector for a replacement.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::link::LinkTask;
use crate::netlink::{Link, LinkEvent, Net};
use crate::settings::{vlan_name, LinkSelector, Settings};
use crate::status::{Reporter, Status};
use crate::Error;

/// Where netd writes what it does not hand to the kernel.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node's /etc/resolv.conf points at /run/kiln/resolv.conf.
    pub resolv_conf: PathBuf,
    /// NTP servers from `ip=` and DHCP option 42, for timed (`ntp.rs`).
    pub ntp_servers: PathBuf,
    /// The node's /etc/hosts points at /run/kiln/hosts.
    pub hosts: PathBuf,
}

/// How long link tasks get to release their leases at shutdown.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// One selector and the link task serving it.
struct Slot {
    select: LinkSelector,
    bound: Option<BoundLink>,
    /// A VLAN slot's link was asked for on this parent, under this name.
    vlan_parent: Option<u32>,
    vlan_name: Option<String>,
    /// netd created this slot's link (a VLAN or a bond).
    created: bool,
}

struct BoundLink {
    index: u32,
    mac: Option<crate::settings::MacAddr>,
    carrier: watch::Sender<bool>,
    task: tokio::task::AbortHandle,
}

/// Configures the network per `settings` until `shutdown` turns true, then
/// releases DHCP leases; static configuration, VLANs and bonds stay. Must
/// run inside a tokio runtime.
pub async fn serve(
    settings: Settings,
    options: Options,
    status: watch::Sender<Status>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let (_keep, hostname) = watch::channel(settings.hostname.clone());
    let control = Control {
        shutdown,
        teardown: Arc::new(AtomicBool::new(false)),
        hostname,
    };
    serve_until(settings, options, status, control).await
}

/// How [`serve_until`]'s caller steers it.
pub(crate) struct Control {
    pub shutdown: watch::Receiver<bool>,
    /// If set when `shutdown` turns true, everything these settings made is
    /// undone (for settings that replace them).
    pub teardown: Arc<AtomicBool>,
    /// The configured hostname, which changes without touching the links.
    pub hostname: watch::Receiver<Option<String>>,
}

/// [`serve`], steered by `control`.
pub(crate) async fn serve_until(
    settings: Settings,
    options: Options,
    status: watch::Sender<Status>,
    control: Control,
) -> Result<(), Error> {
    let Control {
        mut shutdown,
        teardown,
        mut hostname,
    } = control;
    let (net, mut events) = Net::connect().map_err(Error::Connect)?;
    let report = Reporter::new(status, &settings, &options);
    report.write_files();
    let mut d = Daemon {
        slots: settings
            .links
            .iter()
            .map(|l| Slot {
                select: l.select.clone(),
                bound: None,
                vlan_parent: None,
                vlan_name: None,
                created: false,
            })
            .collect(),
        settings,
        links: BTreeMap::new(),
        net: net.clone(),
        report,
        tasks: JoinSet::new(),
        shutdown: shutdown.clone(),
        teardown: teardown.clone(),
    };
    let links = net.links().await?;
    // Loopback first, whatever the settings: local clients (the
    // supervisor's health checks, kubelet to the CRI) need 127.0.0.1.
    if let Some(lo) = links.iter().find(|l| l.name == "lo" && !l.up) {
        match net.set_up(lo.index, None).await {
            Ok(()) => info!("loopback up"),
            Err(e) => warn!("cannot bring up lo: {e}"),
        }
    }
    d.create_bonds().await;
    for link in links {
        d.changed(link).await;
    }
    loop {
        tokio::select! {
            biased;
            _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => break,
            ev = events.next() => match ev {
                Some(LinkEvent::Changed(link)) => d.changed(link).await,
                Some(LinkEvent::Removed { index }) => d.removed(index),
                None => return Err(Error::EventsEnded),
            },
            Ok(()) = hostname.changed() => {
                let name = hostname.borrow_and_update().clone();
                d.report.set_hostname(name);
            }
            Some(r) = d.tasks.join_next(), if !d.tasks.is_empty() => {
                if let Err(e) = r {
                    if !e.is_cancelled() {
                        warn!("link task failed: {e}");
                    }
                }
            }
        }
    }
    // The tasks watch the same shutdown flag and release their leases.
    if tokio::time::timeout(STOP_DEADLINE, async {
        while d.tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        warn!("link tasks did not stop in time");
    }
    if teardown.load(Ordering::SeqCst) {
        d.remove_created().await;
    }
    Ok(())
}

struct Daemon {
    settings: Settings,
    slots: Vec<Slot>,
    /// Every link netlink reported, by index (bond members may appear
    /// before their bond).
    links: BTreeMap<u32, Link>,
    net: Net,
    report: Reporter,
    tasks: JoinSet<()>,
    shutdown: watch::Receiver<bool>,
    teardown: Arc<AtomicBool>,
}

impl Daemon {
    async fn changed(&mut self, link: Link) {
        self.links.insert(link.index, link.clone());
        self.enslave(&link).await;
        self.match_slot(&link).await;
        self.create_vlans(&link).await;
    }

    /// Passes carrier to the link's task, or binds the link to a selector.
    async fn match_slot(&mut self, link: &Link) {
        let link = link.clone();
        if let Some(i) = self.slot_of(link.index) {
            let moved = self.slots[i]
                .bound
                .as_ref()
                .is_some_and(|b| b.mac != link.mac);
            if !moved {
                if let Some(b) = &self.slots[i].bound {
                    b.carrier
                        .send_if_modified(|c| std::mem::replace(c, link.carrier) != link.carrier);
                }
                self.report.update(i, |l| l.carrier = link.carrier);
                return;
            }
            // A bond takes its first member's address, a VLAN its parent's:
            // DHCP must speak with the address the link has now.
            info!(link = %link.name, mac = ?link.mac, "link address changed: configuring again");
            self.unbind(i);
        }
        let named = (0..self.slots.len())
            .find(|&i| self.slots[i].bound.is_none() && self.slot_names(i, &link));
        if let Some(i) = named {
            return self.bind(i, link);
        }
        if !link.is_candidate() || self.claimed_elsewhere(&link) {
            return;
        }
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.bound.is_none() && s.select == LinkSelector::FirstWithCarrier)
        else {
            return;
        };
        if link.carrier {
            self.bind(i, link);
        } else if !link.up {
            // Carrier is only reported on links that are up.
            if let Err(e) = self.net.set_up(link.index, None).await {
                warn!(link = %link.name, "cannot bring a candidate link up: {e}");
            }
        }
    }

    fn removed(&mut self, index: u32) {
        self.links.remove(&index);
        let Some(i) = self.slot_of(index) else { return };
        info!(index, selector = %self.slots[i].select, "link removed");
        self.unbind(i);
        self.slots[i].vlan_parent = None;
    }

    /// Ends slot `i`'s link task; the selector waits for a link again.
    fn unbind(&mut self, i: usize) {
        if let Some(b) = self.slots[i].bound.take() {
            b.task.abort();
        }
        self.report.update(i, |l| {
            *l = crate::status::LinkStatus::waiting(l.selector.clone())
        });
    }

    fn slot_of(&self, index: u32) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.bound.as_ref().is_some_and(|b| b.index == index))
    }

    /// Whether slot `i` is for this link: its selector names it, or it is
    /// the VLAN netd created under that name.
    fn slot_names(&self, i: usize, link: &Link) -> bool {
        match &self.slots[i].select {
            LinkSelector::Vlan { name: None, .. } => {
                self.slots[i].vlan_name.as_deref() == Some(link.name.as_str())
            }
            s => self.names(s, link),
        }
    }

    /// Whether a selector names this link (by name, MAC or VLAN name).
    fn names(&self, select: &LinkSelector, link: &Link) -> bool {
        match select {
            LinkSelector::Name(n) => *n == link.name,
            LinkSelector::Mac(m) => link.mac == Some(*m),
            LinkSelector::Vlan { name, .. } => name.as_deref() == Some(link.name.as_str()),
            LinkSelector::Bond { name, .. } => *name == link.name,
            LinkSelector::FirstWithCarrier => false,
        }
    }

    /// A link some selector names (or a VLAN parent, or a bond member) is
    /// not "first with carrier" material.
    fn claimed_elsewhere(&self, link: &Link) -> bool {
        (0..self.slots.len()).any(|i| {
            self.slot_names(i, link)
                || match &self.slots[i].select {
                    LinkSelector::Vlan { parent, .. } => self.names(parent, link),
                    LinkSelector::Bond { members, .. } => {
                        members.iter().any(|m| self.names(m, link))
                    }
                    _ => false,
                }
        })
    }

    /// Creates the bonds the settings name; their members are enslaved as
    /// they appear ([`Daemon::enslave`]).
    async fn create_bonds(&mut self) {
        for i in 0..self.slots.len() {
            let LinkSelector::Bond { name, mode, .. } = &self.slots[i].select else {
                continue;
            };
            match self.net.add_bond(name, *mode).await {
                Ok(()) => {
                    info!(bond = %name, %mode, "bond created");
                    self.slots[i].created = true;
                }
                Err(e) => self.report.error(i, e.to_string()),
            }
        }
    }

    /// Enslaves `link` to the bond one of whose members it is, or, when
    /// `link` is a bond, every member already present.
    async fn enslave(&mut self, link: &Link) {
        let mut pairs = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let LinkSelector::Bond { name, members, .. } = &slot.select else {
                continue;
            };
            let Some(bond) = self.links.values().find(|l| l.name == *name) else {
                continue;
            };
            let candidates: Vec<&Link> = if bond.index == link.index {
                self.links.values().collect()
            } else {
                vec![link]
            };
            for member in candidates {
                if members.iter().any(|m| self.names(m, member))
                    && member.controller != Some(bond.index)
                {
                    pairs.push((i, member.clone(), bond.index, bond.name.clone()));
                }
            }
        }
        for (slot, member, bond, bond_name) in pairs {
            match self.net.enslave(member.index, bond).await {
                Ok(()) => info!(link = %member.name, bond = %bond_name, "bond member enslaved"),
                Err(e) => self.report.error(slot, e.to_string()),
            }
        }
    }

    /// Creates the VLANs whose parent this link is.
    async fn create_vlans(&mut self, link: &Link) {
        for i in 0..self.slots.len() {
            let LinkSelector::Vlan { parent, id, name } = &self.slots[i].select else {
                continue;
            };
            let is_parent = match &**parent {
                LinkSelector::FirstWithCarrier => self.slots.iter().any(|s| {
                    s.select == LinkSelector::FirstWithCarrier
                        && s.bound.as_ref().is_some_and(|b| b.index == link.index)
                }),
                p => self.names(p, link),
            };
            if !is_parent || self.slots[i].vlan_parent == Some(link.index) {
                continue;
            }
            let name = name.clone().unwrap_or_else(|| vlan_name(&link.name, *id));
            // The VLAN carries traffic only while its parent is up.
            let r = match self.net.set_up(link.index, None).await {
                Ok(()) => self.net.add_vlan(&name, link.index, *id).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => {
                    info!(vlan = %name, id, parent = %link.name, "vlan created");
                    self.slots[i].vlan_parent = Some(link.index);
                    self.slots[i].vlan_name = Some(name);
                    self.slots[i].created = true;
                    // The kernel may have announced it before we knew its
                    // name.
                    if let Some(vlan) = self.links.values().find(|l| self.slot_names(i, l)) {
                        if self.slots[i].bound.is_none() {
                            let vlan = vlan.clone();
                            self.bind(i, vlan);
                        }
                    }
                }
                Err(e) => self.report.error(i, e.to_string()),
            }
        }
    }

    fn bind(&mut self, slot: usize, link: Link) {
        let (carrier_tx, carrier_rx) = watch::channel(link.carrier);
        self.report.update(slot, |l| {
            l.name = Some(link.name.clone());
            l.index = Some(link.index);
            l.mac = link.mac;
            l.carrier = link.carrier;
        });
        let task = LinkTask {
            slot,
            link: link.clone(),
            settings: self.settings.links[slot].clone(),
            net: self.net.clone(),
            report: self.report.clone(),
            carrier: carrier_rx,
            shutdown: self.shutdown.clone(),
            teardown: self.teardown.clone(),
        };
        let handle = self.tasks.spawn(task.run());
        self.slots[slot].bound = Some(BoundLink {
            index: link.index,
            mac: link.mac,
            carrier: carrier_tx,
            task: handle,
        });
    }

    /// Removes the VLANs and bonds netd created (after the link tasks
    /// removed their addresses), for settings that replace these.
    async fn remove_created(&mut self) {
        for i in 0..self.slots.len() {
            if !self.slots[i].created {
                continue;
            }
            let name = match &self.slots[i].select {
                LinkSelector::Bond { name, .. } => Some(name.clone()),
                LinkSelector::Vlan { .. } => self.slots[i].vlan_name.clone(),
                _ => None,
            };
            let Some(link) = name.and_then(|n| self.links.values().find(|l| l.name == n)) else {
                continue;
            };
            match self.net.del_link(link.index).await {
                Ok(()) => info!(link = %link.name, "removed for new settings"),
                Err(e) => warn!("{e}"),
            }
        }
    }
}
