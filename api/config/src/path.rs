//! Field paths as the operator reads them: `network.interfaces[1].addresses[0]`.
//!
//! One spelling everywhere (parse errors, validation errors, diffs): struct
//! fields and map keys that look like identifiers are joined with `.`; any
//! other map key is quoted in brackets (`sysctls["net.ipv4.ip_forward"]`) so a
//! path is never ambiguous.

use std::fmt;

/// A path to a field of the document. The root is the empty path.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// The document itself.
    pub fn root() -> Self {
        Self::default()
    }

    /// The field or map entry `key` of this path.
    pub fn key(&self, key: &str) -> Self {
        let mut out = self.0.clone();
        let simple = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if simple {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(key);
        } else {
            // Debug quoting escapes quotes and control characters.
            out.push_str(&format!("[{key:?}]"));
        }
        Self(out)
    }

    /// The list element `index` of this path.
    pub fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// The path as text; empty for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Converts serde_path_to_error's path into ours.
    pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        path.iter()
            .fold(Self::root(), |acc, segment| match segment {
                Segment::Seq { index } => acc.index(*index),
                Segment::Map { key } => acc.key(key),
                Segment::Enum { variant } => acc.key(variant),
                Segment::Unknown => acc.key("?"),
            })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(document)")
        } else {
            f.write_str(&self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FieldPath;

    #[test]
    fn spelling() {
        let p = FieldPath::root().key("network").key("interfaces").index(1);
        assert_eq!(
            p.key("addresses").index(0).to_string(),
            "network.interfaces[1].addresses[0]"
        );
        let s = FieldPath::root().key("sysctls").key("net.ipv4.ip_forward");
        assert_eq!(s.to_string(), r#"sysctls["net.ipv4.ip_forward"]"#);
        assert_eq!(FieldPath::root().to_string(), "(document)");
        assert_eq!(FieldPath::root().key("a\"b").as_str(), r#"["a\"b"]"#);
    }
}
