//! Secrets hidden from non-admin readers. The secrets are: the bootstrap
//! token, the machine CA key and registry passwords. A redacted config keeps
//! its shape (and so still diffs and serialises) but no longer validates.

use crate::model::MachineConfig;

/// What a secret reads as once redacted.
pub const REDACTED: &str = "<redacted>";

fn hide(secret: &mut String) {
    if !secret.is_empty() {
        *secret = REDACTED.to_string();
    }
}

impl MachineConfig {
    /// A copy with every secret replaced by [`REDACTED`].
    pub fn redacted(&self) -> Self {
        let mut out = self.clone();
        hide(&mut out.cluster.token);
        hide(&mut out.machine.ca.key);
        for registry in out.registries.config.values_mut() {
            if let Some(auth) = &mut registry.auth {
                hide(&mut auth.password);
            }
        }
        out
    }
}
