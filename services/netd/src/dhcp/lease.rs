//! A lease: what a DHCPOFFER or DHCPACK gives, validated field by field.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, OptionCode};

use crate::netlink::Route;
use crate::settings::{mask_prefix, validate_domain, validate_hostname, IpCidr};

/// A server reply netd will not use, naming the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ReplyError {
    pub field: &'static str,
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> ReplyError {
    ReplyError {
        field,
        problem: problem.into(),
    }
}

/// An address lease and the configuration that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// yiaddr.
    pub ip: Ipv4Addr,
    /// yiaddr with the subnet mask's prefix (option 1).
    pub address: IpCidr,
    /// Option 54: where renewals and the release go.
    pub server: Ipv4Addr,
    /// Option 51; `None` is an infinite lease (0xffffffff).
    pub lease_time: Option<Duration>,
    /// Options 58 and 59, or RFC 2131's defaults (0.5 and 0.875 of the lease).
    pub t1: Duration,
    pub t2: Duration,
    /// Option 121 if present (RFC 3442: then option 3 is ignored), else a
    /// default route through the first router of option 3.
    pub routes: Vec<(IpCidr, Ipv4Addr)>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 12.
    pub hostname: Option<String>,
    /// Option 119, then option 15 if 119 is absent.
    pub search: Vec<String>,
    /// Option 26.
    pub mtu: Option<u16>,
    /// Option 42 (for timed).
    pub ntp: Vec<Ipv4Addr>,
}

/// RFC 2132 9.3: no MTU below 68.
const MIN_MTU: u16 = 68;
/// 0xffffffff in option 51 means infinity (RFC 2131 3.3).
const INFINITE: u32 = u32::MAX;

impl Lease {
    /// Validates an OFFER or ACK; the caller has checked xid, op and type.
    pub fn from_reply(msg: &Message) -> Result<Lease, ReplyError> {
        let yiaddr = msg.yiaddr();
        if !usable_unicast(yiaddr) {
            return Err(bad(
                "yiaddr",
                format!("{yiaddr} is not a unicast host address"),
            ));
        }
        let opts = msg.opts();
        let prefix = match opts.get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(mask)) => {
                mask_prefix(*mask).map_err(|p| bad("option 1 (subnet mask)", p))?
            }
            // RFC 2131 leaves the mask optional; the classful default is what
            // other clients fall back to.
            _ => crate::settings::classful_prefix(yiaddr),
        };
        let address =
            IpCidr::new(yiaddr.into(), prefix).ok_or_else(|| bad("option 1", "prefix"))?;
        let server = match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) if usable_unicast(*s) => *s,
            Some(DhcpOption::ServerIdentifier(s)) => {
                return Err(bad(
                    "option 54 (server identifier)",
                    format!("{s} is not a unicast address"),
                ))
            }
            _ => return Err(bad("option 54 (server identifier)", "missing")),
        };
        let lease_time = match opts.get(OptionCode::AddressLeaseTime) {
            Some(DhcpOption::AddressLeaseTime(INFINITE)) => None,
            Some(DhcpOption::AddressLeaseTime(0)) => {
                return Err(bad("option 51 (lease time)", "zero seconds"))
            }
            Some(DhcpOption::AddressLeaseTime(t)) => Some(Duration::from_secs(u64::from(*t))),
            _ => return Err(bad("option 51 (lease time)", "missing")),
        };
        let (t1, t2) = timers(
            lease_time,
            opts.get(OptionCode::Renewal),
            opts.get(OptionCode::Rebinding),
        )?;
        let routes = routes(msg)?;
        let dns = match opts.get(OptionCode::DomainNameServer) {
            Some(DhcpOption::DomainNameServer(servers)) => {
                if let Some(s) = servers.iter().find(|s| !usable_unicast(**s)) {
                    return Err(bad(
                        "option 6 (domain name servers)",
                        format!("{s} is not a unicast address"),
                    ));
                }
                servers.clone()
            }
            _ => Vec::new(),
        };
        let ntp = match opts.get(OptionCode::NtpServers) {
            Some(DhcpOption::NtpServers(servers)) => {
                if let Some(s) = servers.iter().find(|s| !usable_unicast(**s)) {
                    return Err(bad(
                        "option 42 (NTP servers)",
                        format!("{s} is not a unicast address"),
                    ));
                }
                servers.clone()
            }
            _ => Vec::new(),
        };
        let hostname = match opts.get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) => {
                validate_hostname(h).map_err(|p| bad("option 12 (host name)", p))?;
                Some(h.clone())
            }
            _ => None,
        };
        let search = search(msg)?;
        let mtu = match opts.get(OptionCode::InterfaceMtu) {
            Some(DhcpOption::InterfaceMtu(m)) if *m < MIN_MTU => {
                return Err(bad(
                    "option 26 (interface MTU)",
                    format!("{m} is below the minimum of {MIN_MTU}"),
                ))
            }
            Some(DhcpOption::InterfaceMtu(m)) => Some(*m),
            _ => None,
        };
        Ok(Lease {
            ip: yiaddr,
            address,
            server,
            lease_time,
            t1,
            t2,
            routes,
            dns,
            hostname,
            search,
            mtu,
            ntp,
        })
    }

    /// The kernel routes for this lease, with the leased address as source.
    pub fn kernel_routes(&self) -> Vec<Route> {
        self.routes
            .iter()
            .map(|(destination, gateway)| Route {
                destination: *destination,
                gateway: (!gateway.is_unspecified()).then_some(IpAddr::V4(*gateway)),
                source: Some(self.address.addr()),
                dhcp: true,
                metric: None,
            })
            .collect()
    }
}

