//! What a run reports: the `start`, `interval` and `end` events of
//! `bench --json` (schema [`SCHEMA`]), and their text.
//!
//! Times and sizes are integers in the unit their name ends with (`_ns`,
//! `bytes`); rates are floats per second. The totals of an `end` event are
//! the sums of its `interval` events.

use super::Mode;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::AddAssign;
use std::time::Duration;

/// The version of the JSON events and of the histogram log's metadata;
/// raised when a field changes meaning or goes away (2: `lost` follows
/// the path's round trips rather than a fixed 200 ms, and UDP runs count
/// duplicates, reordering, corruption and late echoes, and measure jitter).
pub const SCHEMA: u32 = 2;

/// How messages are paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Load {
    /// Each connection sends its next message once the last one is echoed.
    Closed,
    /// Messages are sent at a constant rate, whatever the echoes do.
    Open,
}

/// Latency percentiles of one histogram, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Slowest.
    pub max_ns: u64,
}

impl Latency {
    /// The percentiles of `histogram`, unless it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Option<Latency> {
        let at = |q| histogram.value_at_quantile(q);
        (!histogram.is_empty()).then(|| Latency {
            p50_ns: at(0.5),
            p90_ns: at(0.9),
            p99_ns: at(0.99),
            p999_ns: at(0.999),
            max_ns: histogram.max(),
        })
    }
}

/// The counts of a stretch of a run, which add up over intervals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Echoes completed and verified (messages; 0 in stream mode).
    pub requests: u64,
    /// Echoed bytes verified.
    pub bytes: u64,
    /// Messages whose first byte was written (in connect mode, connections
    /// started).
    pub sent: u64,
    /// Open loop: messages (connections) due by the schedule; `null` in
    /// closed loop.
    pub scheduled: Option<u64>,
    /// Open loop: messages written more than [`LATE`] after they were due.
    pub late: u64,
    /// Connections opened.
    pub connections_opened: u64,
    /// Connections that failed (reset, closed early) and were reopened.
    pub errors: u64,
    /// Datagrams whose echo did not come back within the loss timeout
    /// (UDP).
    pub lost: u64,
    /// Echoes of a datagram that came back after it was counted lost, or
    /// too long after it was sent to tell (UDP).
    pub late_echoes: u64,
    /// Echoes of a datagram already echoed (UDP).
    pub duplicates: u64,
    /// Echoes that came back after the echo of a later datagram of their
    /// socket (UDP; RFC 4737's reordered packets, iperf3's
    /// `out_of_order`).
    pub reordered: u64,
    /// Echoes that differ from the datagram sent (UDP; a TCP run ends at
    /// the first).
    pub corrupted: u64,
    /// CPU time the load generator used; `null` where the host cannot
    /// tell (the wasm build: WASI 0.2 has no getrusage).
    pub cpu_ns: Option<u64>,
}

impl Counts {
    /// The sum of `counts`; a count that may be `null` is known only if
    /// every one knows it.
    pub fn sum<'a>(counts: impl IntoIterator<Item = &'a Counts>) -> Counts {
        let mut counts = counts.into_iter();
        let mut sum = counts.next().copied().unwrap_or_default();
        for more in counts {
            sum += more;
        }
        sum
    }
}

/// How late an open-loop write may be before it counts as
/// [`Counts::late`].
pub const LATE: Duration = Duration::from_millis(1);

impl AddAssign<&Counts> for Counts {
    fn add_assign(&mut self, other: &Counts) {
        let add = |a: Option<u64>, b: Option<u64>| Some(a? + b?);
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.sent += other.sent;
        self.scheduled = add(self.scheduled, other.scheduled);
        self.late += other.late;
        self.connections_opened += other.connections_opened;
        self.errors += other.errors;
        self.lost += other.lost;
        self.late_echoes += other.late_echoes;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.corrupted += other.corrupted;
        self.cpu_ns = add(self.cpu_ns, other.cpu_ns);
    }
}

