//! Property tests: the real engine and client on the simulated network with
//! injected faults, for thousands of generated scenarios (see
//! `echokit::simulation` for the promises checked after every turn).

#![cfg(not(target_os = "wasi"))]

use echokit::engine::Config;
use echokit::net::faults::FaultRates;
use echokit::simulation::{run, Event, Scenario};
use proptest::prelude::*;
use std::time::Duration;

fn rates() -> impl Strategy<Value = FaultRates> {
    (0..400u16, 0..400u16, 0..30u16, 0..300u16, 0..=1000u16).prop_map(
        |(short_io, spurious_would_block, reset, accept_failure, unspliced)| FaultRates {
            short_io,
            spurious_would_block,
            reset,
            accept_failure,
            unspliced,
        },
    )
}

/// Events without faults or aborts: every echo must come back whole. The
/// server may still be told to splice less often, so that echoes switch
/// between splicing and reading then writing.
fn clean_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (0..20_000usize).prop_map(|len| Event::Open { len }),
        4 => Just(Event::DriveClients),
        4 => Just(Event::ServerTurn),
        1 => (0..50u64).prop_map(|ms| Event::Sleep(Duration::from_millis(ms))),
        1 => (0..=1000u16).prop_map(|unspliced| Event::ServerFaults(FaultRates {
            unspliced,
            ..FaultRates::default()
        })),
    ]
}

fn faulty_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => clean_event(),
        1 => rates().prop_map(Event::ServerFaults),
        1 => rates().prop_map(Event::ClientFaults),
        1 => any::<usize>().prop_map(|connection| Event::Abort { connection }),
    ]
}