/// Not 0.0.0.0, broadcast, multicast, loopback or class E.
fn usable_unicast(a: Ipv4Addr) -> bool {
    !(a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_loopback()
        || a.octets()[0] >= 240)
}

/// T1 and T2 from options 58/59; RFC 2131 4.4.5's defaults when absent or
/// out of order (T1 < T2 < lease is required for the state machine).
fn timers(
    lease: Option<Duration>,
    t1: Option<&DhcpOption>,
    t2: Option<&DhcpOption>,
) -> Result<(Duration, Duration), ReplyError> {
    let Some(lease) = lease else {
        return Ok((Duration::MAX, Duration::MAX));
    };
    let default_t1 = lease / 2;
    let default_t2 = lease * 7 / 8;
    let t1 = match t1 {
        Some(DhcpOption::Renewal(s)) => Duration::from_secs(u64::from(*s)),
        _ => default_t1,
    };
    let t2 = match t2 {
        Some(DhcpOption::Rebinding(s)) => Duration::from_secs(u64::from(*s)),
        _ => default_t2,
    };
    if t1.is_zero() {
        // T1 = 0 would renew in a loop as fast as the server answers.
        return Err(bad("option 58 (renewal time)", "zero seconds"));
    }
    if t2 >= lease {
        return Err(bad(
            "option 59 (rebinding time)",
            format!(
                "{}s is not before the lease ends ({}s)",
                t2.as_secs(),
                lease.as_secs()
            ),
        ));
    }
    if t1 >= t2 {
        return Err(bad(
            "option 58 (renewal time)",
            format!("{}s is not before T2 ({}s)", t1.as_secs(), t2.as_secs()),
        ));
    }
    Ok((t1, t2))
}

/// Option 121 (classless static routes) wins over option 3 (RFC 3442).
fn routes(msg: &Message) -> Result<Vec<(IpCidr, Ipv4Addr)>, ReplyError> {
    let opts = msg.opts();
    if let Some(DhcpOption::ClasslessStaticRoute(routes)) =
        opts.get(OptionCode::ClasslessStaticRoute)
    {
        let mut out = Vec::with_capacity(routes.len());
        for (net, gw) in routes {
            // The destination's host bits must be zero (RFC 3442's encoding
            // cannot carry them, so a decoder that did is broken).
            if net.network() != net.addr() {
                return Err(bad(
                    "option 121 (classless static routes)",
                    format!("destination {net} has host bits set"),
                ));
            }
            if !gw.is_unspecified() && !usable_unicast(*gw) {
                return Err(bad(
                    "option 121 (classless static routes)",
                    format!("router {gw} for {net} is not a unicast address"),
                ));
            }
            out.push((IpCidr::v4(net.addr(), net.prefix_len()), *gw));
        }
        return Ok(out);
    }
    match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(routers)) => match routers.first() {
            // A router outside the subnet works too: routes are on-link.
            Some(r) if usable_unicast(*r) => Ok(vec![(default_v4(), *r)]),
            Some(r) => Err(bad(
                "option 3 (router)",
                format!("{r} is not a unicast address"),
            )),
            None => Ok(Vec::new()),
        },
        _ => Ok(Vec::new()),
    }
}

