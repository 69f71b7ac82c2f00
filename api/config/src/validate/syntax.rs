//! Syntax checks for single values. Each returns the reason a value is
//! refused; the caller adds the path.

use std::net::IpAddr;

use ipnet::IpNet;
use x509_parser::pem::Pem;

type Check = Result<(), String>;

/// One DNS label (RFC 1123): 1–63 of `a-z0-9-`, not starting or ending with `-`.
pub fn dns_label(s: &str) -> Check {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("label `{s}` must be 1-63 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!("label `{s}` may hold only a-z, 0-9 and -"));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(format!("label `{s}` must not start or end with -"));
    }
    Ok(())
}

/// A DNS name (RFC 1123 subdomain): dot-separated labels, at most 253 characters.
pub fn dns_name(s: &str) -> Check {
    if s.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    s.split('.').try_for_each(dns_label)
}

/// A host name or an IP address.
pub fn host(s: &str) -> Check {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    dns_name(s)
}

/// `host[:port]`, as registries are named.
pub fn host_port(s: &str) -> Check {
    match s.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') => {
            port.parse::<u16>()
                .map_err(|_| format!("port `{port}` is not 0-65535"))?;
            host(h)
        }
        _ => host(s),
    }
}

/// An IP address.
pub fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>().map_err(|e| e.to_string())
}

/// `address/prefix`.
pub fn cidr(s: &str) -> Result<IpNet, String> {
    if !s.contains('/') {
        return Err("missing /prefix".into());
    }
    s.parse::<IpNet>()
        .map_err(|_| "expected address/prefix, e.g. 10.0.0.5/24".into())
}

/// A Linux link name: 1–15 bytes, no `/`, `:` or whitespace, not `.` or `..`.
pub fn ifname(s: &str) -> Check {
    if s.is_empty() || s.len() > 15 {
        return Err("must be 1-15 bytes".into());
    }
    if s == "."
        || s == ".."
        || s.bytes()
            .any(|b| b == b'/' || b == b':' || !b.is_ascii_graphic())
    {
        return Err("may not be . or .. nor hold /, : or whitespace".into());
    }
    Ok(())
}

/// A MAC address, `aa:bb:cc:dd:ee:ff`.
pub fn mac(s: &str) -> Check {
    let parts: Vec<&str> = s.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err("expected six hex pairs separated by :".into())
    }
}

/// Either a link name or a MAC address (bond members): a MAC if it has the shape.
pub fn link_selector(s: &str) -> Check {
    if s.len() == 17 && s.matches(':').count() == 5 {
        mac(s)
    } else {
        ifname(s)
    }
}

/// Kubernetes' qualified-name body: `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, up to 63.
fn k8s_name(s: &str, what: &str) -> Check {
    if s.len() > 63 {
        return Err(format!("{what} is longer than 63 characters"));
    }
    let alnum_ends = s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    let body_ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if alnum_ends && body_ok {
        Ok(())
    } else {
        Err(format!(
            "{what} must be alphanumerics, -, _ or . and start and end with an alphanumeric"
        ))
    }
}

/// A Kubernetes label (or taint) key: `[prefix/]name`, the prefix a DNS name.
pub fn label_key(s: &str) -> Check {
    let name = match s.split_once('/') {
        Some((prefix, name)) => {
            dns_name(prefix).map_err(|e| format!("prefix: {e}"))?;
            name
        }
        None => s,
    };
    if name.is_empty() {
        return Err("name is empty".into());
    }
    k8s_name(name, "name")
}

/// A Kubernetes label (or taint) value: empty or a qualified-name body.
pub fn label_value(s: &str) -> Check {
    if s.is_empty() {
        return Ok(());
    }
    k8s_name(s, "value")
}

/// A command-line flag name without the leading `--`.
pub fn flag_name(s: &str) -> Check {
    let ok = s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err("expected a-z, 0-9 and -, starting with a letter (no leading --)".into())
    }
}

