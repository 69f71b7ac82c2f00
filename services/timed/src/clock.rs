//! The clock timed disciplines, behind a trait so the logic runs in tests
//! without touching the host's clock. [`SystemClock`] is the node's: the
//! kernel's realtime clock through adjtimex(2), and the RTC through its
//! character device's ioctls.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("adjtimex ({what}): {source}")]
    Adjtimex {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Rtc {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the RTC holds no valid date: {problem}")]
    RtcDate { path: PathBuf, problem: String },
}

/// What timed needs of a clock.
pub trait Clock: Send + Sync {
    /// The realtime clock now.
    fn now(&self) -> SystemTime;
    /// Moves the clock by `offset_ns` at once.
    fn step(&self, offset_ns: i64) -> Result<(), ClockError>;
    /// Corrects `offset_ns` gradually; `poll` is how long until the next
    /// measurement (the kernel's loop time constant follows it).
    fn slew(&self, offset_ns: i64, poll: Duration) -> Result<(), ClockError>;
    fn read_rtc(&self) -> Result<SystemTime, ClockError>;
    fn write_rtc(&self, time: SystemTime) -> Result<(), ClockError>;
}

/// The node's clock and its RTC (`/dev/rtc0`).
pub struct SystemClock {
    pub rtc: PathBuf,
}

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    /// ADJ_SETOFFSET: the kernel adds the offset itself, so no time passes
    /// between reading the clock and setting it (as clock_settime would
    /// need).
    fn step(&self, offset_ns: i64) -> Result<(), ClockError> {
        let mut tx = timex();
        tx.modes = libc::ADJ_SETOFFSET | libc::ADJ_NANO;
        // The kernel wants seconds and a non-negative nanosecond part.
        tx.time.tv_sec = offset_ns.div_euclid(1_000_000_000) as libc::time_t;
        tx.time.tv_usec = offset_ns.rem_euclid(1_000_000_000) as libc::suseconds_t;
        adjtimex(&mut tx, "step")
    }

    /// The kernel's phase-locked loop (RFC 5905 appendix A's clock
    /// discipline, in the kernel since Linux 2.6): it corrects the phase
    /// over time and learns the frequency error. Clearing STA_UNSYNC tells
    /// the kernel (and anything reading adjtimex) that the clock is
    /// synchronised.
    fn slew(&self, offset_ns: i64, poll: Duration) -> Result<(), ClockError> {
        let mut tx = timex();
        tx.modes = libc::ADJ_OFFSET
            | libc::ADJ_STATUS
            | libc::ADJ_NANO
            | libc::ADJ_TIMECONST
            | libc::ADJ_MAXERROR
            | libc::ADJ_ESTERROR;
        tx.status = libc::STA_PLL;
        // The kernel takes at most ±0.5 s at a time; larger offsets are
        // stepped (see the daemon), this only guards the conversion.
        tx.offset = offset_ns.clamp(-500_000_000, 500_000_000) as libc::c_long;
        // ntpd's choice: the loop's time constant is log2(poll) - 4.
        let log2_poll = 63 - poll.as_secs().max(1).leading_zeros();
        tx.constant = libc::c_long::from(log2_poll.saturating_sub(4).min(10) as i32);
        let error_us = (offset_ns.unsigned_abs() / 1000).min(16_000_000) as libc::c_long;
        tx.maxerror = error_us;
        tx.esterror = error_us;
        adjtimex(&mut tx, "slew")
    }

    fn read_rtc(&self) -> Result<SystemTime, ClockError> {
        let rtc = self.open(false)?;
        let mut tm = RtcTime::default();
        // SAFETY: `tm` is a valid, writable struct rtc_time for the
        // duration of the call, as RTC_RD_TIME requires.
        unsafe { rtc_rd_time(rtc.as_raw_fd(), &mut tm) }.map_err(|e| self.err(e.into()))?;
        tm.to_system().map_err(|problem| ClockError::RtcDate {
            path: self.rtc.clone(),
            problem,
        })
    }

    /// The RTC keeps UTC, as the kernel assumes when it reads it at boot.
    fn write_rtc(&self, time: SystemTime) -> Result<(), ClockError> {
        let tm = RtcTime::from_system(time).map_err(|problem| ClockError::RtcDate {
            path: self.rtc.clone(),
            problem,
        })?;
        let rtc = self.open(true)?;
        // SAFETY: `tm` is a valid struct rtc_time that outlives the call;
        // RTC_SET_TIME only reads it.
        unsafe { rtc_set_time(rtc.as_raw_fd(), &tm) }.map_err(|e| self.err(e.into()))?;
        Ok(())
    }
}

