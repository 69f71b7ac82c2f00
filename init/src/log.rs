//! PID 1's logging: every event goes to the console (the kernel gives PID 1
//! `/dev/console` as stdio) and to the kernel log `/dev/kmsg`, so a failure is
//! visible on a serial console and in `dmesg` alike.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::OnceLock;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::{format::Writer, time::FormatTime, MakeWriter};
use tracing_subscriber::prelude::*;

static KMSG: OnceLock<File> = OnceLock::new();

/// Installs the global subscriber. Safe to call once; later calls do nothing.
pub fn init() {
    let console = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_timer(BootTime)
        .with_target(false)
        .with_writer(io::stdout)
        .with_filter(LevelFilter::INFO);
    let kmsg = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_level(false)
        .with_writer(Kmsg)
        .with_filter(LevelFilter::INFO);
    let _ = tracing_subscriber::registry()
        .with(console)
        .with(kmsg)
        .try_init();
}

/// Starts copying log events to `/dev/kmsg`; called once devtmpfs is mounted.
/// The open file stays valid when the root is switched.
pub fn attach_kmsg() -> io::Result<()> {
    let f = OpenOptions::new().write(true).open("/dev/kmsg")?;
    let _ = KMSG.set(f);
    Ok(())
}

/// Seconds since the kernel started, like the kernel's own console stamps.
struct BootTime;

impl FormatTime for BootTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let ms = crate::clock::boot_ms();
        write!(w, "[{:5}.{:03}]", ms / 1000, ms % 1000)
    }
}

/// Writes each event as kernel log records, one record per line.
struct Kmsg;

impl<'a> MakeWriter<'a> for Kmsg {
    type Writer = KmsgEvent;
    fn make_writer(&'a self) -> KmsgEvent {
        KmsgEvent(Vec::new())
    }
}

/// One formatted event, flushed to /dev/kmsg when dropped.
struct KmsgEvent(Vec<u8>);

impl Write for KmsgEvent {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for KmsgEvent {
    fn drop(&mut self) {
        let Some(mut f) = KMSG.get() else { return };
        for line in self.0.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            // <6> = KERN_INFO; the console loglevel keeps these off the serial
            // line, where the console layer already printed them.
            let mut rec = b"<6>kiln: ".to_vec();
            rec.extend_from_slice(line);
            let _ = f.write_all(&rec);
        }
    }
}
