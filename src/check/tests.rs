//! The checks against echo servers of the loopback world: an honest one
//! passes them all, and broken ones fail the right scenario for the right
//! reason.

use super::*;
use crate::engine::{Config, ConnectionCount, Server};
use crate::net::loopback::{Loopback, LoopbackNetwork};
use crate::net::{Bind, Capabilities, Close, Interest, Protocol, SocketId, Spliced};
use crate::proxy::{Accept, ClientHeader, Version};
use std::io;
use std::net::IpAddr;

#[test]
fn patterns_match_whole_names_with_stars_for_anything() {
    assert!(matches("hello", "hello"));
    assert!(!matches("hell", "hello"));
    assert!(matches("udp_*", "udp_burst"));
    assert!(!matches("udp_*", "hello"));
    assert!(matches("*_8mib", "large_8mib"));
    assert!(matches("c*_2*0", "concurrent_200"));
    assert!(!matches("c*_2*0", "concurrent_1000"));
    assert!(matches("*", "anything"));
}

#[test]
fn scenario_names_are_unique() {
    let mut names: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), SCENARIOS.len());
}

#[test]
fn without_an_address_a_scenario_is_skipped_with_the_reason() {
    let world = Loopback::default();
    let mut net = world.host();
    let endpoint = Endpoint::default();
    let mut outcomes = Vec::new();
    let all: Vec<&Scenario> = SCENARIOS.iter().collect();
    let summary = run(&mut net, &world, &endpoint, Options::default(), &all, |o| {
        outcomes.push(o.clone())
    });
    assert_eq!(summary.skipped, SCENARIOS.len());
    assert_eq!(
        outcomes[0].verdict,
        Verdict::Skip("no TCP address to check".into())
    );
}

/// The outcome of `name` against an echokit server on the loopback world;
/// the server runs between the client's turns, as the simulation does.
fn against_echokit(name: &str) -> Outcome {
    against_echokit_with(name, None, None)
}

/// [`against_echokit`], the server requiring a PROXY header when `accept`
/// says, the check sending one of `version` when given.
fn against_echokit_with(name: &str, accept: Option<Accept>, version: Option<Version>) -> Outcome {
    let world = Loopback::with_buffer(256 * 1024);
    let config = Config {
        proxy: accept,
        ..Config::default()
    };
    let options = Options {
        proxy: version.map(ClientHeader::new),
        ..Options::default()
    };
    let mut server = Server::new(world.host(), config, ConnectionCount::default(), ());
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let tcp = server.listen(Protocol::Tcp, any, Bind::default()).unwrap();
    let udp = server.listen(Protocol::Udp, tcp, Bind::default()).unwrap();
    let endpoint = Endpoint {
        tcp: Some(tcp),
        udp: Some(udp),
    };
    let mut client = Interleaved {
        client: world.host(),
        server,
        world: world.clone(),
    };
    let scenario = scenario(name).unwrap();
    let mut found = None;
    run(&mut client, &world, &endpoint, options, &[scenario], |o| {
        found = Some(o.clone())
    });
    found.unwrap()
}

/// A client network whose every wait lets the server take a turn first.
struct Interleaved {
    client: LoopbackNetwork,
    server: Server<LoopbackNetwork>,
    world: Loopback,
}

/// Forwards each listed method to `self.client`: `mut` ones take `&mut
/// self`, `ref` ones `&self`.
macro_rules! forward {
    ($(mut $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)* $(ref $rname:ident($($rarg:ident: $rty:ty),*) -> $rret:ty;)*) => {
        $(fn $name(&mut self, $($arg: $ty),*) -> $ret {
            self.client.$name($($arg),*)
        })*
        $(fn $rname(&self, $($rarg: $rty),*) -> $rret {
            self.client.$rname($($rarg),*)
        })*
    };
}

impl Network for Interleaved {
    forward! {
        mut listen(addr: SocketAddr, bind: Bind) -> io::Result<SocketId>;
        mut connect(peer: SocketAddr, local: Option<IpAddr>) -> io::Result<SocketId>;
        mut accept(id: SocketId) -> io::Result<(SocketId, SocketAddr)>;
        mut bind_udp(addr: SocketAddr, bind: Bind) -> io::Result<SocketId>;
        mut recv_from(id: SocketId, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
        mut send_to(id: SocketId, datagram: &[u8], to: SocketAddr) -> io::Result<()>;
        mut read(id: SocketId, buf: &mut [u8]) -> io::Result<usize>;
        mut write(id: SocketId, buf: &[u8]) -> io::Result<usize>;
        mut splice(id: SocketId, max: usize) -> io::Result<Spliced>;
        mut shutdown_write(id: SocketId) -> io::Result<()>;
        mut close(id: SocketId, how: Close) -> ();
        mut set_interest(id: SocketId, interest: Interest) -> ();
        ref capabilities() -> Capabilities;
        ref local_addr(id: SocketId) -> io::Result<SocketAddr>;
        ref lingering() -> usize;
    }

    /// Lets the server take a turn, then waits as the client.
    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<SocketId>) -> io::Result<()> {
        self.server.turn(&self.world, Some(Duration::ZERO))?;
        self.client.wait(timeout, ready)
    }
}

#[test]
fn an_echokit_server_passes_every_scenario() {
    for scenario in SCENARIOS {
        let outcome = against_echokit(scenario.name);
        let expected = match scenario.name {
            "ipv6" => "SKIP",
            _ if scenario.needs_proxy_protocol() => "SKIP",
            _ => "PASS",
        };
        assert_eq!(
            outcome.verdict.word(),
            expected,
            "{}: {:?} ({})",
            scenario.name,
            outcome.verdict,
            outcome.detail
        );
    }
}

#[test]
fn an_echokit_server_behind_the_proxy_protocol_passes_every_tcp_scenario() {
    for version in [Version::V1, Version::V2] {
        for scenario in SCENARIOS.iter().filter(|s| s.protocol == Protocol::Tcp) {
            let accept = match version {
                Version::V1 => Accept::V1,
                Version::V2 => Accept::V2,
            };
            let outcome = against_echokit_with(scenario.name, Some(accept), Some(version));
            let expected = match scenario.name {
                "ipv6" => "SKIP",
                _ => "PASS",
            };
            assert_eq!(
                outcome.verdict.word(),
                expected,
                "{version} {}: {:?} ({})",
                scenario.name,
                outcome.verdict,
                outcome.detail
            );
        }
    }
}

#[test]
fn a_plain_echo_fails_the_refusal_scenario() {
    let outcome = against_echokit_with("proxy_refused", None, Some(Version::V2));
    let reason = outcome.verdict.reason().unwrap_or_default().to_owned();
    assert!(reason.contains("echoes without a valid header"), "{reason}");
}
