//! The NTP packet (RFC 5905 figure 8, as SNTP uses it, RFC 4330 section 4)
//! and the checks a server's reply must pass before its timestamps are used.

use std::time::{SystemTime, UNIX_EPOCH};

/// The header; extension fields and MACs after it are ignored.
pub const LEN: usize = 48;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const UNIX_FROM_NTP: i128 = 2_208_988_800;
const NANOS: i128 = 1_000_000_000;
/// RFC 5905's MAXDISP: no root delay or dispersion beyond 16 s is usable.
const MAX_ROOT: u32 = 16 << 16;

/// Mode 3: client; 4: server (RFC 5905 section 7.3).
pub const MODE_CLIENT: u8 = 3;
pub const MODE_SERVER: u8 = 4;
/// Leap indicator 3: the server's clock is not synchronised.
pub const LEAP_UNSYNC: u8 = 3;

/// An NTP timestamp: 32 bits of seconds since 1900 (modulo 2^32: eras wrap)
/// and 32 bits of fraction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn from_system(t: SystemTime) -> Timestamp {
        let unix_ns = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        let ns = unix_ns + UNIX_FROM_NTP * NANOS;
        let secs = ns.div_euclid(NANOS) as u64 & 0xffff_ffff;
        let frac = ((ns.rem_euclid(NANOS) << 32) / NANOS) as u64;
        Timestamp(secs << 32 | frac)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `self - earlier` in nanoseconds. Done on the 64-bit values as RFC
    /// 5905 section 6 does, so the result is right across an era boundary
    /// as long as the two are within 68 years of each other.
    pub fn minus(self, earlier: Timestamp) -> i64 {
        fixed_to_nanos(i128::from(self.0.wrapping_sub(earlier.0) as i64))
    }
}

/// A 32.32 fixed-point number of seconds to nanoseconds (rounded down).
pub(crate) fn fixed_to_nanos(x: i128) -> i64 {
    ((x * NANOS) >> 32) as i64
}

/// RFC 5905's short format (16.16 seconds) to nanoseconds.
fn short_to_nanos(x: u32) -> i64 {
    (i64::from(x) * 1_000_000_000) >> 16
}

/// The field [`Packet::check_reply`] names when a reply does not answer
/// our request (and so may be stray or forged, not the server's word).
pub const ORIGIN: &str = "origin timestamp";

/// A reply that must not be used, naming the field and the problem.
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

/// One NTP packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Packet {
    pub leap: u8,
    pub version: u8,
    pub mode: u8,
    pub stratum: u8,
    pub poll: i8,
    pub precision: i8,
    /// 16.16 seconds.
    pub root_delay: u32,
    pub root_dispersion: u32,
    /// A kiss code when the stratum is 0.
    pub reference_id: [u8; 4],
    pub reference: Timestamp,
    pub origin: Timestamp,
    pub receive: Timestamp,
    pub transmit: Timestamp,
}

