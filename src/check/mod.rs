//! The conformance scenarios, as a product: each asks one question of an
//! echo endpoint that somebody else runs (a server, or a proxy, load
//! balancer or tunnel in front of one) and answers PASS, FAIL with one
//! precise reason, or SKIP with the reason it cannot be asked.
//!
//! Written against [`Network`] and [`Clock`], so both builds run them; the
//! `echokit check` command and the conformance kit's check column use this
//! one definition.

mod conn;
mod tcp;
mod udp;

use crate::clock::Clock;
use crate::net::{Network, Protocol};
use crate::proxy::ClientHeader;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// What is checked: the endpoint's TCP and UDP addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// Where TCP echo is served, if it is.
    pub tcp: Option<SocketAddr>,
    /// Where UDP echo is served, if it is.
    pub udp: Option<SocketAddr>,
}

impl Endpoint {
    /// The address `protocol` is served on.
    pub fn addr(&self, protocol: Protocol) -> Option<SocketAddr> {
        match protocol {
            Protocol::Tcp => self.tcp,
            Protocol::Udp => self.udp,
        }
    }
}

/// How a scenario came out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The endpoint did what an echo must.
    Pass,
    /// It did not; the reason says exactly how.
    Fail(String),
    /// The question could not be asked; the reason says why.
    Skip(String),
}

impl Verdict {
    /// `PASS`, `FAIL` or `SKIP`.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail(_) => "FAIL",
            Verdict::Skip(_) => "SKIP",
        }
    }

    /// The reason of a failure or skip.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Pass => None,
            Verdict::Fail(reason) | Verdict::Skip(reason) => Some(reason),
        }
    }
}

/// One scenario: a question with a name.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Its name, for `--only` and reports.
    pub name: &'static str,
    /// Which echo it asks about.
    pub protocol: Protocol,
    /// What a pass proves, in one line.
    pub about: &'static str,
    kind: Kind,
}

/// Which code asks a scenario's question.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Tcp(tcp::Question),
    Udp(udp::Question),
}

const fn tcp(name: &'static str, question: tcp::Question, about: &'static str) -> Scenario {
    Scenario {
        name,
        protocol: Protocol::Tcp,
        about,
        kind: Kind::Tcp(question),
    }
}

const fn udp(name: &'static str, question: udp::Question, about: &'static str) -> Scenario {
    Scenario {
        name,
        protocol: Protocol::Udp,
        about,
        kind: Kind::Udp(question),
    }
}

/// Every scenario, in the order they run.
pub const SCENARIOS: &[Scenario] = &[
    tcp(
        "hello",
        tcp::Question::Hello,
        "one line comes back exactly, and the endpoint closes after the client does",
    ),
    tcp(
        "empty",
        tcp::Question::Empty,
        "a connection closed at once gets nothing back and is closed in turn",
    ),
    tcp(
        "all_bytes",
        tcp::Question::AllBytes,
        "every byte value 0..=255 comes back unchanged (no text or line-ending translation)",
    ),
    tcp(
        "unicode",
        tcp::Question::Unicode,
        "a multi-line UTF-8 text comes back exactly",
    ),
    tcp(
        "large_8mib",
        tcp::Question::Large,
        "8 MiB of pseudo-random bytes come back whole, checked byte for byte",
    ),
    tcp(
        "many_small",
        tcp::Question::ManySmall,
        "10,000 small writes on one connection come back as one stream",
    ),
    tcp(
        "half_close_tail",
        tcp::Question::HalfCloseTail,
        "after the client's FIN the endpoint still sends every byte, then closes",
    ),
    tcp(
        "concurrent_200",
        tcp::Question::Concurrent(200),
        "200 connections open at once each get their own bytes back",
    ),
    tcp(
        "concurrent_1000",
        tcp::Question::Concurrent(1000),
        "1,000 connections open at once each get their own bytes back",
    ),
    tcp(
        "slow_reader",
        tcp::Question::SlowReader,
        "a client that stops reading for 2 s mid-echo loses nothing and holds up nobody",
    ),
    tcp(
        "reset",
        tcp::Question::Reset,
        "clients that reset mid-echo do not disturb the next client",
    ),
    tcp(
        "ipv6",
        tcp::Question::Ipv6,
        "echo over IPv6 (asked when the address is IPv6)",
    ),
    tcp(
        "proxy_header",
        tcp::Question::ProxyHeader,
        "a PROXY header and a line in one write: the line alone comes back (with --proxy-protocol)",
    ),
    tcp(
        "proxy_refused",
        tcp::Question::ProxyRefused,
        "connections without a PROXY header or with a malformed one are closed unechoed (with --proxy-protocol)",
    ),
    tcp(
        "proxy_slow_header",
        tcp::Question::ProxySlowHeader,
        "a PROXY header sent in three pieces 0.4 s apart is waited for, then the echo works (with --proxy-protocol)",
    ),
    udp(
        "udp_hello",
        udp::Question::Hello,
        "one datagram comes back exactly",
    ),
    udp(
        "udp_all_bytes",
        udp::Question::AllBytes,
        "a datagram of every byte value 0..=255 comes back unchanged",
    ),
    udp(
        "udp_max_datagram",
        udp::Question::Largest,
        "the largest UDP payload (65,507 bytes over IPv4) comes back whole",
    ),
    udp(
        "udp_burst",
        udp::Question::Burst,
        "1,000 datagrams, 64 in flight at most, all come back once and unchanged",
    ),
    udp(
        "udp_two_clients",
        udp::Question::TwoClients,
        "two clients interleaving datagrams each get only their own echoes",
    ),
    udp(
        "udp_source",
        udp::Question::Source,
        "each echo comes from the address the datagram was sent to",
    ),
];

