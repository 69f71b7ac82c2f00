//! Netlink connections inside another network namespace.
//!
//! A netlink socket belongs to the namespace of the thread that created it,
//! for its whole life. So to talk to a pod's namespace we create the socket
//! on a short-lived thread that has `setns`ed into it, and hand the socket
//! back: the plugin's own threads never change namespace.

use std::fs::File;
use std::path::Path;

use nix::sched::{setns, CloneFlags};
use rtnetlink::Handle;

use crate::error::{Error, Result};

/// Opens a namespace file; `None` when it no longer exists (DEL after the
/// runtime removed the namespace is normal).
pub fn open(path: &Path) -> Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("open netns {}", path.display()), e)),
    }
}

/// A rtnetlink handle for the current namespace, or for `ns` if given. Its
/// connection task runs on the calling tokio runtime.
pub fn connect(ns: Option<&File>) -> Result<Handle> {
    let rt = tokio::runtime::Handle::current();
    let make = || {
        let _enter = rt.enter();
        rtnetlink::new_connection().map_err(|e| Error::io("open netlink socket", e))
    };
    let (conn, handle, _) = match ns {
        None => make()?,
        Some(ns) => std::thread::scope(|s| {
            s.spawn(|| {
                setns(ns, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::io("setns into the pod's netns", e.into()))?;
                make()
            })
            .join()
            .unwrap_or_else(|_| Err(Error::NotAvailable("netns thread panicked".into())))
        })?,
    };
    tokio::spawn(conn);
    Ok(handle)
}
