//! The hotplug service: driver loading for devices that appear after boot.
//!
//! The kernel multicasts one message per device event on the uevent netlink
//! socket: `ACTION@DEVPATH\0KEY=VALUE\0…`. Every `add` that carries a
//! `MODALIAS` gets its matching modules loaded.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_kmod::{KernelLoader, Kmod, ModuleIndex};
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use tracing::{info, warn};

/// Why the service cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kernel version: {0}")]
    Uname(nix::Error),
    #[error("module index: {0}")]
    Index(#[from] kiln_kmod::Error),
    #[error("uevent socket: {what}: {errno}")]
    Socket {
        what: &'static str,
        errno: nix::Error,
    },
}

/// The kernel's multicast group for uevents.
const KERNEL_GROUP: u32 = 1;
/// Device bursts (a USB hub, a multi-port NIC) must not overflow the socket.
const RECV_BUFFER: usize = 4 << 20;

/// Runs until the socket fails.
pub fn run() -> Result<(), Error> {
    let release = nix::sys::utsname::uname()
        .map_err(Error::Uname)?
        .release()
        .to_string_lossy()
        .into_owned();
    let index = ModuleIndex::load(&Path::new("/lib/modules").join(&release))?;
    let mut kmod = Kmod::new(index, KernelLoader);

    let sock = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .map_err(|errno| Error::Socket {
        what: "socket",
        errno,
    })?;
    if let Err(e) = setsockopt(&sock, sockopt::RcvBuf, &RECV_BUFFER) {
        warn!("cannot enlarge the uevent buffer: {e}");
    }
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&sock),
        &NetlinkAddr::new(0, KERNEL_GROUP),
    )
    .map_err(|errno| Error::Socket {
        what: "bind",
        errno,
    })?;
    info!(kernel = %release, "listening for device events");
    // Devices added between PID 1's coldplug and this socket's bind sent
    // their events to nobody: one more coldplug pass catches them.
    let report = kmod.coldplug_until_stable(Path::new("/sys"), 5);
    for module in &report.loaded {
        info!(module = %module, source = "catch-up coldplug", "driver loaded");
    }

    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match recv(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            &mut buf,
            MsgFlags::empty(),
        ) {
            Ok(n) => n,
            // A burst overflowed the buffer: events were lost, keep going.
            Err(nix::Error::ENOBUFS) => {
                warn!("uevents were dropped (buffer overflow)");
                continue;
            }
            Err(nix::Error::EINTR) => continue,
            Err(errno) => {
                return Err(Error::Socket {
                    what: "recv",
                    errno,
                })
            }
        };
        let Some(event) = Uevent::parse(&buf[..n]) else {
            continue;
        };
        if event.action() != Some("add") {
            continue;
        }
        let Some(alias) = event.get("MODALIAS") else {
            continue;
        };
        for module in kmod.index().match_alias(alias) {
            match kmod.load(&module) {
                Ok(report) if report.inserted.is_empty() => {}
                Ok(_) => {
                    info!(module = %module, device = event.get("DEVPATH").unwrap_or("?"), "driver loaded")
                }
                Err(e) => warn!(module = %module, "cannot load driver: {e}"),
            }
        }
    }
}

/// One kernel uevent: its header and its `KEY=VALUE` fields.
#[derive(Debug, PartialEq, Eq)]
pub struct Uevent {
    fields: BTreeMap<String, String>,
}

impl Uevent {
    /// Parses a kernel uevent; `None` for anything else on the socket
    /// (udev's own `libudev` messages, truncated data).
    pub fn parse(msg: &[u8]) -> Option<Uevent> {
        let mut parts = msg.split(|&b| b == 0).filter(|p| !p.is_empty());
        let header = std::str::from_utf8(parts.next()?).ok()?;
        header.split_once('@')?;
        let fields = parts
            .filter_map(|p| std::str::from_utf8(p).ok())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Uevent { fields })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    pub fn action(&self) -> Option<&str> {
        self.get("ACTION")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pci_add_event() {
        let msg = b"add@/devices/pci0000:00/0000:00:03.0\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:03.0\0SUBSYSTEM=pci\0MODALIAS=pci:v00001AF4d00001005sv00001AF4sd00000004bc00scFFi00\0SEQNUM=1234\0";
        let e = Uevent::parse(msg).unwrap();
        assert_eq!(e.action(), Some("add"));
        assert_eq!(e.get("SUBSYSTEM"), Some("pci"));
        assert!(e
            .get("MODALIAS")
            .unwrap()
            .starts_with("pci:v00001AF4d00001005"));
    }

    #[test]
    fn ignores_udev_and_garbage() {
        assert_eq!(Uevent::parse(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(Uevent::parse(b""), None);
    }
}
