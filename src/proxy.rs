//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2):
//! the header a load balancer sends first on a connection to tell the
//! server who the real client is. Sans-IO: [`parse`] reads a header from
//! the bytes received so far, [`Header::encode`] writes one.
//!
//! [`parse`] never guesses: it answers [`Parsed::NeedMore`] while the bytes
//! so far could still begin a valid header, and never for more than
//! [`MAX_HEADER`] bytes, so a connection holds at most that much while it
//! waits. Version 1 lines are at most [`V1_MAX`] bytes (the spec's limit);
//! version 2 headers, which may be up to 16 + 65,535 bytes, are accepted up
//! to [`V2_MAX`] bytes, TLVs included: far more than balancers send (AWS,
//! GCP and Azure add one TLV of tens of bytes; HAProxy's SSL TLVs stay
//! well under it).

use crate::net::{try_write, Network, SocketId};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The longest version 1 header, `\r\n` included (the spec's bound).
pub const V1_MAX: usize = 107;
/// The longest version 2 header accepted, its 16 fixed bytes included.
pub const V2_MAX: usize = 4096;
/// The most bytes [`parse`] may need before it decides.
pub const MAX_HEADER: usize = V2_MAX;

/// What starts a version 1 header.
const V1_SIGNATURE: &[u8] = b"PROXY ";
/// What starts a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a version 2 header: signature, version and command,
/// family and transport, length.
const V2_FIXED: usize = 16;
/// Bytes of a v2 AF_UNIX address (one path).
const UNIX_PATH: usize = 108;

/// A version of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// The text line: `PROXY TCP4 1.2.3.4 5.6.7.8 1234 80\r\n`.
    V1,
    /// The binary header, with `LOCAL`, transports and TLVs.
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// Which versions a server takes (`serve --proxy-protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Accept {
    /// Version 1 only.
    V1,
    /// Version 2 only.
    V2,
    /// Either, told apart by their signatures.
    Any,
}

impl Accept {
    /// Whether `version` is taken.
    pub fn allows(self, version: Version) -> bool {
        matches!(
            (self, version),
            (Accept::Any, _) | (Accept::V1, Version::V1) | (Accept::V2, Version::V2)
        )
    }
}

/// What the header says the connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// The balancer's own connection (a health check): no client behind it.
    Local,
    /// A client's connection, relayed.
    Proxy,
}

/// The relayed connection's transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Not said (v1 `UNKNOWN`, v2 `UNSPEC`, or `LOCAL`).
    Unspec,
    /// TCP (v1 is always TCP).
    Stream,
    /// UDP (v2 `DGRAM`).
    Datagram,
}

/// The relayed connection's addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addresses {
    /// Not given (v1 `UNKNOWN`, v2 `UNSPEC` or `LOCAL`): the connection's
    /// own addresses stand.
    Unknown,
    /// The real client (`source`) and the address it connected to.
    Inet {
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to (the balancer's).
        destination: SocketAddr,
    },
    /// Unix socket paths (v2 `AF_UNIX`), without their NUL padding.
    Unix {
        /// The client's path.
        source: Vec<u8>,
        /// The path it connected to.
        destination: Vec<u8>,
    },
}

/// One v2 type-length-value field, recorded as sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tlv {
    /// Its type (`PP2_TYPE_*`: 0x01 ALPN, 0x02 authority, 0x04 CRC32C,
    /// 0x05 unique id, 0x20 SSL, 0xE0..=0xEF custom such as AWS's).
    pub kind: u8,
    /// Its value.
    pub value: Vec<u8>,
}

/// A PROXY protocol header.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// The version it came in (or is to be written in).
    pub version: Version,
    /// `LOCAL` or `PROXY`.
    pub command: Command,
    /// The relayed connection's transport.
    pub transport: Transport,
    /// The relayed connection's addresses.
    pub addresses: Addresses,
    /// v2 TLVs, in order (none in v1).
    pub tlvs: Vec<Tlv>,
}

impl Header {
    /// A `PROXY` header for a TCP connection from `source` to
    /// `destination`.
    pub fn tcp(version: Version, source: SocketAddr, destination: SocketAddr) -> Header {
        Header {
            version,
            command: Command::Proxy,
            transport: Transport::Stream,
            addresses: Addresses::Inet {
                source,
                destination,
            },
            tlvs: Vec::new(),
        }
    }