/// The top-level sysctl namespaces of `/proc/sys`.
const SYSCTL_ROOTS: &[&str] = &[
    "abi", "crypto", "debug", "dev", "fs", "kernel", "net", "sunrpc", "user", "vm",
];

/// A sysctl name: `root.a.b`, segments of `A-Za-z0-9_-`, `/` allowed as a
/// separator too (interface names such as `eth0.100` are written `eth0/100`).
pub fn sysctl_name(s: &str) -> Check {
    let segments: Vec<&str> = s.split(['.', '/']).collect();
    if segments.len() < 2 {
        return Err("expected a dotted name such as net.ipv4.ip_forward".into());
    }
    if !SYSCTL_ROOTS.contains(&segments[0]) {
        return Err(format!(
            "unknown namespace `{}` (not under /proc/sys)",
            segments[0]
        ));
    }
    let ok = segments.iter().all(|seg| {
        !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err("segments must be non-empty A-Z, a-z, 0-9, _ or -".into())
    }
}

/// A kernel module name: 1–55 of `A-Za-z0-9_-` (the kernel's MODULE_NAME_LEN).
pub fn module_name(s: &str) -> Check {
    if s.is_empty() || s.len() > 55 {
        return Err("must be 1-55 characters".into());
    }
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err("may hold only A-Z, a-z, 0-9, _ and -".into())
    }
}

/// A container image reference: `[registry[:port]/]path[:tag][@sha256:<64 hex>]`.
pub fn image_ref(s: &str) -> Check {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let hex = d
            .strip_prefix("sha256:")
            .ok_or("digest must be sha256:<hex>")?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("digest must be sha256: and 64 lowercase hex digits".into());
        }
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].split_once(':') {
        Some((_, t)) => (&rest[..rest.len() - t.len() - 1], Some(t)),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            return Err(format!(
                "tag `{t}` must be 1-128 of A-Z, a-z, 0-9, _, . and -"
            ));
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    // The first component is a registry when it looks like a host.
    if components.len() > 1 && (components[0].contains(['.', ':']) || components[0] == "localhost")
    {
        host_port(components.remove(0)).map_err(|e| format!("registry: {e}"))?;
    }
    for c in components {
        let ok = !c.is_empty()
            && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !ok {
            return Err(format!(
                "path component `{c}` must be lowercase a-z, 0-9, ., _ or -"
            ));
        }
    }
    Ok(())
}

/// A URL with one of `schemes`, a host, and no credentials in it.
pub fn url(s: &str, schemes: &[&str]) -> Check {
    let u = url::Url::parse(s).map_err(|e| e.to_string())?;
    if !schemes.contains(&u.scheme()) {
        return Err(format!("scheme must be {}", schemes.join(" or ")));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("credentials do not belong in a URL".into());
    }
    Ok(())
}

/// A bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}` (never echoed: it is a secret).
pub fn bootstrap_token(s: &str) -> Check {
    let part = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match s.split_once('.') {
        Some((id, secret)) if part(id, 6) && part(secret, 16) => Ok(()),
        _ => Err("expected [a-z0-9]{6}.[a-z0-9]{16}".into()),
    }
}

/// A block device path under /dev.
pub fn disk_path(s: &str) -> Check {
    let rest = s
        .strip_prefix("/dev/")
        .ok_or("must be a path under /dev/")?;
    let ok = !rest.is_empty()
        && !rest.ends_with('/')
        && rest
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && s.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err("must name a device, without empty, . or .. components or whitespace".into())
    }
}

/// A certificate SAN: an IP address or a DNS name, optionally `*.`-prefixed.
pub fn cert_san(s: &str) -> Check {
    host(s.strip_prefix("*.").unwrap_or(s))
}

