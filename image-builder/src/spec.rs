//! The image spec (`configs/image.toml`): parsed strictly (unknown fields
//! are errors) and validated, every error naming its field.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::Error;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    pub version: String,
    pub partitions: Partitions,
    pub modules: Modules,
    pub arch: BTreeMap<String, ArchSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partitions {
    pub esp_mib: u64,
    pub state_mib: u64,
    pub ephemeral_mib: u64,
    /// If set, the disk image must be exactly this big (and big enough).
    pub disk_mib: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modules {
    pub load: Vec<String>,
    pub hardware: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchSpec {
    pub kernel: Package,
    pub bootloader: Package,
    pub cmdline: String,
    /// Extra hardware module paths for this architecture only.
    #[serde(default)]
    pub hardware: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub package: String,
    pub version: String,
    pub sha256: String,
}

/// Architectures the builder knows: spec name → Debian architecture.
pub const ARCHES: [(&str, &str); 2] = [("x86_64", "amd64"), ("aarch64", "arm64")];

/// FAT32 needs at least 65525 clusters; with 512-byte clusters that is ~33 MiB.
const MIN_ESP_MIB: u64 = 34;
const MIN_EXT4_MIB: u64 = 8;

impl Spec {
    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> Result<Spec, Error> {
        let text = std::fs::read_to_string(path).map_err(Error::io("read spec", path))?;
        let spec: Spec = toml::from_str(&text).map_err(|e| Error::Spec {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), Error> {
        let field = |f: &str, p: &str| {
            Err(Error::Field {
                field: f.to_string(),
                problem: p.to_string(),
            })
        };
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return field("name", "expected lowercase letters, digits and '-'");
        }
        if self.version.is_empty() || self.version.contains(char::is_whitespace) {
            return field("version", "expected a version without spaces");
        }
        if self.partitions.esp_mib < MIN_ESP_MIB {
            return field(
                "partitions.esp_mib",
                &format!("at least {MIN_ESP_MIB} MiB (FAT32)"),
            );
        }
        if self.partitions.state_mib < MIN_EXT4_MIB {
            return field(
                "partitions.state_mib",
                &format!("at least {MIN_EXT4_MIB} MiB"),
            );
        }
        if self.partitions.ephemeral_mib < MIN_EXT4_MIB {
            return field(
                "partitions.ephemeral_mib",
                &format!("at least {MIN_EXT4_MIB} MiB"),
            );
        }
        if let Some(disk) = self.partitions.disk_mib {
            let need = self.needed_disk_mib();
            if disk < need {
                return field(
                    "partitions.disk_mib",
                    &format!("{disk} MiB is too small: the partitions need {need} MiB"),
                );
            }
        }
        for (i, m) in self.modules.load.iter().enumerate() {
            if m.is_empty() || m.contains('/') || m.contains(char::is_whitespace) {
                return field(&format!("modules.load[{i}]"), "expected a module name");
            }
        }
        for (i, p) in self.modules.hardware.iter().enumerate() {
            check_module_path(&format!("modules.hardware[{i}]"), p)?;
        }
        if self.arch.is_empty() {
            return field("arch", "no architecture defined");
        }
        for (name, a) in &self.arch {
            if !ARCHES.iter().any(|(n, _)| n == name) {
                return field(
                    &format!("arch.{name}"),
                    "unknown architecture (x86_64 or aarch64)",
                );
            }
            for (what, p) in [("kernel", &a.kernel), ("bootloader", &a.bootloader)] {
                let f = format!("arch.{name}.{what}");
                if p.package.is_empty() {
                    return field(&format!("{f}.package"), "empty");
                }
                if p.version.is_empty() {
                    return field(&format!("{f}.version"), "empty");
                }
                if p.sha256.len() != 64 || !p.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return field(&format!("{f}.sha256"), "expected 64 hex characters");
                }
            }
            if a.cmdline.contains('\n') {
                return field(&format!("arch.{name}.cmdline"), "must be one line");
            }
            for (i, p) in a.hardware.iter().enumerate() {
                check_module_path(&format!("arch.{name}.hardware[{i}]"), p)?;
            }
        }
        Ok(())
    }

    /// The architecture's section, or an error naming it.
    pub fn arch(&self, arch: &str) -> Result<&ArchSpec, Error> {
        self.arch.get(arch).ok_or_else(|| Error::Field {
            field: format!("arch.{arch}"),
            problem: "not in the spec".into(),
        })
    }

    /// 1 MiB before the first partition, the partitions, 1 MiB for the backup GPT.
    pub fn needed_disk_mib(&self) -> u64 {
        1 + self.partitions.esp_mib + self.partitions.state_mib + self.partitions.ephemeral_mib + 1
    }
}

fn check_module_path(field: &str, p: &str) -> Result<(), Error> {
    if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c == "..") {
        return Err(Error::Field {
            field: field.into(),
            problem: "expected a path relative to lib/modules/<kver>".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "kiln"
version = "0.1.0"
[partitions]
esp_mib = 64
state_mib = 16
ephemeral_mib = 64
[modules]
load = ["ext4"]
hardware = ["kernel/drivers/virtio"]
[arch.x86_64]
kernel = { package = "k", version = "1", sha256 = "0000000000000000000000000000000000000000000000000000000000000000" }
bootloader = { package = "b", version = "1", sha256 = "0000000000000000000000000000000000000000000000000000000000000000" }
cmdline = "console=ttyS0"
"#;

    fn check(toml_text: &str) -> Result<Spec, String> {
        let spec: Spec = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    #[test]
    fn the_repository_spec_is_valid() {
        Spec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/image.toml")).unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        assert!(check(GOOD).is_ok());
        let cases = [
            (
                GOOD.replace("sha256 = \"0000", "sha256 = \"zz00"),
                "arch.x86_64.kernel.sha256: expected 64 hex characters",
            ),
            (
                GOOD.replace("esp_mib = 64", "esp_mib = 8"),
                "partitions.esp_mib: at least",
            ),
            (
                GOOD.replace("ephemeral_mib = 64", "ephemeral_mib = 64\ndisk_mib = 100"),
                "partitions.disk_mib: 100 MiB is too small: the partitions need 146 MiB",
            ),
            (
                GOOD.replace("[arch.x86_64]", "[arch.riscv]"),
                "arch.riscv: unknown architecture",
            ),
            (
                GOOD.replace("\"kernel/drivers/virtio\"", "\"/abs\""),
                "modules.hardware[0]: expected a path",
            ),
            (
                GOOD.replace("name = \"kiln\"", "name = \"Kiln OS\""),
                "name: expected lowercase",
            ),
        ];
        for (text, want) in cases {
            let err = check(&text).unwrap_err();
            assert!(err.contains(want), "expected {want:?}, got {err:?}");
        }
        let err = check(&GOOD.replace("[modules]", "[modules]\nextra = 1")).unwrap_err();
        assert!(err.contains("unknown field `extra`"), "{err}");
    }
}
