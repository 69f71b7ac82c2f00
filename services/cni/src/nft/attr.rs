//! Netlink attributes (`struct nlattr`): a writer for requests and a
//! reader for answers. nf_tables numbers are big-endian inside attributes;
//! the attribute headers themselves are in host order.

/// `NLA_F_NESTED`: the attribute holds attributes.
const NESTED: u16 = 0x8000;
/// The type bits of `nla_type` (without NESTED and NET_BYTEORDER).
const TYPE_MASK: u16 = 0x3fff;

/// Attributes being written.
#[derive(Debug, Default, Clone)]
pub struct Attrs(Vec<u8>);

impl Attrs {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// One attribute; the payload is padded to 4 bytes.
    pub fn put(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.pad();
        self
    }

    /// A NUL-terminated string, as the kernel's `NLA_STRING` policy wants.
    pub fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.put(ty, &data)
    }

    pub fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }

    pub fn be64(&mut self, ty: u16, v: u64) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }

    /// A nested attribute whose content `f` writes.
    pub fn nest(&mut self, ty: u16, f: impl FnOnce(&mut Attrs)) -> &mut Self {
        let mut inner = Attrs::new();
        f(&mut inner);
        let len = u16::try_from(4 + inner.0.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&(ty | NESTED).to_ne_bytes());
        self.0.extend_from_slice(&inner.0);
        self
    }

    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }
}

/// The attributes in `data` as (type, payload); a truncated tail is
/// dropped.
pub fn parse(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([data[0], data[1]]));
        let ty = u16::from_ne_bytes([data[2], data[3]]) & TYPE_MASK;
        if len < 4 || len > data.len() {
            break;
        }
        out.push((ty, &data[4..len]));
        let next = (len + 3) & !3;
        data = data.get(next..).unwrap_or_default();
    }
    out
}

/// A NUL-terminated string attribute's text.
pub fn text(data: &[u8]) -> String {
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

/// A big-endian u64 attribute.
pub fn be64(data: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_padded_nested_attributes_and_reads_them_back() {
        let mut a = Attrs::new();
        a.str(1, "nat").be32(2, 0x0102_0304).nest(3, |n| {
            n.put(1, &[0xaa]);
        });
        let b = a.bytes();
        // "nat\0" → 8 bytes, be32 → 8, nest header 4 + inner (4 + 1 + 3 pad).
        assert_eq!(b.len(), 8 + 8 + 12);
        assert_eq!(&b[4..8], b"nat\0");
        assert_eq!(&b[12..16], &[1, 2, 3, 4]);
        assert_eq!(u16::from_ne_bytes([b[18], b[19]]), 3 | NESTED);
        let top = parse(b);
        assert_eq!(top.len(), 3);
        assert_eq!(text(top[0].1), "nat");
        assert_eq!(top[2].0, 3);
        assert_eq!(parse(top[2].1), vec![(1, &[0xaa][..])]);
        assert_eq!(be64(&7u64.to_be_bytes()), Some(7));
    }
}
