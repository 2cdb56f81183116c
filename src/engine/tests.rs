//! Engine behaviour on the in-memory loopback network.

use super::*;
use crate::client::{EchoMismatch, Exchange, HalfClose};
use crate::clock::Clock;
use crate::net::loopback::{Loopback, LoopbackNetwork};
use std::net::{Ipv4Addr, SocketAddr};

const ANY_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// How a host echoes: [`Network::splice`] (like WASI) or reading and
/// writing back (like native).
#[derive(Clone, Copy, Debug)]
enum Echo {
    Spliced,
    Copied,
}

const BOTH: [Echo; 2] = [Echo::Spliced, Echo::Copied];

fn server_echoing(
    world: &Loopback,
    config: Config,
    echo: Echo,
) -> (Server<LoopbackNetwork>, SocketAddr) {
    let net = match echo {
        Echo::Spliced => world.host(),
        Echo::Copied => world.host_without_splice(),
    };
    let mut server = Server::new(net, config, ConnectionCount::default(), ());
    let addr = server
        .listen(Protocol::Tcp, ANY_PORT, Bind::default())
        .unwrap();
    (server, addr)
}

fn server(world: &Loopback, config: Config) -> (Server<LoopbackNetwork>, SocketAddr) {
    server_echoing(world, config, Echo::Spliced)
}

