//! Network configuration: the first file (by name) in the CNI conf dir
//! ending in `.conflist`, `.conf` or `.json`, as kubelet and containerd pick
//! it. A `.conf` holds one plugin; it is read as a list of one.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::CniError;

/// A network: its name, CNI version and plugin chain, exactly as read, so
/// that DEL can later run with the configuration ADD used.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub plugins: Vec<Map<String, Value>>,
    pub source: PathBuf,
}

impl NetworkList {
    /// Loads the first network configuration in `dir`.
    pub fn load_first(dir: &Path) -> Result<Self, CniError> {
        let read_dir = |source| CniError::ConfDir {
            dir: dir.to_path_buf(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect();
        files.sort();
        let first = files.into_iter().next().ok_or_else(|| CniError::NoConfig {
            dir: dir.to_path_buf(),
        })?;
        Self::load(&first)
    }

    fn load(path: &Path) -> Result<Self, CniError> {
        let bad = |problem: String| CniError::BadConfig {
            path: path.to_path_buf(),
            problem,
        };
        let text = std::fs::read(path).map_err(|source| CniError::ConfFile {
            path: path.to_path_buf(),
            source,
        })?;
        let doc: Map<String, Value> =
            serde_json::from_slice(&text).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let string = |key: &str| -> Result<String, CniError> {
            match doc.get(key) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(bad(format!("`{key}` must be a non-empty string"))),
            }
        };
        let name = string("name")?;
        let cni_version = string("cniVersion")?;
        let is_list = path.extension().and_then(|e| e.to_str()) == Some("conflist")
            || doc.contains_key("plugins");
        let plugins = if is_list {
            match doc.get("plugins") {
                Some(Value::Array(items)) if !items.is_empty() => items
                    .iter()
                    .enumerate()
                    .map(|(i, p)| match p {
                        Value::Object(m) => Ok(m.clone()),
                        _ => Err(bad(format!("`plugins[{i}]` must be an object"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err(bad("`plugins` must be a non-empty array".into())),
            }
        } else {
            vec![doc.clone()]
        };
        for (i, p) in plugins.iter().enumerate() {
            match p.get("type") {
                Some(Value::String(t)) if !t.is_empty() && !t.contains('/') && t != ".." => {}
                _ => {
                    return Err(bad(format!(
                        "`plugins[{i}].type` must be a plugin name (no `/`)"
                    )))
                }
            }
        }
        Ok(Self {
            name,
            cni_version,
            disable_check: matches!(doc.get("disableCheck"), Some(Value::Bool(true))),
            plugins,
            source: path.to_path_buf(),
        })
    }
}
