//! What is particular to the io_uring backend: its memory bounds, closing
//! with operations in flight, running out of receive buffers, and the
//! engine served on it.

use super::output::SEND_CAP;
use super::stream::RECV_CAP;
use super::*;
use crate::client::{Exchange, HalfClose};
use crate::clock::{Clock, MonotonicClock};
use crate::engine::{Config, ConnectionCount, Server};
use crate::net::contract::{connected, stream_echo_and_half_close, until, LOCALHOST};
use crate::net::{would_block, Protocol};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

const TICK: Duration = Duration::from_millis(10);

fn net() -> UringNetwork {
    UringNetwork::new().unwrap()
}

/// `count` stream buffers of the default size.
fn buffers(count: u16) -> Buffers {
    Buffers {
        count,
        ..STREAM_BUFFERS
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

/// Waits once, for at most a tick.
fn tick(net: &mut UringNetwork) {
    let mut ready = Vec::new();
    net.wait(Some(TICK), &mut ready).unwrap();
}

/// Writes `chunk` to `id` over and over until 20 waits in a row took
/// nothing: the kernel's buffers and the backend's are full. Returns the
/// bytes taken.
fn fill(net: &mut UringNetwork, id: SocketId) -> usize {
    let chunk = vec![7; 16 * 1024];
    let (mut written, mut idle) = (0, 0);
    while idle < 20 {
        match net.write(id, &chunk) {
            Ok(n) => {
                written += n;
                idle = 0;
                continue;
            }
            Err(err) if would_block(&err) => idle += 1,
            Err(err) => panic!("write: {err}"),
        }
        tick(net);
    }
    written
}

/// Reads `len` bytes from `id`.
fn read_exactly(
    net: &mut UringNetwork,
    clock: &MonotonicClock,
    id: SocketId,
    len: usize,
) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    while got.len() < len {
        let n = until(net, clock, "read", |net| {
            let want = buf.len().min(len - got.len());
            net.read(id, &mut buf[..want]).map(Some)
        });
        assert_ne!(n, 0, "end of stream after {} of {len} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[test]
fn every_setup_echoes_and_the_preferred_one_defers_task_work() {
    if std::env::var_os(setup::SETUP_VARIABLE).is_none() {
        assert_eq!(net().setup(), Setup::Deferred, "kernel 6.1 and later");
    }
    for setup in [Setup::Deferred, Setup::Cooperative, Setup::Plain] {
        let net = UringNetwork::with_setup(setup).unwrap();
        assert_eq!(net.setup(), setup);
        stream_echo_and_half_close(net, MonotonicClock::new());
    }
}

#[test]
fn idle_connections_hold_no_buffer() {
    let (mut net, clock) = (net(), MonotonicClock::new());
    let (listener, _, _) = connected(&mut net, &clock);
    let addr = net.local_addr(listener).unwrap();
    let mut pairs = Vec::new();
    for _ in 0..200 {
        let client = net.connect(addr, None).unwrap();
        net.set_interest(client, Interest::BOTH);
        let (server, _) = until(&mut net, &clock, "accept", |net| {
            net.accept(listener).map(Some)
        });
        net.set_interest(server, Interest::READ);
        pairs.push((client, server));
    }
    for &(client, _) in &pairs {
        until(&mut net, &clock, "write", |net| {
            Ok(Some(net.write(client, b"ping")?).filter(|&n| n == 4))
        });
    }
    for _ in 0..5 {
        tick(&mut net);
    }
    assert!(net.buffered() > 0, "unread data is held");
    for &(_, server) in &pairs {
        assert_eq!(read_exactly(&mut net, &clock, server, 4), b"ping");
    }
    for _ in 0..5 {
        tick(&mut net);
    }
    assert_eq!(net.buffered(), 0, "201 idle connections hold no buffer");
}

#[test]
fn the_send_buffer_stops_at_64_kib_and_drains_in_order() {
    let (mut net, clock) = (net(), MonotonicClock::new());
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = peer.local_addr().unwrap();
    let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
    let reader = thread::spawn(move || {
        let (mut stream, _) = peer.accept().unwrap();
        wait_for_go.recv().unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        got
    });
    let client = net.connect(addr, None).unwrap();
    net.set_interest(client, Interest::BOTH);
    let written = fill(&mut net, client);
    assert_eq!(net.buffered(), SEND_CAP, "the backend holds its cap");
    assert!(would_block(&net.write(client, b"x").unwrap_err()));
    go.send(()).unwrap();
    until(&mut net, &clock, "shutdown", |net| {
        net.shutdown_write(client).map(Some)
    });
    assert_eq!(net.buffered(), 0, "drained and freed");
    let got = reader.join().unwrap();
    assert_eq!(got.len(), written);
    assert!(got.iter().all(|&b| b == 7));
}

/// A peer sends 32 MiB to a connection on `net` that reads nothing for a
/// while, then everything.
fn stop_reading_then_read_all(mut net: UringNetwork) {
    let clock = MonotonicClock::new();
    let (listener, _, _) = connected(&mut net, &clock);
    let addr = net.local_addr(listener).unwrap();
    let input = pattern(32 << 20, 3);
    let sent = input.clone();
    let writer = thread::spawn(move || {
        let mut peer = TcpStream::connect(addr).unwrap();
        peer.write_all(&sent).unwrap();
    });
    let (server, _) = until(&mut net, &clock, "accept", |net| {
        net.accept(listener).map(Some)
    });
    for _ in 0..50 {
        tick(&mut net);
    }
    let held = net.buffered();
    assert!(
        (RECV_CAP / 2..=2 * RECV_CAP).contains(&held),
        "holds {held} bytes unread"
    );
    for _ in 0..20 {
        tick(&mut net);
    }
    assert_eq!(net.buffered(), held, "nothing more while unread");
    assert!(read_exactly(&mut net, &clock, server, input.len()) == input);
    writer.join().unwrap();
}

#[test]
fn a_reader_that_stops_bounds_what_is_received() {
    stop_reading_then_read_all(net());
}

/// Runs the receive tests on networks that `older` made as an older
/// kernel's would be.
fn as_on_an_older_kernel(older: fn(&mut UringNetwork)) {
    let mut net1 = net();
    older(&mut net1);
    stop_reading_then_read_all(net1);
    let mut net2 = net();
    older(&mut net2);
    stream_echo_and_half_close(net2, MonotonicClock::new());
}

#[test]
fn single_shot_receives_where_the_kernel_limits_none() {
    as_on_an_older_kernel(|net| net.receive_limits = false);
}

#[test]
fn receives_without_bundles_where_the_kernel_has_none() {
    assert!(net().bundles, "Linux 6.10 and later receive bundles");
    as_on_an_older_kernel(|net| net.bundles = false);
}

#[test]
fn connections_that_run_out_of_buffers_receive_later() {
    let clock = MonotonicClock::new();
    let mut net = UringNetwork::open(Setup::preferred(), buffers(8)).unwrap();
    let listener = net.listen(LOCALHOST, Bind::default()).unwrap();
    let addr = net.local_addr(listener).unwrap();
    net.set_interest(listener, Interest::READ);
    let mut peers = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..40 {
        peers.push(TcpStream::connect(addr).unwrap());
        let (server, _) = until(&mut net, &clock, "accept", |net| {
            net.accept(listener).map(Some)
        });
        net.set_interest(server, Interest::READ);
        servers.push(server);
    }
    // Every connection has data when their receives start: 8 buffers
    // for 40 of them. Each is read only when reported ready, as the
    // engine does.
    for (i, peer) in peers.iter_mut().enumerate() {
        peer.write_all(&pattern(1000, i as u8)).unwrap();
    }
    let mut got = vec![Vec::new(); servers.len()];
    let mut ready = Vec::new();
    let mut buf = [0; 4096];
    let deadline = clock.now() + Duration::from_secs(5);
    while got.iter().any(|got| got.len() < 1000) {
        assert!(clock.now() < deadline, "starved connections were not woken");
        ready.clear();
        net.wait(Some(TICK), &mut ready).unwrap();
        for &id in &ready {
            let i = servers.iter().position(|&server| server == id).unwrap();
            while let Some(n) = crate::net::try_read(&mut net, id, &mut buf).unwrap() {
                got[i].extend_from_slice(&buf[..n]);
            }
        }
    }
    for (i, got) in got.iter().enumerate() {
        assert!(*got == pattern(1000, i as u8), "connection {i}");
    }
}

#[test]
fn a_closed_id_is_reused_without_stale_data() {
    let (mut net, clock) = (net(), MonotonicClock::new());
    let (listener, client, server) = connected(&mut net, &clock);
    let addr = net.local_addr(listener).unwrap();
    // A send in flight (the client does not read), a receive armed, and
    // received data unread when the socket is closed.
    fill(&mut net, server);
    until(&mut net, &clock, "write", |net| {
        Ok(Some(net.write(client, b"stale")?).filter(|&n| n == 5))
    });
    tick(&mut net);
    let generation = net.slots[server.0].generation;
    net.close(server, Close::Orderly);
    assert!(
        net.slots[server.0].entry.is_some(),
        "a tombstone while operations are in flight"
    );
    assert!(net.read(server, &mut [0; 8]).is_err(), "closed");
    until(&mut net, &clock, "tombstone freed", |net| {
        Ok(net.slots[server.0].entry.is_none().then_some(()))
    });
    assert_ne!(net.slots[server.0].generation, generation);
    let again = net.connect(addr, None).unwrap();
    net.set_interest(again, Interest::BOTH);
    let (accepted, _) = until(&mut net, &clock, "accept", |net| {
        net.accept(listener).map(Some)
    });
    assert!([again, accepted].contains(&server), "the id is reused");
    let (reused, peer) = match again == server {
        true => (again, accepted),
        false => (accepted, again),
    };
    net.set_interest(reused, Interest::READ);
    until(&mut net, &clock, "write", |net| {
        Ok(Some(net.write(peer, b"fresh")?).filter(|&n| n == 5))
    });
    assert_eq!(read_exactly(&mut net, &clock, reused, 5), b"fresh");
    for _ in 0..3 {
        tick(&mut net);
    }
    let mut buf = [0; 8];
    assert!(would_block(&net.read(reused, &mut buf).unwrap_err()));
}

#[test]
fn a_refused_connect_is_reported() {
    let (mut net, clock) = (net(), MonotonicClock::new());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let id = net.connect(port, None).unwrap();
    net.set_interest(id, Interest::BOTH);
    let deadline = clock.now() + Duration::from_secs(5);
    let err = loop {
        match net.write(id, b"x") {
            Err(err) if would_block(&err) => {}
            Err(err) => break err,
            Ok(n) => panic!("wrote {n} bytes to a closed port"),
        }
        assert!(clock.now() < deadline, "no verdict");
        tick(&mut net);
    };
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(net.read(id, &mut [0; 4]).unwrap_err().kind(), err.kind());
}

/// An engine server serving `protocol` on an io_uring network, and a
/// client network.
fn server_and_client(protocol: Protocol) -> (Server<UringNetwork>, SocketAddr, UringNetwork) {
    let mut server = Server::new(net(), Config::default(), ConnectionCount::default(), ());
    let addr = server.listen(protocol, LOCALHOST, Bind::default()).unwrap();
    (server, addr, net())
}

/// Echoes every input through an engine server on one io_uring network,
/// from clients on another; checks every byte.
fn echo_through_server(inputs: &[Vec<u8>]) {
    echo_through(net(), inputs);
}

/// Echoes every input through an engine server on `server_net`, from
/// clients on another io_uring network; checks every byte.
fn echo_through(server_net: UringNetwork, inputs: &[Vec<u8>]) {
    let clock = MonotonicClock::new();
    let mut server = Server::new(
        server_net,
        Config::default(),
        ConnectionCount::default(),
        (),
    );
    let addr = (server.listen(Protocol::Tcp, LOCALHOST, Bind::default())).unwrap();
    let mut client = net();
    let mut exchanges: Vec<_> = (inputs.iter())
        .map(|input| Exchange::connect(&mut client, addr, input, HalfClose::AfterInput).unwrap())
        .collect();
    let mut done = vec![false; inputs.len()];
    let deadline = clock.now() + Duration::from_secs(60);
    let mut ready = Vec::new();
    while !done.iter().all(|&done| done) {
        for (exchange, done) in exchanges.iter_mut().zip(&mut done) {
            if !*done {
                *done = exchange
                    .drive(&mut client, clock.now(), &mut io::sink())
                    .unwrap();
            }
        }
        server.turn(&clock, Some(Duration::ZERO)).unwrap();
        ready.clear();
        client.wait(Some(Duration::ZERO), &mut ready).unwrap();
        assert!(clock.now() < deadline, "echoes did not finish");
    }
    for (exchange, input) in exchanges.iter().zip(inputs) {
        assert_eq!(exchange.verdict(), Ok(input.len() as u64));
    }
}

#[test]
fn eight_mib_echo_through_the_engine() {
    echo_through_server(&[pattern(8 << 20, 1)]);
}

#[test]
fn many_connections_at_once() {
    let inputs: Vec<_> = (0..600).map(|i| pattern(3000 + i, i as u8)).collect();
    echo_through_server(&inputs);
}

#[test]
fn datagrams_round_trip_through_the_engine() {
    let clock = MonotonicClock::new();
    let (mut server, addr, mut client) = server_and_client(Protocol::Udp);
    let id = client.bind_udp(LOCALHOST, Bind::default()).unwrap();
    client.set_interest(id, Interest::READ);
    let sizes = [1, 512, 1472, 9000, 65_000];
    let mut buf = vec![0; 64 * 1024];
    for round in 0..20 {
        for (i, &size) in sizes.iter().enumerate() {
            let datagram = pattern(size, (round * 8 + i) as u8);
            until(&mut client, &clock, "send", |net| {
                net.send_to(id, &datagram, addr).map(Some)
            });
            let (len, from) = until(&mut client, &clock, "echo", |net| {
                server.turn(&clock, Some(Duration::ZERO))?;
                net.recv_from(id, &mut buf).map(Some)
            });
            assert_eq!((&buf[..len], from), (&datagram[..], addr));
        }
    }
    assert_eq!(client.buffered(), 0);
}

/// Bytes of memory of their own the sockets of `net` hold: copies of
/// data, as opposed to ring buffers.
fn copies_held(net: &UringNetwork) -> usize {
    net.buffered() - net.streams.ring.held_bytes()
}

/// Writes `message` on `peer` (non-blocking) and turns `server` until its
/// echo is back whole, calling `each_turn` with the server's network
/// after every turn; fails after 5 s.
fn echo_once(
    server: &mut Server<UringNetwork>,
    peer: &mut TcpStream,
    message: &[u8],
    clock: &MonotonicClock,
    mut each_turn: impl FnMut(&mut UringNetwork),
) -> Vec<u8> {
    peer.write_all(message).unwrap();
    let mut got = Vec::new();
    let deadline = clock.now() + Duration::from_secs(5);
    while got.len() < message.len() {
        assert!(clock.now() < deadline, "no echo after {} bytes", got.len());
        server.turn(clock, Some(TICK)).unwrap();
        each_turn(server.network_mut());
        let mut buf = [0; 1 << 16];
        match peer.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => panic!("read: {err}"),
        }
    }
    got
}

#[test]
fn the_engine_echoes_ring_buffers_without_copying_them() {
    let clock = MonotonicClock::new();
    let (mut server, addr, _) = server_and_client(Protocol::Tcp);
    let mut peer = TcpStream::connect(addr).unwrap();
    peer.set_nonblocking(true).unwrap();
    let mut spliced_seen = 0;
    for round in 0..100u8 {
        let message = pattern(512, round);
        let got = echo_once(&mut server, &mut peer, &message, &clock, |net| {
            assert_eq!(copies_held(net), 0, "round {round}: the echo was copied");
            if net.streams.ring.held_bytes() > 0 {
                // Received, spliced, its send not yet reaped: the very
                // buffer the kernel received into is what is sent.
                spliced_seen += 1;
            }
        });
        assert_eq!(got, message);
    }
    assert!(
        spliced_seen >= 50,
        "buffers went out as they came in {spliced_seen} of 100 rounds"
    );
}

#[test]
fn a_peer_that_stops_reading_holds_copies_not_ring_buffers() {
    const BUFFERS: u16 = 16;
    let clock = MonotonicClock::new();
    let net = UringNetwork::open(Setup::preferred(), buffers(BUFFERS)).unwrap();
    let mut server = Server::new(net, Config::default(), ConnectionCount::default(), ());
    let addr = (server.listen(Protocol::Tcp, LOCALHOST, Bind::default())).unwrap();
    let input = pattern(8 << 20, 9);
    let sent = input.clone();
    let (connected_tx, connected_rx) = std::sync::mpsc::channel();
    let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
    // The stalled peer writes 8 MiB and reads nothing until told.
    let stalled = thread::spawn(move || {
        let mut peer = TcpStream::connect(addr).unwrap();
        connected_tx.send(()).unwrap();
        let mut reader = peer.try_clone().unwrap();
        let writer = thread::spawn(move || peer.write_all(&sent).map(|()| peer));
        wait_for_go.recv().unwrap();
        let mut got = Vec::new();
        while got.len() < 8 << 20 {
            let mut buf = vec![0; 1 << 16];
            let n = reader.read(&mut buf).unwrap();
            assert_ne!(n, 0, "end of stream after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        drop(writer.join().unwrap().unwrap());
        got
    });
    connected_rx.recv().unwrap();
    for _ in 0..100 {
        server.turn(&clock, Some(TICK)).unwrap();
    }
    // Its input is spilled at each wait, and its output copied when the
    // socket would not take it: once the kernel's buffers are full too,
    // and its receives are done, it holds no ring buffer. (Until then a
    // turn may end with a receive's buffers not spilled yet.)
    let deadline = clock.now() + Duration::from_secs(10);
    let mut held = server.network_mut().streams.ring.held_bytes();
    while held > 0 {
        assert!(
            clock.now() < deadline,
            "the stalled connection still holds {held} bytes of ring buffers"
        );
        server.turn(&clock, Some(TICK)).unwrap();
        held = server.network_mut().streams.ring.held_bytes();
    }
    let total = server.network_mut().buffered() + server.buffered_bytes();
    assert!(
        total <= RECV_CAP + SEND_CAP + 64 * 1024,
        "holds {total} bytes"
    );
    // Another connection is echoed meanwhile: the stalled one took no
    // more ring buffers than its bound.
    let mut other = TcpStream::connect(addr).unwrap();
    other.set_nonblocking(true).unwrap();
    for round in 0..20u8 {
        let message = pattern(20_000, round);
        let got = echo_once(&mut server, &mut other, &message, &clock, |_| {});
        assert!(got == message, "round {round}");
    }
    go.send(()).unwrap();
    let deadline = clock.now() + Duration::from_secs(60);
    while !stalled.is_finished() {
        assert!(
            clock.now() < deadline,
            "the stalled peer's echo did not finish"
        );
        server.turn(&clock, Some(TICK)).unwrap();
    }
    assert!(stalled.join().unwrap() == input, "every byte, in order");
}

#[test]
fn spliced_echoes_survive_running_out_of_buffers() {
    let inputs: Vec<_> = (0..40).map(|i| pattern(40_000 + i, i as u8)).collect();
    echo_through(
        UringNetwork::open(Setup::preferred(), buffers(8)).unwrap(),
        &inputs,
    );
}

/// Splices on `server` whatever `client` sends it, until the output has
/// been full for 20 waits in a row: the client reads nothing, so the
/// kernel's buffers fill, and the output turns into copies.
fn splice_until_full(net: &mut UringNetwork, client: SocketId, server: SocketId) -> usize {
    let chunk = pattern(16 * 1024, 1);
    let (mut spliced, mut full) = (0, 0);
    while full < 20 {
        let _ = net.write(client, &chunk);
        match net.splice(server, 64 * 1024) {
            Ok(Spliced::Bytes(n)) => (spliced, full) = (spliced + n, 0),
            Ok(Spliced::OutputFull) => full += 1,
            Ok(_) => {}
            Err(err) => panic!("splice: {err}"),
        }
        tick(net);
    }
    spliced
}

/// Waits until every socket but one (the listener) was closed and freed,
/// then checks that every ring buffer is back in the ring.
fn until_every_buffer_is_back(net: &mut UringNetwork, clock: &MonotonicClock) {
    until(net, clock, "tombstones freed", |net| {
        let open = (net.slots.iter()).filter(|slot| slot.entry.is_some());
        Ok((open.count() == 1).then_some(()))
    });
    assert_eq!(
        net.streams.ring.held_bytes(),
        0,
        "every ring buffer is back"
    );
}

#[test]
fn closing_with_sends_in_flight_hands_every_buffer_back() {
    let (mut net, clock) = (net(), MonotonicClock::new());
    let (listener, client, server) = connected(&mut net, &clock);
    assert!(splice_until_full(&mut net, client, server) > SEND_CAP);
    assert!(copies_held(&net) >= SEND_CAP, "a stalled output is copied");
    net.close(server, Close::Orderly);
    net.close(client, Close::Reset);
    until_every_buffer_is_back(&mut net, &clock);
    // A splice whose send is queued, not yet submitted, when closed.
    let addr = net.local_addr(listener).unwrap();
    let client = net.connect(addr, None).unwrap();
    net.set_interest(client, Interest::BOTH);
    let (server, _) = until(&mut net, &clock, "accept", |net| {
        net.accept(listener).map(Some)
    });
    until(&mut net, &clock, "write", |net| {
        Ok(Some(net.write(client, b"in flight")?).filter(|&n| n == 9))
    });
    until(&mut net, &clock, "splice", |net| {
        match net.splice(server, 1024)? {
            Spliced::Bytes(n) => Ok(Some(n)),
            _ => Ok(None),
        }
    });
    assert!(
        net.streams.ring.held_bytes() > 0,
        "the spliced buffer is out"
    );
    net.close(server, Close::Orderly);
    net.close(client, Close::Orderly);
    until_every_buffer_is_back(&mut net, &clock);
}