impl SystemClock {
    fn open(&self, write: bool) -> Result<File, ClockError> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(&self.rtc)
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: std::io::Error) -> ClockError {
        ClockError::Rtc {
            path: self.rtc.clone(),
            source,
        }
    }
}

fn timex() -> libc::timex {
    // SAFETY: timex is a plain C struct of integers (and padding), for which
    // all zeroes is a valid value (and adjtimex's "change nothing").
    unsafe { std::mem::zeroed() }
}

fn adjtimex(tx: &mut libc::timex, what: &'static str) -> Result<(), ClockError> {
    // SAFETY: `tx` is a valid, initialised timex the kernel may read and
    // write during the call.
    let r = unsafe { libc::adjtimex(tx) };
    if r < 0 {
        return Err(ClockError::Adjtimex {
            what,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// struct rtc_time (linux/rtc.h): a struct tm without the zone fields.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct RtcTime {
    tm_sec: libc::c_int,
    tm_min: libc::c_int,
    tm_hour: libc::c_int,
    tm_mday: libc::c_int,
    /// 0-11.
    tm_mon: libc::c_int,
    /// Years since 1900.
    tm_year: libc::c_int,
    tm_wday: libc::c_int,
    tm_yday: libc::c_int,
    tm_isdst: libc::c_int,
}

nix::ioctl_read!(rtc_rd_time, b'p', 0x09, RtcTime);
nix::ioctl_write_ptr!(rtc_set_time, b'p', 0x0a, RtcTime);

impl RtcTime {
    fn from_system(t: SystemTime) -> Result<RtcTime, String> {
        let unix_ns = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        let dt = time::OffsetDateTime::from_unix_timestamp_nanos(unix_ns)
            .map_err(|e| format!("{t:?}: {e}"))?;
        Ok(RtcTime {
            tm_sec: i32::from(dt.second()),
            tm_min: i32::from(dt.minute()),
            tm_hour: i32::from(dt.hour()),
            tm_mday: i32::from(dt.day()),
            tm_mon: i32::from(u8::from(dt.month())) - 1,
            tm_year: dt.year() - 1900,
            tm_wday: i32::from(dt.weekday().number_days_from_sunday()),
            tm_yday: i32::from(dt.ordinal()) - 1,
            tm_isdst: 0,
        })
    }

    fn to_system(self) -> Result<SystemTime, String> {
        let field = |v: libc::c_int, name: &str| {
            u8::try_from(v).map_err(|_| format!("{name} {v} is out of range"))
        };
        let month =
            time::Month::try_from(field(self.tm_mon + 1, "month")?).map_err(|e| e.to_string())?;
        let date =
            time::Date::from_calendar_date(self.tm_year + 1900, month, field(self.tm_mday, "day")?)
                .map_err(|e| e.to_string())?;
        let t = time::Time::from_hms(
            field(self.tm_hour, "hour")?,
            field(self.tm_min, "minute")?,
            field(self.tm_sec, "second")?,
        )
        .map_err(|e| e.to_string())?;
        let secs = date.with_time(t).assume_utc().unix_timestamp();
        Ok(if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtc_time_both_ways() {
        // 2005-01-01T00:00:00Z, a Saturday.
        let t = UNIX_EPOCH + Duration::from_secs(1_104_537_600);
        let tm = RtcTime::from_system(t).unwrap();
        assert_eq!(
            tm,
            RtcTime {
                tm_sec: 0,
                tm_min: 0,
                tm_hour: 0,
                tm_mday: 1,
                tm_mon: 0,
                tm_year: 105,
                tm_wday: 6,
                tm_yday: 0,
                tm_isdst: 0,
            }
        );
        assert_eq!(tm.to_system().unwrap(), t);
        // Sub-second parts are dropped: the RTC counts seconds.
        let t = UNIX_EPOCH + Duration::from_millis(1_735_689_600_750);
        let back = RtcTime::from_system(t).unwrap().to_system().unwrap();
        assert_eq!(back, UNIX_EPOCH + Duration::from_secs(1_735_689_600));
        let bad = RtcTime { tm_mon: 12, ..tm };
        assert!(bad.to_system().unwrap_err().contains("month"));
    }

    #[test]
    fn the_kernel_clock_state_reads_without_changing_it() {
        // modes 0: read only. The host's clock is never set by tests.
        let mut tx = timex();
        adjtimex(&mut tx, "read").unwrap();
        assert!(tx.tick > 0);
    }
}
