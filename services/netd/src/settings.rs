//! netd's own settings: which links to configure and what each gets.
//!
//! They come from the stored machine config's `network` section
//! (`from_config.rs`), or, before any config exists, from `ip=` on the kernel
//! command line (`Documentation/admin-guide/nfs/nfsroot.rst`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// Everything netd configures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub links: Vec<LinkSettings>,
    /// Static DNS servers and search domains, listed before DHCP's.
    pub dns: Dns,
    /// Hostname from the machine config or `ip=`; it wins over DHCP option
    /// 12. With neither, the identity phase's `kiln-<id>` stays unless a
    /// lease names one.
    pub hostname: Option<String>,
    /// NTP servers from `ip=` (for timed).
    pub ntp_servers: Vec<Ipv4Addr>,
}

/// One link and what it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    pub select: LinkSelector,
    pub dhcp4: bool,
    pub addresses: Vec<IpCidr>,
    pub routes: Vec<RouteSettings>,
    /// Wins over the MTU a DHCP server offers.
    pub mtu: Option<u32>,
}

impl LinkSettings {
    /// A link with nothing configured yet.
    pub fn new(select: LinkSelector) -> Self {
        Self {
            select,
            dhcp4: false,
            addresses: Vec::new(),
            routes: Vec::new(),
            mtu: None,
        }
    }
}

/// How a link is found (or made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkSelector {
    Name(String),
    Mac(MacAddr),
    /// The lowest-indexed Ethernet link (no virtual kind but veth) that has
    /// carrier and is not selected otherwise.
    FirstWithCarrier,
    /// An 802.1Q link with `id` on top of the `parent` link, created by
    /// netd, named `name` or else `<parent's name>.<id>` (see [`vlan_name`]).
    Vlan {
        parent: Box<LinkSelector>,
        id: u16,
        name: Option<String>,
    },
    /// A bond `name` netd creates, with the links `members` select enslaved
    /// as they appear.
    Bond {
        name: String,
        mode: BondMode,
        members: Vec<LinkSelector>,
    },
}

/// The bonding modes netd sets up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BondMode {
    ActiveBackup,
    /// 802.3ad (LACP).
    Lacp,
}

impl fmt::Display for BondMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ActiveBackup => "active-backup",
            Self::Lacp => "802.3ad",
        })
    }
}

/// Kernel link names are at most 15 bytes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// `<parent>.<id>`, the parent's name cut so the whole fits in a link name.
pub fn vlan_name(parent: &str, id: u16) -> String {
    let suffix = format!(".{id}");
    let mut keep = IFNAME_MAX.saturating_sub(suffix.len()).min(parent.len());
    while !parent.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &parent[..keep])
}

impl fmt::Display for LinkSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => write!(f, "name {n}"),
            Self::Mac(m) => write!(f, "mac {m}"),
            Self::FirstWithCarrier => f.write_str("first with carrier"),
            Self::Vlan {
                parent,
                id,
                name: Some(name),
            } => write!(f, "vlan {name} (id {id} on {parent})"),
            Self::Vlan {
                parent,
                id,
                name: None,
            } => write!(f, "vlan {id} on {parent}"),
            Self::Bond {
                name,
                mode,
                members,
            } => {
                write!(f, "bond {name} ({mode} of ")?;
                for (i, m) in members.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{m}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts.next().ok_or("fewer than 6 bytes")?;
            if part.len() != 2 {
                return Err(format!("byte {part:?} is not two hex digits"));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| format!("{part:?} is not hex"))?;
        }
        if parts.next().is_some() {
            return Err("more than 6 bytes".into());
        }
        Ok(MacAddr(mac))
    }
}

/// An address with its prefix length (`10.0.0.2/24`, `fd00::2/64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpCidr {
    addr: IpAddr,
    prefix: u8,
}

impl IpCidr {
    /// `None` if `prefix` is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// An IPv4 network; prefixes above 32 are taken as 32.
    pub fn v4(addr: Ipv4Addr, prefix: u8) -> Self {
        Self {
            addr: addr.into(),
            prefix: prefix.min(32),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// 0.0.0.0/0 or ::/0.
    pub fn is_default(&self) -> bool {
        self.prefix == 0
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpCidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').ok_or("no /prefix")?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("prefix {prefix:?} is not a number"))?;
        IpCidr::new(addr, prefix).ok_or_else(|| format!("prefix /{prefix} is too long"))
    }
}

/// A static route; no gateway means on-link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSettings {
    pub destination: IpCidr,
    pub gateway: Option<IpAddr>,
    /// Lower wins; `None` is the kernel's default (0).
    pub metric: Option<u32>,
}

/// Name servers and search domains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub servers: Vec<IpAddr>,
    pub search: Vec<String>,
}