    /// A `LOCAL` header (a balancer's health check), without addresses.
    pub fn local(version: Version) -> Header {
        Header {
            version,
            command: Command::Local,
            transport: Transport::Unspec,
            addresses: Addresses::Unknown,
            tlvs: Vec::new(),
        }
    }

    /// The real client's address, when the header gives one.
    pub fn source(&self) -> Option<SocketAddr> {
        match (&self.command, &self.addresses) {
            (Command::Proxy, Addresses::Inet { source, .. }) => Some(*source),
            _ => None,
        }
    }

    /// The header as sent on the wire. Version 1 has no `LOCAL`, no UDP and
    /// no Unix paths: those become `PROXY UNKNOWN`. A source and destination
    /// of different families are both written as IPv6 (IPv4-mapped). TLVs
    /// that would take a v2 header past [`V2_MAX`] are left out.
    pub fn encode(&self) -> Vec<u8> {
        match self.version {
            Version::V1 => self.encode_v1(),
            Version::V2 => self.encode_v2(),
        }
    }

    fn encode_v1(&self) -> Vec<u8> {
        let inet = match (&self.command, self.transport, &self.addresses) {
            (
                Command::Proxy,
                Transport::Stream,
                Addresses::Inet {
                    source,
                    destination,
                },
            ) => Some(same_family(*source, *destination)),
            _ => None,
        };
        let line = match inet {
            Some((source, destination)) => format!(
                "PROXY {} {} {} {} {}\r\n",
                match source {
                    SocketAddr::V4(_) => "TCP4",
                    SocketAddr::V6(_) => "TCP6",
                },
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            ),
            None => "PROXY UNKNOWN\r\n".to_owned(),
        };
        line.into_bytes()
    }

    fn encode_v2(&self) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(match self.command {
            Command::Local => 0x20,
            Command::Proxy => 0x21,
        });
        let transport = match self.transport {
            Transport::Unspec => 0,
            Transport::Stream => 1,
            Transport::Datagram => 2,
        };
        let mut block = Vec::new();
        let family = match &self.addresses {
            Addresses::Unknown => 0,
            Addresses::Inet {
                source,
                destination,
            } => match same_family(*source, *destination) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                    block.extend(s.ip().octets());
                    block.extend(d.ip().octets());
                    block.extend(s.port().to_be_bytes());
                    block.extend(d.port().to_be_bytes());
                    1
                }
                (s, d) => {
                    block.extend(v6(s.ip()).octets());
                    block.extend(v6(d.ip()).octets());
                    block.extend(s.port().to_be_bytes());
                    block.extend(d.port().to_be_bytes());
                    2
                }
            },
            Addresses::Unix {
                source,
                destination,
            } => {
                for path in [source, destination] {
                    let mut padded = [0u8; UNIX_PATH];
                    let len = path.len().min(UNIX_PATH);
                    padded[..len].copy_from_slice(&path[..len]);
                    block.extend(padded);
                }
                3
            }
        };
        // Families go with a transport, and UNSPEC with UNSPEC.
        let transport = match (family, transport) {
            (0, _) => 0,
            (_, 0) => 1,
            (_, t) => t,
        };
        out.push(family << 4 | transport);
        for tlv in &self.tlvs {
            let fits = V2_FIXED + block.len() + 3 + tlv.value.len() <= V2_MAX;
            if fits {
                block.push(tlv.kind);
                block.extend((tlv.value.len() as u16).to_be_bytes());
                block.extend(&tlv.value);
            }
        }
        out.extend((block.len() as u16).to_be_bytes());
        out.extend(block);
        out
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.command {
            Command::Local => write!(
                f,
                "{} LOCAL (the balancer's own, a health check)",
                self.version
            )?,
            Command::Proxy => {
                write!(f, "{} PROXY ", self.version)?;
                match &self.addresses {
                    Addresses::Unknown => f.write_str("with unknown addresses")?,
                    Addresses::Inet {
                        source,
                        destination,
                    } => write!(f, "client {source} to {destination}")?,
                    Addresses::Unix {
                        source,
                        destination,
                    } => write!(
                        f,
                        "unix client {:?} to {:?}",
                        String::from_utf8_lossy(source),
                        String::from_utf8_lossy(destination)
                    )?,
                }
                if self.transport == Transport::Datagram {
                    f.write_str(" over UDP")?;
                }
            }
        }
        match self.tlvs.len() {
            0 => Ok(()),
            1 => f.write_str(", 1 TLV"),
            n => write!(f, ", {n} TLVs"),
        }
    }
}

