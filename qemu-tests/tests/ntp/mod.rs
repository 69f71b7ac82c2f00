//! A real NTP server for the guest: Debian's chronyd serving its own clock
//! on a loopback port (`-x`: it never touches the host's clock). QEMU's
//! user network maps the guest's 10.0.2.2 to the host's loopback, UDP too.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Chrony {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Chrony {
    pub fn start() -> Chrony {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let d = dir.path().display();
        let conf = dir.path().join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbindaddress 127.0.0.1\nlocal stratum 8\nallow 127.0.0.1\n\
                 cmdport 0\ndriftfile {d}/drift\npidfile {d}/chronyd.pid\n"
            ),
        )
        .unwrap();
        let child = Command::new("chronyd")
            .args(["-d", "-x", "-u", "root", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("chronyd.log")).unwrap())
            .spawn()
            .expect("chronyd (apt package chrony, installed by cargo xtask)");
        let chrony = Chrony { child, port, dir };
        chrony.wait_serving();
        chrony
    }

    /// The server as the guest names it.
    pub fn for_guest(&self) -> String {
        format!("10.0.2.2:{}", self.port)
    }

    /// Until a client-mode packet gets a server-mode answer.
    fn wait_serving(&self) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut request = [0u8; 48];
        request[0] = 0x23; // NTPv4, client
        let mut reply = [0u8; 64];
        for _ in 0..50 {
            let _ = s.send_to(&request, ("127.0.0.1", self.port));
            if let Ok(n) = s.recv(&mut reply) {
                if n >= 48 && reply[0] & 7 == 4 {
                    return;
                }
            }
        }
        panic!(
            "chronyd does not answer on port {}:\n{}",
            self.port,
            std::fs::read_to_string(self.dir.path().join("chronyd.log")).unwrap_or_default()
        );
    }
}

impl Drop for Chrony {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