/// An echoed datagram that differed from the one sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorruptEcho {
    /// The socket's connection slot.
    pub connection: u64,
    /// The datagram it was the echo of; `null` when too little of it was
    /// left to tell.
    pub message: Option<u64>,
    /// The first offset at which it differed.
    pub offset: u64,
}

/// The mean of the jitter of intervals, each weighted by its echoes.
pub(super) fn mean_jitter(intervals: impl IntoIterator<Item = (Option<u64>, u64)>) -> Option<u64> {
    let (mut sum, mut echoes) = (0u128, 0u128);
    for (jitter, requests) in intervals {
        if let Some(jitter) = jitter {
            sum += u128::from(jitter) * u128::from(requests);
            echoes += u128::from(requests);
        }
    }
    (echoes > 0).then(|| u64::try_from(sum / echoes).unwrap_or(u64::MAX))
}

/// One `--interval` of a run (the `interval` event).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Its number, from 0.
    pub index: u64,
    /// When it began, after the end of the warm-up.
    pub start_ns: u64,
    /// How long it lasted.
    pub duration_ns: u64,
    /// What happened in it.
    #[serde(flatten)]
    pub counts: Counts,
    /// Connections open at its end.
    pub connections_open: u64,
    /// Open loop: the latest write after its message was due.
    pub send_lag_max_ns: Option<u64>,
    /// Open loop: latency from each message's scheduled send.
    pub corrected: Option<Latency>,
    /// Latency from each message's write (in connect mode, from the
    /// connect).
    pub uncorrected: Option<Latency>,
    /// UDP: the round trips' jitter (RFC 3550's estimate, kept per
    /// socket), the mean over the interval's echoes; `null` over TCP.
    pub jitter_ns: Option<u64>,
    /// UDP: the interval's first corrupted echo.
    pub first_corruption: Option<CorruptEcho>,
}

/// Every parameter of a run (the `start` event).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Start {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The echokit version that ran it.
    pub echokit_version: String,
    /// `native` or `wasm`.
    pub build: String,
    /// The I/O backend (`epoll`, `wasi`...).
    pub backend: String,
    /// The echo server loaded.
    pub target: SocketAddr,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Traffic shape.
    pub mode: Mode,
    /// Open or closed loop.
    #[serde(rename = "loop")]
    pub load: Load,
    /// Connections (in connect mode: concurrent connections at most).
    pub connections: usize,
    /// Message or write size in bytes.
    pub size: usize,
    /// Open loop: messages (connect mode: connections) per second asked.
    pub rate: Option<u64>,
    /// Open loop: the most messages in flight on one connection.
    pub pipeline: Option<usize>,
    /// New connections per second while opening `connections`.
    pub connect_rate: Option<u64>,
    /// Source addresses, connections spread over them.
    pub bind: Vec<IpAddr>,
    /// Connect mode: connections closed with a reset.
    pub reset: bool,
    /// UDP: `--loss-timeout`; `null` when it adapts to the round trips.
    pub loss_timeout_ns: Option<u64>,
    /// Load before the measurement, excluded from every figure.
    pub warmup_ns: u64,
    /// How long the measurement lasts.
    pub duration_ns: u64,
    /// How often an interval ends.
    pub interval_ns: u64,
}