impl Packet {
    /// A client request. `cookie` goes in the transmit timestamp: the
    /// server echoes it as the origin, which is all it is for; a random one
    /// (RFC 9109's advice) does not tell the network our clock, and the real
    /// send time stays with us.
    pub fn request(cookie: Timestamp) -> Packet {
        Packet {
            version: 4,
            mode: MODE_CLIENT,
            transmit: cookie,
            ..Packet::default()
        }
    }

    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = (self.leap & 3) << 6 | (self.version & 7) << 3 | (self.mode & 7);
        b[1] = self.stratum;
        b[2] = self.poll as u8;
        b[3] = self.precision as u8;
        b[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        b[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        b[12..16].copy_from_slice(&self.reference_id);
        for (at, t) in [
            (16, self.reference),
            (24, self.origin),
            (32, self.receive),
            (40, self.transmit),
        ] {
            b[at..at + 8].copy_from_slice(&t.0.to_be_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Packet, ReplyError> {
        if b.len() < LEN {
            return Err(bad(
                "length",
                format!("{} bytes, an NTP header has {LEN}", b.len()),
            ));
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let ts_at = |i: usize| Timestamp(u64::from(u32_at(i)) << 32 | u64::from(u32_at(i + 4)));
        Ok(Packet {
            leap: b[0] >> 6,
            version: (b[0] >> 3) & 7,
            mode: b[0] & 7,
            stratum: b[1],
            poll: b[2] as i8,
            precision: b[3] as i8,
            root_delay: u32_at(4),
            root_dispersion: u32_at(8),
            reference_id: [b[12], b[13], b[14], b[15]],
            reference: ts_at(16),
            origin: ts_at(24),
            receive: ts_at(32),
            transmit: ts_at(40),
        })
    }

    /// Checks a server's reply to our request carrying `cookie`, field by
    /// field (RFC 4330 section 5, RFC 5905's packet tests).
    pub fn check_reply(&self, cookie: Timestamp) -> Result<(), ReplyError> {
        // First: a reply that does not echo our cookie is not an answer to
        // us (stale or forged), whatever else it says.
        if self.origin != cookie {
            return Err(bad(
                ORIGIN,
                format!(
                    "{:#018x} does not echo our transmit timestamp {:#018x}",
                    self.origin.0, cookie.0
                ),
            ));
        }
        if !(1..=4).contains(&self.version) {
            return Err(bad("version", format!("{} is not NTP 1-4", self.version)));
        }
        if self.mode != MODE_SERVER {
            return Err(bad(
                "mode",
                format!("{} is not {MODE_SERVER} (server)", self.mode),
            ));
        }
        if self.stratum == 0 {
            return Err(bad(
                "stratum",
                format!("0: kiss-o'-death {}", self.kiss_code()),
            ));
        }
        if self.stratum >= 16 {
            return Err(bad(
                "stratum",
                format!("{}: the server is not synchronised", self.stratum),
            ));
        }
        if self.leap == LEAP_UNSYNC {
            return Err(bad(
                "leap indicator",
                "3: the server's clock is not synchronised",
            ));
        }
        if self.transmit.is_zero() {
            return Err(bad("transmit timestamp", "zero"));
        }
        if self.receive.is_zero() {
            return Err(bad("receive timestamp", "zero"));
        }
        if self.transmit.minus(self.receive) < 0 {
            return Err(bad(
                "transmit timestamp",
                "before the server's receive timestamp",
            ));
        }
        if self.transmit.minus(self.reference) < 0 {
            return Err(bad(
                "reference timestamp",
                "after the server's transmit timestamp",
            ));
        }
        if self.root_delay > MAX_ROOT {
            return Err(bad(
                "root delay",
                format!("{} s is over 16 s", self.root_delay >> 16),
            ));
        }
        if self.root_dispersion > MAX_ROOT {
            return Err(bad(
                "root dispersion",
                format!("{} s is over 16 s", self.root_dispersion >> 16),
            ));
        }
        Ok(())
    }

    /// The kiss code of a stratum-0 reply (RFC 5905 section 7.4), printable.
    pub fn kiss_code(&self) -> String {
        self.reference_id
            .iter()
            .map(|&c| {
                if c.is_ascii_graphic() {
                    char::from(c)
                } else {
                    '?'
                }
            })
            .collect()
    }

    /// Root delay / 2 + root dispersion: how far the server may be from
    /// true time, in nanoseconds.
    pub fn root_distance(&self) -> i64 {
        short_to_nanos(self.root_delay) / 2 + short_to_nanos(self.root_dispersion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const COOKIE: Timestamp = Timestamp(0x1234_5678_9abc_def0);

    /// What a good server answers.
    fn reply() -> Packet {
        let now = Timestamp::from_system(SystemTime::now());
        Packet {
            version: 4,
            mode: MODE_SERVER,
            stratum: 2,
            root_delay: 1 << 12,
            root_dispersion: 1 << 12,
            reference_id: *b"GPS\0",
            reference: now,
            origin: COOKIE,
            receive: now,
            transmit: now,
            ..Packet::default()
        }
    }

    #[test]
    fn timestamps_from_system_time() {
        assert_eq!(Timestamp::from_system(UNIX_EPOCH).0, 2_208_988_800u64 << 32);
        let half = UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(
            Timestamp::from_system(half).0,
            (2_208_988_801u64 << 32) | 0x8000_0000
        );
        // Before 1970 (a dead RTC) still converts.
        let before = UNIX_EPOCH - Duration::from_secs(86400);
        assert_eq!(
            Timestamp::from_system(before).0,
            (2_208_988_800u64 - 86400) << 32
        );
        // 2036-02-07T06:28:16Z starts era 1: seconds wrap to 0.
        let era1 = UNIX_EPOCH + Duration::from_secs(2_085_978_496);
        assert_eq!(Timestamp::from_system(era1).0, 0);
    }

    #[test]
    fn differences_are_signed_and_cross_eras() {
        let a = Timestamp::from_system(UNIX_EPOCH + Duration::from_secs(100));
        let b = Timestamp::from_system(UNIX_EPOCH + Duration::from_millis(99_750));
        assert_eq!(a.minus(b), 250_000_000);
        assert_eq!(b.minus(a), -250_000_000);
        let before = Timestamp::from_system(UNIX_EPOCH + Duration::from_secs(2_085_978_495));
        let after = Timestamp::from_system(UNIX_EPOCH + Duration::from_secs(2_085_978_497));
        assert_eq!(after.minus(before), 2_000_000_000);
        // 20 years apart, as between a dead RTC and the server.
        let y2005 = Timestamp::from_system(UNIX_EPOCH + Duration::from_secs(1_104_537_600));
        let y2025 = Timestamp::from_system(UNIX_EPOCH + Duration::from_secs(1_735_689_600));
        assert_eq!(y2025.minus(y2005), 631_152_000 * 1_000_000_000);
    }

    #[test]
    fn encode_decode_roundtrip_and_wire_layout() {
        let p = Packet {
            leap: 1,
            poll: 6,
            precision: -20,
            ..reply()
        };
        let b = p.encode();
        // LI 1, VN 4, mode 4.
        assert_eq!(b[0], 0b01_100_100);
        assert_eq!(b[1], 2);
        assert_eq!(b[3], (-20i8) as u8);
        assert_eq!(&b[12..16], b"GPS\0");
        assert_eq!(&b[24..32], &COOKIE.0.to_be_bytes());
        assert_eq!(Packet::decode(&b).unwrap(), p);
        // Extension fields after the header are ignored.
        let mut long = b.to_vec();
        long.extend_from_slice(&[0; 20]);
        assert_eq!(Packet::decode(&long).unwrap(), p);
    }

    #[test]
    fn a_request_is_a_v4_client_packet_carrying_only_the_cookie() {
        let b = Packet::request(COOKIE).encode();
        assert_eq!(b[0], 0b00_100_011);
        assert!(b[1..40].iter().all(|&x| x == 0));
        assert_eq!(&b[40..48], &COOKIE.0.to_be_bytes());
    }

    #[test]
    fn a_good_reply_passes() {
        reply().check_reply(COOKIE).unwrap();
        assert_eq!(reply().root_distance(), 62_500_000 / 2 + 62_500_000);
    }

    #[test]
    fn bad_replies_name_the_field() {
        let field = |p: Packet| p.check_reply(COOKIE).unwrap_err().field;
        assert_eq!(
            Packet::decode(&[0; 47]).unwrap_err().to_string(),
            "length: 47 bytes, an NTP header has 48"
        );
        assert_eq!(
            field(Packet {
                version: 0,
                ..reply()
            }),
            "version"
        );
        assert_eq!(
            field(Packet {
                mode: MODE_CLIENT,
                ..reply()
            }),
            "mode"
        );
        assert_eq!(
            field(Packet {
                origin: Timestamp(1),
                ..reply()
            }),
            "origin timestamp"
        );
        let kod = Packet {
            stratum: 0,
            reference_id: *b"RATE",
            ..reply()
        };
        assert_eq!(
            kod.check_reply(COOKIE).unwrap_err().to_string(),
            "stratum: 0: kiss-o'-death RATE"
        );
        assert_eq!(
            field(Packet {
                stratum: 16,
                ..reply()
            }),
            "stratum"
        );
        assert_eq!(field(Packet { leap: 3, ..reply() }), "leap indicator");
        assert_eq!(
            field(Packet {
                transmit: Timestamp(0),
                ..reply()
            }),
            "transmit timestamp"
        );
        assert_eq!(
            field(Packet {
                receive: Timestamp(0),
                ..reply()
            }),
            "receive timestamp"
        );
        let r = reply();
        assert_eq!(
            field(Packet {
                receive: Timestamp(r.transmit.0 + (1 << 32)),
                ..r
            }),
            "transmit timestamp"
        );
        assert_eq!(
            field(Packet {
                reference: Timestamp(r.transmit.0 + (1 << 32)),
                ..r
            }),
            "reference timestamp"
        );
        assert_eq!(
            field(Packet {
                root_delay: 17 << 16,
                ..reply()
            }),
            "root delay"
        );
        assert_eq!(
            field(Packet {
                root_dispersion: 17 << 16,
                ..reply()
            }),
            "root dispersion"
        );
        // A kiss code that is not text is shown safely.
        let kod = Packet {
            stratum: 0,
            reference_id: [b'X', 0, 0xff, b'\n'],
            ..reply()
        };
        assert_eq!(kod.kiss_code(), "X???");
    }
}
