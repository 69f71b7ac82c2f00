//! /etc/hosts (the image points it at /run/kiln/hosts): localhost, and the
//! node's hostname on its address so software that resolves its own name
//! (kubelet, etcd clients) gets a routable address, not loopback.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::status::Status;

/// The node's address: the first IPv4 address (else the first address) of
/// the first link with a default route.
pub fn node_address(status: &Status) -> Option<IpAddr> {
    let link = status
        .links
        .iter()
        .find(|l| l.routes.iter().any(|r| r.destination.is_default()))?;
    let addrs = || link.addresses.iter().map(|a| a.addr());
    addrs().find(IpAddr::is_ipv4).or_else(|| addrs().next())
}

/// The file's content. Without an address the name goes on 127.0.1.1, as
/// Debian does, so it still resolves.
pub fn render(hostname: &str, address: Option<IpAddr>) -> String {
    let mut out = String::from(
        "# written by kiln netd\n127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    );
    let address = address.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 1, 1)));
    // The short name too when the hostname is a FQDN.
    let short = hostname.split('.').next().unwrap_or(hostname);
    // Infallible: writing to a String.
    let _ = if short != hostname {
        writeln!(out, "{address} {hostname} {short}")
    } else {
        writeln!(out, "{address} {hostname}")
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{LinkState, LinkStatus, RouteStatus};

    #[test]
    fn renders_the_name_on_the_node_address() {
        assert_eq!(
            render("worker-2.example.internal", Some("10.0.0.5".parse().unwrap())),
            "# written by kiln netd\n127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n10.0.0.5 worker-2.example.internal worker-2\n"
        );
        assert!(render("kiln-abc123", None).ends_with("\n127.0.1.1 kiln-abc123\n"));
    }

    #[test]
    fn node_address_is_on_the_default_route_link() {
        let mut plain = LinkStatus::waiting("a".into());
        plain.addresses = vec!["10.1.0.2/24".parse().unwrap()];
        let mut routed = LinkStatus::waiting("b".into());
        routed.state = LinkState::Configured;
        routed.addresses = vec![
            "fd00::2/64".parse().unwrap(),
            "10.2.0.2/24".parse().unwrap(),
        ];
        routed.routes = vec![RouteStatus {
            destination: "0.0.0.0/0".parse().unwrap(),
            gateway: Some("10.2.0.1".parse().unwrap()),
        }];
        let mut status = Status {
            links: vec![plain, routed],
            ..Status::default()
        };
        assert_eq!(node_address(&status), Some("10.2.0.2".parse().unwrap()));
        status.links.pop();
        assert_eq!(node_address(&status), None);
    }
}
