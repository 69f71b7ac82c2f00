//! Servers chrony cannot be made to be: a raw UDP socket in the test that
//! answers wrongly (each reply refused, naming the field), sends
//! kiss-o'-death DENY (never asked again), or never answers (timeouts and
//! retries with backoff, no busy loop).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use kiln_timed::client::{self, Failure, Query};
use kiln_timed::packet::{Packet, Timestamp, MODE_CLIENT, MODE_SERVER};
use kiln_timed::servers::Server;

/// How the fake server answers a request (`None`: not at all).
type Answer = fn(&Packet) -> Option<Vec<u8>>;

/// A raw UDP "server" on loopback; records when requests arrive.
struct Fake {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Fake {
    async fn start(answer: Answer) -> Fake {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let seen = arrivals.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                seen.lock().unwrap().push(Instant::now());
                let Ok(req) = Packet::decode(&buf[..n]) else {
                    continue;
                };
                if let Some(reply) = answer(&req) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        Fake {
            addr,
            arrivals,
            task,
        }
    }

    fn server(&self) -> Server {
        Server::parse(&self.addr.to_string()).unwrap()
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap().clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a correct server would answer.
fn good(req: &Packet) -> Packet {
    let now = Timestamp::from_system(SystemTime::now());
    Packet {
        version: 4,
        mode: MODE_SERVER,
        stratum: 2,
        root_delay: 1 << 10,
        root_dispersion: 1 << 10,
        reference_id: *b"GPS\0",
        reference: now,
        origin: req.transmit,
        receive: now,
        transmit: now,
        ..Packet::default()
    }
}

fn enc(p: Packet) -> Option<Vec<u8>> {
    Some(p.encode().to_vec())
}

#[tokio::test]
async fn broken_replies_are_refused_with_the_field_named() {
    let cases: [(&str, Answer, &str); 9] = [
        ("a correct reply", |r| enc(good(r)), ""),
        (
            "leap indicator 3",
            |r| enc(Packet { leap: 3, ..good(r) }),
            "leap indicator",
        ),
        (
            "kiss-o'-death",
            |r| {
                enc(Packet {
                    stratum: 0,
                    reference_id: *b"RATE",
                    ..good(r)
                })
            },
            "stratum",
        ),
        (
            "stratum 16",
            |r| {
                enc(Packet {
                    stratum: 16,
                    ..good(r)
                })
            },
            "stratum",
        ),
        (
            "client mode",
            |r| {
                enc(Packet {
                    mode: MODE_CLIENT,
                    ..good(r)
                })
            },
            "mode",
        ),
        (
            "another origin",
            |r| {
                enc(Packet {
                    origin: Timestamp(r.transmit.0 ^ 1),
                    ..good(r)
                })
            },
            "origin timestamp",
        ),
        (
            "zero transmit timestamp",
            |r| {
                enc(Packet {
                    transmit: Timestamp(0),
                    ..good(r)
                })
            },
            "transmit timestamp",
        ),
        (
            "a short packet",
            |r| Some(good(r).encode()[..40].to_vec()),
            "length",
        ),
        (
            "version 7",
            |r| {
                enc(Packet {
                    version: 7,
                    ..good(r)
                })
            },
            "version",
        ),
    ];
    let clock = TestClock::new(0);
    let q = Query {
        samples: 1,
        timeout: Duration::from_millis(300),
    };
    for (what, answer, field) in cases {
        let fake = Fake::start(answer).await;
        let result = client::query(&clock, &fake.server(), q).await;
        if field.is_empty() {
            let m = result.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(m.sample.offset_ns.abs() < 50_000_000, "{what}: {m:?}");
            continue;
        }
        let e = result.expect_err(what);
        match &e.failure {
            Failure::Refused { error, .. } => assert_eq!(error.field, field, "{what}: {e}"),
            other => panic!("{what}: {other}"),
        }
        // The message names the server and the field.
        let text = e.to_string();
        assert!(
            text.contains(&fake.addr.to_string()) && text.contains(field),
            "{text}"
        );
        if what == "kiss-o'-death" {
            assert!(text.contains("kiss-o'-death RATE"), "{text}");
            assert!(!e.denied(), "RATE is not DENY");
        }
    }
}

#[tokio::test]
async fn a_server_that_says_deny_is_not_asked_again() {
    let fake = Fake::start(|r| {
        enc(Packet {
            stratum: 0,
            reference_id: *b"DENY",
            ..good(r)
        })
    })
    .await;
    let mut timed = Timed::start(0, &[fake.addr.to_string()], fast_timing());
    timed
        .wait("DENY reported", Duration::from_secs(10), |s| {
            s.errors.iter().any(|e| e.contains("DENY"))
        })
        .await;
    // Several retry rounds later (300 ms, 600 ms, 1.2 s): still one request.
    timed
        .wait("rounds without asking", Duration::from_secs(10), |s| {
            s.errors.iter().any(|e| e.contains("not asked"))
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.arrivals().len(), 1);
    assert!(!timed.status.borrow().synced);
    timed.stop().await;
}

#[tokio::test]
async fn a_server_that_never_answers_is_retried_with_backoff() {
    let fake = Fake::start(|_| None).await;
    let timing = fast_timing();
    let mut timed = Timed::start(0, &[fake.addr.to_string()], timing);
    let st = timed
        .wait("timeout reported", Duration::from_secs(10), |s| {
            s.errors.iter().any(|e| e.contains("no reply in 300ms"))
        })
        .await;
    assert!(!st.synced);
    tokio::time::sleep(Duration::from_secs(6)).await;
    timed.stop().await;
    let t = fake.arrivals();
    // One request a round (a server silent once is not asked again that
    // round), rounds 300 ms timeout + 300, 600, 1200, 1200… ms apart: about
    // 6 in 6.x s. A busy loop would make hundreds.
    assert!((4..=9).contains(&t.len()), "{} requests", t.len());
    let gaps: Vec<Duration> = t.windows(2).map(|w| w[1] - w[0]).collect();
    // Every wait is at least the timeout plus the shortest retry delay, and
    // the waits grow until the cap.
    for g in &gaps {
        assert!(*g >= timing.query.timeout + timing.retry, "{gaps:?}");
    }
    let longest = gaps.iter().max().copied().unwrap_or_default();
    assert!(
        longest >= timing.query.timeout + timing.retry_max,
        "never backed off to the cap: {gaps:?}"
    );
    assert!(gaps[0] < longest, "{gaps:?}");
}
