//! The DHCPv4 client (RFC 2131) for one link.
//!
//! States as in RFC 2131 figure 5. Retransmission follows 4.1 (4, 8, 16, 32,
//! 64 s, each ±1 s); RENEWING and REBINDING retry at half the time left to
//! T2 and to expiry (4.4.5). Carrier loss suspends everything but the
//! lease's expiry; carrier return starts over in INIT-REBOOT with the
//! remembered address (3.2).

mod lease;
mod message;
mod socket;

pub use lease::{Lease, ReplyError};
pub use socket::SocketError;

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use dhcproto::v4::{Message, MessageType};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::netlink::{Net, NetlinkError};
use crate::settings::{IpCidr, MacAddr};
use crate::status::{DhcpState, LeaseStatus, LinkState, Reporter, RouteStatus};
use message::{RequestKind, Transaction};
use socket::DhcpSocket;

/// The link a client runs on.
#[derive(Debug, Clone)]
pub(crate) struct Device {
    pub index: u32,
    pub name: String,
    pub mac: MacAddr,
    /// A configured MTU wins over option 26.
    pub mtu_override: Option<u32>,
}

/// Everything the client reads from and writes to.
pub(crate) struct Client {
    dev: Device,
    slot: usize,
    net: Net,
    report: Reporter,
    carrier: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
    sock: DhcpSocket,
    /// The lease installed on the link, with when its clock started.
    bound: Option<Bound>,
    /// The last address held, for INIT-REBOOT after expiry or carrier loss.
    remembered: Option<Ipv4Addr>,
}

#[derive(Debug, Clone)]
struct Bound {
    lease: Lease,
    /// When the REQUEST that got the ACK was sent: lease times count from it.
    start: Instant,
}

impl Bound {
    fn at(&self, d: Duration) -> Option<Instant> {
        self.start.checked_add(d)
    }
    fn expiry(&self) -> Option<Instant> {
        self.lease.lease_time.and_then(|t| self.at(t))
    }
}

/// Where the state machine goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Init,
    InitReboot(Ipv4Addr),
    Bound,
    Renewing,
    Rebinding,
}

/// What a state's exchange ended with.
#[derive(Debug)]
enum Outcome {
    /// The lease, and when the REQUEST it answers was sent.
    Ack(Box<Lease>, (Instant, SystemTime)),
    Nak,
    NoAnswer,
    /// BOUND reached T1.
    T1,
}

/// A step that could not go on: the link task ends with it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("random transaction id: {0}")]
    Random(getrandom::Error),
}

impl Client {
    pub(crate) fn new(
        dev: Device,
        slot: usize,
        net: Net,
        report: Reporter,
        carrier: watch::Receiver<bool>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Client, ClientError> {
        let sock = DhcpSocket::bind(&dev.name)?;
        Ok(Client {
            dev,
            slot,
            net,
            report,
            carrier,
            shutdown,
            sock,
            bound: None,
            remembered: None,
        })
    }

    /// Runs until shutdown (then releases the lease) or the link is gone.
    pub(crate) async fn run(mut self) -> Result<(), ClientError> {
        let mut next = Next::Init;
        loop {
            if !*self.carrier.borrow_and_update() {
                self.state(LinkState::NoCarrier);
                if !self.wait_for_carrier().await {
                    return self.stop().await;
                }
                next = match self.remembered {
                    Some(addr) => Next::InitReboot(addr),
                    None => Next::Init,
                };
            }
            let mut carrier = self.carrier.clone();
            let mut shutdown = self.shutdown.clone();
            // Only the talking is cancelled by carrier loss or shutdown;
            // kernel changes happen in `handle`, which always completes.
            let outcome = tokio::select! {
                biased;
                _ = until(&mut shutdown, true) => return self.stop().await,
                _ = until(&mut carrier, false) => {
                    info!(link = %self.dev.name, "carrier lost");
                    continue;
                }
                outcome = self.step(next) => outcome?,
            };
            next = self.handle(next, outcome).await;
        }
    }

    /// Waits for carrier, removing the lease if it expires meanwhile; false
    /// on shutdown or once the link is gone.
    async fn wait_for_carrier(&mut self) -> bool {
        loop {
            let expiry = self.bound.as_ref().and_then(Bound::expiry);
            let mut carrier = self.carrier.clone();
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                biased;
                _ = until(&mut shutdown, true) => return false,
                ok = until(&mut carrier, true) => {
                    if ok {
                        info!(link = %self.dev.name, "carrier back");
                    }
                    return ok;
                }
                _ = sleep_until(expiry) => self.expire().await,
            }
        }
    }

