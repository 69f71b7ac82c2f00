//! Asking one server: resolve its name, a few request/reply exchanges on
//! one UDP socket, the best sample (RFC 4330's client, section 5).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::packet::{Packet, ReplyError, Timestamp, ORIGIN};
use crate::sample::{self, Sample};
use crate::servers::Server;

/// How to ask.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// Exchanges per server and round; the lowest delay wins.
    pub samples: usize,
    /// How long to wait for each reply.
    pub timeout: Duration,
}

/// A server's answer, ready to correct the clock with.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub server: Server,
    pub address: SocketAddr,
    pub stratum: u8,
    /// The best of the round's samples.
    pub sample: Sample,
    /// How many exchanges succeeded.
    pub samples: usize,
}

/// Why a server gave no measurement.
#[derive(Debug, thiserror::Error)]
#[error("{server}{}: {failure}", .address.map(|a| format!(" ({a})")).unwrap_or_default())]
pub struct QueryError {
    pub server: Server,
    pub address: Option<SocketAddr>,
    pub failure: Failure,
}

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("cannot resolve: {0}")]
    Resolve(std::io::Error),
    #[error("resolves to no address")]
    NoAddress,
    #[error("{0}")]
    Io(std::io::Error),
    #[error("no reply in {0:?}")]
    Timeout(Duration),
    /// The last reply refused, if no good one came before the timeout.
    #[error("reply refused: {error}")]
    Refused {
        error: ReplyError,
        /// A kiss-o'-death's code (RFC 5905 section 7.4).
        kiss: Option<String>,
    },
}

impl QueryError {
    /// The server told us to go away (kiss codes DENY and RSTR): RFC 4330
    /// says to stop asking it.
    pub fn denied(&self) -> bool {
        matches!(&self.failure, Failure::Refused { kiss: Some(k), .. } if k == "DENY" || k == "RSTR")
    }
}

/// Asks `server` (each of its addresses in turn until one answers).
pub async fn query<C: Clock + ?Sized>(
    clock: &C,
    server: &Server,
    q: Query,
) -> Result<Measurement, QueryError> {
    let err = |address, failure| QueryError {
        server: server.clone(),
        address,
        failure,
    };
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((server.host.as_str(), server.port))
        .await
        .map_err(|e| err(None, Failure::Resolve(e)))?
        .collect();
    let mut last = err(None, Failure::NoAddress);
    for address in addresses {
        match query_address(clock, address, q).await {
            Ok((sample, stratum, samples)) => {
                return Ok(Measurement {
                    server: server.clone(),
                    address,
                    stratum,
                    sample,
                    samples,
                })
            }
            Err(failure) => last = err(Some(address), failure),
        }
    }
    Err(last)
}

/// Up to `q.samples` exchanges; stops at the first failure (an address
/// that does not answer once is not waited for again this round).
async fn query_address<C: Clock + ?Sized>(
    clock: &C,
    address: SocketAddr,
    q: Query,
) -> Result<(Sample, u8, usize), Failure> {
    let local: SocketAddr = if address.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(Failure::Io)?;
    // Connected: only this address's datagrams arrive, and an ICMP port
    // unreachable comes back as an error instead of a timeout.
    socket.connect(address).await.map_err(Failure::Io)?;
    let mut good: Vec<(Sample, u8)> = Vec::with_capacity(q.samples);
    let mut failure = None;
    for _ in 0..q.samples.max(1) {
        match exchange(clock, &socket, q.timeout).await {
            Ok(s) => good.push(s),
            Err(f) => {
                failure = Some(f);
                break;
            }
        }
    }
    let samples: Vec<Sample> = good.iter().map(|(s, _)| *s).collect();
    match sample::best(&samples) {
        Some(best) => {
            let stratum = good
                .iter()
                .find(|(s, _)| *s == best)
                .map_or(0, |(_, st)| *st);
            Ok((best, stratum, good.len()))
        }
        None => Err(failure.unwrap_or(Failure::Timeout(q.timeout))),
    }
}

/// One request and its reply: (sample, server stratum).
async fn exchange<C: Clock + ?Sized>(
    clock: &C,
    socket: &UdpSocket,
    timeout: Duration,
) -> Result<(Sample, u8), Failure> {
    let cookie =
        Timestamp(getrandom::u64().map_err(|e| Failure::Io(std::io::Error::other(e.to_string())))?);
    let t1 = Timestamp::from_system(clock.now());
    socket
        .send(&Packet::request(cookie).encode())
        .await
        .map_err(Failure::Io)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut refused = None;
    let mut buf = [0u8; 512];
    loop {
        let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => return Err(refused.unwrap_or(Failure::Timeout(timeout))),
            Ok(Err(e)) => return Err(Failure::Io(e)),
            Ok(Ok(n)) => n,
        };
        let t4 = Timestamp::from_system(clock.now());
        let reply = Packet::decode(&buf[..n]);
        let kiss = match &reply {
            Ok(p) if p.stratum == 0 && p.origin == cookie => Some(p.kiss_code()),
            _ => None,
        };
        let checked = reply.and_then(|p| {
            p.check_reply(cookie)?;
            Ok((Sample::new(t1, p.receive, p.transmit, t4)?, p.stratum))
        });
        let error = match checked {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        warn!("reply refused: {error}");
        // A datagram that is not (provably) an answer to this request may
        // be stray or forged: keep waiting for the real one. Anything else
        // is the server's answer, and it is wrong.
        let ours = error.field != "length" && error.field != ORIGIN;
        let failure = Failure::Refused { error, kiss };
        if ours {
            return Err(failure);
        }
        debug!("still waiting for the server's reply");
        refused = Some(failure);
    }
}
