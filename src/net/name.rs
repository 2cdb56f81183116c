//! Addresses as users write them: `IP:PORT` (IPv6 in brackets,
//! `[::1]:7878`) or `NAME:PORT` (`localhost:7878`), and how a name becomes
//! addresses (the backend's resolver, [`super::resolve`]).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An address as given on the command line: an IP address and port, or a
/// host name and port, resolved by [`HostPort::resolve`].
///
/// An IP address is never looked up, so an `IP:PORT` needs no resolver
/// (and, in the WebAssembly build, no name-lookup permission).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    host: Host,
    port: u16,
}

/// The host part of a [`HostPort`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

impl HostPort {
    /// The address, when it is an IP address and port.
    pub fn ip(&self) -> Option<SocketAddr> {
        match &self.host {
            Host::Ip(ip) => Some(SocketAddr::new(*ip, self.port)),
            Host::Name(_) => None,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The addresses this names, in the resolver's order, duplicates left
    /// out: the address itself for an `IP:PORT` (no lookup), else those
    /// the backend's resolver returns for the name. A name with no
    /// address is an error naming it.
    pub fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        let name = match &self.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => name,
        };
        let found = super::resolve(name).map_err(|err| {
            let what = match err.get_ref() {
                Some(message) => message.to_string(),
                None => err.kind().to_string(),
            };
            io::Error::new(err.kind(), format!("cannot resolve {name}: {what}"))
        })?;
        let mut addrs: Vec<SocketAddr> = Vec::with_capacity(found.len());
        for ip in found {
            let addr = SocketAddr::new(ip, self.port);
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("cannot resolve {name}: the resolver returned no address"),
            ));
        }
        Ok(addrs)
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        HostPort {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => SocketAddr::new(*ip, self.port).fmt(f),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

/// Why a text is not a [`HostPort`], in one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadAddress(String);

impl fmt::Display for BadAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadAddress {}

impl FromStr for HostPort {
    type Err = BadAddress;

    fn from_str(text: &str) -> Result<Self, BadAddress> {
        let bad = |why: &str| BadAddress(format!("{text:?}: {why}"));
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (inside, port) = rest
                    .split_once("]:")
                    .ok_or_else(|| bad("expected [IPv6]:PORT, such as [::1]:7878"))?;
                let ip = inside
                    .parse::<Ipv6Addr>()
                    .map_err(|_| bad("the brackets must hold an IPv6 address, such as [::1]"))?;
                (Host::Ip(IpAddr::V6(ip)), port)
            }
            None => {
                let (host, port) = text.rsplit_once(':').ok_or_else(|| {
                    bad("expected HOST:PORT or IP:PORT (IPv6 as [::1]:PORT), such as localhost:7878")
                })?;
                if host.contains(':') {
                    return Err(bad("an IPv6 address takes brackets, such as [::1]:7878"));
                }
                let host = match host.parse::<IpAddr>() {
                    Ok(ip) => Host::Ip(ip),
                    Err(_) => Host::Name(name(host).map_err(|why| bad(&why))?),
                };
                (host, port)
            }
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port must be a number from 0 to 65535"))?;
        Ok(HostPort { host, port })
    }
}

/// `host` if it is a host name as DNS spells one: labels of letters,
/// digits, `-` and `_`, separated by dots, 253 characters at most.
fn name(host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("the host is missing, such as localhost:7878".to_owned());
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    if host.len() > 253 || !trimmed.split('.').all(label_ok) {
        return Err(format!("{host:?} is neither an IP address nor a host name"));
    }
    Ok(host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<HostPort, String> {
        text.parse().map_err(|err: BadAddress| err.to_string())
    }

    #[test]
    fn ip_literals_are_addresses_and_names_are_names() {
        let v4 = parsed("127.0.0.1:7878").unwrap();
        assert_eq!(v4.ip(), Some(SocketAddr::from(([127, 0, 0, 1], 7878))));
        let v6 = parsed("[::1]:0").unwrap();
        assert_eq!(
            v6.ip(),
            Some(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 0)))
        );
        assert_eq!(v6.to_string(), "[::1]:0");
        let name = parsed("localhost:7").unwrap();
        assert_eq!((name.ip(), name.port()), (None, 7));
        assert_eq!(name.to_string(), "localhost:7");
        assert_eq!(
            parsed("echo.example.:7").unwrap().to_string(),
            "echo.example.:7"
        );
    }

    #[test]
    fn ip_literals_resolve_without_a_lookup() {
        let addr = SocketAddr::from(([192, 0, 2, 1], 9));
        assert_eq!(HostPort::from(addr).resolve().unwrap(), vec![addr]);
    }

    #[test]
    fn nonsense_is_one_clear_line() {
        let cases = [
            ("nonsense", "expected HOST:PORT"),
            ("::1:7878", "takes brackets"),
            ("[::1]7878", "expected [IPv6]:PORT"),
            ("[localhost]:7", "must hold an IPv6 address"),
            ("localhost:99999", "from 0 to 65535"),
            ("localhost:", "from 0 to 65535"),
            (":7", "the host is missing"),
            ("a b:7", "neither an IP address nor a host name"),
            ("a..b:7", "neither an IP address nor a host name"),
        ];
        for (text, why) in cases {
            let err = parsed(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
            assert!(!err.contains('\n'), "{text}: {err}");
        }
    }
}
