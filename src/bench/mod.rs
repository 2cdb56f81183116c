//! The load generator: many connections on one event loop, every echoed
//! byte checked against what was sent.

mod flow;

use crate::clock::Clock;
use crate::net::{explain, Close, Network, SocketId};
use flow::{Corruption, Flow, FlowError};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::time::Duration;

/// Size of the read and compare buffers shared by all flows.
const SCRATCH_SIZE: usize = 64 * 1024;
/// How often the progress callback runs.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Connections (or, in connect mode, concurrent connect loops).
    pub connections: usize,
    /// Message size; in stream mode, the write size (at most 64 KiB).
    pub size: usize,
    /// How long to run.
    pub duration: Duration,
    /// Traffic shape.
    pub mode: Mode,
    /// Echo datagrams instead of a stream (pingpong only).
    pub udp: bool,
    /// In connect mode, close each connection with a reset
    /// ([`Close::Reset`]) rather than a FIN.
    pub reset: bool,
}

/// Counters so far, for progress output.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    /// Time since the start.
    pub elapsed: Duration,
    /// Echoes completed.
    pub requests: u64,
    /// Echoed bytes verified.
    pub bytes: u64,
    /// Connection errors.
    pub errors: u64,
    /// Datagrams lost (UDP).
    pub lost: u64,
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest echo.
    pub max_us: f64,
}

/// The outcome of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// "tcp" or "udp".
    pub protocol: String,
    /// Traffic shape.
    pub mode: Mode,
    /// Connections (or connect loops).
    pub connections: usize,
    /// Message or write size in bytes.
    pub size: usize,
    /// Measured duration.
    pub seconds: f64,
    /// Echoes completed (messages; 0 in stream mode).
    pub requests: u64,
    /// Echoes per second.
    pub requests_per_sec: f64,
    /// Echoed bytes verified.
    pub bytes: u64,
    /// Echoed MiB per second.
    pub mib_per_sec: f64,
    /// Echo latency (none in stream mode).
    pub latency: Option<Latency>,
    /// Connections opened.
    pub connections_opened: u64,
    /// Connections that failed (reset, closed early) and were reopened.
    pub errors: u64,
    /// Datagrams whose echo did not come back within 200 ms (UDP).
    pub lost: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {:?} {} x {} B for {:.2}s",
            self.protocol, self.mode, self.connections, self.size, self.seconds
        )?;
        writeln!(
            f,
            "  {:.0} req/s, {:.2} MiB/s ({} echoes, {} bytes verified)",
            self.requests_per_sec, self.mib_per_sec, self.requests, self.bytes
        )?;
        if let Some(l) = &self.latency {
            writeln!(
                f,
                "  latency p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
                l.p50_us, l.p99_us, l.p999_us, l.max_us
            )?;
        }
        write!(
            f,
            "  {} connections opened, {} errors, {} datagrams lost",
            self.connections_opened, self.errors, self.lost
        )
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
    /// An echoed byte differed from the byte sent.
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

