//! depmod's index files, parsed: which file a module is, what it depends on,
//! which device aliases it serves, what it softly wants around it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tracing::debug;

use crate::Error;

/// One module to insert, in load order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    pub name: String,
    pub path: PathBuf,
    /// Reached only through a soft dependency: failing to load it is not fatal.
    pub soft: bool,
}

/// One line of `modules.dep`.
#[derive(Debug)]
struct Entry {
    /// Relative to the index directory, as depmod writes it.
    path: String,
    /// Hard dependencies, by name.
    deps: Vec<String>,
}

/// The parsed index of one `lib/modules/<kver>` directory.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    dir: PathBuf,
    modules: BTreeMap<String, Entry>,
    /// (pattern, module) in file order.
    aliases: Vec<(String, String)>,
    /// Literal prefix of each pattern (up to its first wildcard) → indexes
    /// into `aliases`, so a lookup runs fnmatch on a few candidates instead of
    /// on all ~26,000 patterns of a distribution kernel.
    alias_prefixes: BTreeMap<Vec<u8>, Vec<usize>>,
    /// name → (pre, post) soft dependencies (names or aliases)
    softdeps: BTreeMap<String, (Vec<String>, Vec<String>)>,
    builtin: BTreeSet<String>,
    /// (pattern, module) aliases of built-in modules, from
    /// `modules.builtin.modinfo` (`ipv6.alias=net-pf-10`).
    builtin_aliases: Vec<(String, String)>,
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

/// Aliases compare with `-` and `_` alike too, except inside `[...]`: libkmod
/// normalises both the patterns (depmod's `modules.alias.bin`) and the
/// name looked up, so `platform:gpio_keys_polled` finds
/// `alias platform:gpio-keys-polled gpio_keys_polled`.
pub(crate) fn normalize_alias(alias: &str) -> String {
    let mut out = String::with_capacity(alias.len());
    let mut in_class = false;
    for c in alias.chars() {
        match c {
            '[' => in_class = true,
            ']' => in_class = false,
            _ => {}
        }
        out.push(if c == '-' && !in_class { '_' } else { c });
    }
    out
}

/// `module.alias=pattern` records of the NUL-separated
/// `modules.builtin.modinfo`; other keys (license, description, parameters)
/// are of no use here.
fn builtin_aliases(modinfo: &[u8]) -> Vec<(String, String)> {
    modinfo
        .split(|&b| b == 0)
        .filter_map(|record| std::str::from_utf8(record).ok())
        .filter_map(|record| {
            let (key, pattern) = record.split_once('=')?;
            let module = key.strip_suffix(".alias")?;
            Some((normalize_alias(pattern), normalize(module)))
        })
        .collect()
}

/// The start of an fnmatch pattern that must match literally.
fn literal_prefix(pattern: &str) -> &[u8] {
    let bytes = pattern.as_bytes();
    let end = bytes
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(bytes.len());
    &bytes[..end]
}

