//! Deterministic simulations: the real engine and the real client on the
//! in-memory network with injected faults, driven turn by turn on simulated
//! time. Property tests and the fuzzer use them to check the engine's
//! promises:
//!
//! - every connection receives exactly the bytes it sent, in order, or a
//!   prefix of them and an error; never a wrong byte;
//! - the engine never holds more than `connections × bound` unsent bytes;
//! - every exchange ends, and without faults (or an idle timeout that a
//!   sleeping client runs into) every echo is whole;
//! - idle connections close on simulated time, within one sweep interval
//!   of their timeout.

use crate::client::{Exchange, HalfClose};
use crate::clock::Clock;
use crate::engine::{sweep_interval, Config, ConnectionCount, Server};
use crate::hash::mix;
use crate::net::faults::{FaultRates, Faulty};
use crate::net::loopback::{Loopback, LoopbackNetwork};
use crate::net::{try_read, Bind, Close, Network, Protocol, SocketId};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Turns after the events before an unfinished exchange counts as stuck.
const SETTLE_TURNS: usize = 100_000;
/// Simulated time an idle turn may sleep.
const TICK: Duration = Duration::from_millis(1);

/// One simulated event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Open a connection that will echo `len` bytes.
    Open {
        /// Bytes to echo.
        len: usize,
    },
    /// Open a connection that never sends anything.
    OpenSilent,
    /// Let every client move bytes once.
    DriveClients,
    /// Let the server take one turn without sleeping.
    ServerTurn,
    /// Let simulated time pass, the server sleeping through it.
    Sleep(Duration),
    /// Change the faults injected on the server's side.
    ServerFaults(FaultRates),
    /// Change the faults injected on the clients' side.
    ClientFaults(FaultRates),
    /// A client drops its connection, mid-echo or not.
    Abort {
        /// Which connection, modulo the number opened.
        connection: usize,
    },
}

/// A whole simulation: the network, the server, and what happens.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Fixes the payloads and every choice of the fault injectors.
    pub seed: u64,
    /// Bytes each direction of a simulated connection holds.
    pub buffer: usize,
    /// The server's limits.
    pub config: Config,
    /// What happens, in order. Afterwards faults stop, and everything runs
    /// to its end.
    pub events: Vec<Event>,
}

impl Scenario {
    /// Decodes a scenario from arbitrary bytes, as the fuzzer supplies
    /// them: a seed, the buffer size, the backlog bound and the idle
    /// timeout, then one event per opcode byte (with its argument bytes).
    /// Every byte string decodes to some scenario.
    pub fn from_bytes(bytes: &[u8]) -> Scenario {
        let mut input = Bytes(bytes);
        let seed = u64::from_le_bytes(std::array::from_fn(|_| input.byte()));
        let buffer = 1 + usize::from(input.byte()) * 32;
        let max_backlog = 1 + usize::from(input.u16());
        let idle_timeout = match input.byte() {
            0 => None,
            tenths => Some(Duration::from_millis(u64::from(tenths) * 10)),
        };
        let mut events = Vec::new();
        while let Some(&op) = input.0.first() {
            input.0 = &input.0[1..];
            events.push(match op % 8 {
                0 => Event::Open {
                    len: usize::from(input.u16()),
                },
                1 => Event::DriveClients,
                2 => Event::ServerTurn,
                3 => Event::Sleep(Duration::from_millis(input.byte().into())),
                4 => Event::ServerFaults(input.rates()),
                5 => Event::ClientFaults(input.rates()),
                6 => Event::OpenSilent,
                _ => Event::Abort {
                    connection: input.byte().into(),
                },
            });
        }
        Scenario {
            seed,
            buffer,
            config: Config {
                max_backlog,
                idle_timeout,
                ..Config::default()
            },
            events,
        }
    }
}

/// Fuzzer bytes, read front to back; zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn rates(&mut self) -> FaultRates {
        FaultRates {
            short_io: u16::from(self.byte()) * 2,
            spurious_would_block: u16::from(self.byte()) * 2,
            reset: u16::from(self.byte() % 32),
            accept_failure: u16::from(self.byte()),
            unspliced: u16::from(self.byte()) * 4,
        }
    }
}

/// A broken promise, with what the simulation saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

/// How the exchanges of a simulation ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Exchanges that got their whole echo.
    pub echoed: usize,
    /// Exchanges that ended with an error, a short echo or an abort.
    pub failed: usize,
    /// Silent connections that the idle timeout closed.
    pub timed_out: usize,
    /// Simulated time the run took.
    pub elapsed: Duration,
}

