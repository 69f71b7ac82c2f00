//! A small depmod: reads each module's `.modinfo` ELF section, selects the
//! spec's modules with everything they depend on, and writes the index files
//! (`modules.dep`, `.alias`, `.softdep`) in depmod's formats — Debian's
//! package ships none of them, it runs depmod at install time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

use crate::Error;

/// What one module declares about itself.
#[derive(Debug, Clone, Default)]
pub struct ModInfo {
    /// Path relative to `lib/modules/<kver>/`.
    pub rel: String,
    pub depends: Vec<String>,
    pub aliases: Vec<String>,
    pub pre: Vec<String>,
    pub post: Vec<String>,
}

/// Every module of one kernel.
#[derive(Debug)]
pub struct KernelTree {
    pub kver: String,
    /// `lib/modules/<kver>` in the unpacked package.
    pub root: PathBuf,
    pub modules: BTreeMap<String, ModInfo>,
    pub builtin: BTreeSet<String>,
}

/// The modules an image carries.
#[derive(Debug, Default)]
pub struct Selection {
    pub names: BTreeSet<String>,
}

pub(crate) fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn name_of(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    normalize(file.split(".ko").next().unwrap_or(file))
}

impl KernelTree {
    /// Scans the one `lib/modules/<kver>` directory of an unpacked kernel package.
    pub fn scan(unpacked: &Path) -> Result<KernelTree, Error> {
        let base = unpacked.join("lib/modules");
        let mut kvers: Vec<String> = std::fs::read_dir(&base)
            .map_err(Error::io("read", &base))?
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        kvers.sort();
        let [kver] = kvers.as_slice() else {
            return Err(Error::Format {
                what: "kernel package",
                problem: format!("expected one lib/modules/<kver>, found {kvers:?}"),
            });
        };
        let root = base.join(kver);
        let mut files = Vec::new();
        collect_ko(&root, &root, &mut files)?;
        let mut modules = BTreeMap::new();
        for rel in files {
            let info = read_modinfo(&root, &rel)?;
            modules.insert(name_of(&rel), info);
        }
        let builtin = std::fs::read_to_string(root.join("modules.builtin"))
            .map(|s| s.lines().filter(|l| !l.is_empty()).map(name_of).collect())
            .unwrap_or_default();
        Ok(KernelTree {
            kver: kver.clone(),
            root,
            modules,
            builtin,
        })
    }

    /// The named modules, every module under the hardware paths, and the
    /// closure of their dependencies and soft dependencies.
    pub fn select(
        &self,
        load: &[String],
        hardware: &[(String, String)],
    ) -> Result<Selection, Error> {
        let mut want: Vec<String> = Vec::new();
        for name in load {
            let n = normalize(name);
            if self.builtin.contains(&n) {
                continue;
            }
            if !self.modules.contains_key(&n) {
                return Err(Error::Module {
                    module: name.clone(),
                    problem: format!("not in kernel {} (modules.load)", self.kver),
                });
            }
            want.push(n);
        }
        for (field, path) in hardware {
            let full = self.root.join(path);
            if full.is_dir() {
                let mut files = Vec::new();
                collect_ko(&self.root, &full, &mut files)?;
                want.extend(files.iter().map(|r| name_of(r)));
            } else if full.is_file() {
                want.push(name_of(path));
            } else if !self.builtin.contains(&name_of(path)) {
                return Err(Error::Field {
                    field: field.clone(),
                    problem: format!("{path} is not in kernel {}", self.kver),
                });
            }
        }
        let mut sel = Selection::default();
        while let Some(n) = want.pop() {
            if !sel.names.insert(n.clone()) {
                continue;
            }
            let Some(info) = self.modules.get(&n) else {
                continue;
            };
            for d in info.depends.iter().chain(&info.pre).chain(&info.post) {
                want.extend(self.resolve_name(d));
            }
        }
        Ok(sel)
    }