fn default_v4() -> IpCidr {
    IpCidr::v4(Ipv4Addr::UNSPECIFIED, 0)
}

/// Option 119 (RFC 3397, RFC 1035 compression) or option 15.
fn search(msg: &Message) -> Result<Vec<String>, ReplyError> {
    let opts = msg.opts();
    if let Some(DhcpOption::DomainSearch(names)) = opts.get(OptionCode::DomainSearch) {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let s = name.to_utf8();
            let s = s.trim_end_matches('.').to_string();
            validate_domain(&s).map_err(|p| bad("option 119 (domain search)", p))?;
            out.push(s);
        }
        return Ok(out);
    }
    match opts.get(OptionCode::DomainName) {
        Some(DhcpOption::DomainName(d)) => {
            let d = d.trim_end_matches(['.', '\0']);
            validate_domain(d).map_err(|p| bad("option 15 (domain name)", p))?;
            Ok(vec![d.to_string()])
        }
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{MessageType, Opcode};
    use dhcproto::{Decodable, Decoder, Encodable};

    fn ack() -> Message {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_yiaddr(Ipv4Addr::new(10, 9, 0, 50));
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(MessageType::Ack));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 9, 0, 1)));
        o.insert(DhcpOption::AddressLeaseTime(3600));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 9, 0, 1)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 9, 0, 53,
        )]));
        m
    }

    fn with(mut m: Message, opt: DhcpOption) -> Message {
        m.opts_mut().insert(opt);
        m
    }

    fn error(m: &Message) -> ReplyError {
        Lease::from_reply(m).unwrap_err()
    }

    #[test]
    fn a_plain_ack() {
        let l = Lease::from_reply(&ack()).unwrap();
        assert_eq!(l.address.to_string(), "10.9.0.50/24");
        assert_eq!(l.server, Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(l.lease_time, Some(Duration::from_secs(3600)));
        assert_eq!(l.t1, Duration::from_secs(1800));
        assert_eq!(l.t2, Duration::from_secs(3150));
        assert_eq!(l.routes, vec![(default_v4(), Ipv4Addr::new(10, 9, 0, 1))]);
        assert_eq!(l.dns, vec![Ipv4Addr::new(10, 9, 0, 53)]);
        assert!(l.ntp.is_empty());
        let r = l.kernel_routes();
        assert_eq!(r[0].source, Some("10.9.0.50".parse().unwrap()));
        assert!(r[0].dhcp);
    }

    #[test]
    fn classless_routes_win_over_routers() {
        let m = with(
            ack(),
            DhcpOption::ClasslessStaticRoute(vec![
                ("0.0.0.0/0".parse().unwrap(), Ipv4Addr::new(10, 9, 0, 254)),
                ("192.168.50.0/24".parse().unwrap(), Ipv4Addr::UNSPECIFIED),
            ]),
        );
        let l = Lease::from_reply(&m).unwrap();
        assert_eq!(l.routes.len(), 2);
        assert_eq!(l.routes[0].1, Ipv4Addr::new(10, 9, 0, 254));
        let r = l.kernel_routes();
        assert_eq!(r[1].gateway, None);
        assert_eq!(r[1].destination.to_string(), "192.168.50.0/24");
    }

    #[test]
    fn timers_from_options_and_infinite_leases() {
        let m = with(
            with(ack(), DhcpOption::Renewal(100)),
            DhcpOption::Rebinding(200),
        );
        let l = Lease::from_reply(&m).unwrap();
        assert_eq!((l.t1.as_secs(), l.t2.as_secs()), (100, 200));
        let l = Lease::from_reply(&with(ack(), DhcpOption::AddressLeaseTime(INFINITE))).unwrap();
        assert_eq!(l.lease_time, None);
    }

    #[test]
    fn search_from_119_with_compression() {
        // RFC 3397's own example: "eng.apple.com." and "marketing.apple.com."
        // with the second pointing into the first.
        let mut raw = vec![119u8, 0];
        let data: &[u8] = b"\x03eng\x05apple\x03com\x00\x09marketing\xc0\x04";
        raw[1] = data.len() as u8;
        raw.extend_from_slice(data);
        let mut m = ack();
        let mut bytes = m.to_vec().unwrap();
        // Put option 119 before the End option.
        let end = bytes.len() - 1;
        assert_eq!(bytes[end], 255);
        bytes.splice(end..end, raw);
        m = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        let l = Lease::from_reply(&m).unwrap();
        assert_eq!(l.search, vec!["eng.apple.com", "marketing.apple.com"]);
    }

    #[test]
    fn ntp_servers_from_option_42() {
        let servers = vec![Ipv4Addr::new(10, 9, 0, 123), Ipv4Addr::new(10, 9, 0, 124)];
        let l = Lease::from_reply(&with(ack(), DhcpOption::NtpServers(servers.clone()))).unwrap();
        assert_eq!(l.ntp, servers);
    }

    #[test]
    fn domain_name_when_no_search_list() {
        let l =
            Lease::from_reply(&with(ack(), DhcpOption::DomainName("lab.example".into()))).unwrap();
        assert_eq!(l.search, vec!["lab.example"]);
    }

    #[test]
    fn malformed_replies_name_the_field() {
        let mut m = ack();
        m.set_yiaddr(Ipv4Addr::UNSPECIFIED);
        assert_eq!(error(&m).field, "yiaddr");
        let mut m = ack();
        m.set_yiaddr(Ipv4Addr::new(224, 0, 0, 1));
        assert_eq!(error(&m).field, "yiaddr");
        let e = error(&with(
            ack(),
            DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)),
        ));
        assert_eq!(e.field, "option 1 (subnet mask)");
        let mut m = ack();
        m.opts_mut().remove(OptionCode::ServerIdentifier);
        assert_eq!(error(&m).field, "option 54 (server identifier)");
        let mut m = ack();
        m.opts_mut().remove(OptionCode::AddressLeaseTime);
        assert_eq!(error(&m).field, "option 51 (lease time)");
        assert_eq!(
            error(&with(ack(), DhcpOption::AddressLeaseTime(0))).field,
            "option 51 (lease time)"
        );
        let e = error(&with(
            with(ack(), DhcpOption::Renewal(3000)),
            DhcpOption::Rebinding(2000),
        ));
        assert_eq!(e.field, "option 58 (renewal time)");
        let e = error(&with(ack(), DhcpOption::Renewal(0)));
        assert_eq!(e.field, "option 58 (renewal time)");
        let e = error(&with(ack(), DhcpOption::Rebinding(4000)));
        assert_eq!(e.field, "option 59 (rebinding time)");
        let e = error(&with(
            ack(),
            DhcpOption::Router(vec![Ipv4Addr::UNSPECIFIED]),
        ));
        assert_eq!(e.field, "option 3 (router)");
        let e = error(&with(
            ack(),
            DhcpOption::DomainNameServer(vec![Ipv4Addr::BROADCAST]),
        ));
        assert_eq!(e.field, "option 6 (domain name servers)");
        let e = error(&with(
            ack(),
            DhcpOption::NtpServers(vec![Ipv4Addr::new(10, 9, 0, 123), Ipv4Addr::LOCALHOST]),
        ));
        assert_eq!(e.field, "option 42 (NTP servers)");
        assert!(e.to_string().contains("127.0.0.1"), "{e}");
        let e = error(&with(ack(), DhcpOption::Hostname("bad host".into())));
        assert_eq!(e.field, "option 12 (host name)");
        let e = error(&with(ack(), DhcpOption::DomainName("a..b".into())));
        assert_eq!(e.field, "option 15 (domain name)");
        let e = error(&with(ack(), DhcpOption::InterfaceMtu(67)));
        assert_eq!(e.field, "option 26 (interface MTU)");
        let e = error(&with(
            ack(),
            DhcpOption::ClasslessStaticRoute(vec![(
                "10.0.0.0/8".parse().unwrap(),
                Ipv4Addr::BROADCAST,
            )]),
        ));
        assert_eq!(e.field, "option 121 (classless static routes)");
        assert!(e.to_string().contains("255.255.255.255"), "{e}");
    }
}