impl ModuleIndex {
    /// Reads the index in `dir`. `modules.dep` is required; the others are
    /// optional (a kernel may have no aliases or soft dependencies).
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let read = |name: &str, required: bool| -> Result<Option<(PathBuf, String)>, Error> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(s) => Ok(Some((path, s))),
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                    debug!(path = %path.display(), "optional module index file absent");
                    Ok(None)
                }
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
                let module = module.trim();
                if module.is_empty() {
                    return Err(Error::Parse {
                        path,
                        line: n,
                        problem: "empty module path before `:`".into(),
                    });
                }
                let deps = rest.split_whitespace().map(name_of).collect();
                let entry = Entry {
                    path: module.to_string(),
                    deps,
                };
                index.modules.insert(name_of(module), entry);
            }
        }
        if let Some((path, text)) = read("modules.alias", false)? {
            for (n, line) in lines(&text) {
                match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                    ["alias", pattern, module] => {
                        let i = index.aliases.len();
                        let pattern = normalize_alias(pattern);
                        index
                            .alias_prefixes
                            .entry(literal_prefix(&pattern).to_vec())
                            .or_default()
                            .push(i);
                        index.aliases.push((pattern, normalize(module)));
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
                // As in libkmod, names before any `pre:`/`post:` are ignored
                // (Debian's cifs has `softdep cifs gcm`).
                let mut list: Option<&mut Vec<String>> = None;
                for w in words {
                    match w {
                        "pre:" => list = Some(&mut entry.0),
                        "post:" => list = Some(&mut entry.1),
                        w => match list.as_deref_mut() {
                            Some(l) => l.push(w.to_string()),
                            None => debug!(module, ignored = w, "softdep name without pre:/post:"),
                        },
                    }
                }
            }
        }
        if let Some((_, text)) = read("modules.builtin", false)? {
            index.builtin = lines(&text).map(|(_, l)| name_of(l)).collect();
        }
        let modinfo = dir.join("modules.builtin.modinfo");
        match std::fs::read(&modinfo) {
            Ok(bytes) => index.builtin_aliases = builtin_aliases(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Read {
                    path: modinfo,
                    source,
                })
            }
        }
        debug!(
            dir = %dir.display(),
            modules = index.modules.len(),
            aliases = index.aliases.len(),
            builtin = index.builtin.len(),
            "module index loaded"
        );
        Ok(index)
    }

    /// Whether `name` is a module file in this index.
    pub fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(&normalize(name))
    }

    /// The hard dependencies `modules.dep` lists for `name`.
    pub(crate) fn dependencies(&self, name: &str) -> &[String] {
        self.modules.get(name).map_or(&[], |e| &e.deps)
    }

    /// Whether `name` is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// Modules whose alias patterns match `modalias`, each once, in index order.
    pub fn match_alias(&self, modalias: &str) -> Vec<String> {
        let modalias = normalize_alias(modalias);
        let text = modalias.as_bytes();
        let mut candidates: Vec<usize> = (0..=text.len())
            .filter_map(|len| self.alias_prefixes.get(&text[..len]))
            .flatten()
            .copied()
            .collect();
        candidates.sort_unstable();
        let mut out: Vec<String> = Vec::new();
        for i in candidates {
            let (pattern, module) = &self.aliases[i];
            if fnmatch(pattern.as_bytes(), text) && !out.contains(module) {
                out.push(module.clone());
            }
        }
        out
    }

    /// Built-in modules whose alias patterns match `modalias`: the kernel
    /// has the driver already.
    pub fn match_builtin_alias(&self, modalias: &str) -> Vec<String> {
        let text = normalize_alias(modalias);
        let mut out: Vec<String> = Vec::new();
        for (pattern, module) in &self.builtin_aliases {
            if fnmatch(pattern.as_bytes(), text.as_bytes()) && !out.contains(module) {
                out.push(module.clone());
            }
        }
        out
    }

    /// Whether `name` is a built-in module or an alias of one (and not a
    /// loadable module or alias, which take precedence as in libkmod).
    fn names_builtin(&self, name: &str) -> bool {
        self.is_builtin(name) || !self.match_builtin_alias(name).is_empty()
    }

    /// The files to insert for `name`, in order: soft pre-dependencies, hard
    /// dependencies (depth first), the module, soft post-dependencies. Each
    /// module appears once; a built-in module needs nothing. `name` may be an
    /// alias (`crc32c`, `fs-vfat`). A hard dependency missing from
    /// `modules.dep` is an error; a soft one is skipped.
    pub fn resolve(&self, requested: &str) -> Result<Vec<ModuleFile>, Error> {
        let name = normalize(requested);
        let roots = self.names_for(requested);
        if roots.is_empty() {
            return if self.names_builtin(requested) {
                Ok(Vec::new())
            } else {
                Err(Error::UnknownModule(name))
            };
        }
        let mut walk = Walk::default();
        for root in roots {
            self.visit(&root, false, &mut walk)
                .map_err(|(needed_by, dependency)| Error::MissingDependency {
                    module: name.clone(),
                    needed_by,
                    dependency,
                })?;
        }
        Ok(walk.out)
    }

    /// Depth-first: soft pre, hard dependencies, the module, soft post.
    /// Marks a module seen on entry, so a dependency cycle ends. Fails with
    /// (module, missing dependency).
    fn visit(&self, name: &str, soft: bool, walk: &mut Walk) -> Result<(), (String, String)> {
        if self.is_builtin(name) {
            return Ok(());
        }
        if !walk.seen.insert(name.to_string()) {
            if !soft {
                self.harden(name, &mut walk.out);
            }
            return Ok(());
        }
        let Some(entry) = self.modules.get(name) else {
            // Callers only pass names from `modules` or from modules.dep
            // dependency lists, which are checked before the call.
            return Ok(());
        };
        let (pre, post) = self.softdeps.get(name).cloned().unwrap_or_default();
        for p in pre.iter().flat_map(|p| self.soft_names(p)) {
            self.visit_soft(&p, walk);
        }
        for d in &entry.deps {
            if !self.modules.contains_key(d) && !self.is_builtin(d) {
                return Err((name.to_string(), d.clone()));
            }
            self.visit(d, soft, walk)?;
        }
        walk.out.push(ModuleFile {
            name: name.to_string(),
            path: self.dir.join(&entry.path),
            soft,
        });
        for p in post.iter().flat_map(|p| self.soft_names(p)) {
            self.visit_soft(&p, walk);
        }
        Ok(())
    }

    fn soft_names(&self, softdep: &str) -> Vec<String> {
        let found = self.names_for(softdep);
        if found.is_empty() && !self.names_builtin(softdep) {
            debug!(softdep, "soft dependency names no module; skipped");
        }
        found
    }

    /// A soft dependency whose own dependencies are missing is left out
    /// whole, so none of its half-resolved dependencies are loaded either.
    fn visit_soft(&self, name: &str, walk: &mut Walk) {
        let mut trial = Walk {
            seen: walk.seen.clone(),
            out: Vec::new(),
        };
        match self.visit(name, true, &mut trial) {
            Ok(()) => {
                walk.seen = trial.seen;
                walk.out.extend(trial.out);
            }
            Err((needed_by, dependency)) => {
                debug!(
                    softdep = name,
                    needed_by, dependency, "soft dependency skipped: missing dependency"
                );
            }
        }
    }

    /// A module first reached through a soft dependency turned out to be
    /// required: it and its dependencies must load.
    fn harden(&self, name: &str, out: &mut [ModuleFile]) {
        let Some(m) = out.iter_mut().find(|m| m.name == name && m.soft) else {
            return;
        };
        m.soft = false;
        if let Some(entry) = self.modules.get(name) {
            for d in &entry.deps {
                self.harden(d, out);
            }
        }
    }

    /// The module files a name stands for, looked up as libkmod does: a
    /// module in `modules.dep`, else an alias, else nothing (a built-in
    /// module or alias, or an unknown name).
    /// `crc32` is both a built-in library and an alias of the crc32 crypto
    /// drivers; modprobe loads the drivers, and so does this.
    fn names_for(&self, name: &str) -> Vec<String> {
        let n = normalize(name);
        if self.modules.contains_key(&n) {
            vec![n]
        } else {
            self.match_alias(name)
        }
    }
}