/// Runs `scenario`, checking the engine's promises after every turn.
pub fn run(scenario: &Scenario) -> Result<Summary, Violation> {
    let inputs: Vec<Vec<u8>> = (scenario.events.iter())
        .filter_map(|event| match event {
            Event::Open { len } => Some(*len),
            _ => None,
        })
        .enumerate()
        .map(|(index, len)| payload(scenario.seed, index, len))
        .collect();
    let world = Loopback::with_buffer(scenario.buffer);
    let config = scenario.config.clone();
    let server_net = Faulty::new(world.host(), FaultRates::default(), scenario.seed);
    let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut server = Server::new(server_net, config.clone(), ConnectionCount::default(), ());
    let bind = Bind {
        backlog: 4096,
        ..Bind::default()
    };
    let addr = server
        .listen(Protocol::Tcp, any_port, bind)
        .map_err(|err| Violation(format!("cannot bind: {err}")))?;
    let mut sim = Simulation {
        net: Faulty::new(world.host(), FaultRates::default(), !scenario.seed),
        world,
        server,
        addr,
        config,
        inputs: &inputs,
        clients: Vec::new(),
        silent: Vec::new(),
        faults_seen: false,
    };
    for event in &scenario.events {
        sim.apply(event)?;
    }
    sim.server.network_mut().set_rates(FaultRates::default());
    sim.net.set_rates(FaultRates::default());
    sim.settle()
}

/// The bytes connection `index` of a run seeded `seed` sends.
fn payload(seed: u64, index: usize, len: usize) -> Vec<u8> {
    let base = mix(seed ^ index as u64);
    (0..len as u64).map(|i| mix(base ^ i) as u8).collect()
}

struct Client<'a> {
    input: &'a [u8],
    exchange: Exchange<'a>,
    output: Vec<u8>,
    finished: Option<bool>,
}

struct Silent {
    id: SocketId,
    accepted_at: Option<Duration>,
    closed_at: Option<Duration>,
}

struct Simulation<'a> {
    server: Server<Faulty<LoopbackNetwork>>,
    net: Faulty<LoopbackNetwork>,
    world: Loopback,
    addr: SocketAddr,
    config: Config,
    inputs: &'a [Vec<u8>],
    clients: Vec<Client<'a>>,
    silent: Vec<Silent>,
    faults_seen: bool,
}

impl<'a> Simulation<'a> {
    fn apply(&mut self, event: &Event) -> Result<(), Violation> {
        match event {
            Event::Open { .. } => {
                let input = &self.inputs[self.clients.len()];
                // Half the clients half-close at once, so that the server
                // must send the tail of the echo after their FIN.
                let half_close = match self.clients.len() % 2 {
                    0 => HalfClose::AfterInput,
                    _ => HalfClose::AfterEcho,
                };
                let exchange = Exchange::connect(&mut self.net, self.addr, input, half_close)
                    .map_err(|err| Violation(format!("cannot connect: {err}")))?;
                self.clients.push(Client {
                    input,
                    exchange,
                    output: Vec::new(),
                    finished: None,
                });
            }
            Event::OpenSilent => {
                let id = self
                    .net
                    .connect(self.addr, None)
                    .map_err(|err| Violation(format!("cannot connect: {err}")))?;
                self.silent.push(Silent {
                    id,
                    accepted_at: None,
                    closed_at: None,
                });
            }
            Event::DriveClients => self.drive_clients()?,
            Event::ServerTurn => self.server_turn(Some(Duration::ZERO))?,
            Event::Sleep(duration) => {
                // The server sleeps until its own deadlines, as it would.
                let until = self.world.now() + *duration;
                for _ in 0..SETTLE_TURNS {
                    let left = until.saturating_sub(self.world.now());
                    if left.is_zero() {
                        break;
                    }
                    self.server_turn(Some(left))?;
                }
            }
            Event::ServerFaults(rates) => {
                self.faults_seen |= rates.harmful();
                self.server.network_mut().set_rates(*rates);
            }
            Event::ClientFaults(rates) => {
                self.faults_seen |= rates.harmful();
                self.net.set_rates(*rates);
            }
            Event::Abort { connection } => {
                self.faults_seen = true;
                let count = self.clients.len();
                if count > 0 {
                    let client = &mut self.clients[connection % count];
                    if client.finished.is_none() {
                        client.finished = Some(false);
                        self.net.close(client.exchange.socket(), Close::Orderly);
                    }
                }
            }
        }
        Ok(())
    }

