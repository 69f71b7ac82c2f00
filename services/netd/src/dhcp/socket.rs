//! The client's UDP socket, bound to port 68 on one device.
//!
//! Replies to a client without an address arrive as broadcasts (netd sets
//! the BROADCAST flag, RFC 2131 4.1), which the kernel delivers to a socket
//! bound to 0.0.0.0 and the device even before the device has an address;
//! sends to 255.255.255.255 leave through the bound device with source
//! 0.0.0.0. So no packet socket is needed.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::os::fd::OwnedFd;

use dhcproto::v4::Message;
use dhcproto::{Decodable, Decoder, Encodable};
use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};
use tokio::net::UdpSocket;

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;

/// Why the socket could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("dhcp socket on {device}: {what}: {errno}")]
    Setup {
        device: String,
        what: &'static str,
        errno: nix::Error,
    },
    #[error("dhcp socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("dhcp message does not encode: {0}")]
    Encode(#[from] dhcproto::error::EncodeError),
}

/// A DHCP client socket on one device.
pub struct DhcpSocket {
    sock: UdpSocket,
}

impl DhcpSocket {
    /// Binds 0.0.0.0:68 on `device`; must run inside a tokio runtime.
    pub fn bind(device: &str) -> Result<DhcpSocket, SocketError> {
        let setup = |what| {
            move |errno| SocketError::Setup {
                device: device.to_string(),
                what,
                errno,
            }
        };
        let fd: OwnedFd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(setup("socket"))?;
        // Each device has its own client on port 68.
        setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(setup("SO_REUSEADDR"))?;
        setsockopt(&fd, sockopt::Broadcast, &true).map_err(setup("SO_BROADCAST"))?;
        setsockopt(&fd, sockopt::BindToDevice, &OsString::from(device))
            .map_err(setup("SO_BINDTODEVICE"))?;
        let addr = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT));
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).map_err(setup("bind"))?;
        let sock = UdpSocket::from_std(StdUdpSocket::from(fd))?;
        Ok(DhcpSocket { sock })
    }

    /// Sends to the server port of `to` (255.255.255.255 to broadcast).
    pub async fn send(&self, msg: &Message, to: Ipv4Addr) -> Result<(), SocketError> {
        let bytes = msg.to_vec()?;
        self.sock
            .send_to(&bytes, SocketAddrV4::new(to, SERVER_PORT))
            .await?;
        Ok(())
    }

    /// The next datagram that decodes as a DHCP message; undecodable ones
    /// are logged and skipped.
    pub async fn recv(&self) -> Result<Message, SocketError> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let (n, from) = self.sock.recv_from(&mut buf).await?;
            match Message::decode(&mut Decoder::new(&buf[..n])) {
                Ok(msg) => return Ok(msg),
                Err(e) => tracing::warn!(%from, "ignoring a malformed dhcp message: {e}"),
            }
        }
    }
}
