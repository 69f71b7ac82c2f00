//! A structured diff between two configs, for the API's dry-run, and which
//! changes apply live and which need a reboot.
//!
//! Both configs are compared as JSON values, so the diff follows the
//! serialised document: map entries by key, list elements by position (a
//! removed first element shows as every later one changed). An absent
//! section compares as an empty one, so changes are listed down to the
//! fields actually set. Paths are sorted within each object; the order is
//! stable whatever the input order.
//!
//! Apply classes (the first matching prefix wins):
//!
//! | path | apply | why |
//! | --- | --- | --- |
//! | `hostname`, `network`, `time`, `kubelet`, `kubeProxy`, `registries` | live | the owning service reloads or restarts |
//! | `machine.certSans` | live | the API certificate is reissued |
//! | `sysctls.<name>` | live, or reboot for [`BOOT_ONLY_SYSCTLS`] | |
//! | `install`, `kernel`, `cluster`, `machine.ca`, `apiVersion`, `kind`, anything else | reboot | read once at boot |

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use crate::error::ConfigError;
use crate::model::MachineConfig;
use crate::path::FieldPath;

/// Sysctls that are one-way latches or only reliable at boot (huge pages
/// need unfragmented memory): changing them needs a reboot.
pub const BOOT_ONLY_SYSCTLS: &[&str] = &[
    "kernel.kexec_load_disabled",
    "kernel.modules_disabled",
    "kernel.unprivileged_bpf_disabled",
    "kernel.yama.ptrace_scope",
    "vm.nr_hugepages",
];

/// How a changed field reaches the running node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Apply {
    /// Applied to the running node (its service reloads or restarts).
    Live,
    /// Takes effect at the next boot.
    Reboot,
}

/// What happened to a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Set in the new config only.
    Added,
    /// Set in the old config only.
    Removed,
    /// Set in both, to different values.
    Modified,
}

/// One changed field. Values are not kept: a diff never carries secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The field.
    pub path: FieldPath,
    /// Added, removed or modified.
    pub kind: ChangeKind,
    /// Live or at the next boot.
    pub apply: Apply,
}

impl fmt::Display for Change {
    /// `~ network.dns.servers[0] (live)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.kind {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => '~',
        };
        let apply = match self.apply {
            Apply::Live => "live",
            Apply::Reboot => "reboot",
        };
        write!(f, "{sign} {} ({apply})", self.path)
    }
}

/// Every change from one config to another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// The changed fields, in document order of the sorted keys.
    pub changes: Vec<Change>,
}

impl Diff {
    /// Whether any change waits for a reboot.
    pub fn needs_reboot(&self) -> bool {
        self.changes.iter().any(|c| c.apply == Apply::Reboot)
    }
}

/// The changes that turn `old` into `new`.
pub fn diff(old: &MachineConfig, new: &MachineConfig) -> Result<Diff, ConfigError> {
    let to_value = |c: &MachineConfig| {
        serde_json::to_value(c).map_err(|e| ConfigError::Serialize(e.to_string()))
    };
    let mut out = Diff::default();
    walk(
        &to_value(old)?,
        &to_value(new)?,
        &FieldPath::root(),
        &mut Vec::new(),
        &mut out,
    );
    Ok(out)
}

/// `keys` are the path's map keys (list indexes left out), for [`classify`].
fn walk(old: &Value, new: &Value, path: &FieldPath, keys: &mut Vec<String>, out: &mut Diff) {
    let empty = serde_json::Map::new();
    match (old, new) {
        (Value::Object(_) | Value::Null, Value::Object(_) | Value::Null)
            if old.is_object() || new.is_object() =>
        {
            let (a, b) = (
                old.as_object().unwrap_or(&empty),
                new.as_object().unwrap_or(&empty),
            );
            let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for name in names {
                keys.push(name.clone());
                let (x, y) = (
                    a.get(name).unwrap_or(&Value::Null),
                    b.get(name).unwrap_or(&Value::Null),
                );
                walk(x, y, &path.key(name), keys, out);
                keys.pop();
            }
        }
        (Value::Array(_) | Value::Null, Value::Array(_) | Value::Null)
            if old.is_array() || new.is_array() =>
        {
            let (a, b) = (
                old.as_array().map_or(&[][..], Vec::as_slice),
                new.as_array().map_or(&[][..], Vec::as_slice),
            );
            for i in 0..a.len().max(b.len()) {
                let p = path.index(i);
                match (a.get(i), b.get(i)) {
                    (Some(x), Some(y)) => walk(x, y, &p, keys, out),
                    (None, _) => record(out, p, ChangeKind::Added, keys),
                    (_, None) => record(out, p, ChangeKind::Removed, keys),
                }
            }
        }
        _ if old == new => {}
        (Value::Null, _) => record(out, path.clone(), ChangeKind::Added, keys),
        (_, Value::Null) => record(out, path.clone(), ChangeKind::Removed, keys),
        _ => record(out, path.clone(), ChangeKind::Modified, keys),
    }
}

fn record(out: &mut Diff, path: FieldPath, kind: ChangeKind, keys: &[String]) {
    out.changes.push(Change {
        path,
        kind,
        apply: classify(keys),
    });
}

/// The apply class of a field, from its map keys (see the module table).
fn classify(keys: &[String]) -> Apply {
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    match keys.as_slice() {
        ["hostname" | "network" | "time" | "kubelet" | "kubeProxy" | "registries", ..] => {
            Apply::Live
        }
        ["machine", "certSans", ..] => Apply::Live,
        // `a/b` and `a.b` name the same sysctl.
        ["sysctls", name, ..] if !BOOT_ONLY_SYSCTLS.contains(&name.replace('/', ".").as_str()) => {
            Apply::Live
        }
        _ => Apply::Reboot,
    }
}