    fn drive_clients(&mut self) -> Result<(), Violation> {
        for (index, client) in self.clients.iter_mut().enumerate() {
            if client.finished.is_some() {
                continue;
            }
            match client
                .exchange
                .drive(&mut self.net, self.world.now(), &mut client.output)
            {
                Ok(false) => {}
                Ok(true) => client.finished = Some(client.exchange.verdict().is_ok()),
                Err(_) => client.finished = Some(false),
            }
            if client.finished.is_some() {
                self.net.close(client.exchange.socket(), Close::Orderly);
            }
            if !client.input.starts_with(&client.output) {
                return Err(Violation(format!(
                    "connection {index} received bytes it never sent: {} bytes in, {} out",
                    client.input.len(),
                    client.output.len()
                )));
            }
        }
        Ok(())
    }

    /// Notes when the server accepted and closed silent connections: right
    /// after each of its turns, past the fault injector.
    fn watch_silent(&mut self) {
        let now = self.world.now();
        let mut buf = [0; 16];
        let net = self.net.inner_mut();
        for silent in self.silent.iter_mut().filter(|s| s.closed_at.is_none()) {
            if silent.accepted_at.is_none() && net.is_accepted(silent.id) {
                silent.accepted_at = Some(now);
            }
            if let Ok(Some(0)) = try_read(net, silent.id, &mut buf) {
                // Accepted and closed in one turn: it lived no time at all.
                silent.accepted_at.get_or_insert(now);
                silent.closed_at = Some(now);
            }
        }
    }

    fn server_turn(&mut self, max_wait: Option<Duration>) -> Result<(), Violation> {
        self.server
            .turn(&self.world, max_wait)
            .map_err(|err| Violation(format!("event loop failed: {err}")))?;
        self.watch_silent();
        let open = self.server.open_connections();
        let limit = open * self.config.max_backlog;
        let held = self.server.buffered_bytes();
        if held > limit {
            return Err(Violation(format!(
                "{held} unsent bytes held for {open} connections, over the bound of {limit}"
            )));
        }
        Ok(())
    }

    fn settle(mut self) -> Result<Summary, Violation> {
        let start = self.world.now();
        for _ in 0..SETTLE_TURNS {
            let clients_done = self.clients.iter().all(|c| c.finished.is_some());
            let silent_done = self.config.idle_timeout.is_none()
                || self.silent.iter().all(|s| s.closed_at.is_some());
            if clients_done && silent_done {
                return self.summarise();
            }
            self.drive_clients()?;
            self.server_turn(Some(TICK))?;
        }
        let stuck = self.clients.iter().filter(|c| c.finished.is_none()).count();
        Err(Violation(format!(
            "{stuck} exchanges still running after {:?} of simulated time",
            self.world.now() - start
        )))
    }

    fn summarise(self) -> Result<Summary, Violation> {
        let mut summary = Summary {
            elapsed: self.world.now(),
            ..Summary::default()
        };
        for (index, client) in self.clients.iter().enumerate() {
            match client.finished {
                Some(true) => summary.echoed += 1,
                // With an idle timeout, a client that sleeps through it is
                // rightly cut off; otherwise only faults excuse a failure.
                _ if !self.faults_seen && self.config.idle_timeout.is_none() => {
                    return Err(Violation(format!(
                        "connection {index} failed without any fault: {} of {} bytes echoed",
                        client.output.len(),
                        client.input.len()
                    )))
                }
                _ => summary.failed += 1,
            }
        }
        if let Some(idle) = self.config.idle_timeout {
            // The engine sweeps once an interval; a turn may sleep a tick.
            let latest = idle + sweep_interval(idle) + 2 * TICK;
            // Faults may close a connection early, never late.
            let earliest = if self.faults_seen {
                Duration::ZERO
            } else {
                idle
            };
            for silent in &self.silent {
                let (Some(accepted), Some(closed)) = (silent.accepted_at, silent.closed_at) else {
                    return Err(Violation("an idle connection was never accepted".into()));
                };
                let lived = closed - accepted;
                if lived < earliest || lived > latest {
                    return Err(Violation(format!(
                        "an idle connection closed {lived:?} after it was accepted, not within {earliest:?}..{latest:?}"
                    )));
                }
                summary.timed_out += 1;
            }
        }
        Ok(summary)
    }
}