/// State of one resolution: modules entered so far, and the load order.
#[derive(Default)]
struct Walk {
    seen: BTreeSet<String>,
    out: Vec<ModuleFile>,
}

/// Non-empty, non-comment lines with their 1-based numbers.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Shell-style matching as modules.alias uses it: `*`, `?`, `[abc]`, `[a-z]`,
/// `[!x]`, `\x`.
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
                // fnmatch without FNM_NOESCAPE, as libkmod calls it.
                b'\\' if pattern.get(p + 1) == Some(&text[t]) => {
                    p += 2;
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
             kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n\
             kernel/broken.ko: kernel/gone.ko\n\
             kernel/wants_broken.ko:\n\
             kernel/ipmi_msghandler.ko:\nkernel/ipmi_devintf.ko: kernel/ipmi_msghandler.ko\n\
             kernel/button.ko:\nkernel/gpio_keys.ko:\n\
             kernel/hw.ko: kernel/helperlib.ko kernel/helper.ko\n\
             kernel/helper.ko: kernel/helperlib.ko\nkernel/helperlib.ko:\n",
        );
        w(
            "modules.alias",
            "# Aliases extracted from modules themselves.\n\
             alias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\n\
             alias virtio:d00000002v* virtio_blk\n\
             alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e\n\
             alias acpi*:PNP0C0C:* button\n\
             alias platform:gpio-keys gpio_keys\n\
             alias pci:v00008086d*sv*sd*bc02sc80i* e1000e\n",
        );
        w(
            "modules.softdep",
            "softdep ext4 pre: crc32c\n\
             softdep ipmi_msghandler post: ipmi_devintf\n\
             softdep cifs gcm\n\
             softdep wants_broken pre: broken nonexistent platform:nothing\n\
             softdep hw pre: helper\n",
        );
        w(
            "modules.builtin",
            "kernel/fs/mbcache.ko\nkernel/drivers/virtio/virtio.ko\n",
        );
        std::fs::write(
            dir.path().join("modules.builtin.modinfo"),
            b"ipv6.license=GPL\0ipv6.alias=net-pf-10\0serial_8250.alias=acpi*:PNP0501:*\0",
        )
        .unwrap();
        let index = ModuleIndex::load(dir.path()).unwrap();
        (dir, index)
    }

    #[test]
    fn builtin_aliases_resolve_to_nothing() {
        let (_dir, index) = fixture();
        assert!(index.resolve("net-pf-10").unwrap().is_empty());
        assert_eq!(index.match_builtin_alias("acpi:PNP0501:"), ["serial_8250"]);
        assert!(index.match_alias("acpi:PNP0501:").is_empty());
        assert!(matches!(
            index.resolve("net-pf-11"),
            Err(Error::UnknownModule(_))
        ));
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

    fn names(order: &[ModuleFile]) -> Vec<(&str, bool)> {
        order.iter().map(|m| (m.name.as_str(), m.soft)).collect()
    }

    #[test]
    fn post_softdeps_come_after_and_unlabelled_names_are_ignored() {
        let (_dir, index) = fixture();
        assert_eq!(
            names(&index.resolve("ipmi_msghandler").unwrap()),
            [("ipmi_msghandler", false), ("ipmi_devintf", true)]
        );
        assert_eq!(index.softdeps["cifs"], (vec![], vec![]));
    }

    #[test]
    fn missing_hard_dependency_is_named_and_soft_one_is_skipped() {
        let (_dir, index) = fixture();
        match index.resolve("broken") {
            Err(Error::MissingDependency {
                module,
                needed_by,
                dependency,
            }) => {
                assert_eq!((module.as_str(), needed_by.as_str()), ("broken", "broken"));
                assert_eq!(dependency, "gone");
            }
            other => panic!("expected a missing dependency, got {other:?}"),
        }
        // Softdeps on a broken module, an unknown name and an unmatched
        // alias leave only the module itself.
        assert_eq!(
            names(&index.resolve("wants_broken").unwrap()),
            [("wants_broken", false)]
        );
    }

    #[test]
    fn a_soft_module_that_is_also_required_becomes_hard() {
        let (_dir, index) = fixture();
        // hw's softdep reaches helper (and its helperlib) first; hw then
        // needs both hard, so a failure to load them must not be ignored.
        assert_eq!(
            names(&index.resolve("hw").unwrap()),
            [("helperlib", false), ("helper", false), ("hw", false)]
        );
    }

    #[test]
    fn leading_wildcards_and_escapes_match() {
        let (_dir, index) = fixture();
        assert_eq!(index.match_alias("acpi:PNP0C0C:"), ["button"]);
        assert_eq!(index.match_alias("acpiX:PNP0C0C:foo"), ["button"]);
        // Two patterns for one module count once.
        assert_eq!(
            index.match_alias("pci:v00008086d000010D3sv0sd0bc02sc80i00"),
            ["e1000e"]
        );
        assert!(fnmatch(b"a\\*b", b"a*b"));
        assert!(!fnmatch(b"a\\*b", b"axb"));
        assert_eq!(literal_prefix("acpi*:X"), b"acpi");
        assert_eq!(
            normalize_alias("of:N*T*Cgpio-keys[-_]x-"),
            "of:N*T*Cgpio_keys[-_]x_"
        );
        assert_eq!(index.match_alias("platform:gpio-keys"), ["gpio_keys"]);
        assert_eq!(index.match_alias("platform:gpio_keys"), ["gpio_keys"]);
        assert_eq!(literal_prefix("virtio:d00000002v*"), b"virtio:d00000002v");
    }
}