    /// The network side of a state: what the server said, or that T1 came.
    async fn step(&mut self, next: Next) -> Result<Outcome, ClientError> {
        debug!(link = %self.dev.name, ?next, "dhcp");
        let tx = self.transaction()?;
        match next {
            Next::Init => {
                self.state(LinkState::Dhcp(DhcpState::Selecting));
                let offer = self
                    .exchange(
                        tx,
                        Ipv4Addr::BROADCAST,
                        None,
                        None,
                        |secs| tx.discover(secs),
                        |m| {
                            (m.opts().msg_type() == Some(MessageType::Offer))
                                .then(|| Lease::from_reply(m))
                        },
                    )
                    .await?;
                let Some((offer, _)) = offer else {
                    return Ok(Outcome::NoAnswer);
                };
                info!(link = %self.dev.name, address = %offer.address, server = %offer.server, "offer");
                self.state(LinkState::Dhcp(DhcpState::Requesting));
                let kind = RequestKind::Selecting {
                    server: offer.server,
                    address: offer.ip,
                };
                self.request(tx, kind, Ipv4Addr::BROADCAST, Some(4), None)
                    .await
            }
            Next::InitReboot(address) => {
                self.state(LinkState::Dhcp(DhcpState::Rebooting));
                let kind = RequestKind::InitReboot { address };
                self.request(tx, kind, Ipv4Addr::BROADCAST, Some(2), None)
                    .await
            }
            Next::Bound => {
                self.state(LinkState::Dhcp(DhcpState::Bound));
                let t1 = self.bound.as_ref().and_then(|b| b.at(b.lease.t1));
                sleep_until(t1).await;
                Ok(Outcome::T1)
            }
            Next::Renewing | Next::Rebinding => {
                let Some(b) = self.bound.clone() else {
                    return Ok(Outcome::NoAnswer);
                };
                let (to, deadline, state) = if next == Next::Rebinding {
                    (Ipv4Addr::BROADCAST, b.expiry(), DhcpState::Rebinding)
                } else {
                    (b.lease.server, b.at(b.lease.t2), DhcpState::Renewing)
                };
                self.state(LinkState::Dhcp(state));
                let kind = RequestKind::Extend {
                    address: b.lease.ip,
                };
                self.request(tx, kind, to, None, deadline).await
            }
        }
    }

    /// Applies an outcome to the link and picks the next state.
    async fn handle(&mut self, from: Next, outcome: Outcome) -> Next {
        match (from, outcome) {
            (_, Outcome::Ack(lease, sent)) => {
                self.bind(*lease, sent).await;
                Next::Bound
            }
            (_, Outcome::Nak) => {
                info!(link = %self.dev.name, "NAK: starting over");
                self.drop_lease().await;
                self.remembered = None;
                Next::Init
            }
            (Next::Bound, _) => Next::Renewing,
            (Next::InitReboot(addr), _) => {
                // No answer: RFC 2131 3.2 lets the client keep an unexpired
                // lease.
                let keep = self.bound.as_ref().is_some_and(|b| {
                    b.lease.ip == addr && b.expiry().is_none_or(|e| e > Instant::now())
                });
                if keep {
                    info!(link = %self.dev.name, "no answer to INIT-REBOOT; keeping the unexpired lease");
                    Next::Bound
                } else {
                    Next::Init
                }
            }
            (Next::Renewing, _) if self.bound.is_some() => Next::Rebinding,
            (Next::Rebinding, _) => {
                self.expire().await;
                Next::Init
            }
            _ => Next::Init,
        }
    }

    /// Sends a REQUEST until ACK, NAK, or the tries or deadline run out.
    async fn request(
        &mut self,
        tx: Transaction,
        kind: RequestKind,
        to: Ipv4Addr,
        tries: Option<u32>,
        deadline: Option<Instant>,
    ) -> Result<Outcome, ClientError> {
        let answer = self
            .exchange(
                tx,
                to,
                tries,
                deadline,
                |secs| tx.request(kind, secs),
                |m| match m.opts().msg_type() {
                    Some(MessageType::Ack) => Some(Lease::from_reply(m).map(Some)),
                    Some(MessageType::Nak) => Some(Ok(None)),
                    _ => None,
                },
            )
            .await?;
        Ok(match answer {
            Some((Some(lease), sent)) => Outcome::Ack(Box::new(lease), sent),
            Some((None, _)) => Outcome::Nak,
            None => Outcome::NoAnswer,
        })
    }