/// A server that closes connections idle for `idle`.
fn server_idle_after(world: &Loopback, idle: Duration) -> (Server<LoopbackNetwork>, SocketAddr) {
    let config = Config {
        idle_timeout: Some(idle),
        ..Config::default()
    };
    server(world, config)
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Runs every input through the server at once, turn by turn, checking after
/// each turn that no connection holds more than `bound` unsent bytes.
fn echo_all<N: Network>(
    server: &mut Server<N>,
    world: &Loopback,
    addr: SocketAddr,
    inputs: &[Vec<u8>],
) -> Vec<Result<u64, EchoMismatch>> {
    let mut client = world.host();
    let mut exchanges: Vec<_> = inputs
        .iter()
        .map(|input| Exchange::connect(&mut client, addr, input, HalfClose::AfterInput).unwrap())
        .collect();
    let mut outputs = vec![Vec::new(); inputs.len()];
    let mut done = vec![false; inputs.len()];
    for _ in 0..1_000_000 {
        for ((exchange, out), done) in exchanges.iter_mut().zip(&mut outputs).zip(&mut done) {
            if !*done {
                *done = exchange.drive(&mut client, world.now(), out).unwrap();
            }
        }
        if done.iter().all(|&done| done) {
            break;
        }
        server.turn(world, Some(Duration::ZERO)).unwrap();
        let bound = server.config.max_backlog;
        for conn in server.connections.iter().flatten() {
            assert!(
                conn.backlog() <= bound,
                "backlog {} over bound {bound}",
                conn.backlog()
            );
        }
    }
    assert!(done.iter().all(|&done| done), "exchanges did not finish");
    for (input, output) in inputs.iter().zip(&outputs) {
        assert_eq!(input.len(), output.len());
    }
    exchanges.iter().map(Exchange::verdict).collect()
}

#[test]
fn echoes_one_message() {
    for echo in BOTH {
        let world = Loopback::default();
        let (mut server, addr) = server_echoing(&world, Config::default(), echo);
        let results = echo_all(&mut server, &world, addr, &[b"hello\n".to_vec()]);
        assert_eq!(results, [Ok(6)], "{echo:?}");
        assert_eq!(server.open_connections(), 0, "closed after the echo");
    }
}

#[test]
fn echoes_empty_input() {
    for echo in BOTH {
        let world = Loopback::default();
        let (mut server, addr) = server_echoing(&world, Config::default(), echo);
        let results = echo_all(&mut server, &world, addr, &[Vec::new()]);
        assert_eq!(results, [Ok(0)], "{echo:?}");
    }
}

#[test]
fn large_echo_through_tiny_buffers_stays_bounded() {
    for echo in BOTH {
        let world = Loopback::with_buffer(777);
        let config = Config {
            max_backlog: 4096,
            ..Config::default()
        };
        let (mut server, addr) = server_echoing(&world, config, echo);
        let input = payload(1 << 20, 7);
        let results = echo_all(&mut server, &world, addr, &[input]);
        assert_eq!(results, [Ok(1 << 20)], "{echo:?}");
    }
}

#[test]
fn serves_many_connections_at_once() {
    for echo in BOTH {
        let world = Loopback::with_buffer(1500);
        let (mut server, addr) = server_echoing(&world, Config::default(), echo);
        let inputs: Vec<_> = (0..200).map(|i| payload(10_000 + i, i as u8)).collect();
        let results = echo_all(&mut server, &world, addr, &inputs);
        for (i, result) in results.iter().enumerate() {
            assert_eq!(*result, Ok(10_000 + i as u64), "{echo:?}");
        }
    }
}

/// A client that writes 100 KB and never reads, against a server with a
/// bound of 8192 bytes (on a host of `world`, whose buffers hold 1000
/// bytes): what the server then holds, and how much the client could write.
fn never_reading_client(world: &Loopback, echo: Echo) -> (usize, usize) {
    let config = Config {
        max_backlog: 8192,
        ..Config::default()
    };
    let (mut server, addr) = server_echoing(world, config, echo);
    let mut client = world.host();
    let id = client.connect(addr, None).unwrap();
    let input = payload(100_000, 3);
    let mut written = 0;
    for _ in 0..1000 {
        match client.write(id, &input[written..]) {
            Ok(n) => written += n,
            Err(err) if would_block(&err) => {}
            Err(err) => panic!("{err}"),
        }
        server.turn(world, Some(Duration::ZERO)).unwrap();
    }
    (server.buffered_bytes(), written)
}

#[test]
fn slow_reader_pauses_reading_at_the_bound() {
    // A host without splice: the server reads what it cannot send back,
    // up to its bound, and both socket buffers fill.
    let world = Loopback::with_buffer(1000);
    let expected = (8192, 8192 + 2 * 1000);
    assert_eq!(never_reading_client(&world, Echo::Copied), expected);
}

#[test]
fn slow_reader_costs_a_splicing_host_no_memory() {
    // With splice, bytes stay in the socket buffers until they can move.
    let world = Loopback::with_buffer(1000);
    assert_eq!(never_reading_client(&world, Echo::Spliced), (0, 2 * 1000));
}

#[test]
fn idle_connections_close_and_active_ones_stay() {
    let world = Loopback::default();
    let (mut server, addr) = server_idle_after(&world, Duration::from_secs(1));
    let mut client = world.host();
    let idle = client.connect(addr, None).unwrap();
    let active = client.connect(addr, None).unwrap();
    let mut buf = [0; 16];
    for _ in 0..20 {
        world.advance(Duration::from_millis(100));
        client.write(active, b"x").unwrap();
        server.turn(&world, Some(Duration::ZERO)).unwrap();
        assert_eq!(client.read(active, &mut buf).unwrap(), 1);
    }
    // Two seconds passed: the idle one is gone (EOF), the active one is not.
    assert_eq!(client.read(idle, &mut buf).unwrap(), 0);
    assert!(would_block(&client.read(active, &mut buf).unwrap_err()));
    assert_eq!(server.open_connections(), 1);
}

#[test]
fn idle_timeout_fires_while_the_server_sleeps() {
    let world = Loopback::default();
    let (mut server, addr) = server_idle_after(&world, Duration::from_secs(1));
    let mut client = world.host();
    client.connect(addr, None).unwrap();
    server.turn(&world, Some(Duration::ZERO)).unwrap();
    assert_eq!(server.open_connections(), 1);
    let start = world.now();
    while server.open_connections() > 0 {
        // No cap: the server sleeps until its own next deadline.
        server.turn(&world, None).unwrap();
    }
    let waited = world.now() - start;
    assert!(waited >= Duration::from_secs(1) && waited <= Duration::from_millis(1250));
}

#[test]
fn connections_over_the_limit_are_closed_at_once() {
    let world = Loopback::default();
    let config = Config {
        max_connections: 2,
        ..Config::default()
    };
    let (mut server, addr) = server(&world, config);
    let mut client = world.host();
    let kept: Vec<_> = (0..2)
        .map(|_| client.connect(addr, None).unwrap())
        .collect();
    server.turn(&world, Some(Duration::ZERO)).unwrap();
    let extra = client.connect(addr, None).unwrap();
    server.turn(&world, Some(Duration::ZERO)).unwrap();
    let mut buf = [0; 8];
    assert_eq!(client.read(extra, &mut buf).unwrap(), 0, "refused by EOF");
    for id in kept {
        client.write(id, b"ok").unwrap();
        server.turn(&world, Some(Duration::ZERO)).unwrap();
        assert_eq!(client.read(id, &mut buf).unwrap(), 2);
    }
    assert_eq!(server.open_connections(), 2);
}

#[test]
fn a_vanished_peer_does_not_disturb_others() {
    let world = Loopback::with_buffer(1000);
    let (mut server, addr) = server(&world, Config::default());
    let mut client = world.host();
    let rude = client.connect(addr, None).unwrap();
    client.write(rude, &payload(1000, 1)).unwrap();
    server.turn(&world, Some(Duration::ZERO)).unwrap();
    client.close(rude, Close::Orderly);
    let results = echo_all(&mut server, &world, addr, &[payload(50_000, 2)]);
    assert_eq!(results, [Ok(50_000)]);
    assert_eq!(server.open_connections(), 0);
}

/// Runs the client against a fake peer that answers `reply` and then ends
/// the connection with `end` (a half-close or a close); returns the verdict.
fn against_fake_peer(
    input: &[u8],
    reply: &[u8],
    end: impl FnOnce(&mut LoopbackNetwork, SocketId),
) -> Result<u64, EchoMismatch> {
    let world = Loopback::default();
    let mut peer = world.host();
    let listener = peer.listen(ANY_PORT, Bind::default()).unwrap();
    let addr = peer.local_addr(listener).unwrap();
    let mut client = world.host();
    let mut exchange = Exchange::connect(&mut client, addr, input, HalfClose::AfterInput).unwrap();
    let mut out = Vec::new();
    assert!(!exchange.drive(&mut client, world.now(), &mut out).unwrap());
    let (conn, _) = peer.accept(listener).unwrap();
    peer.write(conn, reply).unwrap();
    end(&mut peer, conn);
    assert!(exchange.drive(&mut client, world.now(), &mut out).unwrap());
    exchange.verdict()
}

#[test]
fn client_reports_the_first_wrong_byte() {
    let end = |peer: &mut LoopbackNetwork, conn| peer.shutdown_write(conn).unwrap();
    let mismatch = against_fake_peer(b"hello world", b"hello_w", end).unwrap_err();
    assert_eq!(
        mismatch,
        EchoMismatch {
            sent: 11,
            received: 7,
            first_difference: 5
        }
    );
    assert_eq!(
        mismatch.to_string(),
        "echo mismatch: sent 11 bytes, received 7, first difference at offset 5"
    );
}

#[test]
fn client_reports_a_short_echo_at_its_end() {
    let end = |peer: &mut LoopbackNetwork, conn| peer.close(conn, Close::Orderly);
    let mismatch = against_fake_peer(b"abcdef", b"abcde", end).unwrap_err();
    assert_eq!(mismatch.first_difference, 5);
}

#[test]
fn listening_twice_on_one_address_is_address_in_use() {
    let world = Loopback::default();
    let (_server, addr) = server(&world, Config::default());
    let mut second = Server::new(
        world.host(),
        Config::default(),
        ConnectionCount::default(),
        (),
    );
    let err = second
        .listen(Protocol::Tcp, addr, Bind::default())
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains("another server"), "{err}");
}

