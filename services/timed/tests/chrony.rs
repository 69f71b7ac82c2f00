//! timed against a real NTP server: Debian's chronyd on a loopback port
//! (`-x`: it never touches the host's clock), each test with its own. The
//! clock timed corrects is a test clock (the host's plus a skew), so the
//! host's clock is never changed either.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use kiln_timed::status::Correction;

const WITHIN: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_clock_years_behind_is_stepped_then_slewed_and_the_rtc_written_at_stop() {
    let chrony = Chrony::start().await;
    let skew = -20 * YEAR_NS;
    let mut timed = Timed::start(skew, &[chrony.server()], fast_timing());
    let st = timed.wait("first sync", WITHIN, |s| s.synced).await;
    let sync = st.last_sync.clone().expect("last sync");
    assert_eq!(sync.correction, Correction::Step, "{st:?}");
    assert_eq!(sync.server, chrony.server());
    assert_eq!(sync.stratum, 8, "chrony's local stratum");
    // Stepped by the skew, to well within a loopback round trip.
    let r = timed.clock.record();
    assert_eq!(r.steps.len(), 1, "{r:?}");
    assert!((r.steps[0] + skew).abs() < 50_000_000, "{r:?}");
    assert!(r.skew_ns.abs() < 50_000_000, "{r:?}");
    assert!(timed.marker().exists());
    let file = timed.status_file();
    assert_eq!(file["synced"], true);
    assert_eq!(file["last_sync"]["correction"], "step");
    assert_eq!(file["last_sync"]["stratum"], 8);
    assert_eq!(file["source"], "config");
    assert!(
        file["last_sync"]["offset_seconds"].as_f64().unwrap() > 19.0 * 365.0 * 86400.0,
        "{file}"
    );

    // The next poll finds a small residual: slewed, not stepped.
    let st = timed
        .wait("a second sync", WITHIN, |s| {
            s.last_sync
                .as_ref()
                .is_some_and(|l| l.correction == Correction::Slew)
        })
        .await;
    let r = timed.clock.record();
    assert_eq!(r.steps.len(), 1, "{r:?}");
    assert!(r.slews.iter().all(|s| s.abs() < 50_000_000), "{r:?}");
    assert!(st.poll_seconds >= 1, "{st:?}");

    // Stopping (SIGTERM on the node) writes the corrected time to the RTC.
    let (clock, _dir) = timed.stop().await;
    let r = clock.record();
    assert_eq!(r.rtc_writes.len(), 1, "{r:?}");
    let off = r.rtc_writes[0]
        .duration_since(SystemTime::now())
        .unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_secs(1), "RTC written {off:?} off");
}

#[tokio::test]
async fn a_small_skew_is_slewed_not_stepped() {
    let chrony = Chrony::start().await;
    // By name: "localhost" is resolved like any configured host name.
    let server = format!("localhost:{}", chrony.port);
    let mut timed = Timed::start(60_000_000, std::slice::from_ref(&server), fast_timing());
    let st = timed.wait("sync", WITHIN, |s| s.synced).await;
    let sync = st.last_sync.expect("last sync");
    assert_eq!(sync.correction, Correction::Slew);
    assert_eq!(sync.server, server);
    let r = timed.clock.record();
    assert!(r.steps.is_empty(), "{r:?}");
    assert!((r.slews[0] + 60_000_000).abs() < 20_000_000, "{r:?}");
    timed.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_then_a_good_one() {
    let chrony = Chrony::start().await;
    let nobody = format!("127.0.0.1:{}", free_udp_port());
    let mut timed = Timed::start(
        -5 * YEAR_NS,
        &[nobody.clone(), chrony.server()],
        fast_timing(),
    );
    let st = timed.wait("sync", WITHIN, |s| s.synced).await;
    assert_eq!(st.last_sync.expect("sync").server, chrony.server());
    // The first server's failure is reported, named.
    assert!(
        st.errors
            .iter()
            .any(|e| e.contains(&nobody) && e.contains("refused")),
        "{:?}",
        st.errors
    );
    timed.stop().await;
}

#[tokio::test]
async fn no_server_until_a_config_names_one() {
    let chrony = Chrony::start().await;
    let mut timed = Timed::start(-YEAR_NS, &[], fast_timing());
    let st = timed
        .wait("no server reported", WITHIN, |s| {
            s.errors.iter().any(|e| e.contains("no NTP server known"))
        })
        .await;
    assert!(!st.synced);
    assert!(!timed.marker().exists());
    // Some re-reads later, apid stores a config naming chrony.
    tokio::time::sleep(Duration::from_millis(500)).await;
    write_config(&Timed::config(timed.dir.path()), &[chrony.server()]);
    let st = timed
        .wait("sync after the config", WITHIN, |s| s.synced)
        .await;
    assert_eq!(st.servers, vec![chrony.server()]);
    assert!(timed.marker().exists());
    timed.stop().await;
}

#[tokio::test]
async fn a_stop_before_any_sync_leaves_the_rtc_alone() {
    let mut timed = Timed::start(0, &[], fast_timing());
    timed
        .wait("started", WITHIN, |s| !s.errors.is_empty())
        .await;
    let (clock, _dir) = timed.stop().await;
    assert!(clock.record().rtc_writes.is_empty());
}