/// The outcome of a run, or of runs merged (the `end` event).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The run's parameters; for merged runs, the first run's, with
    /// `connections` and `rate` summed.
    #[serde(flatten)]
    pub start: Start,
    /// Runs merged into this report (1 for a bench run).
    pub runs: u64,
    /// The measured time (merged: the time any run was measuring).
    pub measured_ns: u64,
    /// Totals: the sums of the intervals.
    #[serde(flatten)]
    pub counts: Counts,
    /// Intervals measured.
    pub intervals: u64,
    /// Echoes per second.
    pub requests_per_sec: f64,
    /// Messages written per second: the rate really offered.
    pub offered_per_sec: f64,
    /// Echoed MiB per second.
    pub mib_per_sec: f64,
    /// Open loop: the latest write after its message was due.
    pub send_lag_max_ns: Option<u64>,
    /// Open loop: latency from each message's scheduled send.
    pub corrected: Option<Latency>,
    /// Latency from each message's write (connect mode: from the connect).
    pub uncorrected: Option<Latency>,
    /// UDP: the round trips' jitter, the mean of the intervals' weighted by
    /// their echoes.
    pub jitter_ns: Option<u64>,
    /// UDP: the first corrupted echo.
    pub first_corruption: Option<CorruptEcho>,
    /// From the start until `connections` connections had each written a
    /// byte (the slowest run's, when merged).
    pub connected_ns: Option<u64>,
    /// The load generator's CPU seconds per 1,000 echoes.
    pub cpu_s_per_1k_requests: Option<f64>,
    /// The load generator's CPU time over the measured time: 1.0 is one
    /// core busy.
    pub cpu_cores: Option<f64>,
}

impl Report {
    /// The report of `counts` over `measured`, with rates and CPU shares
    /// derived.
    pub(super) fn derive(start: Start, counts: Counts, measured: Duration) -> Report {
        let seconds = measured.as_secs_f64().max(f64::MIN_POSITIVE);
        let cpu = counts.cpu_ns.map(|ns| ns as f64 / 1e9);
        Report {
            start,
            runs: 1,
            measured_ns: nanos(measured),
            counts,
            intervals: 0,
            requests_per_sec: counts.requests as f64 / seconds,
            offered_per_sec: counts.sent as f64 / seconds,
            mib_per_sec: counts.bytes as f64 / seconds / (1024.0 * 1024.0),
            send_lag_max_ns: None,
            corrected: None,
            uncorrected: None,
            jitter_ns: None,
            first_corruption: None,
            connected_ns: None,
            cpu_s_per_1k_requests: cpu
                .filter(|_| counts.requests > 0)
                .map(|cpu| cpu * 1000.0 / counts.requests as f64),
            cpu_cores: cpu.map(|cpu| cpu / seconds),
        }
    }

    /// The measured time in seconds.
    pub fn seconds(&self) -> f64 {
        self.measured_ns as f64 / 1e9
    }

    /// Open loop: the share of the scheduled messages that were not
    /// written, when over 1%.
    pub fn shortfall(&self) -> Option<f64> {
        let scheduled = self.counts.scheduled?;
        let short = scheduled.saturating_sub(self.counts.sent) as f64 / scheduled.max(1) as f64;
        (short > 0.01).then_some(short)
    }
}

/// A duration in whole nanoseconds (saturating).
pub(super) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A duration in the unit that reads best: `61.2 us`, `12.3 ms`, `1.02 s`.
pub struct Took(pub u64);