/// A command line `ip=` that cannot be used, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ip={value}: {field}: {problem}")]
pub struct SettingsError {
    pub value: String,
    pub field: &'static str,
    pub problem: String,
}

/// The fields of `ip=`, in order.
const FIELDS: [&str; 10] = [
    "client-ip",
    "server-ip",
    "gw-ip",
    "netmask",
    "hostname",
    "device",
    "autoconf",
    "dns0-ip",
    "dns1-ip",
    "ntp0-ip",
];

impl Settings {
    /// Settings from every `ip=` on a kernel command line (one link each, as
    /// dracut allows); no `ip=` at all means DHCP on the first link with
    /// carrier, which is what a node without config needs.
    pub fn from_cmdline(cmdline: &str) -> Result<Settings, SettingsError> {
        let mut settings = Settings::default();
        let mut any = false;
        for value in cmdline
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("ip="))
        {
            any = true;
            settings.add_ip_param(value)?;
        }
        if !any {
            let mut link = LinkSettings::new(LinkSelector::FirstWithCarrier);
            link.dhcp4 = true;
            settings.links.push(link);
        }
        Ok(settings)
    }

    /// Adds one `ip=` value.
    fn add_ip_param(&mut self, value: &str) -> Result<(), SettingsError> {
        let err = |field: &'static str, problem: String| SettingsError {
            value: value.to_string(),
            field,
            problem,
        };
        // `ip=dhcp` and friends: the whole value is the autoconf field.
        if !value.contains(':') {
            if autoconf(value).map_err(|p| err("autoconf", p))? {
                let mut link = LinkSettings::new(LinkSelector::FirstWithCarrier);
                link.dhcp4 = true;
                self.links.push(link);
            }
            return Ok(());
        }
        let fields: Vec<&str> = value.split(':').collect();
        if fields.len() > FIELDS.len() {
            return Err(err(
                "ntp0-ip",
                format!("{} fields, at most {} allowed", fields.len(), FIELDS.len()),
            ));
        }
        let get = |i: usize| fields.get(i).copied().unwrap_or("");
        let ipv4 = |i: usize| -> Result<Option<Ipv4Addr>, SettingsError> {
            match get(i) {
                "" => Ok(None),
                s => s
                    .parse()
                    .map(Some)
                    .map_err(|_| err(FIELDS[i], format!("{s:?} is not an IPv4 address"))),
            }
        };
        let client = ipv4(0)?;
        ipv4(1)?; // server-ip only matters to NFS root, but must be valid
        let gateway = ipv4(2)?;
        let prefix = match ipv4(3)? {
            Some(mask) => Some(mask_prefix(mask).map_err(|p| err("netmask", p))?),
            None => None,
        };
        let hostname = match get(4) {
            "" => None,
            h => Some(
                validate_hostname(h)
                    .map(|()| h.to_string())
                    .map_err(|p| err("hostname", p))?,
            ),
        };
        let select = match get(5) {
            "" => LinkSelector::FirstWithCarrier,
            d => LinkSelector::Name(
                validate_ifname(d)
                    .map(|()| d.to_string())
                    .map_err(|p| err("device", p))?,
            ),
        };
        // An empty autoconf means "any" in the kernel, but a given client
        // address is used as is (the kernel skips autoconfiguration then).
        let dhcp = match get(6) {
            "" => client.is_none(),
            a => autoconf(a).map_err(|p| err("autoconf", p))?,
        };
        let mut link = LinkSettings::new(select);
        link.dhcp4 = dhcp;
        if !dhcp {
            let client = client
                .ok_or_else(|| err("client-ip", "required when autoconf is off".to_string()))?;
            let prefix = prefix.unwrap_or_else(|| classful_prefix(client));
            link.addresses.push(IpCidr {
                addr: client.into(),
                prefix,
            });
            if let Some(gw) = gateway {
                link.routes.push(RouteSettings {
                    destination: IpCidr {
                        addr: Ipv4Addr::UNSPECIFIED.into(),
                        prefix: 0,
                    },
                    gateway: Some(gw.into()),
                    metric: None,
                });
            }
        }
        for i in [7, 8] {
            if let Some(dns) = ipv4(i)? {
                self.dns.servers.push(dns.into());
            }
        }
        if let Some(ntp) = ipv4(9)? {
            self.ntp_servers.push(ntp);
        }
        if hostname.is_some() {
            self.hostname = hostname;
        }
        self.links.push(link);
        Ok(())
    }
}