fn scenario(events: impl Strategy<Value = Vec<Event>>) -> impl Strategy<Value = Scenario> {
    (any::<u64>(), 1..4096usize, 1..70_000usize, events).prop_map(
        |(seed, buffer, max_backlog, events)| Scenario {
            seed,
            buffer,
            config: Config {
                max_backlog,
                ..Config::default()
            },
            events,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn without_faults_every_echo_is_whole(s in scenario(prop::collection::vec(clean_event(), 0..40))) {
        let summary = run(&s).map_err(|v| TestCaseError::fail(v.0))?;
        prop_assert_eq!(summary.failed, 0);
    }

    #[test]
    fn faults_never_corrupt_stall_or_overfill(s in scenario(prop::collection::vec(faulty_event(), 0..60))) {
        run(&s).map_err(|v| TestCaseError::fail(v.0))?;
    }

    /// Without faults, so that the server accepts at once and its idle
    /// clock starts when the client's does.
    #[test]
    fn idle_connections_close_on_simulated_time(
        s in scenario(prop::collection::vec(clean_event(), 0..30)),
        silent in 1..5usize,
        timeout_ms in 50..3000u64,
    ) {
        let mut s = s;
        s.config.idle_timeout = Some(Duration::from_millis(timeout_ms));
        s.events.splice(0..0, std::iter::repeat_n(Event::OpenSilent, silent));
        let summary = run(&s).map_err(|v| TestCaseError::fail(v.0))?;
        prop_assert_eq!(summary.timed_out, silent);
    }
}

/// The UDP guards on the simulated network: two echo servers (the second
/// plays any echo service a forger may pair echokit with), a victim whose
/// address is forged, and an ordinary client.
mod udp_guard {
    use echokit::clock::Clock;
    use echokit::engine::guard::{GuardConfig, LOOP_AFTER};
    use echokit::engine::{Config, ConnectionCount, Server};
    use echokit::net::loopback::{Loopback, LoopbackNetwork};
    use echokit::net::{would_block, Bind, Interest, Network, Protocol, SocketId};
    use proptest::prelude::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    /// Echoes the guard lets one source address have per second.
    const RATE: u32 = 200;

    /// Who a forged datagram claims to come from.
    #[derive(Clone, Copy, Debug)]
    enum Forged {
        /// The other echo server: a loop.
        EchoServer,
        /// The victim, on an ordinary port: reflection.
        Victim(u16),
        /// A service port (echo, chargen, ...).
        ServicePort(u16),
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// `copies` datagrams of `len` bytes from one forged source.
        Forge {
            from: Forged,
            len: usize,
            copies: u16,
        },
        ClientSends,
        Sleep(Duration),
    }

    fn step() -> impl Strategy<Value = Step> {
        let forged = prop_oneof![
            Just(Forged::EchoServer),
            (1024u16..u16::MAX).prop_map(Forged::Victim),
            (0u16..1024).prop_map(Forged::ServicePort),
        ];
        prop_oneof![
            4 => (forged, 1..1500usize, 1..100u16)
                .prop_map(|(from, len, copies)| Step::Forge { from, len, copies }),
            2 => Just(Step::ClientSends),
            1 => (0..300u64).prop_map(|ms| Step::Sleep(Duration::from_millis(ms))),
        ]
    }

    fn server(
        world: &Loopback,
        ip: [u8; 4],
        peer_rate: Option<u32>,
    ) -> (Server<LoopbackNetwork>, SocketAddr) {
        let config = Config {
            udp_guard: GuardConfig { peer_rate },
            ..Config::default()
        };
        let mut server = Server::new(world.host(), config, ConnectionCount::default(), ());
        let addr = SocketAddr::from((ip, 7777));
        let addr = server.listen(Protocol::Udp, addr, Bind::default()).unwrap();
        (server, addr)
    }

    /// Datagrams waiting on `id`, taken.
    fn take(net: &mut LoopbackNetwork, id: SocketId) -> Vec<Vec<u8>> {
        let mut buf = vec![0; 2048];
        let mut got = Vec::new();
        loop {
            match net.recv_from(id, &mut buf) {
                Ok((len, _)) => got.push(buf[..len].to_vec()),
                Err(err) if would_block(&err) => return got,
                Err(err) => panic!("{err}"),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever is forged, the victim gets at most the rate bound, a
        /// loop ends within two detections per forged datagram (with the
        /// rate bound off too, so that the loop guard alone must end it),
        /// nothing answers a service port, and the client (within the
        /// rate bound) gets every echo.
        #[test]
        fn forged_datagrams_are_bounded_and_clients_are_served(
            steps in prop::collection::vec(step(), 1..80),
            peer_rate in prop_oneof![Just(None), Just(Some(RATE))],
        ) {
            let world = Loopback::default();
            let (mut a, a_addr) = server(&world, [10, 0, 0, 1], peer_rate);
            let (mut b, b_addr) = server(&world, [10, 0, 0, 2], peer_rate);
            let mut others = world.host();
            let victim_ip = [10, 0, 0, 9];
            let mut victims = Vec::new();
            let client = others.bind_udp(SocketAddr::from(([10, 0, 0, 3], 40_000)), Bind::default()).unwrap();
            others.set_interest(client, Interest::READ);
            let (mut sent, mut echoed, mut loops, mut to_victims) = (0u32, 0u32, 0u64, 0usize);
            let (mut from_service_ports, mut from_victims) = (0u64, 0u64);
            let start = world.now();
            for step in steps {
                match step {
                    Step::Forge { from, len, copies } => {
                        let payload = vec![len as u8; len];
                        let from = match from {
                            Forged::EchoServer => {
                                loops += u64::from(copies);
                                b_addr
                            }
                            Forged::Victim(port) => {
                                from_victims += u64::from(copies);
                                let addr = SocketAddr::from((victim_ip, port));
                                if let Ok(id) = others.bind_udp(addr, Bind::default()) {
                                    victims.push(id);
                                }
                                addr
                            }
                            Forged::ServicePort(port) => {
                                from_service_ports += u64::from(copies);
                                SocketAddr::from((victim_ip, port))
                            }
                        };
                        for _ in 0..copies {
                            world.forge(from, a_addr, &payload);
                            a.turn(&world, Some(Duration::ZERO)).unwrap();
                        }
                    }
                    Step::ClientSends => {
                        // An ordinary client keeps within the rate bound:
                        // here, half of it (21 sends at once would spend
                        // the burst of 20 and lose the 21st, rightly).
                        world.advance(2 * (Duration::from_secs(1) / RATE));
                        // A new payload each time, as clients send.
                        others.send_to(client, &sent.to_le_bytes(), a_addr).unwrap();
                        sent += 1;
                    }
                    Step::Sleep(by) => world.advance(by),
                }
                for _ in 0..(4 * LOOP_AFTER) {
                    a.turn(&world, Some(Duration::ZERO)).unwrap();
                    b.turn(&world, Some(Duration::ZERO)).unwrap();
                }
                echoed += take(&mut others, client).len() as u32;
                to_victims += victims.iter().map(|&id| take(&mut others, id).len()).sum::<usize>();
            }
            if let Some(rate) = peer_rate {
                let seconds = (world.now() - start).as_secs_f64();
                let allowed = (seconds * f64::from(rate) + f64::from(rate) / 10.0).ceil() as usize;
                prop_assert!(to_victims <= allowed, "{} datagrams reached the victim, {} allowed", to_victims, allowed);
            }
            let bounced = a.stats().datagrams + b.stats().datagrams;
            let most = loops * 2 * u64::from(LOOP_AFTER + 1) + u64::from(sent) + from_victims;
            prop_assert!(bounced <= most, "{} echoes for {} forged loops", bounced, loops);
            prop_assert_eq!(echoed, sent, "the client lost echoes");
            prop_assert_eq!(a.stats().dropped.service_port, from_service_ports);
        }
    }
}

/// The PROXY protocol parser on generated and mangled headers.
mod proxy_parser {
    use echokit::proxy::{
        self, parse, Accept, Addresses, Command, Header, Parsed, Tlv, Transport, Version,
    };
    use proptest::prelude::*;
    use std::net::{IpAddr, SocketAddr};

    fn socket_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
        ]
    }

    /// Headers every version can carry exactly: TCP, one family.
    fn header() -> impl Strategy<Value = Header> {
        let tlv = (any::<u8>(), prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(kind, value)| Tlv { kind, value });
        (
            prop_oneof![Just(Version::V1), Just(Version::V2)],
            any::<bool>(),
            socket_addr(),
            socket_addr(),
            prop::collection::vec(tlv, 0..5),
        )
            .prop_map(|(version, local, source, destination, tlvs)| {
                let destination = match (source, destination) {
                    (SocketAddr::V4(_), SocketAddr::V6(d)) => {
                        SocketAddr::from(([10, 0, 0, 1], d.port()))
                    }
                    (SocketAddr::V6(_), SocketAddr::V4(d)) => {
                        SocketAddr::new(d.ip().to_ipv6_mapped().into(), d.port())
                    }
                    _ => destination,
                };
                match (version, local) {
                    // v1 has no LOCAL: PROXY UNKNOWN is its health check.
                    (Version::V1, true) => Header {
                        command: Command::Proxy,
                        ..Header::local(version)
                    },
                    (Version::V2, true) => Header::local(version),
                    (Version::V1, false) => Header::tcp(version, source, destination),
                    (Version::V2, false) => Header {
                        tlvs,
                        ..Header::tcp(version, source, destination)
                    },
                }
            })
    }

    /// A header, mangled: cut, a byte changed, or bytes put after it.
    #[derive(Clone, Debug)]
    enum Mangle {
        Cut(usize),
        Flip(usize, u8),
        Append(Vec<u8>),
    }

    fn mangle() -> impl Strategy<Value = Mangle> {
        prop_oneof![
            any::<usize>().prop_map(Mangle::Cut),
            (any::<usize>(), 1..=255u8).prop_map(|(at, xor)| Mangle::Flip(at, xor)),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(Mangle::Append),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn headers_round_trip_and_their_prefixes_wait(header in header()) {
            let bytes = header.encode();
            let parsed = parse(&bytes, Accept::Any);
            prop_assert_eq!(parsed, Parsed::Done { header: header.clone(), consumed: bytes.len() });
            for end in 0..bytes.len() {
                prop_assert_eq!(parse(&bytes[..end], Accept::Any), Parsed::NeedMore);
            }
            prop_assert_eq!(header.addresses == Addresses::Unknown, header.source().is_none());
            prop_assert!(header.transport != Transport::Datagram);
            let inet_or_unknown = matches!(header.addresses, Addresses::Inet { .. } | Addresses::Unknown);
            prop_assert!(inet_or_unknown);
        }

        #[test]
        fn mangled_headers_keep_the_promises(header in header(), mangles in prop::collection::vec(mangle(), 1..4)) {
            let mut bytes = header.encode();
            for mangle in mangles {
                match mangle {
                    Mangle::Cut(at) => bytes.truncate(at % (bytes.len() + 1)),
                    Mangle::Flip(at, xor) if !bytes.is_empty() => {
                        let at = at % bytes.len();
                        bytes[at] ^= xor;
                    }
                    Mangle::Flip(..) => {}
                    Mangle::Append(more) => bytes.extend(more),
                }
            }
            proxy::promises(&bytes).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn any_bytes_keep_the_promises(
            start in prop_oneof![Just(&b""[..]), Just(&b"PROXY "[..]), Just(&proxy::V2_SIGNATURE[..])],
            rest in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let bytes = [start, &rest].concat();
            proxy::promises(&bytes).map_err(TestCaseError::fail)?;
        }
    }
}
