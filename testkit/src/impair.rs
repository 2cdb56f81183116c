//! Impaired paths for tests: a seeded UDP relay that drops, duplicates,
//! corrupts, holds back (reorders) and delays the datagrams of
//! `echokit bench --udp` on their way to the server and delays their
//! echoes on the way back, recording exactly what it did and in which
//! order it delivered the echoes; and a TCP relay that delays both
//! directions of each connection.
//!
//! The UDP relay reads each datagram's sequence number as the bench
//! writes it (its first 8 bytes, little-endian), so it knows which
//! datagram every echo it delivers repeats, corrupted or not.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How often the relay's threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// What the UDP relay does to the datagrams of a path.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    /// Seeds every choice: the same seed and datagrams, the same fates.
    pub seed: u64,
    /// Shares of the datagrams sent (their fates exclude each other):
    /// dropped, sent twice, sent with one byte changed, held back by
    /// `hold` (so that later ones overtake them).
    pub drop: f64,
    /// See `drop`.
    pub duplicate: f64,
    /// See `drop`.
    pub corrupt: f64,
    /// See `drop`.
    pub reorder: f64,
    /// How long a held-back datagram waits on top of its delay.
    pub hold: Duration,
    /// Delay each way.
    pub delay: Duration,
    /// Each way's delay varies uniformly by up to this much either side.
    pub jitter: Duration,
    /// Datagrams with a sequence number from this one on pass untouched
    /// but for the fixed `delay`, so that a run's last ones are delivered
    /// in order and whole.
    pub impair_below: u64,
}

/// How many datagrams met each fate on the way to the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fates {
    /// Dropped.
    pub dropped: u64,
    /// Sent twice.
    pub duplicated: u64,
    /// Sent with one byte changed.
    pub corrupted: u64,
    /// Held back.
    pub held: u64,
}

/// An echo the relay delivered to a client.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    /// The client's socket.
    pub client: SocketAddr,
    /// The sequence number of the datagram it repeats.
    pub seq: u64,
    /// The relay changed a byte of that datagram.
    pub corrupted: bool,
    /// From the datagram's arrival at the relay to this delivery.
    pub round_trip: Duration,
}

/// What the relay did, in the order it did it.
#[derive(Debug, Default)]
pub struct PathLog {
    /// The fates chosen.
    pub fates: Fates,
    /// The echoes delivered, in order.
    pub deliveries: Vec<Delivery>,
    /// When each client's datagram arrived.
    arrived: HashMap<(SocketAddr, u64), Instant>,
    /// The bytes of each corrupted datagram, and which one it was.
    corrupted: HashMap<Vec<u8>, u64>,
}

/// A datagram waiting for its time.
struct Due {
    at: Instant,
    order: u64,
    to: Hop,
    bytes: Vec<u8>,
}

/// Where a waiting datagram goes.
enum Hop {
    /// To the server, from the client's own upstream socket.
    Server(Arc<UdpSocket>),
    /// Back to the client.
    Client(SocketAddr),
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// The relay's shared state.
struct Shared {
    impairment: Impairment,
    server: SocketAddr,
    front: UdpSocket,
    stop: AtomicBool,
    queue: Mutex<(BinaryHeap<Reverse<Due>>, u64)>,
    wake: Condvar,
    log: Mutex<PathLog>,
    rng: Mutex<fastrand::Rng>,
}

/// A running UDP relay; stops when dropped.
pub struct UdpRelay {
    /// Where clients send: the relay's address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl UdpRelay {
    /// Relays between clients and the UDP echo server at `server`,
    /// impaired by `impairment`.
    pub fn start(server: SocketAddr, impairment: Impairment) -> UdpRelay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind the relay");
        front.set_read_timeout(Some(POLL)).expect("set a timeout");
        let shared = Arc::new(Shared {
            impairment,
            server,
            front,
            stop: AtomicBool::new(false),
            queue: Mutex::new((BinaryHeap::new(), 0)),
            wake: Condvar::new(),
            log: Mutex::new(PathLog::default()),
            rng: Mutex::new(fastrand::Rng::with_seed(impairment.seed)),
        });
        let addr = shared.front.local_addr().expect("the relay's address");
        let threads = vec![
            spawn(&shared, Shared::take_from_clients),
            spawn(&shared, Shared::send_when_due),
        ];
        UdpRelay {
            addr,
            shared,
            threads,
        }
    }

