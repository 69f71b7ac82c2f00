//! Matches links to settings as netlink reports them and runs one task per
//! matched link.
//!
//! Everything is driven by RTMGRP_LINK events (subscribed before the first
//! dump, so nothing falls between): a link appearing binds a waiting
//! selector, carrier changes go to the link's task, a link going away ends
//! its task and frees the selector for a replacement.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::link::LinkTask;
use crate::netlink::{Link, LinkEvent, Net};
use crate::settings::{LinkSelector, Settings};
use crate::status::{Reporter, Status};
use crate::Error;

/// Where netd writes what it does not hand to the kernel.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node's /etc/resolv.conf points at /run/kiln/resolv.conf.
    pub resolv_conf: PathBuf,
    /// NTP servers from `ip=` and DHCP option 42, for timed (`ntp.rs`).
    pub ntp_servers: PathBuf,
}

/// How long link tasks get to release their leases at shutdown.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// One selector and the link task serving it.
struct Slot {
    select: LinkSelector,
    bound: Option<BoundLink>,
    /// A VLAN slot's link was asked for on this parent.
    vlan_parent: Option<u32>,
}

struct BoundLink {
    index: u32,
    carrier: watch::Sender<bool>,
    task: tokio::task::AbortHandle,
}

/// Configures the network per `settings` until `shutdown` turns true, then
/// releases DHCP leases. Must run inside a tokio runtime.
pub async fn serve(
    settings: Settings,
    options: Options,
    status: watch::Sender<Status>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let (net, mut events) = Net::connect().map_err(Error::Connect)?;
    let report = Reporter::new(status, &settings, options.resolv_conf, options.ntp_servers);
    report.write_resolv();
    report.write_ntp();
    let mut d = Daemon {
        slots: settings
            .links
            .iter()
            .map(|l| Slot {
                select: l.select.clone(),
                bound: None,
                vlan_parent: None,
            })
            .collect(),
        settings,
        net: net.clone(),
        report,
        tasks: JoinSet::new(),
        shutdown: shutdown.clone(),
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
    Ok(())
}

struct Daemon {
    settings: Settings,
    slots: Vec<Slot>,
    net: Net,
    report: Reporter,
    tasks: JoinSet<()>,
    shutdown: watch::Receiver<bool>,
}

impl Daemon {
    async fn changed(&mut self, link: Link) {
        self.match_slot(&link).await;
        self.create_vlans(&link).await;
    }

    /// Passes carrier to the link's task, or binds the link to a selector.
    async fn match_slot(&mut self, link: &Link) {
        let link = link.clone();
        if let Some(i) = self.slot_of(link.index) {
            if let Some(b) = &self.slots[i].bound {
                b.carrier
                    .send_if_modified(|c| std::mem::replace(c, link.carrier) != link.carrier);
            }
            self.report.update(i, |l| l.carrier = link.carrier);
            return;
        }
        let free = |d: &Daemon, pred: &dyn Fn(&LinkSelector) -> bool| {
            d.slots
                .iter()
                .position(|s| s.bound.is_none() && pred(&s.select))
        };
        let named = free(self, &|s| self.names(s, &link));
        if let Some(i) = named {
            return self.bind(i, link);
        }
        if !link.is_candidate() || self.claimed_elsewhere(&link) {
            return;
        }
        let Some(i) = free(self, &|s| *s == LinkSelector::FirstWithCarrier) else {
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
        let Some(i) = self.slot_of(index) else { return };
        if let Some(b) = self.slots[i].bound.take() {
            info!(index, selector = %self.slots[i].select, "link removed");
            b.task.abort();
        }
        self.slots[i].vlan_parent = None;
        self.report.update(i, |l| {
            *l = crate::status::LinkStatus::waiting(l.selector.clone())
        });
    }

    fn slot_of(&self, index: u32) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.bound.as_ref().is_some_and(|b| b.index == index))
    }

    /// Whether a selector names this link (by name, MAC or VLAN name).
    fn names(&self, select: &LinkSelector, link: &Link) -> bool {
        match select {
            LinkSelector::Name(n) => *n == link.name,
            LinkSelector::Mac(m) => link.mac == Some(*m),
            LinkSelector::Vlan { name, .. } => *name == link.name,
            LinkSelector::FirstWithCarrier => false,
        }
    }

    /// A link some selector names (or a VLAN parent) is not "first with
    /// carrier" material.
    fn claimed_elsewhere(&self, link: &Link) -> bool {
        self.slots.iter().any(|s| {
            self.names(&s.select, link)
                || matches!(&s.select, LinkSelector::Vlan { parent, .. } if self.names(parent, link))
        })
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
            // The VLAN carries traffic only while its parent is up.
            let r = match self.net.set_up(link.index, None).await {
                Ok(()) => self.net.add_vlan(name, link.index, *id).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => {
                    info!(vlan = %name, id, parent = %link.name, "vlan created");
                    self.slots[i].vlan_parent = Some(link.index);
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
        };
        let handle = self.tasks.spawn(task.run());
        self.slots[slot].bound = Some(BoundLink {
            index: link.index,
            carrier: carrier_tx,
            task: handle,
        });
    }
}
