//! Criterion micro-benchmarks of the engine's hot path without sockets: the
//! server and its clients share one thread and the in-memory loopback
//! network, turn by turn.
//!
//! ```text
//! cargo bench --bench engine            # about half a minute
//! cargo bench --bench engine -- accept  # one group
//! ```
//!
//! Native only: criterion is a native dev-dependency.

// Built for WASI (as `cargo clippy --all-targets --target wasm32-wasip2`
// does) it is empty.
#![cfg_attr(target_os = "wasi", no_main)]
#![cfg(not(target_os = "wasi"))]

mod engine {
    use criterion::{criterion_group, Criterion, Throughput};
    use echokit::client::{Exchange, HalfClose};
    use echokit::clock::Clock;
    use echokit::engine::guard::{GuardConfig, UdpGuard};
    use echokit::engine::{Config, ConnectionCount, Server};
    use echokit::net::loopback::{Loopback, LoopbackNetwork};
    use echokit::net::{try_read, try_write, Bind, Close, Network, Protocol, SocketId};
    use std::hint::black_box;
    use std::io;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    /// Bytes each loopback stream direction holds, like a socket buffer.
    const LOOPBACK_BUFFER: usize = 64 * 1024;
    /// Turns after which an echo that has not finished counts as stuck.
    const MAX_TURNS: usize = 1_000_000;

    const ANY_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

    /// A server and a client host on one loopback world.
    struct Bench {
        /// The world, whose clock the server reads.
        world: Loopback,
        server: Server<LoopbackNetwork>,
        client: LoopbackNetwork,
        addr: SocketAddr,
    }

    /// Makes the server's host on a world: [`Loopback::host`] splices, as
    /// the wasm build does; [`Loopback::host_without_splice`] reads and
    /// writes back, as the native build does.
    type Host = fn(&Loopback) -> LoopbackNetwork;

    impl Bench {
        fn new(host: Host) -> Self {
            let world = Loopback::with_buffer(LOOPBACK_BUFFER);
            let config = Config::default();
            let mut server = Server::new(host(&world), config, ConnectionCount::default(), ());
            let addr = server
                .listen(Protocol::Tcp, ANY_PORT, Bind::default())
                .expect("listen");
            let client = world.host();
            Bench {
                world,
                server,
                client,
                addr,
            }
        }

        /// One server turn that never waits.
        fn turn(&mut self) {
            self.server
                .turn(&self.world, Some(Duration::ZERO))
                .expect("server turn");
        }

        /// Runs every input through its own connection at once: connect,
        /// send, half-close, read the echo to EOF, close. Returns the bytes
        /// echoed.
        fn exchange_all(&mut self, inputs: &[&[u8]]) -> u64 {
            let mut exchanges: Vec<_> = inputs
                .iter()
                .map(|input| {
                    Exchange::connect(&mut self.client, self.addr, input, HalfClose::AfterInput)
                        .expect("connect")
                })
                .collect();
            let mut done = vec![false; exchanges.len()];
            let mut left = exchanges.len();
            let mut sink = io::sink();
            for _ in 0..MAX_TURNS {
                for (exchange, done) in exchanges.iter_mut().zip(&mut done) {
                    let now = self.world.now();
                    if !*done
                        && exchange
                            .drive(&mut self.client, now, &mut sink)
                            .expect("drive")
                    {
                        *done = true;
                        left -= 1;
                    }
                }
                if left == 0 {
                    break;
                }
                self.turn();
            }
            assert_eq!(left, 0, "exchanges did not finish");
            let mut echoed = 0;
            for exchange in &exchanges {
                echoed += exchange.verdict().expect("echo matches");
                self.client.close(exchange.socket(), Close::Orderly);
            }
            echoed
        }

        /// Sends `payload` on the open connection `id` and reads its echo
        /// back into `echo`, overlapping the two.
        fn round_trip(&mut self, id: SocketId, payload: &[u8], echo: &mut [u8]) {
            let (mut written, mut read) = (0, 0);
            for _ in 0..MAX_TURNS {
                if written < payload.len() {
                    written += try_write(&mut self.client, id, &payload[written..]).expect("write");
                }
                if let Some(n) = try_read(&mut self.client, id, &mut echo[read..]).expect("read") {
                    assert_ne!(n, 0, "server closed the connection");
                    read += n;
                }
                if read == payload.len() {
                    return;
                }
                self.turn();
            }
            panic!("echo did not finish: {written} bytes sent, {read} echoed");
        }
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// 64 KiB echoed through one long-lived connection per iteration, by
    /// each way of echoing.
    fn stream(c: &mut Criterion) {
        let mut group = c.benchmark_group("stream");
        let payload = payload(64 * 1024);
        group.throughput(Throughput::Bytes(payload.len() as u64));
        let hosts: [(&str, Host); 2] = [
            ("spliced", Loopback::host),
            ("copied", Loopback::host_without_splice),
        ];
        for (name, host) in hosts {
            group.bench_function(format!("64KiB_one_connection_{name}"), |b| {
                let mut bench = Bench::new(host);
                let id = bench.client.connect(bench.addr, None).expect("connect");
                let mut echo = vec![0; payload.len()];
                bench.round_trip(id, &payload, &mut echo);
                assert_eq!(echo, payload, "echo differs from what was sent");
                b.iter(|| bench.round_trip(id, black_box(&payload), &mut echo));
                bench.client.close(id, Close::Orderly);
            });
        }
        group.finish();
    }

    /// 100 connections, each echoing one 128 B message, all at once.
    fn connections(c: &mut Criterion) {
        let mut group = c.benchmark_group("connections");
        let message = payload(128);
        let inputs = vec![message.as_slice(); 100];
        group.throughput(Throughput::Elements(inputs.len() as u64));
        group.bench_function("100x128B_one_exchange_each", |b| {
            let mut bench = Bench::new(Loopback::host_without_splice);
            b.iter(|| {
                let echoed = bench.exchange_all(black_box(&inputs));
                assert_eq!(echoed, 100 * 128);
            });
        });
        group.finish();
    }

    /// Connect, accept, echo 64 B, close: the accept path.
    fn accept(c: &mut Criterion) {
        let mut group = c.benchmark_group("accept");
        let message = payload(64);
        group.throughput(Throughput::Elements(1));
        group.bench_function("accept_echo_close_64B", |b| {
            let mut bench = Bench::new(Loopback::host_without_splice);
            b.iter(|| {
                let echoed = bench.exchange_all(&[black_box(&message)]);
                assert_eq!(echoed, 64);
            });
        });
        group.finish();
    }

    /// What the UDP guards cost per datagram: one source, and 10,000
    /// sources taking turns (the tables full of peers).
    fn udp_guard(c: &mut Criterion) {
        let mut group = c.benchmark_group("udp_guard");
        let datagram = payload(512);
        group.throughput(Throughput::Elements(1));
        for sources in [1u16, 10_000] {
            group.bench_function(format!("check_512B_{sources}_sources"), |b| {
                let mut guard = UdpGuard::new(GuardConfig::default());
                let mut now = Duration::ZERO;
                let mut next = 0u16;
                b.iter(|| {
                    next = (next + 1) % sources;
                    let from = SocketAddr::from(([10, 0, (next >> 8) as u8, next as u8], 40_000));
                    now += Duration::from_micros(10);
                    black_box(guard.check(from, black_box(&datagram), now))
                });
            });
        }
        group.finish();
    }

    fn config() -> Criterion {
        Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(50)
    }

    criterion_group! {
        name = benches;
        config = config();
        targets = stream, connections, accept, udp_guard
    }
}

criterion::criterion_main!(engine::benches);
