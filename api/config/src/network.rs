//! Host network types: links selected by name or MAC, addresses, routes,
//! VLANs, bonds and DNS.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Host networking.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    /// Links to configure. A link not listed is left alone (down, unless it
    /// was a "first with carrier" candidate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Resolver settings.
    #[serde(default, skip_serializing_if = "crate::is_default")]
    pub dns: Dns,
}

/// One link: a physical NIC (by `name` or `mac`) or a bond (by `name`, with `bond`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Interface {
    /// Kernel link name (`eth0`, `enp1s0`, `bond0`). Exactly one of `name` and `mac`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Hardware address `aa:bb:cc:dd:ee:ff`. Exactly one of `name` and `mac`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Get an IPv4 address by DHCP (may be combined with static addresses).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp: bool,
    /// Static addresses in CIDR form (`10.0.0.5/24`, `fd00::5/64`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Static routes through this link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// MTU in bytes (68–65535). Unset: the driver's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Makes this link a bond of the listed member links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond: Option<Bond>,
    /// 802.1Q VLANs on this link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<Vlan>,
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// Destination in CIDR form (`0.0.0.0/0` for the default route).
    pub to: String,
    /// Gateway IP, same family as `to`. Unset: on-link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Route metric (lower wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

/// A bond's mode and members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bond {
    /// Bonding mode.
    pub mode: BondMode,
    /// Member links, each a link name or a MAC address. At least one.
    pub members: Vec<String>,
}

/// Supported bonding modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BondMode {
    /// One member carries traffic; another takes over when its link drops.
    #[serde(rename = "active-backup")]
    ActiveBackup,
    /// LACP link aggregation; the switch must be configured to match.
    #[serde(rename = "802.3ad")]
    Lacp,
}

/// An 802.1Q VLAN on its parent link; the link is named `<parent>.<id>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Vlan {
    /// VLAN id, 1–4094, unique per parent link.
    pub id: u16,
    /// Get an IPv4 address by DHCP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp: bool,
    /// Static addresses in CIDR form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Static routes through this VLAN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// MTU in bytes, at most the parent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// Resolver settings. Empty: what DHCP hands out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dns {
    /// Name server IP addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search_domains: Vec<String>,
}