/// The pair as one family: both IPv6 (IPv4-mapped) when they differ.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    if source.is_ipv4() == destination.is_ipv4() {
        return (source, destination);
    }
    let mapped =
        |addr: SocketAddr| SocketAddr::V6(SocketAddrV6::new(v6(addr.ip()), addr.port(), 0, 0));
    (mapped(source), mapped(destination))
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    }
}

/// Why a connection's PROXY header was refused. The parser's reasons,
/// and the server's ([`Reason::Timeout`], [`Reason::Closed`],
/// [`Reason::Transport`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The connection starts with neither signature.
    Signature,
    /// A v1 header where only v2 is taken.
    V1NotAccepted,
    /// A v2 header where only v1 is taken.
    V2NotAccepted,
    /// No `\r\n` within the first 107 bytes of a v1 header.
    V1TooLong,
    /// A v1 line that is not `PROXY TCP4|TCP6|UNKNOWN ...\r\n` with single
    /// spaces and five fields.
    V1Syntax,
    /// A v1 address that is not an address of its line's family.
    V1Address,
    /// A v1 port that is not a number from 0 to 65535.
    V1Port,
    /// A v2 version nibble other than 2.
    V2Version,
    /// A v2 command other than `LOCAL` or `PROXY`.
    V2Command,
    /// A v2 address family or transport not in the spec, or a pair of them
    /// that does not go together.
    V2Family,
    /// A v2 length too short for the family's addresses.
    V2Length,
    /// A v2 header longer than [`V2_MAX`].
    V2TooLong,
    /// A v2 TLV that runs past the end of the header.
    V2Tlv,
    /// A header for UDP (`DGRAM`) on a TCP connection, or for TCP on UDP.
    Transport,
    /// The whole header did not come within the server's deadline.
    Timeout,
    /// The peer closed (or reset) the connection before the whole header.
    Closed,
    /// A datagram shorter than the header it begins.
    Short,
}

impl Reason {
    /// Every reason, in the order summaries list them.
    pub const ALL: [Reason; 17] = [
        Reason::Signature,
        Reason::V1NotAccepted,
        Reason::V2NotAccepted,
        Reason::V1TooLong,
        Reason::V1Syntax,
        Reason::V1Address,
        Reason::V1Port,
        Reason::V2Version,
        Reason::V2Command,
        Reason::V2Family,
        Reason::V2Length,
        Reason::V2TooLong,
        Reason::V2Tlv,
        Reason::Transport,
        Reason::Timeout,
        Reason::Closed,
        Reason::Short,
    ];

    /// A short name for counts: `signature`, `v2_tlv`, `timeout`...
    pub fn name(self) -> &'static str {
        match self {
            Reason::Signature => "signature",
            Reason::V1NotAccepted => "v1_not_accepted",
            Reason::V2NotAccepted => "v2_not_accepted",
            Reason::V1TooLong => "v1_too_long",
            Reason::V1Syntax => "v1_syntax",
            Reason::V1Address => "v1_address",
            Reason::V1Port => "v1_port",
            Reason::V2Version => "v2_version",
            Reason::V2Command => "v2_command",
            Reason::V2Family => "v2_family",
            Reason::V2Length => "v2_length",
            Reason::V2TooLong => "v2_too_long",
            Reason::V2Tlv => "v2_tlv",
            Reason::Transport => "transport",
            Reason::Timeout => "timeout",
            Reason::Closed => "closed",
            Reason::Short => "short",
        }
    }

    /// Its index in [`Reason::ALL`].
    pub fn index(self) -> usize {
        Reason::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Signature => "no PROXY header: the connection starts with neither signature",
            Reason::V1NotAccepted => "a v1 header, where only v2 is accepted",
            Reason::V2NotAccepted => "a v2 header, where only v1 is accepted",
            Reason::V1TooLong => "a v1 header without \\r\\n within 107 bytes",
            Reason::V1Syntax => "a malformed v1 line (not `PROXY TCP4|TCP6|UNKNOWN` and four fields, single spaces, \\r\\n)",
            Reason::V1Address => "a v1 address that is not one of its line's family",
            Reason::V1Port => "a v1 port that is not a number from 0 to 65535",
            Reason::V2Version => "a v2 header whose version is not 2",
            Reason::V2Command => "a v2 command neither LOCAL nor PROXY",
            Reason::V2Family => "a v2 address family or transport that is unknown or mismatched",
            Reason::V2Length => "a v2 length too short for its addresses",
            Reason::V2TooLong => "a v2 header longer than the 4096 bytes accepted",
            Reason::V2Tlv => "a v2 TLV that runs past the end of the header",
            Reason::Transport => "a header for another transport (UDP on TCP, or TCP on UDP)",
            Reason::Timeout => "the whole header did not come within the deadline",
            Reason::Closed => "the peer closed before sending the whole header",
            Reason::Short => "a datagram shorter than the header it begins",
        })
    }
}

