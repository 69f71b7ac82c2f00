//! host-local IPAM configuration: parsed, defaulted and validated once, so
//! the allocator can rely on every range being well formed.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use super::addr::{from_u128, to_u128};
use crate::error::{Error, Result};
use crate::result::Route;

/// Where the reference plugin keeps its store; Kiln uses the same default.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    ranges: Vec<Vec<RawRange>>,
    /// The older single-range form: `subnet`, `rangeStart`, `rangeEnd`, `gateway`.
    #[serde(flatten)]
    single: RawRangeOpt,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    subnet: String,
    range_start: Option<IpAddr>,
    range_end: Option<IpAddr>,
    gateway: Option<IpAddr>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRangeOpt {
    subnet: Option<String>,
    range_start: Option<IpAddr>,
    range_end: Option<IpAddr>,
    gateway: Option<IpAddr>,
}

/// One validated range: `start..=end` lies inside `subnet` and excludes its
/// network address (and the IPv4 broadcast address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

impl Range {
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4()
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.start.is_ipv4() == other.start.is_ipv4()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }
}

/// One `ranges` entry: the plugin allocates one address from each set.
pub type RangeSet = Vec<Range>;

#[derive(Debug, Clone)]
pub struct IpamConfig {
    pub kind: String,
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    /// `<dataDir>/<network name>`: this network's store.
    pub store_dir: PathBuf,
}

impl IpamConfig {
    /// Parses the `ipam` object of network `name`.
    pub fn parse(name: &str, ipam: &serde_json::Value) -> Result<Self> {
        let raw: Raw = serde_json::from_value(ipam.clone())
            .map_err(|e| Error::config("ipam", e.to_string()))?;
        let mut raw_sets = raw.ranges;
        if let Some(subnet) = raw.single.subnet {
            raw_sets.insert(
                0,
                vec![RawRange {
                    subnet,
                    range_start: raw.single.range_start,
                    range_end: raw.single.range_end,
                    gateway: raw.single.gateway,
                }],
            );
        }
        if raw_sets.is_empty() {
            return Err(Error::config("ipam.ranges", "no IP ranges specified"));
        }
        let mut range_sets = Vec::new();
        for (i, set) in raw_sets.into_iter().enumerate() {
            if set.is_empty() {
                return Err(Error::config(
                    format!("ipam.ranges[{i}]"),
                    "empty range set",
                ));
            }
            let mut ranges: Vec<Range> = Vec::new();
            for (j, r) in set.into_iter().enumerate() {
                let r = canonical(&format!("ipam.ranges[{i}][{j}]"), r)?;
                if let Some(first) = ranges.first() {
                    if first.start.is_ipv4() != r.start.is_ipv4() {
                        return Err(Error::config(
                            format!("ipam.ranges[{i}][{j}]"),
                            "mixes IPv4 and IPv6 in one range set",
                        ));
                    }
                }
                ranges.push(r);
            }
            range_sets.push(ranges);
        }
        for (i, a) in range_sets.iter().flatten().enumerate() {
            for b in range_sets.iter().flatten().skip(i + 1) {
                if a.overlaps(b) {
                    return Err(Error::config(
                        "ipam.ranges",
                        format!("range {} overlaps range {}", a.subnet, b.subnet),
                    ));
                }
            }
        }
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::config(
                "name",
                format!("{name:?} is not a usable network name"),
            ));
        }
        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        Ok(IpamConfig {
            kind: raw.kind,
            range_sets,
            routes: raw.routes,
            store_dir: data_dir.join(name),
        })
    }
}

fn canonical(field: &str, r: RawRange) -> Result<Range> {
    let subnet: IpNet = r.subnet.parse().map_err(|_| {
        Error::config(
            format!("{field}.subnet"),
            format!("{:?} is not a CIDR", r.subnet),
        )
    })?;
    if subnet.addr() != subnet.network() {
        return Err(Error::config(
            format!("{field}.subnet"),
            format!("{subnet} has host bits set"),
        ));
    }
    let bits = if subnet.addr().is_ipv4() { 32 } else { 128 };
    if subnet.prefix_len() > bits - 2 {
        return Err(Error::config(
            format!("{field}.subnet"),
            format!("{subnet} is too small to allocate from"),
        ));
    }
    let net = to_u128(subnet.network());
    let last = to_u128(subnet.broadcast());
    let v4 = subnet.addr().is_ipv4();
    let in_subnet = |name: &str, ip: IpAddr| -> Result<u128> {
        if ip.is_ipv4() != v4 || !subnet.contains(&ip) {
            return Err(Error::config(
                format!("{field}.{name}"),
                format!("{ip} is not in subnet {subnet}"),
            ));
        }
        Ok(to_u128(ip))
    };
    let start = match r.range_start {
        Some(ip) => in_subnet("rangeStart", ip)?.max(net + 1),
        None => net + 1,
    };
    // IPv4 keeps its broadcast address out of the range; IPv6 has none.
    let max_end = if v4 { last - 1 } else { last };
    let end = match r.range_end {
        Some(ip) => in_subnet("rangeEnd", ip)?.min(max_end),
        None => max_end,
    };
    if start > end {
        return Err(Error::config(
            format!("{field}.rangeStart"),
            "rangeStart is after rangeEnd",
        ));
    }
    let gateway = match r.gateway {
        Some(ip) => Some(from_u128(in_subnet("gateway", ip)?, v4)),
        None => Some(from_u128(net + 1, v4)),
    };
    Ok(Range {
        subnet,
        start: from_u128(start, v4),
        end: from_u128(end, v4),
        gateway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_legacy_form() {
        let c = IpamConfig::parse(
            "net",
            &json!({"type": "kiln-host-local", "subnet": "10.1.2.0/24", "dataDir": "/tmp/x"}),
        )
        .unwrap();
        let r = &c.range_sets[0][0];
        assert_eq!(r.start.to_string(), "10.1.2.1");
        assert_eq!(r.end.to_string(), "10.1.2.254");
        assert_eq!(r.gateway.unwrap().to_string(), "10.1.2.1");
        assert_eq!(c.store_dir, PathBuf::from("/tmp/x/net"));
        let c = IpamConfig::parse(
            "net",
            &json!({"type": "kiln-host-local", "ranges": [[{"subnet": "fd00::/120"}]]}),
        )
        .unwrap();
        assert_eq!(c.range_sets[0][0].end.to_string(), "fd00::ff");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({"type": "x"}), "ipam.ranges"),
            (
                json!({"type": "x", "ranges": [[{"subnet": "10.0.0.1/24"}]]}),
                "ipam.ranges[0][0].subnet",
            ),
            (
                json!({"type": "x", "ranges": [[{"subnet": "nope"}]]}),
                "ipam.ranges[0][0].subnet",
            ),
            (
                json!({"type": "x", "ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.9.0.1"}]]}),
                "ipam.ranges[0][0].gateway",
            ),
            (
                json!({"type": "x", "ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.3"}]]}),
                "ipam.ranges[0][0].rangeStart",
            ),
            (
                json!({"type": "x", "ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]]}),
                "overlaps",
            ),
            (
                json!({"type": "x", "ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}),
                "mixes",
            ),
        ];
        for (cfg, want) in cases {
            let e = IpamConfig::parse("n", &cfg).unwrap_err();
            assert_eq!(e.code(), 7);
            assert!(e.to_string().contains(want), "{e} lacks {want}");
        }
    }
}
