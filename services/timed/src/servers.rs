//! Where the server list comes from, first that has any:
//!
//! 1. the machine config's `time.servers` (stored by apid; read through
//!    kiln-config-store, validated by kiln-config);
//! 2. what netd learnt: DHCP option 42, or `ip=`'s ntp0-ip
//!    (`/run/kiln/ntp-servers`, format in `kiln_netd::ntp`);
//! 3. none: time stays unsynced, and the sources are read again.
//!
//! There is no built-in default: a node sends no traffic to a server nobody
//! configured.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use kiln_config::MachineConfig;
use kiln_config_store::ConfigStore;

/// The NTP port (RFC 5905).
pub const NTP_PORT: u16 = 123;

/// Which source the list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Config,
    /// DHCP option 42 or `ip=`, through netd.
    Netd,
    None,
}

/// The servers to query, in order, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerList {
    pub servers: Vec<Server>,
    pub source: Source,
    /// Sources that could not be read, each naming the file and problem.
    pub problems: Vec<String>,
}

/// One server as configured: `host`, `host:port`, an IP address or
/// `[v6]:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Server {
    /// Parses a configured server; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Server, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Server::ip(ip, NTP_PORT));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Server::ip(addr.ip(), addr.port()));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("`{s}`: port `{p}` is not 0-65535"))?,
            ),
            None => (s, NTP_PORT),
        };
        if host.is_empty() || host.contains([':', '[', ']', ' ', '/']) {
            return Err(format!("`{s}` is not a host name, host:port or IP address"));
        }
        if port == 0 {
            return Err(format!("`{s}`: port 0"));
        }
        Ok(Server {
            host: host.to_string(),
            port,
        })
    }

    fn ip(ip: IpAddr, port: u16) -> Server {
        Server {
            host: ip.to_string(),
            port,
        }
    }
}

/// The files the list is read from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The machine config.
    pub config: PathBuf,
    /// netd's NTP server list.
    pub netd: PathBuf,
}

impl Sources {
    /// The node's: the stored config wherever apid keeps it, netd's file.
    pub fn on_node() -> Sources {
        Sources {
            config: ConfigStore::on_node().path().to_path_buf(),
            netd: PathBuf::from(kiln_netd::ntp::NTP_SERVERS),
        }
    }

    /// The current list. Cheap enough to call every few seconds: two small
    /// files.
    pub fn read(&self) -> ServerList {
        let mut problems = Vec::new();
        match self.read_config() {
            Ok(servers) if !servers.is_empty() => {
                return ServerList {
                    servers,
                    source: Source::Config,
                    problems,
                }
            }
            Ok(_) => {}
            Err(p) => problems.push(p),
        }
        match self.read_netd() {
            Ok(servers) if !servers.is_empty() => {
                return ServerList {
                    servers,
                    source: Source::Netd,
                    problems,
                }
            }
            Ok(_) => {}
            Err(p) => problems.push(p),
        }
        ServerList {
            servers: Vec::new(),
            source: Source::None,
            problems,
        }
    }

    fn read_config(&self) -> Result<Vec<Server>, String> {
        let name = self.config.display();
        let text = match std::fs::read_to_string(&self.config) {
            Ok(t) => t,
            // No config yet (maintenance mode).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{name}: {e}")),
        };
        let config = MachineConfig::from_yaml(&text).map_err(|e| format!("{name}: {e}"))?;
        config
            .time
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| Server::parse(s).map_err(|p| format!("{name}: time.servers[{i}]: {p}")))
            .collect()
    }

    fn read_netd(&self) -> Result<Vec<Server>, String> {
        let name = self.netd.display();
        let text = match std::fs::read_to_string(&self.netd) {
            Ok(t) => t,
            // netd has not written it (yet).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{name}: {e}")),
        };
        let servers = kiln_netd::ntp::parse(&text).map_err(|e| format!("{name}: {e}"))?;
        Ok(servers
            .into_iter()
            .map(|ip| Server::ip(ip.into(), NTP_PORT))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_addresses() {
        let p = |s: &str| Server::parse(s).map(|s| s.to_string());
        assert_eq!(p("10.0.0.1").unwrap(), "10.0.0.1:123");
        assert_eq!(p("10.0.2.2:11123").unwrap(), "10.0.2.2:11123");
        assert_eq!(
            p("ntp.example.internal").unwrap(),
            "ntp.example.internal:123"
        );
        assert_eq!(p("localhost:4123").unwrap(), "localhost:4123");
        assert_eq!(p("fd00::7b").unwrap(), "[fd00::7b]:123");
        assert_eq!(p("[fd00::7b]:1123").unwrap(), "[fd00::7b]:1123");
        assert!(p("ntp.example:99999").unwrap_err().contains("port `99999`"));
        assert!(p("ntp.example:0").unwrap_err().contains("port 0"));
        assert!(p("a b").is_err());
        assert!(p("").is_err());
    }

    const CONFIG_HEAD: &str = "apiVersion: kiln.dev/v1alpha1\nkind: MachineConfig\n";

    /// The repository's example config with `time` replaced.
    fn config(time: &str) -> String {
        let example = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/machine/static-worker.yaml"
        );
        let text = std::fs::read_to_string(example).unwrap();
        let old = "time:\n  servers:\n    - 10.0.100.2\n    - ntp.example.internal\n";
        assert!(text.contains(old), "the example's time section changed");
        text.replace(old, time)
    }

    #[test]
    fn config_first_then_netd_then_none() {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources {
            config: dir.path().join("config.yaml"),
            netd: dir.path().join("ntp-servers"),
        };
        let list = sources.read();
        assert_eq!((list.source, list.servers.len()), (Source::None, 0));
        assert!(list.problems.is_empty(), "{list:?}");

        std::fs::write(
            &sources.netd,
            kiln_netd::ntp::render(&["10.0.0.123".parse().unwrap()]),
        )
        .unwrap();
        let list = sources.read();
        assert_eq!(list.source, Source::Netd);
        assert_eq!(list.servers, vec![Server::parse("10.0.0.123").unwrap()]);

        // A config without time servers leaves netd's in force.
        std::fs::write(&sources.config, config("")).unwrap();
        assert_eq!(sources.read().source, Source::Netd);

        std::fs::write(
            &sources.config,
            config("time:\n  servers:\n    - 10.0.2.2:11123\n    - ntp.example.internal\n"),
        )
        .unwrap();
        let list = sources.read();
        assert_eq!(list.source, Source::Config);
        let names: Vec<String> = list.servers.iter().map(|s| s.to_string()).collect();
        assert_eq!(names, ["10.0.2.2:11123", "ntp.example.internal:123"]);
    }

    #[test]
    fn unreadable_sources_are_reported_by_file() {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources {
            config: dir.path().join("config.yaml"),
            netd: dir.path().join("ntp-servers"),
        };
        std::fs::write(&sources.config, format!("{CONFIG_HEAD}time: 3\n")).unwrap();
        std::fs::write(&sources.netd, "10.0.0.1\nnot-an-address\n").unwrap();
        let list = sources.read();
        assert_eq!(list.source, Source::None);
        assert_eq!(list.problems.len(), 2, "{list:?}");
        assert!(list.problems[0].contains("config.yaml"), "{list:?}");
        assert!(
            list.problems[1].contains("ntp-servers: line 2: `not-an-address`"),
            "{list:?}"
        );
    }
}