impl std::error::Error for Reason {}

/// What [`parse`] made of the bytes so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A valid header may still come: read more (never past
    /// [`MAX_HEADER`] bytes in all).
    NeedMore,
    /// A whole header: `consumed` bytes; what follows is the client's data.
    Done {
        /// The header.
        header: Header,
        /// Its length on the wire.
        consumed: usize,
    },
    /// Not a valid header of a version taken, whatever may follow.
    Invalid(Reason),
}

/// Parses the PROXY header at the start of `bytes` (everything received on
/// the connection so far), of a version `accept` takes. Never panics;
/// answers [`Parsed::NeedMore`] only while fewer than [`MAX_HEADER`] bytes
/// are given.
pub fn parse(bytes: &[u8], accept: Accept) -> Parsed {
    let begins = |signature: &[u8]| {
        let n = bytes.len().min(signature.len());
        bytes[..n] == signature[..n]
    };
    let (v1, v2) = (begins(V1_SIGNATURE), begins(&V2_SIGNATURE));
    if v1 && v2 {
        // Nothing yet.
        return Parsed::NeedMore;
    }
    let version = match (v1, v2) {
        (true, _) if bytes.len() < V1_SIGNATURE.len() => return Parsed::NeedMore,
        (_, true) if bytes.len() < V2_SIGNATURE.len() => return Parsed::NeedMore,
        (true, _) => Version::V1,
        (_, true) => Version::V2,
        _ => return Parsed::Invalid(Reason::Signature),
    };
    let parsed = match (accept.allows(version), version) {
        (false, Version::V1) => Err(Reason::V1NotAccepted),
        (false, Version::V2) => Err(Reason::V2NotAccepted),
        (true, Version::V1) => parse_v1(bytes),
        (true, Version::V2) => parse_v2(bytes),
    };
    match parsed {
        Ok(Some((header, consumed))) => Parsed::Done { header, consumed },
        Ok(None) => Parsed::NeedMore,
        Err(reason) => Parsed::Invalid(reason),
    }
}

/// A v1 line, `bytes` starting with its signature: the header and its
/// length, `None` for more bytes.
fn parse_v1(bytes: &[u8]) -> Result<Option<(Header, usize)>, Reason> {
    let window = &bytes[..bytes.len().min(V1_MAX)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return match window.len() {
            V1_MAX => Err(Reason::V1TooLong),
            _ => Ok(None),
        };
    };
    let Some(line) = window[..newline].strip_suffix(b"\r") else {
        return Err(Reason::V1Syntax);
    };
    let line = &line[V1_SIGNATURE.len()..];
    let consumed = newline + 1;
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        // The spec: whatever follows UNKNOWN up to \r\n is ignored.
        return Ok(Some((
            Header {
                version: Version::V1,
                command: Command::Proxy,
                transport: Transport::Unspec,
                addresses: Addresses::Unknown,
                tlvs: Vec::new(),
            },
            consumed,
        )));
    }
    let line = std::str::from_utf8(line).map_err(|_| Reason::V1Syntax)?;
    let fields: Vec<&str> = line.split(' ').collect();
    let [protocol, source, destination, source_port, destination_port] = fields[..] else {
        return Err(Reason::V1Syntax);
    };
    let ip = |text: &str| -> Result<IpAddr, Reason> {
        match protocol {
            "TCP4" => text.parse::<Ipv4Addr>().map(IpAddr::V4),
            _ => text.parse::<Ipv6Addr>().map(IpAddr::V6),
        }
        .map_err(|_| Reason::V1Address)
    };
    if protocol != "TCP4" && protocol != "TCP6" {
        return Err(Reason::V1Syntax);
    }
    let source = SocketAddr::new(ip(source)?, port(source_port)?);
    let destination = SocketAddr::new(ip(destination)?, port(destination_port)?);
    Ok(Some((
        Header::tcp(Version::V1, source, destination),
        consumed,
    )))
}

