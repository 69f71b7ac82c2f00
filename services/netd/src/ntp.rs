//! The NTP servers netd learns (`ip=`'s ntp0-ip, DHCP option 42), handed to
//! timed in a small file: one address a line, replaced atomically like
//! resolv.conf. timed reads it with [`parse`], so the format lives here only.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Where the node's netd writes the list.
pub const NTP_SERVERS: &str = "/run/kiln/ntp-servers";

const HEADER: &str = "# written by kiln netd: NTP servers from ip= and DHCP option 42";

/// The file's content; duplicates dropped, first occurrence kept.
pub fn render(servers: &[Ipv4Addr]) -> String {
    let mut out = format!("{HEADER}\n");
    let mut seen = Vec::new();
    for s in servers {
        if !seen.contains(s) {
            seen.push(*s);
            // Infallible: writing to a String.
            let _ = writeln!(out, "{s}");
        }
    }
    out
}

/// A line of the file that is not an IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: `{text}` is not an IPv4 address")]
pub struct ParseError {
    pub line: usize,
    pub text: String,
}

/// The servers in a file [`render`] wrote; `#` lines and blank lines are
/// skipped.
pub fn parse(text: &str) -> Result<Vec<Ipv4Addr>, ParseError> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(line, l)| {
            l.parse().map_err(|_| ParseError {
                line,
                text: l.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_back() {
        let a = Ipv4Addr::new(10, 0, 0, 123);
        let b = Ipv4Addr::new(10, 0, 0, 124);
        let text = render(&[a, b, a]);
        assert_eq!(text, format!("{HEADER}\n10.0.0.123\n10.0.0.124\n"));
        assert_eq!(parse(&text).unwrap(), vec![a, b]);
        assert!(parse(&render(&[])).unwrap().is_empty());
    }

    #[test]
    fn a_bad_line_is_named() {
        let e = parse("# x\n10.0.0.1\n\nntp.example\n").unwrap_err();
        assert_eq!(e.line, 4);
        assert_eq!(
            e.to_string(),
            "line 4: `ntp.example` is not an IPv4 address"
        );
    }
}
