//! What an earlier boot left on STATE for this one, carried out in the
//! disks phase once STATE and EPHEMERAL are mounted and before anything
//! else uses them (apid cannot empty /var under running services):
//!
//! - a reset (`kilnctl reset`): EPHEMERAL emptied and, with `--wipe-state`,
//!   STATE too (machine config, machine id, a pending try), so the node
//!   comes back in maintenance mode with a new identity. The filesystems are
//!   emptied, not re-made: PID 1 carries no mkfs, and what Kiln keeps there
//!   is files. The request is removed last, so a power cut mid-wipe only
//!   means the wipe runs again at the next boot.
//! - a config applied in try mode and never confirmed (the node rebooted
//!   before the deadline or the confirmation): the previous config is
//!   stored again, before any service reads it.

use std::path::Path;

use kiln_config_store::reset::{ResetRequest, RESET_FILE};
use kiln_config_store::ConfigStore;
use tracing::{error, info, warn};

/// Made by mkfs; fsck wants it there.
const LOST_FOUND: &str = "lost+found";

/// Carries out what `state` holds for this boot; `var` is EPHEMERAL's mount.
/// Failures are logged: the boot goes on with the disks as they are.
pub(super) fn carry_out(state: &Path, var: &Path) {
    let store = ConfigStore::new(state);
    match store.reset_request() {
        Ok(Some(request)) => reset(&store, state, var, request),
        Ok(None) => {}
        Err(e) => error!("{e}: the reset request is not carried out"),
    }
    match store.revert_try() {
        Ok(Some(_)) => warn!(
            "the config applied in try mode was not confirmed before this boot: the previous config is back"
        ),
        Ok(None) => {}
        Err(e) => error!("cannot revert the unconfirmed try: {e}"),
    }
}

fn reset(store: &ConfigStore, state: &Path, var: &Path, request: ResetRequest) {
    warn!(
        wipe_state = request.wipe_state,
        "reset requested: wiping {}{}",
        var.display(),
        if request.wipe_state {
            format!(" and {}", state.display())
        } else {
            String::new()
        }
    );
    let wiped = empty_dir(var, &[LOST_FOUND]).and_then(|n| {
        info!(entries = n, "reset: {} emptied", var.display());
        if request.wipe_state {
            let n = empty_dir(state, &[LOST_FOUND, RESET_FILE])?;
            info!(entries = n, "reset: {} emptied", state.display());
        }
        Ok(())
    });
    if let Err(e) = wiped {
        error!("reset: {e}; the wipe is tried again at the next boot");
        return;
    }
    // The deletions reach the disk before the request goes.
    nix::unistd::sync();
    match store.clear_reset() {
        Ok(_) => warn!("reset done"),
        Err(e) => error!("reset done, but {e}: it will run again at the next boot"),
    }
}

/// Removes everything in `dir` but the names in `keep`, without following
/// symbolic links; how many entries went.
fn empty_dir(dir: &Path, keep: &[&str]) -> std::io::Result<usize> {
    let context = |what: &str, path: &Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    let mut removed = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| context("reading", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| context("reading", dir, e))?;
        if keep.iter().any(|k| entry.file_name() == *k) {
            continue;
        }
        let path = entry.path();
        // file_type() does not follow a symlink: a link to a directory is
        // removed as a link.
        let is_dir = entry
            .file_type()
            .map_err(|e| context("inspecting", &path, e))?
            .is_dir();
        let gone = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        gone.map_err(|e| context("removing", &path, e))?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    struct Disks {
        _dir: tempfile::TempDir,
        state: std::path::PathBuf,
        var: std::path::PathBuf,
        outside: std::path::PathBuf,
    }

    /// A STATE and a /var with what a node keeps there, and a directory
    /// outside both that a symlink on /var points to.
    fn disks() -> Disks {
        let dir = tempfile::tempdir().unwrap();
        let (state, var, outside) = (
            dir.path().join("state"),
            dir.path().join("var"),
            dir.path().join("outside"),
        );
        for d in [&state, &var, &outside] {
            fs::create_dir_all(d.join(LOST_FOUND)).unwrap();
        }
        fs::write(outside.join("keep"), "x").unwrap();
        fs::create_dir_all(var.join("log/kiln")).unwrap();
        fs::write(var.join("log/kiln/apid.log"), "log").unwrap();
        fs::write(var.join("lib-count"), "3").unwrap();
        std::os::unix::fs::symlink(&outside, var.join("link")).unwrap();
        fs::write(state.join("machine-id"), "0123").unwrap();
        ConfigStore::new(&state).save(b"config").unwrap();
        Disks {
            _dir: dir,
            state,
            var,
            outside,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn nothing_asked_nothing_done() {
        let d = disks();
        carry_out(&d.state, &d.var);
        assert_eq!(names(&d.var), ["lib-count", "link", "log", "lost+found"]);
        assert_eq!(names(&d.state), ["config.yaml", "lost+found", "machine-id"]);
    }

    #[test]
    fn reset_keeps_state_by_default() {
        let d = disks();
        let store = ConfigStore::new(&d.state);
        store
            .request_reset(ResetRequest { wipe_state: false })
            .unwrap();
        carry_out(&d.state, &d.var);
        assert_eq!(names(&d.var), ["lost+found"]);
        assert_eq!(names(&d.state), ["config.yaml", "lost+found", "machine-id"]);
        assert_eq!(
            names(&d.outside),
            ["keep", "lost+found"],
            "link not followed"
        );
        assert_eq!(store.reset_request().unwrap(), None);
    }

    #[test]
    fn reset_with_wipe_state_leaves_no_config() {
        let d = disks();
        let store = ConfigStore::new(&d.state);
        store.begin_try(b"tried", b"config", 1).unwrap();
        store
            .request_reset(ResetRequest { wipe_state: true })
            .unwrap();
        carry_out(&d.state, &d.var);
        assert_eq!(names(&d.var), ["lost+found"]);
        assert_eq!(names(&d.state), ["lost+found"]);
        assert_eq!(store.load().unwrap(), None);
    }

    #[test]
    fn an_unconfirmed_try_is_reverted() {
        let d = disks();
        let store = ConfigStore::new(&d.state);
        store.begin_try(b"tried", b"config", u64::MAX).unwrap();
        carry_out(&d.state, &d.var);
        assert_eq!(store.load().unwrap().as_deref(), Some(&b"config"[..]));
        assert_eq!(store.pending_try().unwrap(), None);
    }
}
