//! A small nf_tables client over netlink (`NETLINK_NETFILTER`): tables,
//! base chains and rules in one atomic batch, rule listing and deletion by
//! handle. Written here because the only maintained pure-Rust crate
//! (`rustables`) is GPL-3.0 and the others wrap libnftnl (C) or run the
//! `nft` binary; Kiln needs neither.
//!
//! Wire format: `include/uapi/linux/netfilter/nf_tables.h` and
//! `nfnetlink.h`. Every request is `nlmsghdr` + `nfgenmsg` + attributes;
//! changes go between NFNL_MSG_BATCH_BEGIN and _END so the kernel applies
//! all or nothing.

pub mod attr;
pub mod expr;

use std::os::fd::AsFd;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use attr::Attrs;
pub use expr::Expr;

/// nf_tables address families (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Ipv4 = 2,
    Ipv6 = 10,
}

/// Netfilter hooks (`NF_INET_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting = 0,
    Output = 3,
    Postrouting = 4,
}

/// A base chain: its hook, type and priority.
#[derive(Debug, Clone, Copy)]
pub struct BaseChain<'a> {
    pub name: &'a str,
    pub hook: Hook,
    pub kind: &'a str,
    pub priority: i32,
}

/// A rule as listed: where it is, its handle and its user data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    pub chain: String,
    pub handle: u64,
    pub userdata: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nftables netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("nftables: {what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nftables: no answer from the kernel to {0}")]
    NoAnswer(String),
    #[error("nftables: malformed answer: {0}")]
    Malformed(&'static str),
}

// nfnetlink and nf_tables message numbers.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;

/// How long an answer may take: the kernel answers at once, but a plugin
/// must never hang its runtime.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One change in a batch.
struct Change {
    msg_type: u16,
    flags: u16,
    family: Family,
    attrs: Attrs,
    what: String,
}

/// Changes applied together or not at all.
#[derive(Default)]
pub struct Batch {
    changes: Vec<Change>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Creates the table unless it exists.
    pub fn add_table(&mut self, family: Family, table: &str) {
        let mut a = Attrs::new();
        a.str(NFTA_TABLE_NAME, table);
        self.push(
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE,
            family,
            a,
            format!("add table {table}"),
        );
    }

    /// Creates a base chain unless it exists.
    pub fn add_chain(&mut self, family: Family, table: &str, chain: &BaseChain) {
        let mut a = Attrs::new();
        a.str(NFTA_CHAIN_TABLE, table)
            .str(NFTA_CHAIN_NAME, chain.name)
            .nest(NFTA_CHAIN_HOOK, |h| {
                h.be32(NFTA_HOOK_HOOKNUM, chain.hook as u32)
                    .put(NFTA_HOOK_PRIORITY, &chain.priority.to_be_bytes());
            })
            .str(NFTA_CHAIN_TYPE, chain.kind);
        self.push(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            family,
            a,
            format!("add chain {table} {}", chain.name),
        );
    }

    /// Appends a rule, tagged with `userdata` so it can be found again.
    pub fn add_rule(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
        exprs: &[Expr],
        userdata: &[u8],
    ) {
        let mut a = Attrs::new();
        a.str(NFTA_RULE_TABLE, table)
            .str(NFTA_RULE_CHAIN, chain)
            .nest(NFTA_RULE_EXPRESSIONS, |list| {
                for e in exprs {
                    list.nest(NFTA_LIST_ELEM, |el| e.encode(el));
                }
            })
            .put(NFTA_RULE_USERDATA, userdata);
        self.push(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            family,
            a,
            format!("add rule to {table} {chain}"),
        );
    }

    pub fn del_rule(&mut self, family: Family, table: &str, rule: &RuleInfo) {
        let mut a = Attrs::new();
        a.str(NFTA_RULE_TABLE, table)
            .str(NFTA_RULE_CHAIN, &rule.chain)
            .be64(NFTA_RULE_HANDLE, rule.handle);
        self.push(
            NFT_MSG_DELRULE,
            0,
            family,
            a,
            format!("delete rule {} from {table} {}", rule.handle, rule.chain),
        );
    }

    fn push(&mut self, msg: u16, flags: u16, family: Family, attrs: Attrs, what: String) {
        self.changes.push(Change {
            msg_type: (NFNL_SUBSYS_NFTABLES << 8) | msg,
            flags,
            family,
            attrs,
            what,
        });
    }
}

/// `nlmsghdr` + `nfgenmsg` + attributes.
fn message(msg_type: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    m.extend_from_slice(&msg_type.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.push(family);
    m.push(0); // NFNETLINK_V0
    m.extend_from_slice(&res_id.to_be_bytes());
    m.extend_from_slice(attrs);
    m
}

/// One netlink message of an answer.
struct Answer<'a> {
    msg_type: u16,
    seq: u32,
    /// After `nlmsghdr`.
    body: &'a [u8],
}

fn answers(buf: &[u8]) -> Result<Vec<Answer<'_>>, NftError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(NftError::Malformed("netlink message length"));
        }
        out.push(Answer {
            msg_type: u16::from_ne_bytes([rest[4], rest[5]]),
            seq: u32::from_ne_bytes(rest[8..12].try_into().unwrap_or_default()),
            body: &rest[NLMSG_HDRLEN..len],
        });
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
    }
    Ok(out)
}

/// An NLMSG_ERROR's errno (0 is an acknowledgement).
fn errno(body: &[u8]) -> Result<i32, NftError> {
    let code = body
        .get(..4)
        .ok_or(NftError::Malformed("short NLMSG_ERROR"))?;
    Ok(-i32::from_ne_bytes(code.try_into().unwrap_or_default()))
}

