//! The kernel command line: `key=value` words and bare flags.

use std::collections::BTreeMap;

/// Parsed `/proc/cmdline`. Later words win over earlier ones, as in the kernel.
#[derive(Debug, Default, Clone)]
pub struct Cmdline {
    args: BTreeMap<String, String>,
}

impl Cmdline {
    /// Reads `/proc/cmdline`; an unreadable file gives an empty command line.
    pub fn read() -> Self {
        std::fs::read_to_string("/proc/cmdline")
            .map(|s| Self::parse(&s))
            .unwrap_or_default()
    }

    /// Parses a command line. Quoted values (`a="b c"`) keep their spaces.
    pub fn parse(line: &str) -> Self {
        let mut args = BTreeMap::new();
        let mut word = String::new();
        let mut quoted = false;
        for c in line.chars().chain(std::iter::once(' ')) {
            match c {
                '"' => quoted = !quoted,
                c if c.is_whitespace() && !quoted => {
                    if !word.is_empty() {
                        let (k, v) = word.split_once('=').unwrap_or((&word, ""));
                        args.insert(k.to_string(), v.to_string());
                        word.clear();
                    }
                }
                c => word.push(c),
            }
        }
        Self { args }
    }

    /// The value of `key`, or `None` if absent. A bare flag has value "".
    pub fn get(&self, key: &str) -> Option<&str> {
        self.args.get(key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_flags_and_quotes() {
        let c = Cmdline::parse("console=ttyS0,115200 quiet kiln.slot=a x=\"a b\" kiln.slot=b\n");
        assert_eq!(c.get("console"), Some("ttyS0,115200"));
        assert_eq!(c.get("quiet"), Some(""));
        assert_eq!(c.get("kiln.slot"), Some("b"));
        assert_eq!(c.get("x"), Some("a b"));
        assert_eq!(c.get("missing"), None);
    }
}