/// The scenario named `name`.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Whether `name` matches `pattern`: equal, or equal where each `*` of
/// the pattern stands for any run of characters.
pub fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else {
        return rest.is_empty();
    };
    for part in parts {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// How a check runs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The longest one scenario may take.
    pub timeout: Duration,
    /// The PROXY protocol header every TCP connection sends first, for an
    /// endpoint that expects one; the `proxy_*` scenarios are skipped
    /// without it.
    pub proxy: Option<ClientHeader>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(20),
            proxy: None,
        }
    }
}

impl Scenario {
    /// Whether it asks about a PROXY protocol endpoint (needs
    /// [`Options::proxy`]).
    pub fn needs_proxy_protocol(&self) -> bool {
        matches!(
            self.kind,
            Kind::Tcp(
                tcp::Question::ProxyHeader
                    | tcp::Question::ProxyRefused
                    | tcp::Question::ProxySlowHeader
            )
        )
    }
}

/// What one scenario found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The scenario.
    pub scenario: &'static Scenario,
    /// How it came out.
    pub verdict: Verdict,
    /// How long it took.
    pub elapsed: Duration,
    /// What it measured on the way, for `-v` (bytes, times).
    pub detail: String,
}

/// The counts of a whole check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Scenarios that passed.
    pub passed: usize,
    /// Scenarios that failed.
    pub failed: usize,
    /// Scenarios that were skipped.
    pub skipped: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// What a scenario is handed.
pub(crate) struct Probe<'a, N, C> {
    pub(crate) net: &'a mut N,
    pub(crate) clock: &'a C,
    pub(crate) options: Options,
    /// Facts for the outcome's detail.
    pub(crate) notes: Vec<String>,
}

/// Runs `scenarios` one after the other against `endpoint`, handing each
/// outcome to `report` as it comes; returns the counts.
pub fn run<N: Network, C: Clock>(
    net: &mut N,
    clock: &C,
    endpoint: &Endpoint,
    options: Options,
    scenarios: &[&'static Scenario],
    mut report: impl FnMut(&Outcome),
) -> Summary {
    let mut summary = Summary::default();
    for &scenario in scenarios {
        let start = clock.now();
        let mut probe = Probe {
            net: &mut *net,
            clock,
            options,
            notes: Vec::new(),
        };
        let verdict = match endpoint.addr(scenario.protocol) {
            None => Verdict::Skip(format!(
                "no {} address to check",
                scenario.protocol.name().to_uppercase()
            )),
            Some(addr) => match scenario.kind {
                Kind::Tcp(question) => tcp::ask(&mut probe, addr, question),
                Kind::Udp(question) => udp::ask(&mut probe, addr, question),
            },
        };
        match verdict {
            Verdict::Pass => summary.passed += 1,
            Verdict::Fail(_) => summary.failed += 1,
            Verdict::Skip(_) => summary.skipped += 1,
        }
        report(&Outcome {
            scenario,
            verdict,
            elapsed: clock.now().saturating_sub(start),
            detail: probe.notes.join("; "),
        });
    }
    summary
}

/// Why an endpoint cannot be checked at all.
#[derive(Debug)]
pub struct Unreachable {
    /// Which echo could not be reached.
    pub protocol: Protocol,
    /// Its address.
    pub addr: SocketAddr,
    /// What happened instead.
    pub cause: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach the {} echo at {}: {}",
            self.protocol.name().to_uppercase(),
            self.addr,
            self.cause
        )
    }
}

impl std::error::Error for Unreachable {}

/// Checks that every address of `endpoint` answers at all (a TCP
/// connection opens, a UDP datagram comes back) within `limit`.
pub fn reach<N: Network, C: Clock>(
    net: &mut N,
    clock: &C,
    endpoint: &Endpoint,
    limit: Duration,
) -> Result<(), Unreachable> {
    if let Some(addr) = endpoint.tcp {
        conn::reach(net, clock, addr, limit).map_err(|err| Unreachable {
            protocol: Protocol::Tcp,
            addr,
            cause: crate::net::explain(err, addr).to_string(),
        })?;
    }
    if let Some(addr) = endpoint.udp {
        let mut probe = Probe {
            net,
            clock,
            options: Options {
                timeout: limit,
                proxy: None,
            },
            notes: Vec::new(),
        };
        let answered = udp::reach(&mut probe, addr, limit).map_err(|err| err.to_string());
        if answered != Ok(true) {
            return Err(Unreachable {
                protocol: Protocol::Udp,
                addr,
                cause: answered.err().unwrap_or_else(|| {
                    format!("no datagram came back within {}s", limit.as_secs_f64())
                }),
            });
        }
    }
    Ok(())
}

/// "byte 0x0d" or, when `byte` is `None`, "nothing".
fn byte(byte: Option<u8>) -> String {
    byte.map_or_else(|| "nothing".to_owned(), |b| format!("byte 0x{b:02x}"))
}

#[cfg(test)]
mod tests;