#[test]
fn datagrams_come_back_whole_to_their_senders() {
    let world = Loopback::with_buffer(1 << 20);
    let mut server = Server::new(
        world.host(),
        Config::default(),
        ConnectionCount::default(),
        (),
    );
    let addr = server
        .listen(Protocol::Udp, ANY_PORT, Bind::default())
        .unwrap();
    let mut client = world.host();
    let alice = client.bind_udp(ANY_PORT, Bind::default()).unwrap();
    let bob = client.bind_udp(ANY_PORT, Bind::default()).unwrap();
    let sent: Vec<_> = (0..50).map(|i| payload(1 + i * 300, i as u8)).collect();
    for datagram in &sent {
        client.send_to(alice, datagram, addr).unwrap();
        client.send_to(bob, &datagram[..1], addr).unwrap();
    }
    server.turn(&world, Some(Duration::ZERO)).unwrap();
    server.turn(&world, Some(Duration::ZERO)).unwrap();
    let mut buf = vec![0; 65_536];
    for datagram in &sent {
        let (len, from) = client.recv_from(alice, &mut buf).unwrap();
        assert_eq!((&buf[..len], from), (&datagram[..], addr));
        let (len, _) = client.recv_from(bob, &mut buf).unwrap();
        assert_eq!(&buf[..len], &datagram[..1]);
    }
    assert!(would_block(&client.recv_from(alice, &mut buf).unwrap_err()));
}

#[test]
fn tcp_and_udp_share_one_server() {
    let world = Loopback::default();
    let mut server = Server::new(
        world.host(),
        Config::default(),
        ConnectionCount::default(),
        (),
    );
    let addr = server
        .listen(Protocol::Tcp, ANY_PORT, Bind::default())
        .unwrap();
    assert_eq!(
        server.listen(Protocol::Udp, addr, Bind::default()).unwrap(),
        addr
    );
    let mut client = world.host();
    let udp = client.bind_udp(ANY_PORT, Bind::default()).unwrap();
    client.send_to(udp, b"ping", addr).unwrap();
    let results = echo_all(&mut server, &world, addr, &[b"over tcp".to_vec()]);
    assert_eq!(results, [Ok(8)]);
    let mut buf = [0; 16];
    assert_eq!(client.recv_from(udp, &mut buf).unwrap(), (4, addr));
}

mod proxy;
