//! The few link, address and route operations the plugins need, over one
//! rtnetlink handle (which fixes the namespace they act in).

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{Error, Result};

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const ESRCH: i32 = 3;
const EADDRNOTAVAIL: i32 = 99;

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// The parts of a link the plugins look at.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: String,
    pub mtu: Option<u32>,
    pub controller: Option<u32>,
    pub up: bool,
    pub promisc: bool,
    /// For a veth: the peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
    pub is_bridge: bool,
}

impl From<LinkMessage> for Link {
    fn from(m: LinkMessage) -> Self {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mac: String::new(),
            mtu: None,
            controller: None,
            up: m.header.flags.contains(LinkFlags::Up),
            promisc: m.header.flags.contains(LinkFlags::Promisc),
            peer_index: None,
            is_bridge: false,
        };
        for a in m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n,
                LinkAttribute::Address(b) => l.mac = format_mac(&b),
                LinkAttribute::Mtu(v) => l.mtu = Some(v),
                LinkAttribute::Controller(v) => l.controller = Some(v),
                LinkAttribute::Link(v) => l.peer_index = Some(v),
                LinkAttribute::LinkInfo(infos) => {
                    l.is_bridge = infos.contains(&LinkInfo::Kind(InfoKind::Bridge));
                }
                _ => {}
            }
        }
        l
    }
}

fn format_mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub struct Netlink(pub Handle);

impl Netlink {
    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        let mut s = self.0.link().get().match_name(name.to_string()).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.map(Link::from)),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(Error::netlink(format!("get link {name}"), e)),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let mut s = self.0.link().get().match_index(index).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.map(Link::from)),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(Error::netlink(format!("get link {index}"), e)),
        }
    }

    /// The bridge `name`, created (up) if missing. Another ADD may create it
    /// concurrently: EEXIST is success.
    pub async fn ensure_bridge(&self, name: &str, mtu: Option<u32>) -> Result<Link> {
        if self.link(name).await?.is_none() {
            let mut b = LinkBridge::new(name);
            if let Some(mtu) = mtu {
                b = b.mtu(mtu);
            }
            match self.0.link().add(b.build()).execute().await {
                Err(e) if errno(&e) != Some(EEXIST) => {
                    return Err(Error::netlink(format!("create bridge {name}"), e))
                }
                _ => {}
            }
        }
        let link = self
            .link(name)
            .await?
            .ok_or_else(|| Error::NotAvailable(format!("bridge {name} vanished after creation")))?;
        if !link.is_bridge {
            return Err(Error::config(
                "bridge",
                format!("{name} already exists and is not a bridge"),
            ));
        }
        if !link.up {
            self.set(LinkUnspec::new_with_index(link.index).up().build(), name)
                .await?;
        }
        Ok(link)
    }

    /// A veth pair: `host` here, `peer` created directly inside `peer_ns`
    /// under its final name, so no temporary name ever appears in the pod.
    pub async fn add_veth(
        &self,
        host: &str,
        peer: &str,
        peer_ns: BorrowedFd<'_>,
        mtu: Option<u32>,
    ) -> Result<()> {
        let mut peer_msg = LinkUnspec::new_with_name(peer).setns_by_fd(peer_ns.as_raw_fd());
        let mut msg = LinkVeth::new(host, peer);
        if let Some(mtu) = mtu {
            peer_msg = peer_msg.mtu(mtu);
            msg = msg.mtu(mtu);
        }
        let msg = msg
            .set_info_data(rtnetlink::packet_route::link::InfoData::Veth(
                rtnetlink::packet_route::link::InfoVeth::Peer(peer_msg.build()),
            ))
            .build();
        self.0
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("create veth {host}/{peer}"), e))
    }

    pub async fn set(&self, msg: LinkMessage, what: &str) -> Result<()> {
        self.0
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("set link {what}"), e))
    }

    pub async fn set_hairpin(&self, index: u32, on: bool) -> Result<()> {
        self.0
            .link()
            .set_port(LinkBridgePort::new(index).hairpin(on).build())
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("set hairpin on {index}"), e))
    }

    /// Deletes a link; a link already gone is success.
    pub async fn del_link(&self, index: u32) -> Result<()> {
        match self.0.link().del(index).execute().await {
            Err(e) if errno(&e) != Some(ENODEV) => {
                Err(Error::netlink(format!("delete link {index}"), e))
            }
            _ => Ok(()),
        }
    }

    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNet>> {
        let msgs: Vec<AddressMessage> = self
            .0
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink(format!("list addresses of {index}"), e))?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| {
                let prefix = m.header.prefix_len;
                m.attributes.into_iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => IpNet::new(ip, prefix).ok(),
                    _ => None,
                })
            })
            .collect())
    }

    /// Adds an address unless present. IPv6 addresses skip duplicate address
    /// detection: the IPAM store already guarantees uniqueness, and DAD
    /// would leave the address unusable for a second or more after ADD.
    pub async fn ensure_address(&self, index: u32, net: IpNet) -> Result<()> {
        if self.addresses(index).await?.contains(&net) {
            return Ok(());
        }
        let mut req = self.0.address().add(index, net.addr(), net.prefix_len());
        if net.addr().is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Err(e) if errno(&e) != Some(EEXIST) => {
                Err(Error::netlink(format!("add address {net} to {index}"), e))
            }
            _ => Ok(()),
        }
    }

    /// Adds a route through link `index` (via `gw` if given); an identical
    /// route already present is success.
    pub async fn add_route(&self, index: u32, dst: IpNet, gw: Option<IpAddr>) -> Result<()> {
        let msg = route(index, dst, gw)?;
        match self.0.route().add(msg).execute().await {
            Err(e) if errno(&e) != Some(EEXIST) => {
                Err(Error::netlink(format!("add route {dst} via {gw:?}"), e))
            }
            _ => Ok(()),
        }
    }

    /// Deletes an address; one already gone is success.
    pub async fn del_address(&self, index: u32, net: IpNet) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = net.prefix_len();
        msg.header.family = if net.addr().is_ipv4() {
            rtnetlink::packet_route::AddressFamily::Inet
        } else {
            rtnetlink::packet_route::AddressFamily::Inet6
        };
        msg.attributes.push(AddressAttribute::Address(net.addr()));
        if net.addr().is_ipv4() {
            msg.attributes.push(AddressAttribute::Local(net.addr()));
        }
        match self.0.address().del(msg).execute().await {
            Err(e) if !matches!(errno(&e), Some(EADDRNOTAVAIL | ESRCH | ENODEV)) => {
                Err(Error::netlink(format!("delete address {net}"), e))
            }
            _ => Ok(()),
        }
    }
}

fn route(index: u32, dst: IpNet, gw: Option<IpAddr>) -> Result<RouteMessage> {
    let bad = |e: String| Error::config("routes", format!("{dst}: {e}"));
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst.addr(), dst.prefix_len())
        .map_err(|e| bad(e.to_string()))?
        .output_interface(index);
    if let Some(gw) = gw {
        b = b.gateway(gw).map_err(|e| bad(e.to_string()))?;
    }
    let mut msg = b.build();
    if gw.is_none() {
        // A route with no gateway is on-link.
        msg.header.scope = rtnetlink::packet_route::route::RouteScope::Link;
    }
    Ok(msg)
}