/// Whether an autoconf value asks for DHCP; BOOTP and RARP are refused.
fn autoconf(value: &str) -> Result<bool, String> {
    match value {
        "off" | "none" => Ok(false),
        "on" | "any" | "dhcp" => Ok(true),
        "bootp" | "rarp" | "both" => Err(format!("{value:?} is not supported, only dhcp")),
        _ => Err(format!("{value:?} is not one of off, none, on, any, dhcp")),
    }
}

/// The prefix length of a contiguous netmask.
pub(crate) fn mask_prefix(mask: Ipv4Addr) -> Result<u8, String> {
    let bits = u32::from(mask);
    let prefix = bits.leading_ones();
    if bits.checked_shl(prefix).unwrap_or(0) != 0 {
        return Err(format!("{mask} is not a contiguous mask"));
    }
    if prefix == 0 {
        return Err(format!("{mask} leaves no network"));
    }
    Ok(prefix as u8)
}

/// The pre-CIDR default the kernel uses when `ip=` gives no netmask.
pub(crate) fn classful_prefix(addr: Ipv4Addr) -> u8 {
    match addr.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// A kernel interface name: 1 to 15 bytes, no `/`, `:` or whitespace.
pub(crate) fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{name:?} must be 1 to 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    match name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace())
    {
        Some(c) => Err(format!("{name:?} contains {c:?}")),
        None => Ok(()),
    }
}

/// A host name (RFC 1123 labels, at most 64 bytes as the kernel allows).
pub(crate) fn validate_hostname(name: &str) -> Result<(), String> {
    if name.len() > 64 {
        return Err(format!("{name:?} is longer than 64 bytes"));
    }
    validate_domain(name)
}

