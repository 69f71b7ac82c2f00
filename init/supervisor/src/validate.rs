//! Checks a set of service definitions before anything of it runs: ids
//! unique and usable as a cgroup and log file name, dependencies known, no
//! dependency cycle, commands non-empty. Errors name the services involved.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::{Service, ServiceSpec};

/// Invalid service definitions or requests.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("service {0:?} is defined twice")]
    Duplicate(String),
    #[error("service id {0:?} is invalid: use letters, digits, '-', '_' and '.' (not only dots)")]
    InvalidId(String),
    #[error("service {service:?} depends on unknown service {dependency:?}")]
    UnknownDependency { service: String, dependency: String },
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("service {0:?} has an empty command")]
    EmptyCommand(String),
    #[error("no service {0:?}")]
    UnknownService(String),
    #[error("the supervisor is shutting down")]
    ShuttingDown,
}

/// An id becomes a directory and a file name: no `/`, no `.`/`..`.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.chars().all(|c| c == '.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub(crate) fn validate(
    specs: &[ServiceSpec],
    existing: &BTreeMap<String, Arc<Service>>,
) -> Result<(), Error> {
    let mut ids = BTreeSet::new();
    for s in specs {
        if !valid_id(&s.id) {
            return Err(Error::InvalidId(s.id.clone()));
        }
        if existing.contains_key(&s.id) || !ids.insert(s.id.as_str()) {
            return Err(Error::Duplicate(s.id.clone()));
        }
        if s.command.is_empty() {
            return Err(Error::EmptyCommand(s.id.clone()));
        }
    }
    for s in specs {
        for d in &s.depends_on {
            if !ids.contains(d.as_str()) && !existing.contains_key(d) {
                return Err(Error::UnknownDependency {
                    service: s.id.clone(),
                    dependency: d.clone(),
                });
            }
        }
    }
    // Services already loaded were checked then and cannot depend on new
    // ones, so a cycle runs through the new specs only.
    let deps: BTreeMap<&str, &Vec<String>> = specs
        .iter()
        .map(|s| (s.id.as_str(), &s.depends_on))
        .collect();
    let mut done = BTreeSet::new();
    for s in specs {
        visit(&s.id, &deps, &mut Vec::new(), &mut done)?;
    }
    Ok(())
}

/// Depth-first search for a cycle, reporting its path.
fn visit<'a>(
    id: &'a str,
    deps: &BTreeMap<&'a str, &'a Vec<String>>,
    path: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
) -> Result<(), Error> {
    if let Some(pos) = path.iter().position(|p| *p == id) {
        let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
        cycle.push(id.to_string());
        return Err(Error::Cycle(cycle));
    }
    if done.contains(id) {
        return Ok(());
    }
    path.push(id);
    if let Some(ds) = deps.get(id) {
        for d in ds.iter() {
            visit(d.as_str(), deps, path, done)?;
        }
    }
    path.pop();
    done.insert(id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_file_names() {
        for ok in ["hotplug", "cri-0", "a.b_c"] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "has space", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn cycles_are_reported_with_their_path() {
        let specs = vec![
            ServiceSpec::new("a", ["/bin/true"]).depends_on(&["b"]),
            ServiceSpec::new("b", ["/bin/true"]).depends_on(&["c"]),
            ServiceSpec::new("c", ["/bin/true"]).depends_on(&["a"]),
            ServiceSpec::new("d", ["/bin/true"]).depends_on(&["a"]),
        ];
        let err = validate(&specs, &BTreeMap::new()).unwrap_err();
        assert_eq!(err.to_string(), "dependency cycle: a -> b -> c -> a");
        let self_loop = vec![ServiceSpec::new("s", ["/bin/true"]).depends_on(&["s"])];
        let err = validate(&self_loop, &BTreeMap::new()).unwrap_err();
        assert!(
            matches!(err, Error::Cycle(ref p) if p == &["s", "s"]),
            "{err}"
        );
    }
}
