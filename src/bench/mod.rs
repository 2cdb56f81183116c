//! The load generator: many connections on one event loop, every echoed
//! byte checked against what was sent, closed loop or open loop (messages
//! on a schedule, several in flight), the figures cut into intervals.
//!
//! - [`run`] (in `load`): the event loop;
//! - `flow` and `datagram`: one TCP connection, one UDP socket;
//! - `schedule`: when open-loop messages are due;
//! - `record`: counts and latency histograms, an interval at a time;
//! - [`report`]: the events and report, their JSON and text;
//! - [`log`]: histogram logs, written during a run and merged afterwards.

mod datagram;
mod flow;
mod load;
pub mod log;
mod record;
pub mod report;
mod schedule;

pub use datagram::HEADER as DATAGRAM_HEADER;
pub use load::run;
pub use record::Latencies;
pub use report::{CorruptEcho, Counts, Event, Interval, Latency, Load, Report, Start, SCHEMA};

use crate::net::BUILD;
use crate::proxy::ClientHeader;
use flow::Corruption;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What each connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Write a message, read its echo, repeat.
    Pingpong,
    /// Write continuously while reading the echo (full-duplex throughput).
    Stream,
    /// Connect, echo one message, close, repeat (the accept path).
    Connect,
}

/// One benchmark run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Echo server to load.
    pub addr: SocketAddr,
    /// Connections (connect mode: connections open at once, at most).
    pub connections: usize,
    /// Message size; in stream mode, the write size (at most 64 KiB).
    pub size: usize,
    /// Load before the measurement, excluded from every figure.
    pub warmup: Duration,
    /// How long to measure.
    pub duration: Duration,
    /// How often an interval ends (and the observer hears of it).
    pub interval: Duration,
    /// Traffic shape.
    pub mode: Mode,
    /// Echo datagrams instead of a stream (pingpong only).
    pub udp: bool,
    /// In connect mode, close each connection with a reset
    /// ([`crate::net::Close::Reset`]) rather than a FIN.
    pub reset: bool,
    /// Open loop: messages per second over all connections (connect mode:
    /// new connections per second); `None` for closed loop.
    pub rate: Option<u64>,
    /// Open loop: the most messages in flight on one connection; more
    /// wait their turn in the generator, written late.
    pub pipeline: usize,
    /// New connections per second while opening `connections` (not in
    /// connect mode); `None`: all at once.
    pub connect_rate: Option<u64>,
    /// Source addresses, the connections spread evenly over them; none:
    /// the host picks.
    pub bind: Vec<IpAddr>,
    /// A PROXY protocol header each TCP connection sends first, for a
    /// server that expects one.
    pub proxy: Option<ClientHeader>,
    /// UDP: how long a datagram waits for its echo before it counts as
    /// lost; `None`: a timeout that follows the round trips measured.
    pub loss_timeout: Option<Duration>,
}

impl Plan {
    /// Whether the load generator can run this plan.
    fn check(&self) -> Result<(), Error> {
        let fails = [
            (
                self.udp && self.mode != Mode::Pingpong,
                "UDP benchmarks support pingpong only",
            ),
            (
                self.rate.is_some() && self.mode == Mode::Stream,
                "stream mode has no messages to pace: --rate applies to pingpong and connect",
            ),
            (
                self.connect_rate.is_some() && self.mode == Mode::Connect,
                "connect mode paces its connections with --rate, not --connect-rate",
            ),
            (
                self.udp && self.size < datagram::HEADER,
                "a UDP datagram is at least 8 bytes: its sequence number",
            ),
            (
                self.loss_timeout.is_some_and(|timeout| timeout.is_zero()),
                "a loss timeout lasts longer than zero",
            ),
            (
                self.udp && self.proxy.is_some(),
                "--proxy-protocol heads TCP connections; it does not go with --udp",
            ),
            (
                self.connections == 0 || self.size == 0 || self.pipeline == 0,
                "a run needs a connection, a byte and a message in flight",
            ),
            (
                self.rate == Some(0) || self.connect_rate == Some(0),
                "rates are at least 1 per second",
            ),
            (self.interval.is_zero(), "intervals last longer than zero"),
        ];
        match fails.iter().find(|(fails, _)| *fails) {
            Some((_, why)) => Err(Error::Plan(why)),
            None => Ok(()),
        }
    }

    /// Open or closed loop.
    pub fn load(&self) -> Load {
        match self.rate {
            Some(_) => Load::Open,
            None => Load::Closed,
        }
    }

    /// The `start` event of this plan run on `backend`.
    pub fn start(&self, backend: &str) -> Start {
        Start {
            schema: SCHEMA,
            echokit_version: env!("CARGO_PKG_VERSION").to_owned(),
            build: BUILD.to_owned(),
            backend: backend.to_owned(),
            target: self.addr,
            protocol: if self.udp { "udp" } else { "tcp" }.to_owned(),
            mode: self.mode,
            load: self.load(),
            connections: self.connections,
            size: self.size,
            rate: self.rate,
            pipeline: self.rate.map(|_| self.pipeline),
            connect_rate: self.connect_rate,
            bind: self.bind.clone(),
            reset: self.reset,
            loss_timeout_ns: self.loss_timeout.filter(|_| self.udp).map(report::nanos),
            warmup_ns: report::nanos(self.warmup),
            duration_ns: report::nanos(self.duration),
            interval_ns: report::nanos(self.interval),
        }
    }

    /// The source address of connection `n`, if any were given.
    fn local(&self, n: u64) -> Option<IpAddr> {
        let len = self.bind.len() as u64;
        (len > 0).then(|| self.bind[(n % len) as usize])
    }
}

/// Told of each interval as it ends.
pub trait Observer {
    /// `interval` ended; `latencies` are its histograms. An error ends the
    /// run.
    fn interval(&mut self, interval: &Interval, latencies: &Latencies) -> io::Result<()>;
}

impl<F: FnMut(&Interval, &Latencies) -> io::Result<()>> Observer for F {
    fn interval(&mut self, interval: &Interval, latencies: &Latencies) -> io::Result<()> {
        self(interval, latencies)
    }
}

/// An echoed byte differed from the byte sent.
#[derive(Debug)]
pub struct BenchMismatch(Corruption);

impl fmt::Display for BenchMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Corruption {
            slot,
            message,
            offset,
        } = self.0;
        write!(
            f,
            "echo mismatch: connection {slot}, message {message}: the echo read at offset {offset} differs from what was sent"
        )
    }
}

impl std::error::Error for BenchMismatch {}

/// Why a benchmark run failed.
#[derive(Debug)]
pub enum Error {
    /// The plan asks for what the load generator cannot do.
    Plan(&'static str),
    /// The network failed (a refused connection is reported so).
    Io(io::Error),
    /// An echoed byte differed from the byte sent (TCP; over UDP a
    /// corrupted echo is counted, not fatal).
    Mismatch(BenchMismatch),
    /// Not one echo came back: the run measured nothing.
    NoEcho {
        /// How long the run lasted.
        seconds: f64,
        /// Connections opened.
        opened: u64,
        /// Connections that failed.
        errors: u64,
        /// Datagrams lost.
        lost: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Plan(what) => f.write_str(what),
            Error::Io(err) => err.fmt(f),
            Error::Mismatch(mismatch) => mismatch.fmt(f),
            Error::NoEcho {
                seconds,
                opened,
                errors,
                lost,
            } => write!(
                f,
                "no echo came back in {seconds:.1}s ({opened} connections opened, {errors} errors, {lost} datagrams lost)"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Error::Io(err)
    }
}
