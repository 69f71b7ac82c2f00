//! The client's messages (RFC 2131 table 5) and which replies are ours.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};

use crate::settings::MacAddr;

/// What netd asks servers for.
const REQUESTED: [OptionCode; 12] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::Hostname,
    OptionCode::DomainName,
    OptionCode::InterfaceMtu,
    OptionCode::AddressLeaseTime,
    OptionCode::Renewal,
    OptionCode::Rebinding,
    OptionCode::DomainSearch,
    OptionCode::ClasslessStaticRoute,
    OptionCode::NtpServers,
];

/// The largest reply netd accepts: an Ethernet frame's IP payload.
const MAX_MESSAGE_SIZE: u16 = 1500;

/// One transaction's fixed fields.
#[derive(Debug, Clone, Copy)]
pub struct Transaction {
    pub mac: MacAddr,
    pub xid: u32,
}

/// What a REQUEST is for; RFC 2131 4.3.2 sets its fields by state.
#[derive(Debug, Clone, Copy)]
pub enum RequestKind {
    /// Answering an OFFER: server id and requested address, broadcast.
    Selecting { server: Ipv4Addr, address: Ipv4Addr },
    /// Verifying a remembered address after a reboot or carrier loss.
    InitReboot { address: Ipv4Addr },
    /// Extending a lease, unicast (RENEWING) or broadcast (REBINDING):
    /// ciaddr set, nothing else.
    Extend { address: Ipv4Addr },
}

impl Transaction {
    fn base(&self, kind: MessageType, ciaddr: Ipv4Addr, secs: u16, broadcast: bool) -> Message {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(self.xid, ciaddr, z, z, z, &self.mac.0);
        m.set_opcode(Opcode::BootRequest).set_secs(secs);
        if broadcast {
            // No address yet: the server must broadcast its reply.
            m.set_flags(Flags::default().set_broadcast());
        }
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        // RFC 2132 9.14: hardware type 1 (Ethernet) then the address.
        let mut id = vec![1];
        id.extend_from_slice(&self.mac.0);
        o.insert(DhcpOption::ClientIdentifier(id));
        if kind != MessageType::Release {
            o.insert(DhcpOption::ParameterRequestList(REQUESTED.to_vec()));
            o.insert(DhcpOption::MaxMessageSize(MAX_MESSAGE_SIZE));
        }
        m
    }

    pub fn discover(&self, secs: u16) -> Message {
        self.base(MessageType::Discover, Ipv4Addr::UNSPECIFIED, secs, true)
    }

    pub fn request(&self, kind: RequestKind, secs: u16) -> Message {
        match kind {
            RequestKind::Selecting { server, address } => {
                let mut m = self.base(MessageType::Request, Ipv4Addr::UNSPECIFIED, secs, true);
                m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
                m.opts_mut().insert(DhcpOption::RequestedIpAddress(address));
                m
            }
            RequestKind::InitReboot { address } => {
                let mut m = self.base(MessageType::Request, Ipv4Addr::UNSPECIFIED, secs, true);
                m.opts_mut().insert(DhcpOption::RequestedIpAddress(address));
                m
            }
            RequestKind::Extend { address } => {
                self.base(MessageType::Request, address, secs, false)
            }
        }
    }

    pub fn release(&self, address: Ipv4Addr, server: Ipv4Addr) -> Message {
        let mut m = self.base(MessageType::Release, address, 0, false);
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        m
    }

    /// A reply to this transaction: BOOTREPLY, same xid, our chaddr.
    pub fn answers(&self, reply: &Message) -> bool {
        reply.opcode() == Opcode::BootReply
            && reply.xid() == self.xid
            && reply.chaddr().get(..6) == Some(&self.mac.0[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::{Decodable, Decoder, Encodable};

    const T: Transaction = Transaction {
        mac: MacAddr([2, 0, 0, 0, 0, 9]),
        xid: 0x1234_5678,
    };

    fn roundtrip(m: &Message) -> Message {
        Message::decode(&mut Decoder::new(&m.to_vec().unwrap())).unwrap()
    }

    #[test]
    fn discover_and_requests_carry_rfc_2131_fields() {
        let d = roundtrip(&T.discover(3));
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        assert!(d.flags().broadcast());
        assert_eq!(d.secs(), 3);
        assert!(d.opts().get(OptionCode::ParameterRequestList).is_some());

        let s = roundtrip(&T.request(
            RequestKind::Selecting {
                server: Ipv4Addr::new(10, 0, 0, 1),
                address: Ipv4Addr::new(10, 0, 0, 5),
            },
            0,
        ));
        assert_eq!(s.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(s.opts().get(OptionCode::ServerIdentifier).is_some());
        assert_eq!(
            s.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 5)))
        );

        let r = roundtrip(&T.request(
            RequestKind::InitReboot {
                address: Ipv4Addr::new(10, 0, 0, 5),
            },
            0,
        ));
        assert!(r.opts().get(OptionCode::ServerIdentifier).is_none());
        assert!(r.opts().get(OptionCode::RequestedIpAddress).is_some());

        let e = roundtrip(&T.request(
            RequestKind::Extend {
                address: Ipv4Addr::new(10, 0, 0, 5),
            },
            0,
        ));
        assert_eq!(e.ciaddr(), Ipv4Addr::new(10, 0, 0, 5));
        assert!(!e.flags().broadcast());
        assert!(e.opts().get(OptionCode::ServerIdentifier).is_none());
        assert!(e.opts().get(OptionCode::RequestedIpAddress).is_none());

        let rel = roundtrip(&T.release(Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(rel.opts().msg_type(), Some(MessageType::Release));
        assert!(rel.opts().get(OptionCode::ParameterRequestList).is_none());
    }

    #[test]
    fn only_our_replies_match() {
        let mut reply = T.discover(0);
        reply.set_opcode(Opcode::BootReply);
        assert!(T.answers(&reply));
        let mut other = reply.clone();
        other.set_xid(1);
        assert!(!T.answers(&other));
        let mut other = reply.clone();
        other.set_chaddr(&[2, 0, 0, 0, 0, 8]);
        assert!(!T.answers(&other));
        assert!(!T.answers(&T.discover(0)));
    }
}
