//! depmod's index files, parsed: which file a module is, what it depends on,
//! which device aliases it serves, what it softly wants around it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::Error;

/// One module to insert, in load order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    pub name: String,
    pub path: PathBuf,
    /// Reached only through a soft dependency: failing to load it is not fatal.
    pub soft: bool,
}

/// The parsed index of one `lib/modules/<kver>` directory.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    dir: PathBuf,
    /// name → (path relative to `dir`, hard dependencies by name)
    deps: BTreeMap<String, (String, Vec<String>)>,
    /// (pattern, module) in file order
    aliases: Vec<(String, String)>,
    /// name → (pre, post) soft dependencies (names or aliases)
    softdeps: BTreeMap<String, (Vec<String>, Vec<String>)>,
    builtin: BTreeSet<String>,
}

/// Module names treat `-` and `_` alike; the kernel uses `_`.
pub(crate) fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// `kernel/fs/ext4/ext4.ko[.xz|.zst|.gz]` → `ext4`.
fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

impl ModuleIndex {
    /// Reads the index in `dir`. `modules.dep` is required; the others are
    /// optional (a kernel may have no aliases or soft dependencies).
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let read = |name: &str, required: bool| -> Result<Option<(PathBuf, String)>, Error> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(s) => Ok(Some((path, s))),
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(Error::Read { path, source }),
            }
        };
        let mut index = ModuleIndex {
            dir: dir.to_path_buf(),
            ..Default::default()
        };
        if let Some((path, text)) = read("modules.dep", true)? {
            for (n, line) in lines(&text) {
                let (module, rest) = line.split_once(':').ok_or_else(|| Error::Parse {
                    path: path.clone(),
                    line: n,
                    problem: "expected `module.ko: dependencies…`".into(),
                })?;
                let deps = rest.split_whitespace().map(name_of).collect();
                index
                    .deps
                    .insert(name_of(module), (module.to_string(), deps));
            }
        }
        if let Some((path, text)) = read("modules.alias", false)? {
            for (n, line) in lines(&text) {
                match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                    ["alias", pattern, module] => {
                        index.aliases.push((pattern.to_string(), normalize(module)))
                    }
                    _ => {
                        return Err(Error::Parse {
                            path,
                            line: n,
                            problem: "expected `alias <pattern> <module>`".into(),
                        })
                    }
                }
            }
        }
        if let Some((path, text)) = read("modules.softdep", false)? {
            for (n, line) in lines(&text) {
                let mut words = line.split_whitespace();
                let (Some("softdep"), Some(module)) = (words.next(), words.next()) else {
                    return Err(Error::Parse {
                        path,
                        line: n,
                        problem: "expected `softdep <module> pre: … post: …`".into(),
                    });
                };
                let entry = index.softdeps.entry(normalize(module)).or_default();
                let mut post = false;
                for w in words {
                    match w {
                        "pre:" => post = false,
                        "post:" => post = true,
                        w if post => entry.1.push(w.to_string()),
                        w => entry.0.push(w.to_string()),
                    }
                }
            }
        }
        if let Some((_, text)) = read("modules.builtin", false)? {
            index.builtin = lines(&text).map(|(_, l)| name_of(l)).collect();
        }
        Ok(index)
    }

    /// Whether `name` is a module file in this index.
    pub fn contains(&self, name: &str) -> bool {
        self.deps.contains_key(&normalize(name))
    }

    /// Whether `name` is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// Modules whose alias patterns match `modalias`, each once, in index order.
    pub fn match_alias(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (pattern, module) in &self.aliases {
            if fnmatch(pattern.as_bytes(), modalias.as_bytes()) && !out.contains(module) {
                out.push(module.clone());
            }
        }
        out
    }

    /// The files to insert for `name`, in order: soft pre-dependencies, hard
    /// dependencies (depth first), the module, soft post-dependencies. Each
    /// module appears once; a built-in module needs nothing. `name` may be an
    /// alias (`crc32c`, `fs-vfat`).
    pub fn resolve(&self, requested: &str) -> Result<Vec<ModuleFile>, Error> {
        let name = normalize(requested);
        if self.is_builtin(&name) {
            return Ok(Vec::new());
        }
        let roots: Vec<String> = if self.deps.contains_key(&name) {
            vec![name.clone()]
        } else {
            // Aliases keep their dashes: match the name as given.
            let by_alias = self.match_alias(requested);
            if by_alias.is_empty() {
                return Err(Error::UnknownModule(name));
            }
            by_alias
        };
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for root in roots {
            self.visit(&root, false, &mut seen, &mut out);
        }
        Ok(out)
    }

    fn visit(
        &self,
        name: &str,
        soft: bool,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<ModuleFile>,
    ) {
        if self.is_builtin(name) || !seen.insert(name.to_string()) {
            return;
        }
        let Some((path, deps)) = self.deps.get(name) else {
            return;
        };
        let (pre, post) = self.softdeps.get(name).cloned().unwrap_or_default();
        for p in pre.iter().flat_map(|p| self.names_for(p)) {
            self.visit(&p, true, seen, out);
        }
        for d in deps {
            self.visit(d, soft, seen, out);
        }
        out.push(ModuleFile {
            name: name.to_string(),
            path: self.dir.join(path),
            soft,
        });
        for p in post.iter().flat_map(|p| self.names_for(p)) {
            self.visit(&p, true, seen, out);
        }
    }

    /// A soft dependency may name a module or an alias.
    fn names_for(&self, name: &str) -> Vec<String> {
        let n = normalize(name);
        if self.deps.contains_key(&n) || self.is_builtin(&n) {
            vec![n]
        } else {
            self.match_alias(name)
        }
    }
}