/// A DNS name: dot-separated labels of 1 to 63 letters, digits, `-` or `_`,
/// at most 253 bytes; one trailing dot allowed.
pub(crate) fn validate_domain(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() || bare.len() > 253 {
        return Err(format!("{name:?} must be 1 to 253 bytes"));
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} has a label of {} bytes", label.len()));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("{name:?}: label {label:?} starts or ends with -"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("{name:?} contains {c:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> IpCidr {
        s.parse().unwrap()
    }

    #[test]
    fn no_ip_means_dhcp_on_first_link_with_carrier() {
        let s = Settings::from_cmdline("console=ttyS0 quiet").unwrap();
        assert_eq!(s.links.len(), 1);
        assert_eq!(s.links[0].select, LinkSelector::FirstWithCarrier);
        assert!(s.links[0].dhcp4);
    }

    #[test]
    fn ip_dhcp_and_off() {
        for v in ["dhcp", "on", "any"] {
            let s = Settings::from_cmdline(&format!("ip={v}")).unwrap();
            assert!(s.links[0].dhcp4, "{v}");
        }
        for v in ["off", "none"] {
            let s = Settings::from_cmdline(&format!("ip={v}")).unwrap();
            assert!(s.links.is_empty(), "{v}");
        }
    }

    #[test]
    fn full_static_form() {
        let s = Settings::from_cmdline(
            "root=/dev/nfs ip=10.1.2.3:10.1.2.1:10.1.2.254:255.255.255.0:node1:eth1:off:10.1.2.53:10.1.2.54:10.1.2.123 quiet",
        )
        .unwrap();
        let link = &s.links[0];
        assert_eq!(link.select, LinkSelector::Name("eth1".into()));
        assert!(!link.dhcp4);
        assert_eq!(link.addresses, vec![cidr("10.1.2.3/24")]);
        assert_eq!(
            link.routes,
            vec![RouteSettings {
                destination: cidr("0.0.0.0/0"),
                gateway: Some("10.1.2.254".parse().unwrap()),
                metric: None,
            }]
        );
        assert_eq!(
            s.dns.servers,
            vec![
                "10.1.2.53".parse::<IpAddr>().unwrap(),
                "10.1.2.54".parse().unwrap()
            ]
        );
        assert_eq!(s.hostname.as_deref(), Some("node1"));
        assert_eq!(s.ntp_servers, vec![Ipv4Addr::new(10, 1, 2, 123)]);
    }

    #[test]
    fn short_forms_and_defaults() {
        // No netmask: the classful default, as the kernel does.
        let s = Settings::from_cmdline("ip=172.16.0.9::::::off").unwrap();
        assert_eq!(s.links[0].addresses, vec![cidr("172.16.0.9/16")]);
        assert!(s.links[0].routes.is_empty());
        // A client address with autoconf left empty is static.
        let s = Settings::from_cmdline("ip=192.168.7.2:::255.255.255.128").unwrap();
        assert!(!s.links[0].dhcp4);
        assert_eq!(s.links[0].addresses, vec![cidr("192.168.7.2/25")]);
        // Device with DHCP.
        let s = Settings::from_cmdline("ip=:::::eth0:dhcp").unwrap();
        assert_eq!(s.links[0].select, LinkSelector::Name("eth0".into()));
        assert!(s.links[0].dhcp4);
        assert!(s.links[0].addresses.is_empty());
        // Two ip= make two links.
        let s =
            Settings::from_cmdline("ip=:::::eth0:dhcp ip=10.0.0.2:::255.0.0.0::eth1:none").unwrap();
        assert_eq!(s.links.len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("ip=10.0.0.300::::::off", "client-ip"),
            ("ip=10.0.0.3:x:::::off", "server-ip"),
            ("ip=10.0.0.3::gw::::off", "gw-ip"),
            ("ip=10.0.0.3:::255.0.255.0:::off", "netmask"),
            ("ip=10.0.0.3:::0.0.0.0:::off", "netmask"),
            ("ip=10.0.0.3::::bad_host!:::off", "hostname"),
            ("ip=10.0.0.3:::::a/b:off", "device"),
            ("ip=10.0.0.3:::::averyverylongname:off", "device"),
            ("ip=10.0.0.3::::::bootp", "autoconf"),
            ("ip=10.0.0.3::::::maybe", "autoconf"),
            ("ip=rarp", "autoconf"),
            ("ip=:::::eth0:off", "client-ip"),
            ("ip=10.0.0.3::::::off:1.2.3", "dns0-ip"),
            ("ip=10.0.0.3::::::off::1.2.3.4.5", "dns1-ip"),
            ("ip=10.0.0.3::::::off:::nope", "ntp0-ip"),
            ("ip=10.0.0.3::::::off::::extra", "ntp0-ip"),
        ];
        for (line, field) in cases {
            let e = Settings::from_cmdline(line).unwrap_err();
            assert_eq!(e.field, field, "{line}: {e}");
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[test]
    fn masks_cidrs_and_macs() {
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 255)), Ok(32));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 240, 0)), Ok(20));
        assert!(mask_prefix(Ipv4Addr::new(255, 0, 0, 255)).is_err());
        assert!(cidr("10.0.0.0/8").contains("10.200.1.1".parse().unwrap()));
        assert!(!cidr("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(cidr("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert!(cidr("fd00::/64").contains("fd00::1".parse().unwrap()));
        assert!(!cidr("fd00::/64").contains("10.0.0.1".parse().unwrap()));
        assert!("10.0.0.1/33".parse::<IpCidr>().is_err());
        assert!("fd00::1/129".parse::<IpCidr>().is_err());
        assert!("10.0.0.1".parse::<IpCidr>().is_err());
        let mac: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        assert!("52:54:00:ab:cd".parse::<MacAddr>().is_err());
        assert!("52:54:00:ab:cd:0f:00".parse::<MacAddr>().is_err());
        assert!("52:54:00:ab:cd:g0".parse::<MacAddr>().is_err());
    }

    #[test]
    fn domains() {
        assert!(validate_domain("example.com").is_ok());
        assert!(validate_domain("example.com.").is_ok());
        assert!(validate_domain("").is_err());
        assert!(validate_domain("a..b").is_err());
        assert!(validate_domain("-a.b").is_err());
        assert!(validate_domain("a b").is_err());
        assert!(validate_domain(&"a".repeat(64)).is_err());
    }
}
