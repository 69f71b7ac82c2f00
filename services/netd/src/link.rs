//! One configured link's task: static configuration, then DHCP if asked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{debug, info};

use crate::dhcp::{Client, Device};
use crate::netlink::{Link, Net, Route};
use crate::settings::LinkSettings;
use crate::status::{LinkState, Reporter, RouteStatus};

/// What a link task runs with.
pub(crate) struct LinkTask {
    pub slot: usize,
    pub link: Link,
    pub settings: LinkSettings,
    pub net: Net,
    pub report: Reporter,
    pub carrier: watch::Receiver<bool>,
    pub shutdown: watch::Receiver<bool>,
    /// Set before `shutdown` when new settings replace these: the static
    /// configuration is removed too.
    pub teardown: Arc<AtomicBool>,
}

impl LinkTask {
    /// Configures the link and, for DHCP, runs the client until shutdown.
    /// Static configuration stays in place at shutdown (nothing leases
    /// it), unless new settings replace it.
    pub async fn run(self) {
        let LinkTask {
            slot,
            link,
            settings,
            net,
            report,
            carrier,
            mut shutdown,
            teardown,
        } = self;
        info!(link = %link.name, index = link.index, selector = %settings.select, "configuring");
        let fail = |e: String| report.error(slot, format!("{}: {e}", link.name));
        if let Err(e) = net.set_up(link.index, settings.mtu).await {
            fail(e.to_string());
        }
        for addr in &settings.addresses {
            match net.add_address(link.index, *addr, None).await {
                Ok(()) => report.update(slot, |l| {
                    if !l.addresses.contains(addr) {
                        l.addresses.push(*addr)
                    }
                }),
                Err(e) => fail(e.to_string()),
            }
        }
        let routes: Vec<Route> = settings
            .routes
            .iter()
            .map(|r| Route {
                destination: r.destination,
                gateway: r.gateway,
                source: None,
                dhcp: false,
                metric: r.metric,
            })
            .collect();
        for route in &routes {
            match net.add_route(link.index, route).await {
                Ok(()) => report.update(slot, |l| {
                    let s = RouteStatus::from(route);
                    if !l.routes.contains(&s) {
                        l.routes.push(s)
                    }
                }),
                Err(e) => fail(e.to_string()),
            }
        }
        if !settings.dhcp4 {
            report.update(slot, |l| l.state = LinkState::Configured);
            // Only an error (sender gone) or shutdown ends the wait.
            let _ = shutdown.wait_for(|s| *s).await.map(|_| ());
        } else if let Some(mac) = link.mac {
            let dev = Device {
                index: link.index,
                name: link.name.clone(),
                mac,
                mtu_override: settings.mtu,
            };
            let client = Client::new(
                dev,
                slot,
                net.clone(),
                report.clone(),
                carrier,
                shutdown.clone(),
            );
            match client {
                Ok(client) => {
                    if let Err(e) = client.run().await {
                        fail(e.to_string());
                    }
                }
                Err(e) => {
                    fail(e.to_string());
                    let _ = shutdown.wait_for(|s| *s).await.map(|_| ());
                }
            }
        } else {
            fail("DHCP needs an Ethernet address".into());
            let _ = shutdown.wait_for(|s| *s).await.map(|_| ());
        }
        if !teardown.load(Ordering::SeqCst) {
            return;
        }
        // Routes go with their addresses, but a gateway route may have
        // none of its own.
        for route in &routes {
            if let Err(e) = net.del_route(link.index, route).await {
                debug!(link = %link.name, "{e}");
            }
        }
        for addr in &settings.addresses {
            if let Err(e) = net.del_address(link.index, *addr).await {
                debug!(link = %link.name, "{e}");
            }
        }
        info!(link = %link.name, "configuration removed for new settings");
    }
}