/// Non-empty, non-comment lines with their 1-based numbers.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Shell-style matching as modules.alias uses it: `*`, `?`, `[abc]`, `[a-z]`,
/// `[!x]`.
pub(crate) fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(&pattern[p..], text[t]) {
                        if matched {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the bracket expression at the start of `pattern`;
/// returns (matched, length of the expression), or None if it is unclosed.
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        let lo = pattern[i];
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, ModuleIndex) {
        let dir = tempfile::tempdir().unwrap();
        let w = |n: &str, s: &str| std::fs::write(dir.path().join(n), s).unwrap();
        w(
            "modules.dep",
            "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\
             kernel/lib/crc16.ko:\nkernel/fs/mbcache.ko:\nkernel/fs/jbd2/jbd2.ko:\n\
             kernel/crypto/crc32c_generic.ko:\n\
             kernel/drivers/block/virtio_blk.ko:\n\
             kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko:\n\
             kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n",
        );
        w(
            "modules.alias",
            "# Aliases extracted from modules themselves.\n\
             alias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\n\
             alias virtio:d00000002v* virtio_blk\n\
             alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e\n",
        );
        w("modules.softdep", "softdep ext4 pre: crc32c\n");
        w(
            "modules.builtin",
            "kernel/fs/mbcache.ko\nkernel/drivers/virtio/virtio.ko\n",
        );
        let index = ModuleIndex::load(dir.path()).unwrap();
        (dir, index)
    }

    #[test]
    fn resolve_orders_softdeps_then_deps_then_module() {
        let (dir, index) = fixture();
        let order = index.resolve("ext4").unwrap();
        let names: Vec<_> = order.iter().map(|m| (m.name.as_str(), m.soft)).collect();
        // mbcache is built in; crc32c is an alias for crc32c_generic.
        assert_eq!(
            names,
            [
                ("crc32c_generic", true),
                ("crc16", false),
                ("jbd2", false),
                ("ext4", false)
            ]
        );
        assert_eq!(order[3].path, dir.path().join("kernel/fs/ext4/ext4.ko"));
    }

    #[test]
    fn builtin_unknown_alias_and_cycles() {
        let (_dir, index) = fixture();
        assert!(index.resolve("virtio").unwrap().is_empty());
        assert!(matches!(index.resolve("nope"), Err(Error::UnknownModule(n)) if n == "nope"));
        assert_eq!(
            index.resolve("crypto-crc32c").unwrap()[0].name,
            "crc32c_generic"
        );
        let cyc: Vec<_> = index
            .resolve("a")
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(cyc, ["b", "a"]);
    }

    #[test]
    fn aliases_match_real_patterns() {
        let (_dir, index) = fixture();
        assert_eq!(
            index.match_alias("virtio:d00000002v00001AF4"),
            ["virtio_blk"]
        );
        assert_eq!(
            index.match_alias("pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00"),
            ["e1000e"]
        );
        assert!(index
            .match_alias("pci:v00008086d000010D4sv0sd0bc02sc00i00")
            .is_empty());
    }

    #[test]
    fn fnmatch_classes() {
        assert!(fnmatch(
            b"usb:v*p*d*dc*dsc*dp*ic03isc01ip0[12]in*",
            b"usb:v1p2d3dc0dsc0dp0ic03isc01ip02in00"
        ));
        assert!(!fnmatch(b"ip0[12]", b"ip03"));
        assert!(fnmatch(b"x[!a-c]", b"xd"));
        assert!(!fnmatch(b"x[!a-c]", b"xb"));
        assert!(fnmatch(b"a?c*", b"abcdef"));
        assert!(!fnmatch(b"a?c", b"ac"));
    }

    #[test]
    fn missing_dep_file_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModuleIndex::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("modules.dep"), "{err}");
        std::fs::write(dir.path().join("modules.dep"), "kernel/x.ko: \n").unwrap();
        std::fs::write(dir.path().join("modules.alias"), "alias onlytwo\n").unwrap();
        let err = ModuleIndex::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("modules.alias:1"), "{err}");
    }
}
