//! Address arithmetic on a single integer line, so IPv4 and IPv6 ranges are
//! walked by the same code.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a).into(),
        IpAddr::V6(a) => a.into(),
    }
}

/// Inverse of `to_u128`; for IPv4 `n` must fit in 32 bits (callers only
/// pass values inside a validated IPv4 range).
pub fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}
