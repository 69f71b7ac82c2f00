//! The kernel's routing netlink: links, addresses, routes and link events.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::{AddressAttribute, CacheInfo};
use rtnetlink::packet_route::link::BondMode as NlBondMode;
use rtnetlink::packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkLayerType, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::AsyncSocket;
use rtnetlink::{Handle, LinkBond, LinkUnspec, LinkVlan, RouteMessageBuilder};

use crate::settings::{BondMode, IpCidr, MacAddr};

/// A netlink request the kernel refused or that could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("netlink: {what}: {source}")]
pub struct NetlinkError {
    pub what: String,
    #[source]
    pub source: rtnetlink::Error,
}

impl NetlinkError {
    /// The kernel's errno, if the kernel answered with one.
    pub fn errno(&self) -> Option<i32> {
        match &self.source {
            rtnetlink::Error::NetlinkError(e) => Some(e.raw_code().abs()),
            _ => None,
        }
    }
}

/// What netd needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    /// Administratively up.
    pub up: bool,
    /// The driver reports a carrier (IFF_LOWER_UP, only set while up).
    pub carrier: bool,
    pub ethernet: bool,
    /// The virtual kind (`veth`, `vlan`, `bridge`…); `None` for hardware.
    pub kind: Option<InfoKind>,
    /// The bond (or bridge) this link is enslaved to.
    pub controller: Option<u32>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Option<Link> {
        let mut name = None;
        let mut mac = None;
        let mut kind = None;
        let mut controller = None;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::Controller(c) if *c != 0 => controller = Some(*c),
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::LinkInfo(infos) => {
                    kind = infos.iter().find_map(|i| match i {
                        NlLinkInfo::Kind(k) => Some(k.clone()),
                        _ => None,
                    })
                }
                _ => {}
            }
        }
        let flags = msg.header.flags;
        Some(Link {
            index: msg.header.index,
            name: name?,
            mac: mac.map(MacAddr),
            up: flags.contains(LinkFlags::Up),
            carrier: flags.contains(LinkFlags::LowerUp),
            ethernet: msg.header.link_layer_type == LinkLayerType::Ether
                && !flags.contains(LinkFlags::Loopback),
            kind,
            controller,
        })
    }

    /// Whether "first with carrier" may pick this link: Ethernet hardware,
    /// or a veth (containers and test namespaces have nothing else).
    pub fn is_candidate(&self) -> bool {
        self.ethernet && matches!(self.kind, None | Some(InfoKind::Veth))
    }
}

/// A link appeared or changed, or went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    Changed(Link),
    Removed { index: u32 },
}

/// A route netd installs; `gateway: None` is on-link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub destination: IpCidr,
    pub gateway: Option<IpAddr>,
    /// The preferred source address (DHCP routes use the leased one).
    pub source: Option<IpAddr>,
    pub dhcp: bool,
    /// Lower wins; `None` is the kernel's default (0).
    pub metric: Option<u32>,
}

/// RTMGRP_LINK: link creation, change and removal.
const RTMGRP_LINK: u32 = 1;
/// Hot-plug bursts must not overflow the event socket.
const EVENT_BUFFER: usize = 1 << 20;

/// A routing netlink connection.
#[derive(Clone)]
pub struct Net {
    handle: Handle,
}

/// Link events of a [`Net`] connection, in kernel order.
pub struct LinkEvents {
    messages: futures_channel::mpsc::UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
}

impl LinkEvents {
    /// The next link event; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        loop {
            let (msg, _) = self.messages.next().await?;
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    if let Some(link) = Link::from_message(&l) {
                        return Some(LinkEvent::Changed(link));
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                    return Some(LinkEvent::Removed {
                        index: l.header.index,
                    })
                }
                _ => {}
            }
        }
    }
}

fn err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError { what, source }
}

impl Net {
    /// Opens a connection subscribed to link events; must run inside a
    /// tokio runtime (the connection is a task on it).
    pub fn connect() -> std::io::Result<(Net, LinkEvents)> {
        let (mut conn, handle, messages) = rtnetlink::new_connection()?;
        let socket = conn.socket_mut().socket_mut();
        socket.bind(&rtnetlink::sys::SocketAddr::new(0, RTMGRP_LINK))?;
        if let Err(e) = socket.set_rx_buf_sz(EVENT_BUFFER) {
            tracing::warn!("cannot enlarge the netlink event buffer: {e}");
        }
        tokio::spawn(conn);
        Ok((Net { handle }, LinkEvents { messages }))
    }

