//! One exchange's offset and delay (RFC 5905 section 8, RFC 4330 section
//! 5), and the choice among several.

use crate::packet::{ReplyError, Timestamp};

/// What one request/reply exchange says about our clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// How far our clock is behind the server's (add it to correct ours),
    /// nanoseconds.
    pub offset_ns: i64,
    /// Round trip minus the server's processing time, nanoseconds.
    pub delay_ns: i64,
}

impl Sample {
    /// From T1 (our send time), T2 (server receive), T3 (server transmit)
    /// and T4 (our receive time):
    ///
    /// offset = ((T2 − T1) + (T3 − T4)) / 2, delay = (T4 − T1) − (T3 − T2).
    ///
    /// Computed in 32.32 fixed point on the timestamps' differences, as the
    /// RFC does, so years between our clock and the server's lose nothing.
    pub fn new(
        t1: Timestamp,
        t2: Timestamp,
        t3: Timestamp,
        t4: Timestamp,
    ) -> Result<Sample, ReplyError> {
        let diff = |a: Timestamp, b: Timestamp| i128::from(a.0.wrapping_sub(b.0) as i64);
        let offset = (diff(t2, t1) + diff(t3, t4)) / 2;
        let delay = diff(t4, t1) - diff(t3, t2);
        if delay < 0 {
            // The server claims to have held our request longer than the
            // whole round trip took: its timestamps are wrong.
            return Err(ReplyError {
                field: "transmit timestamp",
                problem: "the server's hold time exceeds the round trip".into(),
            });
        }
        Ok(Sample {
            offset_ns: crate::packet::fixed_to_nanos(offset),
            delay_ns: crate::packet::fixed_to_nanos(delay),
        })
    }
}

/// The sample with the lowest delay: the one least disturbed by queueing,
/// so the best estimate of the offset (NTP's clock filter picks it too).
pub fn best(samples: &[Sample]) -> Option<Sample> {
    samples.iter().min_by_key(|s| s.delay_ns).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// Equal to the nanosecond: fixed point rounds each timestamp down.
    fn close(a: i64, b: i64) -> bool {
        (a - b).abs() <= 1
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_system(
            UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms),
        )
    }

    #[test]
    fn rfc_5905_offset_and_delay() {
        // Server 500 ms ahead, 10 ms each way, 2 ms processing:
        // T1 = 0, T2 = 510, T3 = 512, T4 = 22 (our clock).
        let s = Sample::new(at(0), at(510), at(512), at(22)).unwrap();
        assert!(close(s.offset_ns, 500_000_000), "{s:?}");
        assert!(close(s.delay_ns, 20_000_000), "{s:?}");
        // Server behind us by 300 ms, asymmetric path: 4 ms out, 6 ms back.
        // T2 = 4 − 300, T3 = T2 + 1, T4 = 11.
        let s = Sample::new(at(1000), at(704), at(705), at(1011)).unwrap();
        assert!(close(s.offset_ns, -301_000_000), "{s:?}");
        assert!(close(s.delay_ns, 10_000_000), "{s:?}");
    }

    #[test]
    fn years_of_offset() {
        // Our clock in 2005, the server's in 2025.
        let ours = UNIX_EPOCH + Duration::from_secs(1_104_537_600);
        let theirs = UNIX_EPOCH + Duration::from_secs(1_735_689_600);
        let ts = |t: SystemTime, ms: u64| Timestamp::from_system(t + Duration::from_millis(ms));
        let s = Sample::new(ts(ours, 0), ts(theirs, 5), ts(theirs, 6), ts(ours, 11)).unwrap();
        assert!(close(s.offset_ns, 631_152_000_000_000_000), "{s:?}");
        assert!(close(s.delay_ns, 10_000_000), "{s:?}");
    }

    #[test]
    fn a_hold_time_longer_than_the_round_trip_is_refused() {
        let e = Sample::new(at(0), at(100), at(200), at(50)).unwrap_err();
        assert_eq!(e.field, "transmit timestamp");
    }

    #[test]
    fn the_lowest_delay_wins() {
        let s = |offset_ns, delay_ns| Sample {
            offset_ns,
            delay_ns,
        };
        assert_eq!(best(&[]), None);
        assert_eq!(best(&[s(10, 30), s(12, 5), s(9, 7)]), Some(s(12, 5)));
    }
}