    /// What the relay has done so far.
    pub fn log(&self) -> std::sync::MutexGuard<'_, PathLog> {
        lock(&self.shared.log)
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn spawn(shared: &Arc<Shared>, work: fn(&Arc<Shared>)) -> thread::JoinHandle<()> {
    let shared = Arc::clone(shared);
    thread::spawn(move || work(&shared))
}

/// Locks `mutex`, whatever a panicking holder left in it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The sequence number heading `bytes`.
fn seq_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

impl Shared {
    /// Reads clients' datagrams and sends each on its way, as its fate
    /// says.
    fn take_from_clients(self: &Arc<Self>) {
        let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut readers = Vec::new();
        let mut buf = vec![0; 65536];
        while !self.stop.load(Ordering::Relaxed) {
            let Ok((len, client)) = self.front.recv_from(&mut buf) else {
                continue;
            };
            let upstream = upstreams.entry(client).or_insert_with(|| {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind an upstream socket");
                socket.connect(self.server).expect("connect to the server");
                socket.set_read_timeout(Some(POLL)).expect("set a timeout");
                let socket = Arc::new(socket);
                let (shared, from) = (Arc::clone(self), Arc::clone(&socket));
                readers.push(thread::spawn(move || shared.take_echoes(&from, client)));
                socket
            });
            let mut bytes = buf[..len].to_vec();
            let seq = seq_of(&bytes).unwrap_or(u64::MAX);
            let now = Instant::now();
            lock(&self.log).arrived.entry((client, seq)).or_insert(now);
            let i = self.impairment;
            let impaired = seq < i.impair_below;
            let (mut copies, mut extra) = (1, Duration::ZERO);
            if impaired {
                let mut rng = lock(&self.rng);
                let roll = rng.f64();
                let mut log = lock(&self.log);
                let fates = &mut log.fates;
                if roll < i.drop {
                    fates.dropped += 1;
                    copies = 0;
                } else if roll < i.drop + i.duplicate {
                    fates.duplicated += 1;
                    copies = 2;
                } else if roll < i.drop + i.duplicate + i.corrupt {
                    fates.corrupted += 1;
                    if !bytes.is_empty() {
                        let at = rng.usize(..bytes.len());
                        bytes[at] ^= rng.u8(1..);
                    }
                    log.corrupted.insert(bytes.clone(), seq);
                } else if roll < i.drop + i.duplicate + i.corrupt + i.reorder {
                    fates.held += 1;
                    extra = i.hold;
                }
            }
            for _ in 0..copies {
                let at = now + self.delay(impaired) + extra;
                self.schedule(at, Hop::Server(Arc::clone(upstream)), bytes.clone());
            }
        }
        for reader in readers {
            let _ = reader.join();
        }
    }

    /// Reads the server's echoes for `client` and sends them back after
    /// the delay.
    fn take_echoes(self: &Arc<Self>, upstream: &UdpSocket, client: SocketAddr) {
        let mut buf = vec![0; 65536];
        while !self.stop.load(Ordering::Relaxed) {
            let Ok(len) = upstream.recv(&mut buf) else {
                continue;
            };
            let bytes = buf[..len].to_vec();
            let impaired = {
                let log = lock(&self.log);
                let seq = (log.corrupted.get(&bytes).copied()).or_else(|| seq_of(&bytes));
                seq.is_some_and(|seq| seq < self.impairment.impair_below)
            };
            let at = Instant::now() + self.delay(impaired);
            self.schedule(at, Hop::Client(client), bytes);
        }
    }

    /// One way's delay: with jitter if `impaired`.
    fn delay(&self, impaired: bool) -> Duration {
        let Impairment { delay, jitter, .. } = self.impairment;
        if !impaired || jitter.is_zero() {
            return delay;
        }
        let spread = (lock(&self.rng).f64() * 2.0 - 1.0) * jitter.as_secs_f64();
        Duration::from_secs_f64((delay.as_secs_f64() + spread).max(0.0))
    }

    fn schedule(&self, at: Instant, to: Hop, bytes: Vec<u8>) {
        let mut queue = lock(&self.queue);
        let order = queue.1;
        queue.1 += 1;
        queue.0.push(Reverse(Due {
            at,
            order,
            to,
            bytes,
        }));
        self.wake.notify_all();
    }

    /// Sends each waiting datagram at its time, logging the echoes
    /// delivered.
    fn send_when_due(self: &Arc<Self>) {
        let mut queue = lock(&self.queue);
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = match queue.0.peek() {
                Some(Reverse(due)) if due.at <= now => Duration::ZERO,
                Some(Reverse(due)) => due.at - now,
                None => POLL,
            };
            if !wait.is_zero() {
                queue = self
                    .wake
                    .wait_timeout(queue, wait.min(POLL))
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
                continue;
            }
            let Some(Reverse(due)) = queue.0.pop() else {
                continue;
            };
            match due.to {
                Hop::Server(upstream) => {
                    let _ = upstream.send(&due.bytes);
                }
                Hop::Client(client) => {
                    let _ = self.front.send_to(&due.bytes, client);
                    self.delivered(client, &due.bytes);
                }
            }
        }
    }

    fn delivered(&self, client: SocketAddr, bytes: &[u8]) {
        let mut log = lock(&self.log);
        let (seq, corrupted) = match log.corrupted.get(bytes) {
            Some(&seq) => (seq, true),
            None => (seq_of(bytes).unwrap_or(u64::MAX), false),
        };
        let arrived = log.arrived.get(&(client, seq)).copied();
        let round_trip = arrived.map_or(Duration::ZERO, |at| at.elapsed());
        log.deliveries.push(Delivery {
            client,
            seq,
            corrupted,
            round_trip,
        });
    }
}

/// A running TCP relay that delays each direction of every connection by
/// a fixed time; stops taking connections when dropped.
pub struct TcpDelay {
    /// Where clients connect: the relay's address.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepter: Option<thread::JoinHandle<()>>,
}

impl TcpDelay {
    /// Relays connections to the TCP echo server at `server`, each byte
    /// `delay` late each way.
    pub fn start(server: SocketAddr, delay: Duration) -> TcpDelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the relay's address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let accepter = thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let Ok(upstream) = TcpStream::connect(server) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                for (from, to) in [(&client, &upstream), (&upstream, &client)] {
                    if let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) {
                        delay_line(from, to, delay);
                    }
                }
            }
        });
        TcpDelay {
            addr,
            stop,
            accepter: Some(accepter),
        }
    }
}

impl Drop for TcpDelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read, until
/// `from` ends or `to` fails.
fn delay_line(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (chunks, late) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0; 65536];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if chunks.send((Instant::now(), buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    thread::spawn(move || {
        for (read, chunk) in late {
            thread::sleep((read + delay).saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