    /// Every link, lowest index first.
    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(err("list links"))?;
        let mut links: Vec<Link> = msgs.iter().filter_map(Link::from_message).collect();
        links.sort_by_key(|l| l.index);
        Ok(links)
    }

    /// Sets a link up, with an MTU if given.
    pub async fn set_up(&self, index: u32, mtu: Option<u32>) -> Result<(), NetlinkError> {
        let mut msg = LinkUnspec::new_with_index(index).up();
        if let Some(mtu) = mtu {
            msg = msg.mtu(mtu);
        }
        self.handle
            .link()
            .set(msg.build())
            .execute()
            .await
            .map_err(err(format!("set link {index} up (mtu {mtu:?})")))
    }

    /// Creates an 802.1Q link; an existing link of that name is left as is.
    pub async fn add_vlan(&self, name: &str, parent: u32, id: u16) -> Result<(), NetlinkError> {
        match self
            .handle
            .link()
            .add(LinkVlan::new(name, parent, id).build())
            .execute()
            .await
            .map_err(err(format!(
                "create vlan {name} (id {id} on link {parent})"
            ))) {
            Err(e) if e.errno() == Some(nix::libc::EEXIST) => Ok(()),
            r => r,
        }
    }

    /// Creates a bond (MII link monitoring every 100 ms, so a member losing
    /// carrier fails over); an existing link of that name is left as is.
    pub async fn add_bond(&self, name: &str, mode: BondMode) -> Result<(), NetlinkError> {
        let mode = match mode {
            BondMode::ActiveBackup => NlBondMode::ActiveBackup,
            BondMode::Lacp => NlBondMode::Ieee8023Ad,
        };
        match self
            .handle
            .link()
            .add(LinkBond::new(name).mode(mode).miimon(100).build())
            .execute()
            .await
            .map_err(err(format!("create bond {name} ({mode:?})")))
        {
            Err(e) if e.errno() == Some(nix::libc::EEXIST) => Ok(()),
            r => r,
        }
    }

    /// Enslaves a link to a bond: the kernel takes only members that are
    /// down, and the bond raises them itself.
    pub async fn enslave(&self, index: u32, bond: u32) -> Result<(), NetlinkError> {
        let what = format!("enslave link {index} to bond {bond}");
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).down().build())
            .execute()
            .await
            .map_err(err(what.clone()))?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).controller(bond).build())
            .execute()
            .await
            .map_err(err(what.clone()))?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(err(what))
    }

    /// Removes a link netd created (a VLAN, a bond); one already gone is not
    /// an error.
    pub async fn del_link(&self, index: u32) -> Result<(), NetlinkError> {
        match self.handle.link().del(index).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == nix::libc::ENODEV => {
                Ok(())
            }
            r => r.map_err(err(format!("remove link {index}"))),
        }
    }

    /// Adds or updates an address; `lifetime` (valid, preferred) makes the
    /// kernel drop it by itself if netd cannot.
    pub async fn add_address(
        &self,
        index: u32,
        addr: IpCidr,
        lifetime: Option<(Duration, Duration)>,
    ) -> Result<(), NetlinkError> {
        let mut req = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix())
            .replace();
        if let Some((valid, preferred)) = lifetime {
            let mut info = CacheInfo::default();
            info.ifa_valid = secs_u32(valid);
            info.ifa_preferred = secs_u32(preferred.min(valid));
            req.message_mut()
                .attributes
                .push(AddressAttribute::CacheInfo(info));
        }
        req.execute()
            .await
            .map_err(err(format!("add address {addr} to link {index}")))
    }

    /// Removes an address; one already gone is not an error.
    pub async fn del_address(&self, index: u32, addr: IpCidr) -> Result<(), NetlinkError> {
        let mut msgs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr.addr())
            .set_prefix_length_filter(addr.prefix())
            .execute();
        while let Some(msg) = msgs
            .try_next()
            .await
            .map_err(err(format!("find address {addr} on link {index}")))?
        {
            match self.handle.address().del(msg).execute().await {
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.raw_code().abs() == nix::libc::EADDRNOTAVAIL => {}
                r => r.map_err(err(format!("remove address {addr} from link {index}")))?,
            }
        }
        Ok(())
    }

    /// Adds or replaces a route through a link.
    pub async fn add_route(&self, index: u32, route: &Route) -> Result<(), NetlinkError> {
        let msg = route_message(index, route)?;
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(err(format!("add route {route:?} via link {index}")))
    }

    /// Removes a route; one already gone (with its address) is not an error.
    pub async fn del_route(&self, index: u32, route: &Route) -> Result<(), NetlinkError> {
        match self
            .handle
            .route()
            .del(route_message(index, route)?)
            .execute()
            .await
        {
            Err(rtnetlink::Error::NetlinkError(e))
                if matches!(e.raw_code().abs(), nix::libc::ESRCH | nix::libc::ENOENT) =>
            {
                Ok(())
            }
            r => r.map_err(err(format!("remove route {route:?} via link {index}"))),
        }
    }
}

fn route_message(
    index: u32,
    route: &Route,
) -> Result<rtnetlink::packet_route::route::RouteMessage, NetlinkError> {
    let d = route.destination;
    let invalid = |e| invalid_route(route, e);
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(d.addr(), d.prefix())
        .map_err(invalid)?
        .output_interface(index)
        .protocol(if route.dhcp {
            RouteProtocol::Dhcp
        } else {
            RouteProtocol::Static
        });
    match route.gateway {
        Some(gw) if !gw.is_unspecified() => {
            // The gateway is on this link by construction; saying so lets
            // the kernel take one outside every local subnet (RFC 3442
            // allows that) without an extra host route.
            b = b.gateway(gw).map_err(invalid)?.onlink();
        }
        _ => b = b.scope(RouteScope::Link),
    }
    if let Some(metric) = route.metric {
        b = b.priority(metric);
    }
    if let Some(src) = route.source {
        b = b.pref_source(src).map_err(invalid)?;
    }
    Ok(b.build())
}

/// rtnetlink does not export its route builder's error type.
fn invalid_route(route: &Route, e: impl std::fmt::Display) -> NetlinkError {
    NetlinkError {
        what: format!("route {route:?}"),
        source: rtnetlink::Error::InvalidNla(e.to_string()),
    }
}

fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