/// Runs `plan` on `net` and `clock`, calling `progress` about once a
/// second.
pub fn run<N: Network>(
    net: &mut N,
    clock: &impl Clock,
    plan: &Plan,
    mut progress: impl FnMut(&Snapshot),
) -> Result<Report, Error> {
    if plan.udp && plan.mode != Mode::Pingpong {
        return Err(Error::Plan("UDP benchmarks support pingpong only"));
    }
    let start = clock.now();
    let deadline = start + plan.duration;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
        .expect("constant bounds are valid");
    let mut counts = Snapshot::default();
    let mut opened = 0u64;
    let mut flows: Vec<Option<Flow>> = Vec::new();
    for slot in 0..plan.connections as u64 {
        let flow = Flow::open(net, plan, slot, 0, clock.now())?;
        opened += 1;
        place(&mut flows, flow);
    }
    let mut incoming = vec![0; SCRATCH_SIZE].into_boxed_slice();
    let mut expected = vec![0; SCRATCH_SIZE].into_boxed_slice();
    let mut ready: Vec<SocketId> = flows.iter().flatten().map(|flow| flow.id).collect();
    let mut again = Vec::new();
    let mut next_progress = start + PROGRESS_INTERVAL;
    // UDP flows whose datagram was lost get no wake-up: look at them all
    // now and then.
    let loss_sweep = plan.udp.then_some(flow::LOSS_TIMEOUT / 4);
    let mut next_sweep = start;
    loop {
        let now = clock.now();
        if now >= deadline {
            break;
        }
        if now >= next_progress {
            counts.elapsed = now - start;
            progress(&counts);
            next_progress += PROGRESS_INTERVAL;
        }
        if let Some(interval) = loss_sweep.filter(|_| now >= next_sweep) {
            ready.extend(flows.iter().flatten().map(|flow| flow.id));
            next_sweep = now + interval;
        }
        for id in mem::take(&mut ready) {
            let Some(mut flow) = flows.get_mut(id.0).and_then(Option::take) else {
                continue;
            };
            let outcome = match flow.drive(net, plan, now, &mut incoming, &mut expected) {
                Ok(outcome) => outcome,
                Err(FlowError::Corrupt(corruption)) => {
                    return Err(Error::Mismatch(BenchMismatch(corruption)))
                }
                // Nobody listens: not a failure of one connection.
                Err(FlowError::Io(err)) if err.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(Error::Io(explain(err, plan.addr)));
                }
                Err(FlowError::Io(_)) => {
                    counts.errors += 1;
                    flow::Outcome {
                        reconnect: true,
                        ..Default::default()
                    }
                }
            };
            counts.bytes += outcome.bytes;
            counts.lost += outcome.lost;
            counts.requests += outcome.latencies.len() as u64;
            for took in &outcome.latencies {
                latency.saturating_record(took.as_nanos().max(1) as u64);
            }
            if outcome.reconnect {
                net.close(
                    id,
                    match plan.reset {
                        true => Close::Reset,
                        false => Close::Orderly,
                    },
                );
                flow = Flow::open(net, plan, flow.slot(), flow.next_message(), clock.now())?;
                opened += 1;
                again.push(flow.id);
            } else if outcome.yielded {
                again.push(id);
            }
            place(&mut flows, flow);
        }
        let wake = match loss_sweep {
            Some(_) => deadline.min(next_progress).min(next_sweep),
            None => deadline.min(next_progress),
        };
        let timeout = match again.is_empty() {
            true => wake.saturating_sub(clock.now()),
            false => Duration::ZERO,
        };
        ready.append(&mut again);
        net.wait(Some(timeout), &mut ready)?;
    }
    let seconds = (clock.now() - start).as_secs_f64();
    for flow in flows.into_iter().flatten() {
        net.close(flow.id, Close::Orderly);
    }
    // A server that never answers (or a connect that never completes)
    // measured nothing: that is a failure, not a rate of zero.
    if counts.bytes == 0 {
        return Err(Error::NoEcho {
            seconds,
            opened,
            errors: counts.errors,
            lost: counts.lost,
        });
    }
    let percentile = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(Report {
        protocol: if plan.udp { "udp" } else { "tcp" }.to_owned(),
        mode: plan.mode,
        connections: plan.connections,
        size: plan.size,
        seconds,
        requests: counts.requests,
        requests_per_sec: counts.requests as f64 / seconds,
        bytes: counts.bytes,
        mib_per_sec: counts.bytes as f64 / seconds / (1024.0 * 1024.0),
        latency: (!latency.is_empty()).then(|| Latency {
            p50_us: percentile(0.5),
            p99_us: percentile(0.99),
            p999_us: percentile(0.999),
            max_us: latency.max() as f64 / 1000.0,
        }),
        connections_opened: opened,
        errors: counts.errors,
        lost: counts.lost,
    })
}

/// Files `flow` under its socket's index.
fn place(flows: &mut Vec<Option<Flow>>, flow: Flow) {
    let index = flow.id.0;
    if flows.len() <= index {
        flows.resize_with(index + 1, || None);
    }
    flows[index] = Some(flow);
}