/// A v1 port: decimal, no sign, no leading zero, at most 65535.
fn port(text: &str) -> Result<u16, Reason> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    match (digits, leading_zero) {
        (true, false) => text.parse().map_err(|_| Reason::V1Port),
        _ => Err(Reason::V1Port),
    }
}

/// A v2 header, `bytes` starting with its signature: the header and its
/// length, `None` for more bytes.
fn parse_v2(bytes: &[u8]) -> Result<Option<(Header, usize)>, Reason> {
    let (Some(&version_command), Some(&family_transport)) = (bytes.get(12), bytes.get(13)) else {
        return Ok(None);
    };
    if version_command >> 4 != 2 {
        return Err(Reason::V2Version);
    }
    let command = match version_command & 0x0f {
        0 => Command::Local,
        1 => Command::Proxy,
        _ => return Err(Reason::V2Command),
    };
    let Some(length) = bytes.get(14..V2_FIXED) else {
        return Ok(None);
    };
    let total = V2_FIXED + usize::from(u16::from_be_bytes([length[0], length[1]]));
    if total > V2_MAX {
        return Err(Reason::V2TooLong);
    }
    // LOCAL: the receiver discards the block, family included.
    let (transport, address_len) = match command {
        Command::Local => (Transport::Unspec, 0),
        Command::Proxy => family(family_transport)?,
    };
    if total - V2_FIXED < address_len {
        return Err(Reason::V2Length);
    }
    let Some(block) = bytes.get(V2_FIXED..total) else {
        return Ok(None);
    };
    if command == Command::Local {
        return Ok(Some((Header::local(Version::V2), total)));
    }
    let (addrs, rest) = block.split_at(address_len);
    let addresses = match family_transport >> 4 {
        1 => {
            let ip =
                |at: usize| Ipv4Addr::new(addrs[at], addrs[at + 1], addrs[at + 2], addrs[at + 3]);
            let port = |at: usize| u16::from_be_bytes([addrs[at], addrs[at + 1]]);
            Addresses::Inet {
                source: SocketAddr::V4(SocketAddrV4::new(ip(0), port(8))),
                destination: SocketAddr::V4(SocketAddrV4::new(ip(4), port(10))),
            }
        }
        2 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&addrs[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([addrs[at], addrs[at + 1]]);
            Addresses::Inet {
                source: SocketAddr::V6(SocketAddrV6::new(ip(0), port(32), 0, 0)),
                destination: SocketAddr::V6(SocketAddrV6::new(ip(16), port(34), 0, 0)),
            }
        }
        3 => {
            let path = |part: &[u8]| {
                let end = part.iter().position(|&b| b == 0).unwrap_or(part.len());
                part[..end].to_vec()
            };
            Addresses::Unix {
                source: path(&addrs[..UNIX_PATH]),
                destination: path(&addrs[UNIX_PATH..]),
            }
        }
        _ => Addresses::Unknown,
    };
    let header = Header {
        version: Version::V2,
        command,
        transport,
        addresses,
        tlvs: tlvs(rest)?,
    };
    Ok(Some((header, total)))
}

/// A `PROXY` command's family and transport byte: the transport and the
/// length of the addresses.
fn family(byte: u8) -> Result<(Transport, usize), Reason> {
    let transport = match byte & 0x0f {
        0 => Transport::Unspec,
        1 => Transport::Stream,
        2 => Transport::Datagram,
        _ => return Err(Reason::V2Family),
    };
    let len = match byte >> 4 {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 2 * UNIX_PATH,
        _ => return Err(Reason::V2Family),
    };
    // The spec's pairs: UNSPEC with UNSPEC, a family with a transport.
    match (len == 0, transport == Transport::Unspec) {
        (true, true) | (false, false) => Ok((transport, len)),
        _ => Err(Reason::V2Family),
    }
}

/// The TLVs of `bytes`, which they must fill exactly.
fn tlvs(mut bytes: &[u8]) -> Result<Vec<Tlv>, Reason> {
    let mut tlvs = Vec::new();
    while !bytes.is_empty() {
        let [kind, high, low, ref rest @ ..] = *bytes else {
            return Err(Reason::V2Tlv);
        };
        let len = usize::from(u16::from_be_bytes([high, low]));
        let Some(value) = rest.get(..len) else {
            return Err(Reason::V2Tlv);
        };
        tlvs.push(Tlv {
            kind,
            value: value.to_vec(),
        });
        bytes = &rest[len..];
    }
    Ok(tlvs)
}