/// One or more PEM `CERTIFICATE` blocks that parse as X.509. Returns, for
/// each, whether it is a CA (basicConstraints CA:TRUE).
pub fn certificates(pem: &str) -> Result<Vec<bool>, String> {
    let mut out = Vec::new();
    for (i, block) in Pem::iter_from_buffer(pem.as_bytes()).enumerate() {
        let block = block.map_err(|e| format!("PEM block {}: {e}", i + 1))?;
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "PEM block {} is {}, not CERTIFICATE",
                i + 1,
                block.label
            ));
        }
        // x509-parser's own error (a nom error kind) tells an operator nothing.
        let cert = block
            .parse_x509()
            .map_err(|_| format!("certificate {} is not valid X.509", i + 1))?;
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        out.push(is_ca);
    }
    if out.is_empty() {
        return Err("no PEM CERTIFICATE block".into());
    }
    Ok(out)
}

/// Exactly one PEM private key block (PKCS#8, SEC1 or PKCS#1) holding DER.
pub fn private_key(pem: &str) -> Check {
    let blocks: Vec<Pem> = Pem::iter_from_buffer(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("PEM: {e}"))?;
    let [block] = blocks.as_slice() else {
        return Err(format!("expected one PEM block, found {}", blocks.len()));
    };
    if !["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"].contains(&block.label.as_str()) {
        return Err(format!("PEM block is {}, not a PRIVATE KEY", block.label));
    }
    x509_parser::der_parser::parse_der(&block.contents)
        .map_err(|_| "key is not DER".to_string())
        .and_then(|(rest, _)| {
            if rest.is_empty() {
                Ok(())
            } else {
                Err("trailing bytes after the key".into())
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns_name("node-1.example.com").is_ok());
        assert!(dns_name("Node").is_err());
        assert!(dns_name("-a").is_err());
        assert!(dns_name("a..b").is_err());
        assert!(ifname("enp1s0").is_ok());
        assert!(ifname("a-very-long-name0").is_err());
        assert!(link_selector("52:54:00:12:34:5g").is_err());
        assert!(link_selector("52:54:00:12:34:56").is_ok());
        assert!(host_port("registry.local:5000").is_ok());
        assert!(host_port("registry.local:99999").is_err());
    }

    #[test]
    fn kubernetes_syntax() {
        assert!(label_key("node.kubernetes.io/role").is_ok());
        assert!(label_key("zone").is_ok());
        assert!(label_key("Example.com/x").is_err());
        assert!(label_key("a/").is_err());
        assert!(label_key("-x").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("a.b_c-D").is_ok());
        assert!(label_value("a b").is_err());
        assert!(label_value(&"a".repeat(64)).is_err());
    }

    #[test]
    fn images() {
        assert!(image_ref("registry.k8s.io/kube-proxy:v1.31.2").is_ok());
        assert!(image_ref("localhost:5000/kubelet").is_ok());
        assert!(image_ref(&format!("k/x@sha256:{}", "a".repeat(64))).is_ok());
        assert!(image_ref("Registry/X").is_err());
        assert!(image_ref("x:").is_err());
        assert!(image_ref("x@md5:00").is_err());
    }

    #[test]
    fn misc() {
        assert!(sysctl_name("net.ipv4.conf.eth0/100.rp_filter").is_ok());
        assert!(sysctl_name("foo.bar").is_err());
        assert!(sysctl_name("net").is_err());
        assert!(module_name("br_netfilter").is_ok());
        assert!(module_name("a b").is_err());
        assert!(bootstrap_token("abcdef.0123456789abcdef").is_ok());
        assert!(bootstrap_token("ABCDEF.0123456789abcdef").is_err());
        assert!(url("https://10.0.0.1:6443", &["https"]).is_ok());
        assert!(url("http://x", &["https"]).is_err());
        assert!(url("https://u:p@x", &["https"]).is_err());
        assert!(disk_path("/dev/disk/by-id/nvme-x").is_ok());
        assert!(disk_path("/dev/../etc").is_err());
        assert!(cidr("10.0.0.5").is_err());
        assert!(certificates("no pem").is_err());
        assert!(
            private_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err()
        );
    }
}