    /// Sends `build(secs)` to `to`, retransmitting, until `accept` takes a
    /// reply; `None` when `tries` or `deadline` run out. Returns the reply
    /// and when the message it answered was last sent.
    async fn exchange<T>(
        &mut self,
        tx: Transaction,
        to: Ipv4Addr,
        tries: Option<u32>,
        deadline: Option<Instant>,
        build: impl Fn(u16) -> Message,
        accept: impl Fn(&Message) -> Option<Result<T, ReplyError>>,
    ) -> Result<Option<(T, (Instant, SystemTime))>, ClientError> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let now = Instant::now();
            if tries.is_some_and(|t| attempt >= t) || deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            let secs = u16::try_from(now.duration_since(started).as_secs()).unwrap_or(u16::MAX);
            let sent = (now, SystemTime::now());
            debug!(link = %self.dev.name, %to, attempt, "dhcp send");
            if let Err(e) = self.sock.send(&build(secs), to).await {
                // Sends fail while the link settles (no route to a unicast
                // server after a flap): retry on the schedule.
                warn!(link = %self.dev.name, %to, "dhcp send: {e}");
            }
            let wait = retransmit_wait(attempt, now, deadline, self.jitter()?);
            attempt += 1;
            let until = now + wait;
            loop {
                let msg = tokio::select! {
                    r = self.sock.recv() => r?,
                    _ = tokio::time::sleep_until(until) => break,
                };
                if !tx.answers(&msg) {
                    continue;
                }
                match accept(&msg) {
                    Some(Ok(v)) => return Ok(Some((v, sent))),
                    // Recorded too: "why no lease" should be visible.
                    Some(Err(e)) => self.report.error(
                        self.slot,
                        format!("{}: ignored a dhcp reply: {e}", self.dev.name),
                    ),
                    None => {}
                }
            }
        }
    }

    /// Installs a lease (first or renewed): MTU, address with the lease's
    /// lifetimes, routes; removes what the previous lease had and this one
    /// does not.
    async fn bind(&mut self, lease: Lease, (start, start_wall): (Instant, SystemTime)) {
        let old = self.bound.take();
        let renewed = old
            .as_ref()
            .is_some_and(|o| o.lease.address == lease.address);
        info!(
            link = %self.dev.name,
            address = %lease.address,
            server = %lease.server,
            lease_secs = lease.lease_time.map(|t| t.as_secs()),
            renewed,
            "lease bound"
        );
        let new_routes = lease.kernel_routes();
        if let Some(old) = &old {
            for r in old.lease.kernel_routes() {
                if !new_routes.contains(&r) {
                    self.log(self.net.del_route(self.dev.index, &r).await);
                }
            }
            if old.lease.address != lease.address {
                self.log(
                    self.net
                        .del_address(self.dev.index, old.lease.address)
                        .await,
                );
            }
        }
        if let (Some(mtu), None) = (lease.mtu, self.dev.mtu_override) {
            self.log(self.net.set_up(self.dev.index, Some(u32::from(mtu))).await);
        }
        // The kernel refuses a zero valid lifetime.
        let left = lease.lease_time.map(|t| {
            t.saturating_sub(start.elapsed())
                .max(Duration::from_secs(1))
        });
        // Infinite leases get no kernel lifetime.
        let lifetime = left.map(|l| (l, l));
        let mut ok = self.log(
            self.net
                .add_address(self.dev.index, lease.address, lifetime)
                .await,
        );
        for r in &new_routes {
            ok &= self.log(self.net.add_route(self.dev.index, r).await);
        }
        let (old_addr, old_routes) = match &old {
            Some(o) => (Some(o.lease.address), o.lease.kernel_routes()),
            None => (None, Vec::new()),
        };
        let status = LeaseStatus::new(&lease, start_wall);
        self.report.update(self.slot, |l| {
            l.addresses.retain(|a| Some(*a) != old_addr);
            l.routes
                .retain(|r| !old_routes.iter().any(|o| RouteStatus::from(o) == *r));
            l.addresses.push(lease.address);
            l.routes.extend(new_routes.iter().map(RouteStatus::from));
            l.lease = Some(status);
            if ok {
                l.error = None;
            }
        });
        self.remembered = Some(lease.ip);
        self.bound = Some(Bound { lease, start });
    }

    /// The lease ran out: its address and routes go (RFC 2131 4.4.5).
    async fn expire(&mut self) {
        if let Some(b) = &self.bound {
            info!(link = %self.dev.name, address = %b.lease.address, "lease expired");
        }
        self.drop_lease().await;
    }

    /// Removes the installed lease's routes and address.
    async fn drop_lease(&mut self) {
        let Some(b) = self.bound.take() else { return };
        let routes = b.lease.kernel_routes();
        for r in &routes {
            self.log(self.net.del_route(self.dev.index, r).await);
        }
        self.log(self.net.del_address(self.dev.index, b.lease.address).await);
        let addr: IpCidr = b.lease.address;
        self.report.update(self.slot, |l| {
            l.addresses.retain(|a| *a != addr);
            l.routes
                .retain(|r| !routes.iter().any(|o| RouteStatus::from(o) == *r));
            l.lease = None;
        });
    }

    /// Shutdown: RELEASE (RFC 2131 4.4.6) and give the address up.
    async fn stop(mut self) -> Result<(), ClientError> {
        if let Some(b) = &self.bound {
            let tx = self.transaction()?;
            let msg = tx.release(b.lease.ip, b.lease.server);
            match self.sock.send(&msg, b.lease.server).await {
                Ok(()) => {
                    info!(link = %self.dev.name, address = %b.lease.address, "lease released")
                }
                Err(e) => warn!(link = %self.dev.name, "cannot send RELEASE: {e}"),
            }
            self.drop_lease().await;
        }
        Ok(())
    }

    fn transaction(&self) -> Result<Transaction, ClientError> {
        let mut xid = [0u8; 4];
        getrandom::fill(&mut xid).map_err(ClientError::Random)?;
        Ok(Transaction {
            mac: self.dev.mac,
            xid: u32::from_ne_bytes(xid),
        })
    }

    /// -1 s to +1 s, in milliseconds (RFC 2131 4.1's randomisation).
    fn jitter(&self) -> Result<i64, ClientError> {
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).map_err(ClientError::Random)?;
        Ok(i64::from(u16::from_ne_bytes(b) % 2001) - 1000)
    }

    fn state(&self, state: LinkState) {
        self.report.update(self.slot, |l| l.state = state);
    }

    /// Logs and records a failed kernel change; true if it succeeded.
    fn log(&self, r: Result<(), NetlinkError>) -> bool {
        match r {
            Ok(()) => true,
            Err(e) => {
                self.report.error(self.slot, e.to_string());
                false
            }
        }
    }
}