/// The header a client sends first (`--proxy-protocol` of `send`, `check`,
/// `bench`): addresses as given, else the connection's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientHeader {
    /// The version to write.
    pub version: Version,
    /// The client address to claim; the socket's local address if `None`.
    pub source: Option<SocketAddr>,
    /// The destination to claim; the address connected to if `None`.
    pub destination: Option<SocketAddr>,
}

impl ClientHeader {
    /// A header of `version` with the connection's own addresses.
    pub fn new(version: Version) -> ClientHeader {
        ClientHeader {
            version,
            source: None,
            destination: None,
        }
    }

    /// The header for connection `id` to `peer` on `net`.
    pub fn header<N: Network>(
        &self,
        net: &N,
        id: SocketId,
        peer: SocketAddr,
    ) -> io::Result<Header> {
        let source = match self.source {
            Some(source) => source,
            None => net.local_addr(id)?,
        };
        let destination = self.destination.unwrap_or(peer);
        Ok(Header::tcp(self.version, source, destination))
    }
}

/// A [`ClientHeader`] on its way out on one connection, before any payload.
#[derive(Clone, Debug)]
pub struct Outgoing {
    plan: ClientHeader,
    bytes: Vec<u8>,
    sent: usize,
}

impl Outgoing {
    /// `plan`'s header, not yet written.
    pub fn new(plan: ClientHeader) -> Outgoing {
        Outgoing {
            plan,
            bytes: Vec::new(),
            sent: 0,
        }
    }

    /// Writes what the socket takes of the header of connection `id` to
    /// `peer`; whether it is all written. The header is made once the
    /// socket has its local address: io_uring binds it only as the
    /// connection comes up, and wasi has none to tell until then. Callers
    /// go on reading meanwhile, which finishes the connection (wasi) or
    /// reports its failure.
    pub fn send<N: Network>(
        &mut self,
        net: &mut N,
        id: SocketId,
        peer: SocketAddr,
    ) -> io::Result<bool> {
        if self.bytes.is_empty() {
            let Ok(header) = self.plan.header(net, id, peer) else {
                return Ok(false);
            };
            let bound =
                (header.source()).is_some_and(|s| s.port() != 0 && !s.ip().is_unspecified());
            if !bound {
                return Ok(false);
            }
            self.bytes = header.encode();
        }
        while self.sent < self.bytes.len() {
            let n = try_write(net, id, &self.bytes[self.sent..])?;
            if n == 0 {
                return Ok(false);
            }
            self.sent += n;
        }
        Ok(true)
    }
}

/// Checks the parser's promises on `bytes`, for each [`Accept`]: no panic;
/// [`Parsed::NeedMore`] only below [`MAX_HEADER`] bytes; a decision
/// (a header or a refusal) on a prefix stands whatever follows it; a header
/// is at most the bytes given and [`MAX_HEADER`], and parses alone. For the
/// property test and the fuzz target; `Err` says which promise broke.
#[cfg(any(test, feature = "simulation"))]
pub fn promises(bytes: &[u8]) -> Result<(), String> {
    for accept in [Accept::V1, Accept::V2, Accept::Any] {
        let whole = parse(bytes, accept);
        if let Parsed::Done { consumed, .. } = &whole {
            if *consumed > bytes.len() || *consumed > MAX_HEADER || *consumed == 0 {
                return Err(format!(
                    "{accept:?}: consumed {consumed} of {} bytes",
                    bytes.len()
                ));
            }
            if parse(&bytes[..*consumed], accept) != whole {
                return Err(format!("{accept:?}: the header alone parses otherwise"));
            }
        }
        if whole == Parsed::NeedMore && bytes.len() >= MAX_HEADER {
            return Err(format!(
                "{accept:?}: asks for more after {} bytes",
                bytes.len()
            ));
        }
        // Once decided on a prefix, the decision stands.
        let mut decided: Option<Parsed> = None;
        for end in 0..=bytes.len().min(MAX_HEADER + 1) {
            let parsed = parse(&bytes[..end], accept);
            match (&decided, parsed) {
                (None, Parsed::NeedMore) => {}
                (None, parsed) => decided = Some(parsed),
                (Some(before), parsed) if *before == parsed => {}
                (Some(before), parsed) => {
                    return Err(format!(
                        "{accept:?}: {before:?} on a prefix became {parsed:?} after {end} bytes"
                    ))
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