/// A netlink socket to nf_tables in the calling thread's network namespace.
pub struct Conn {
    sock: Socket,
    seq: u32,
}

impl Conn {
    pub fn open() -> Result<Conn, NftError> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
        sock.bind_auto().map_err(NftError::Socket)?;
        nix::sys::socket::setsockopt(
            &sock.as_fd(),
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0),
        )
        .map_err(|e| NftError::Socket(e.into()))?;
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Conn { sock, seq })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn recv(&self, what: &str) -> Result<Vec<u8>, NftError> {
        match self.sock.recv_from_full() {
            Ok((buf, _)) => Ok(buf),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                Err(NftError::NoAnswer(what.to_string()))
            }
            Err(e) => Err(NftError::Socket(e)),
        }
    }

    /// Sends `batch` as one transaction and waits for every change's
    /// acknowledgement; the first refused change is the error (the kernel
    /// then applied none).
    pub fn apply(&mut self, batch: &Batch) -> Result<(), NftError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut buf = message(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            self.next_seq(),
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        let mut pending = std::collections::BTreeMap::new();
        for c in &batch.changes {
            let seq = self.next_seq();
            buf.extend(message(
                c.msg_type,
                NLM_F_REQUEST | NLM_F_ACK | c.flags,
                seq,
                c.family as u8,
                0,
                c.attrs.bytes(),
            ));
            pending.insert(seq, c.what.as_str());
        }
        let end = self.next_seq();
        buf.extend(message(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            end,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        ));
        self.sock.send(&buf, 0).map_err(NftError::Socket)?;
        let mut failure = None;
        while !pending.is_empty() {
            let what = pending.values().next().copied().unwrap_or_default();
            let answer = self.recv(what)?;
            for a in answers(&answer)? {
                if a.msg_type != NLMSG_ERROR {
                    continue;
                }
                let Some(what) = pending.remove(&a.seq) else {
                    continue;
                };
                let code = errno(a.body)?;
                if code != 0 && failure.is_none() {
                    failure = Some(NftError::Kernel {
                        what: what.to_string(),
                        source: std::io::Error::from_raw_os_error(code),
                    });
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Every rule of `table` (none if the table does not exist).
    pub fn rules(&mut self, family: Family, table: &str) -> Result<Vec<RuleInfo>, NftError> {
        let what = format!("list rules of {table}");
        let seq = self.next_seq();
        let mut a = Attrs::new();
        a.str(NFTA_RULE_TABLE, table);
        let req = message(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family as u8,
            0,
            a.bytes(),
        );
        self.sock.send(&req, 0).map_err(NftError::Socket)?;
        let mut rules = Vec::new();
        loop {
            let answer = self.recv(&what)?;
            for m in answers(&answer)? {
                if m.seq != seq {
                    continue;
                }
                match m.msg_type {
                    NLMSG_DONE => return Ok(rules),
                    NLMSG_ERROR => match errno(m.body)? {
                        0 => return Ok(rules),
                        code if code == nix::libc::ENOENT => return Ok(Vec::new()),
                        code => {
                            return Err(NftError::Kernel {
                                what,
                                source: std::io::Error::from_raw_os_error(code),
                            })
                        }
                    },
                    _ => {
                        if let Some(rule) = rule_info(m.body, table) {
                            rules.push(rule);
                        }
                    }
                }
            }
        }
    }
}

/// A NEWRULE message of a dump, if it belongs to `table`.
fn rule_info(body: &[u8], table: &str) -> Option<RuleInfo> {
    let attrs = attr::parse(body.get(NFGENMSG_LEN..)?);
    let mut t = None;
    let mut chain = None;
    let mut handle = None;
    let mut userdata = Vec::new();
    for (ty, data) in attrs {
        match ty {
            NFTA_RULE_TABLE => t = Some(attr::text(data)),
            NFTA_RULE_CHAIN => chain = Some(attr::text(data)),
            NFTA_RULE_HANDLE => handle = attr::be64(data),
            NFTA_RULE_USERDATA => userdata = data.to_vec(),
            _ => {}
        }
    }
    (t.as_deref() == Some(table)).then_some(())?;
    Some(RuleInfo {
        chain: chain?,
        handle: handle?,
        userdata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        let m = message(0x10, NLM_F_REQUEST, 7, 0, NFNL_SUBSYS_NFTABLES, &[]);
        assert_eq!(m.len(), 20);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x10);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        // res_id is big-endian: the subsystem of the batch.
        assert_eq!(&m[18..20], &[0, 10]);
        let parsed = answers(&m).unwrap();
        assert_eq!((parsed[0].msg_type, parsed[0].seq), (0x10, 7));
    }

    #[test]
    fn rule_info_from_a_dump_message() {
        let mut a = Attrs::new();
        a.str(NFTA_RULE_TABLE, "t")
            .str(NFTA_RULE_CHAIN, "c")
            .be64(NFTA_RULE_HANDLE, 42)
            .put(NFTA_RULE_USERDATA, b"tag");
        let mut body = vec![2, 0, 0, 0];
        body.extend_from_slice(a.bytes());
        let r = rule_info(&body, "t").unwrap();
        assert_eq!(
            r,
            RuleInfo {
                chain: "c".into(),
                handle: 42,
                userdata: b"tag".to_vec()
            }
        );
        assert_eq!(rule_info(&body, "other"), None);
    }
}