/// The wait before retransmission `attempt` (0-based). Without a deadline:
/// 4 s doubling to 64 s, jittered. With one: half the time left, at least
/// 60 s (RFC 2131 4.4.5) but never past the deadline.
fn retransmit_wait(
    attempt: u32,
    now: Instant,
    deadline: Option<Instant>,
    jitter_ms: i64,
) -> Duration {
    match deadline {
        None => {
            let base = 4000i64 << attempt.min(4);
            Duration::from_millis(u64::try_from(base + jitter_ms).unwrap_or(4000))
        }
        Some(d) => {
            let left = d.saturating_duration_since(now);
            (left / 2).max(left.min(Duration::from_secs(60)))
        }
    }
}

/// Waits until a flag is `want`; false if its sender is gone. The borrow
/// ends here, so callers can await after it.
async fn until(rx: &mut watch::Receiver<bool>, want: bool) -> bool {
    rx.wait_for(|v| *v == want).await.is_ok()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmission_schedule() {
        let now = Instant::now();
        let secs = |a, d, j| retransmit_wait(a, now, d, j).as_millis();
        assert_eq!(secs(0, None, 0), 4000);
        assert_eq!(secs(1, None, -1000), 7000);
        assert_eq!(secs(4, None, 1000), 65000);
        assert_eq!(secs(9, None, 0), 64000);
        // Renewing with 300 s to T2: half of it; with 100 s: 60 s; with 20 s: all 20.
        let d = |s| Some(now + Duration::from_secs(s));
        assert_eq!(secs(0, d(300), 0), 150_000);
        assert_eq!(secs(0, d(100), 0), 60_000);
        assert_eq!(secs(0, d(20), 0), 20_000);
    }
}
