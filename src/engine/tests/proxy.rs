//! The PROXY protocol header phase on the loopback network.

use super::*;
use crate::proxy::{Accept, ClientHeader, Header, Reason, Version};

/// The headers, refusals and closes a server reported.
#[derive(Default)]
struct Seen {
    headers: Vec<(SocketAddr, Header)>,
    refused: Vec<Reason>,
}

impl Observer for Seen {
    fn observe(&mut self, event: Event<'_>) {
        match event {
            Event::Proxied { peer, header } => self.headers.push((peer, header.clone())),
            Event::Closed {
                why: Closed::HeaderRefused(reason),
                ..
            } => self.refused.push(reason),
            _ => {}
        }
    }
}

fn proxy_server(
    world: &Loopback,
    accept: Accept,
    echo: Echo,
) -> (Server<LoopbackNetwork, Seen>, SocketAddr) {
    let net = match echo {
        Echo::Spliced => world.host(),
        Echo::Copied => world.host_without_splice(),
    };
    let config = Config {
        proxy: Some(accept),
        ..Config::default()
    };
    let mut server = Server::new(net, config, ConnectionCount::default(), Seen::default());
    let addr = server
        .listen(Protocol::Tcp, ANY_PORT, Bind::default())
        .unwrap();
    (server, addr)
}

/// Writes `pieces` one per server turn (`gap` apart), half-closes, and
/// reads until the server closes: what came back, or the error.
fn exchange<O: Observer>(
    world: &Loopback,
    server: &mut Server<LoopbackNetwork, O>,
    addr: SocketAddr,
    pieces: &[&[u8]],
    gap: Duration,
) -> Result<Vec<u8>, io::ErrorKind> {
    let mut client = world.host();
    let id = client.connect(addr, None).unwrap();
    let mut back = Vec::new();
    let mut buf = [0; 4096];
    let mut read = |client: &mut LoopbackNetwork| -> Result<bool, io::ErrorKind> {
        loop {
            match client.read(id, &mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => back.extend_from_slice(&buf[..n]),
                Err(err) if would_block(&err) => return Ok(false),
                Err(err) => return Err(err.kind()),
            }
        }
    };
    for piece in pieces {
        let mut written = 0;
        while written < piece.len() {
            match client.write(id, &piece[written..]) {
                Ok(n) => written += n,
                Err(err) if would_block(&err) => {}
                Err(err) => return Err(err.kind()),
            }
            server.turn(world, Some(Duration::ZERO)).unwrap();
            if read(&mut client)? {
                return Ok(back);
            }
        }
        world.advance(gap);
    }
    let _ = client.shutdown_write(id);
    for _ in 0..1000 {
        server.turn(world, Some(Duration::ZERO)).unwrap();
        if read(&mut client)? {
            return Ok(back);
        }
    }
    panic!("the server never closed");
}

/// A TCP header of `version` from `source`.
fn header(version: Version, source: &str) -> Vec<u8> {
    let destination = "10.0.0.2:7".parse().unwrap();
    Header::tcp(version, source.parse().unwrap(), destination).encode()
}

#[test]
fn the_header_is_consumed_and_what_follows_echoed() {
    for echo in BOTH {
        for (accept, header) in [
            (Accept::V1, header(Version::V1, "192.0.2.1:4000")),
            (Accept::V2, header(Version::V2, "192.0.2.1:4000")),
            (Accept::Any, header(Version::V2, "192.0.2.1:4000")),
            (Accept::Any, header(Version::V1, "192.0.2.1:4000")),
        ] {
            let world = Loopback::default();
            let (mut server, addr) = proxy_server(&world, accept, echo);
            // The header and the first bytes in one write, then more.
            let first = [&header[..], b"hello "].concat();
            let back = exchange(
                &world,
                &mut server,
                addr,
                &[&first, b"world"],
                Duration::ZERO,
            );
            assert_eq!(back.unwrap(), b"hello world", "{echo:?} {accept:?}");
            let seen = &server.observer.headers;
            assert_eq!(seen.len(), 1);
            assert_eq!(seen[0].1.source(), Some("192.0.2.1:4000".parse().unwrap()));
            assert_eq!(server.stats().proxy.accepted, 1);
        }
    }
}

#[test]
fn a_header_in_pieces_is_waited_for() {
    let world = Loopback::default();
    let (mut server, addr) = proxy_server(&world, Accept::Any, Echo::Spliced);
    let header = header(Version::V2, "[2001:db8::1]:1");
    let pieces: Vec<&[u8]> = header.chunks(3).chain([&b"data"[..]]).collect();
    let back = exchange(
        &world,
        &mut server,
        addr,
        &pieces,
        Duration::from_millis(100),
    );
    assert_eq!(back.unwrap(), b"data");
    assert_eq!(server.stats().proxy.accepted, 1);
}