impl fmt::Display for Took {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0 as f64;
        match self.0 {
            0..=999_999 => write!(f, "{:.1} us", ns / 1e3),
            1_000_000..=999_999_999 => write!(f, "{:.1} ms", ns / 1e6),
            _ => write!(f, "{:.2} s", ns / 1e9),
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
            Took(self.p50_ns),
            Took(self.p90_ns),
            Took(self.p99_ns),
            Took(self.p999_ns),
            Took(self.max_ns)
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, c) = (&self.start, &self.counts);
        let runs = match self.runs {
            1 => String::new(),
            n => format!(", {n} runs merged"),
        };
        let pacing = match s.rate {
            Some(rate) => format!("open loop at {rate} req/s"),
            None => "closed loop".to_owned(),
        };
        writeln!(
            f,
            "{} {:?} {} x {} B, {pacing}, {:.2}s measured{runs}",
            s.protocol,
            s.mode,
            s.connections,
            s.size,
            self.seconds()
        )?;
        writeln!(
            f,
            "  {:.0} req/s, {:.2} MiB/s ({} echoes, {} bytes verified)",
            self.requests_per_sec, self.mib_per_sec, c.requests, c.bytes
        )?;
        if let Some(l) = &self.corrected {
            writeln!(f, "  latency from the schedule (corrected): {l}")?;
        }
        if let Some(l) = &self.uncorrected {
            let what = match s.mode {
                Mode::Connect => "the connect",
                Mode::Pingpong | Mode::Stream => "the write",
            };
            writeln!(f, "  latency from {what} (uncorrected): {l}")?;
        }
        if c.late > 0 {
            writeln!(
                f,
                "  {} writes over {} behind the schedule, the latest by {}",
                c.late,
                Took(nanos(LATE)),
                Took(self.send_lag_max_ns.unwrap_or_default())
            )?;
        }
        if let Some(short) = self.shortfall() {
            writeln!(
                f,
                "  offered {:.0} req/s of {} asked: the writes fell {:.1}% short of the schedule",
                self.offered_per_sec,
                s.rate.unwrap_or_default(),
                short * 100.0
            )?;
        }
        let connected = match self.connected_ns {
            Some(ns) => format!(" (all {} up after {})", s.connections, Took(ns)),
            None => String::new(),
        };
        writeln!(
            f,
            "  {} connections opened{connected}, {} errors",
            c.connections_opened, c.errors
        )?;
        if s.protocol == "udp" {
            let jitter = self
                .jitter_ns
                .map_or("-".to_owned(), |ns| Took(ns).to_string());
            writeln!(f, "  datagrams: {}, jitter {jitter}", Path(c))?;
        }
        if let Some(CorruptEcho {
            connection,
            message,
            offset,
        }) = self.first_corruption
        {
            let message = message.map_or("unknown".to_owned(), |m| m.to_string());
            writeln!(
                f,
                "  the first corrupted echo: connection {connection}, message {message}, from offset {offset}"
            )?;
        }
        match (c.cpu_ns, self.cpu_s_per_1k_requests, self.cpu_cores) {
            (Some(ns), per_1k, Some(cores)) => write!(
                f,
                "  load generator CPU: {:.2} s, {} s per 1,000 requests, {:.0}% of a core",
                ns as f64 / 1e9,
                per_1k.map_or("-".to_owned(), |s| format!("{s:.4}")),
                cores * 100.0
            ),
            _ => write!(
                f,
                "  load generator CPU: unknown (this host cannot measure it)"
            ),
        }
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        let seconds = (self.duration_ns as f64 / 1e9).max(f64::MIN_POSITIVE);
        write!(
            f,
            "[{:6.1}s] {:>8} req  {:8.2} MiB/s",
            (self.start_ns + self.duration_ns) as f64 / 1e9,
            c.requests,
            c.bytes as f64 / seconds / (1024.0 * 1024.0)
        )?;
        if let Some(l) = self.corrected.or(self.uncorrected) {
            write!(
                f,
                "  p50 {}  p99 {}  max {}",
                Took(l.p50_ns),
                Took(l.p99_ns),
                Took(l.max_ns)
            )?;
        }
        write!(f, "  {} errors  {} open", c.errors, self.connections_open)?;
        if let Some(jitter) = self.jitter_ns {
            write!(f, "  {}  jitter {}", Path(c), Took(jitter))?;
        }
        Ok(())
    }
}

/// What the path did to a run's datagrams, in a line.
pub struct Path<'a>(pub &'a Counts);

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        write!(
            f,
            "{} lost ({} echoed late), {} duplicated, {} reordered, {} corrupted",
            c.lost, c.late_echoes, c.duplicates, c.reordered, c.corrupted
        )
    }
}

/// One line of `bench --json` output: the stream is a `start`, the
/// `interval`s, then the `end` (the end alone without `--interval`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// The run's parameters, before any load.
    Start(Start),
    /// One interval's figures.
    Interval(Interval),
    /// The totals.
    End(Box<Report>),
}