    /// A dependency may name a module or an alias (`crc32c`).
    fn resolve_name(&self, name: &str) -> Vec<String> {
        let n = normalize(name);
        if self.modules.contains_key(&n) {
            return vec![n];
        }
        if self.builtin.contains(&n) {
            return Vec::new();
        }
        self.modules
            .iter()
            .filter(|(_, i)| i.aliases.iter().any(|a| a == name))
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// The index files for `sel`, as (file name, contents).
    pub fn index_files(&self, sel: &Selection) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let mut dep = String::new();
        let mut alias = String::new();
        let mut softdep = String::new();
        let mut by_rel: Vec<(&String, &ModInfo)> = sel
            .names
            .iter()
            .filter_map(|n| self.modules.get(n).map(|i| (n, i)))
            .collect();
        by_rel.sort_by(|a, b| a.1.rel.cmp(&b.1.rel));
        for (name, info) in &by_rel {
            // depmod lists every transitive dependency, nearest first.
            let mut order = Vec::new();
            let mut seen = BTreeSet::new();
            self.post_order(name, &mut seen, &mut order);
            order.pop(); // the module itself
            order.reverse();
            let deps: Vec<&str> = order
                .iter()
                .filter_map(|d| self.modules.get(d).map(|i| i.rel.as_str()))
                .collect();
            dep.push_str(&format!(
                "{}:{}{}\n",
                info.rel,
                if deps.is_empty() { "" } else { " " },
                deps.join(" ")
            ));
            for a in &info.aliases {
                alias.push_str(&format!("alias {a} {name}\n"));
            }
            if !info.pre.is_empty() || !info.post.is_empty() {
                let mut line = format!("softdep {name}");
                if !info.pre.is_empty() {
                    line.push_str(&format!(" pre: {}", info.pre.join(" ")));
                }
                if !info.post.is_empty() {
                    line.push_str(&format!(" post: {}", info.post.join(" ")));
                }
                softdep.push_str(&line);
                softdep.push('\n');
            }
        }
        let mut files = vec![
            ("modules.dep".to_string(), dep.into_bytes()),
            ("modules.alias".to_string(), alias.into_bytes()),
            ("modules.softdep".to_string(), softdep.into_bytes()),
        ];
        for copied in [
            "modules.builtin",
            "modules.builtin.modinfo",
            "modules.order",
        ] {
            let p = self.root.join(copied);
            if p.exists() {
                files.push((
                    copied.to_string(),
                    std::fs::read(&p).map_err(Error::io("read", &p))?,
                ));
            }
        }
        Ok(files)
    }

    fn post_order(&self, name: &str, seen: &mut BTreeSet<String>, out: &mut Vec<String>) {
        if !seen.insert(name.to_string()) {
            return;
        }
        if let Some(info) = self.modules.get(name) {
            for d in &info.depends {
                self.post_order(&normalize(d), seen, out);
            }
        }
        out.push(name.to_string());
    }
}

/// Every `.ko` below `dir`, as paths relative to `root`, sorted.
fn collect_ko(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), Error> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(Error::io("read", dir))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let kind = e.file_type().map_err(Error::io("stat", &path))?;
        if kind.is_dir() {
            collect_ko(root, &path, out)?;
        } else if kind.is_file() && path.to_string_lossy().contains(".ko") {
            if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    Ok(())
}

/// Parses the `.modinfo` section: NUL-separated `key=value` strings.
fn read_modinfo(root: &Path, rel: &str) -> Result<ModInfo, Error> {
    let path = root.join(rel);
    let data = std::fs::read(&path).map_err(Error::io("read", &path))?;
    let bad = |problem: String| Error::Module {
        module: name_of(rel),
        problem,
    };
    let elf =
        object::File::parse(&*data).map_err(|e| bad(format!("{rel}: not an ELF module: {e}")))?;
    let section = elf
        .section_by_name(".modinfo")
        .ok_or_else(|| bad(format!("{rel}: no .modinfo section")))?;
    let raw = section
        .data()
        .map_err(|e| bad(format!("{rel}: .modinfo: {e}")))?;
    let mut info = ModInfo {
        rel: rel.to_string(),
        ..Default::default()
    };
    for entry in raw.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        let Ok(text) = std::str::from_utf8(entry) else {
            continue;
        };
        let Some((key, value)) = text.split_once('=') else {
            continue;
        };
        match key {
            "depends" => info
                .depends
                .extend(value.split(',').filter(|d| !d.is_empty()).map(normalize)),
            "alias" => info.aliases.push(value.to_string()),
            "softdep" => {
                let mut post = false;
                for w in value.split_whitespace() {
                    match w {
                        "pre:" => post = false,
                        "post:" => post = true,
                        w if post => info.post.push(w.to_string()),
                        w => info.pre.push(w.to_string()),
                    }
                }
            }
            _ => {}
        }
    }
    Ok(info)
}
