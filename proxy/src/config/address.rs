//! Network addresses in config: listeners take IP literals, upstreams also take host names
//! (Compose service names such as `api:3001`).

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// `host:port`, where host is a name, an IPv4 address or a bracketed IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Resolves now; names that resolve to several addresses give the first one, which is what
    /// a Compose service name gives.
    pub(crate) fn resolve(&self) -> std::io::Result<SocketAddr> {
        let target =
            if self.host.contains(':') { format!("[{}]:{}", self.host, self.port) } else { format!("{}:{}", self.host, self.port) };
        target
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{target} resolves to nothing")))
    }
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("invalid address {s:?}: {why}; expected host:port, e.g. \"127.0.0.1:3001\" or \"api:3001\"");
        let s = s.trim();
        if s.contains("://") {
            return Err(bad("no scheme allowed"));
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(HostPort { host: sa.ip().to_string(), port: sa.port() });
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("missing port"))?;
        let port: u16 = port.parse().map_err(|_| bad("port is not a number from 0 to 65535"))?;
        let valid_name = !host.is_empty()
            && host.len() <= 253
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        if !valid_name {
            return Err(bad("host is not a valid name or IP address"));
        }
        Ok(HostPort { host: host.to_ascii_lowercase(), port })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl Serialize for HostPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A listening address: an IP literal and a port (port 0 picks a free port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenAddr(pub SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<SocketAddr>()
            .map(ListenAddr)
            .map_err(|_| format!("invalid listen address {s:?}: expected ip:port, e.g. \"0.0.0.0:8080\" or \"[::1]:9901\""))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports() {
        assert_eq!("api:3001".parse::<HostPort>().unwrap(), HostPort { host: "api".into(), port: 3001 });
        assert_eq!("[::1]:80".parse::<HostPort>().unwrap().to_string(), "[::1]:80");
        for bad in ["api", "http://api:3001", "api:99999", ":80", "a b:80"] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad}");
        }
    }
}