#[test]
fn missing_and_invalid_headers_are_refused_unechoed() {
    let cases: [(&[u8], Accept, Reason); 4] = [
        (b"hello, no header\n", Accept::Any, Reason::Signature),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\nhello",
            Accept::Any,
            Reason::V1Port,
        ),
        (b"PROXY UNKNOWN\r\nhello", Accept::V2, Reason::V1NotAccepted),
        (b"PROX", Accept::Any, Reason::Closed),
    ];
    for (bytes, accept, reason) in cases {
        let world = Loopback::default();
        let (mut server, addr) = proxy_server(&world, accept, Echo::Spliced);
        let back = exchange(&world, &mut server, addr, &[bytes], Duration::ZERO);
        assert!(
            back.as_deref().unwrap_or_default().is_empty(),
            "{reason:?}: echoed {back:?}"
        );
        assert_eq!(server.observer.refused, [reason]);
        let stats = server.stats();
        assert_eq!(stats.proxy.refused[reason.index()], 1);
        assert_eq!((stats.bytes, stats.proxy.accepted), (0, 0));
        assert_eq!(server.open_connections(), 0);
    }
}

#[test]
fn a_late_header_is_refused_at_the_deadline() {
    let world = Loopback::default();
    let (mut server, addr) = proxy_server(&world, Accept::Any, Echo::Copied);
    let mut client = world.host();
    client.connect(addr, None).unwrap();
    let id = client.connect(addr, None).unwrap();
    client.write(id, b"PROXY TCP4").unwrap();
    server.turn(&world, Some(Duration::ZERO)).unwrap();
    let start = world.now();
    while server.open_connections() > 0 {
        // The server sleeps until its own next deadline.
        server.turn(&world, None).unwrap();
    }
    assert_eq!(world.now() - start, PROXY_TIMEOUT);
    assert_eq!(server.observer.refused, [Reason::Timeout, Reason::Timeout]);
}

#[test]
fn a_local_header_is_a_health_check_that_echoes() {
    let world = Loopback::default();
    let (mut server, addr) = proxy_server(&world, Accept::V2, Echo::Spliced);
    let local = Header::local(Version::V2).encode();
    let back = exchange(
        &world,
        &mut server,
        addr,
        &[&local, b"ping"],
        Duration::ZERO,
    );
    assert_eq!(back.unwrap(), b"ping");
    let proxy = server.stats().proxy;
    assert_eq!((proxy.accepted, proxy.local), (1, 1));
}

#[test]
fn the_client_sends_its_own_addresses_first() {
    let world = Loopback::default();
    let (mut server, addr) = proxy_server(&world, Accept::Any, Echo::Spliced);
    let input = payload(100_000, 9);
    let mut client = world.host();
    let header = ClientHeader::new(Version::V2);
    let mut exchange = Exchange::connect(&mut client, addr, &input, HalfClose::AfterInput)
        .unwrap()
        .with_proxy_header(header);
    let local = client.local_addr(exchange.socket()).unwrap();
    let mut out = Vec::new();
    for _ in 0..10_000 {
        if exchange.drive(&mut client, world.now(), &mut out).unwrap() {
            break;
        }
        server.turn(&world, Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(exchange.verdict(), Ok(100_000));
    let seen = &server.observer.headers;
    assert_eq!(seen[0].1, Header::tcp(Version::V2, local, addr));
    assert_eq!(seen[0].0, local, "the loopback client is its own balancer");
}

#[test]
fn datagrams_lose_their_dgram_headers_and_others_are_dropped() {
    let world = Loopback::with_buffer(1 << 20);
    let config = Config {
        proxy: Some(Accept::V2),
        ..Config::default()
    };
    let mut server = Server::new(world.host(), config, ConnectionCount::default(), ());
    let addr = server
        .listen(Protocol::Udp, ANY_PORT, Bind::default())
        .unwrap();
    let mut client = world.host();
    let from = SocketAddr::from(([127, 0, 0, 1], 40_000));
    let id = client.bind_udp(from, Bind::default()).unwrap();
    let dgram = Header {
        transport: crate::proxy::Transport::Datagram,
        ..Header::tcp(Version::V2, "192.0.2.1:5000".parse().unwrap(), addr)
    };
    let stream = Header::tcp(Version::V2, "192.0.2.1:5000".parse().unwrap(), addr);
    let sent: [Vec<u8>; 5] = [
        [dgram.encode(), b"one".to_vec()].concat(),
        [Header::local(Version::V2).encode(), b"two".to_vec()].concat(),
        b"no header".to_vec(),
        [stream.encode(), b"tcp header".to_vec()].concat(),
        dgram.encode()[..20].to_vec(),
    ];
    for datagram in &sent {
        client.send_to(id, datagram, addr).unwrap();
        server.turn(&world, Some(Duration::ZERO)).unwrap();
    }
    let mut buf = [0; 256];
    let mut back = Vec::new();
    while let Ok((len, _)) = client.recv_from(id, &mut buf) {
        back.push(buf[..len].to_vec());
    }
    assert_eq!(back, [b"one".to_vec(), b"two".to_vec()]);
    let proxy = server.stats().proxy;
    assert_eq!((proxy.accepted, proxy.local), (2, 1));
    let refused: Vec<_> = proxy.refusals().collect();
    let expected = [
        (Reason::Signature, 1),
        (Reason::Transport, 1),
        (Reason::Short, 1),
    ];
    assert_eq!(refused, expected);
}
