//! The nf_tables expressions Kiln's rules use, encoded as the kernel's
//! `nft_*` modules parse them (`NFTA_EXPR_NAME` + `NFTA_EXPR_DATA`).
//!
//! Registers: `NFT_REG_1` and `NFT_REG_2` are 16-byte data registers, big
//! enough for an IPv6 address.

use super::attr::Attrs;

pub const REG_1: u32 = 1;
pub const REG_2: u32 = 2;

/// `payload` bases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Network = 1,
    Transport = 2,
}

/// `meta` keys used here.
pub const META_L4PROTO: u32 = 16;
/// `ct` keys used here.
pub const CT_STATUS: u32 = 2;
/// `IPS_DST_NAT`: the connection's destination was rewritten.
pub const CT_STATUS_DNAT: u32 = 1 << 5;
/// `fib` result: the address type (`RTN_*`), looked up by destination.
const FIB_RESULT_ADDRTYPE: u32 = 3;
const FIB_F_DADDR: u32 = 1 << 1;
/// `RTN_LOCAL`: an address of this host.
pub const RTN_LOCAL: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Loads `len` bytes at `offset` of a header into `dreg`.
    Payload {
        base: Base,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// Compares `sreg` with `data`; a mismatch ends the rule.
    Cmp {
        sreg: u32,
        op: CmpOp,
        data: Vec<u8>,
    },
    Meta {
        key: u32,
        dreg: u32,
    },
    Ct {
        key: u32,
        dreg: u32,
    },
    /// `dreg = (sreg & mask) ^ xor`.
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// The destination's address type (`fib daddr type`) into `dreg`.
    FibDaddrType {
        dreg: u32,
    },
    /// Loads `data` into `dreg`.
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    /// Destination NAT to the address in `addr` and the port in `port`.
    Dnat {
        family: u32,
        addr: u32,
        port: u32,
    },
    Masquerade,
}

const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;
const DATA_VALUE: u16 = 1;

fn value(a: &mut Attrs, ty: u16, data: &[u8]) {
    a.nest(ty, |v| {
        v.put(DATA_VALUE, data);
    });
}

impl Expr {
    /// The expression as one `NFTA_LIST_ELEM`'s content.
    pub fn encode(&self, a: &mut Attrs) {
        let name = match self {
            Expr::Payload { .. } => "payload",
            Expr::Cmp { .. } => "cmp",
            Expr::Meta { .. } => "meta",
            Expr::Ct { .. } => "ct",
            Expr::Bitwise { .. } => "bitwise",
            Expr::FibDaddrType { .. } => "fib",
            Expr::Immediate { .. } => "immediate",
            Expr::Dnat { .. } => "nat",
            Expr::Masquerade => "masq",
        };
        a.str(EXPR_NAME, name);
        a.nest(EXPR_DATA, |d| match self {
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                // NFTA_PAYLOAD_DREG, _BASE, _OFFSET, _LEN
                d.be32(1, *dreg)
                    .be32(2, *base as u32)
                    .be32(3, *offset)
                    .be32(4, *len);
            }
            Expr::Cmp { sreg, op, data } => {
                // NFTA_CMP_SREG, _OP, _DATA
                d.be32(1, *sreg).be32(2, *op as u32);
                value(d, 3, data);
            }
            Expr::Meta { key, dreg } => {
                // NFTA_META_DREG, _KEY
                d.be32(1, *dreg).be32(2, *key);
            }
            Expr::Ct { key, dreg } => {
                // NFTA_CT_DREG, _KEY
                d.be32(1, *dreg).be32(2, *key);
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                // NFTA_BITWISE_SREG, _DREG, _LEN, _MASK, _XOR
                d.be32(1, *sreg)
                    .be32(2, *dreg)
                    .be32(3, u32::try_from(mask.len()).unwrap_or(0));
                value(d, 4, mask);
                value(d, 5, xor);
            }
            Expr::FibDaddrType { dreg } => {
                // NFTA_FIB_DREG, _RESULT, _FLAGS
                d.be32(1, *dreg)
                    .be32(2, FIB_RESULT_ADDRTYPE)
                    .be32(3, FIB_F_DADDR);
            }
            Expr::Immediate { dreg, data } => {
                // NFTA_IMMEDIATE_DREG, _DATA
                d.be32(1, *dreg);
                value(d, 2, data);
            }
            Expr::Dnat { family, addr, port } => {
                // NFTA_NAT_TYPE (NFT_NAT_DNAT), _FAMILY, _REG_ADDR_MIN,
                // _REG_PROTO_MIN; the kernel derives the range flags.
                d.be32(1, 1).be32(2, *family).be32(3, *addr).be32(5, *port);
            }
            Expr::Masquerade => {}
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::attr::{parse, text};

    #[test]
    fn cmp_encodes_its_value_nested() {
        let mut a = Attrs::new();
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Eq,
            data: vec![0x1f, 0x90],
        }
        .encode(&mut a);
        let top = parse(a.bytes());
        assert_eq!(text(top[0].1), "cmp");
        let data = parse(top[1].1);
        assert_eq!(data[0], (1, &[0, 0, 0, 1][..]));
        assert_eq!(data[1], (2, &[0, 0, 0, 0][..]));
        assert_eq!(parse(data[2].1), vec![(DATA_VALUE, &[0x1f, 0x90][..])]);
    }
}
