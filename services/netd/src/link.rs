//! One configured link's task: static configuration, then DHCP if asked.

use tokio::sync::watch;
use tracing::info;

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
}

impl LinkTask {
    /// Configures the link and, for DHCP, runs the client until shutdown.
    /// Static configuration stays in place at shutdown: nothing leases it.
    pub async fn run(self) {
        let LinkTask {
            slot,
            link,
            settings,
            net,
            report,
            carrier,
            mut shutdown,
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
        for r in &settings.routes {
            let route = Route {
                destination: r.destination,
                gateway: r.gateway,
                source: None,
                dhcp: false,
            };
            match net.add_route(link.index, &route).await {
                Ok(()) => report.update(slot, |l| {
                    let s = RouteStatus::from(&route);
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
            return;
        }
        let Some(mac) = link.mac else {
            fail("DHCP needs an Ethernet address".into());
            return;
        };
        let dev = Device {
            index: link.index,
            name: link.name.clone(),
            mac,
            mtu_override: settings.mtu,
        };
        let client = match Client::new(dev, slot, net, report.clone(), carrier, shutdown) {
            Ok(c) => c,
            Err(e) => return fail(e.to_string()),
        };
        if let Err(e) = client.run().await {
            fail(e.to_string());
        }
    }
}
