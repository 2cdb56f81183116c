//! What the flows measure, an interval at a time: counts and latency
//! histograms, added into the run's totals as each interval ends.

use super::report::{mean_jitter, nanos, CorruptEcho, Counts, Interval, Latency, LATE};
use hdrhistogram::Histogram;
use std::time::Duration;

/// The longest latency a histogram holds (longer ones count as this).
const LONGEST: u64 = 3_600_000_000_000;

/// An empty latency histogram: 1 ns to an hour, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LONGEST, 3).expect("constant bounds are valid")
}

/// The latency histograms of an interval or of a whole run.
#[derive(Clone, Debug)]
pub struct Latencies {
    /// Open loop: from each message's scheduled send.
    pub corrected: Histogram<u64>,
    /// From each message's write (connect mode: from the connect).
    pub uncorrected: Histogram<u64>,
}

impl Latencies {
    /// Histograms with nothing in them.
    pub(crate) fn empty() -> Self {
        Latencies {
            corrected: histogram(),
            uncorrected: histogram(),
        }
    }

    fn add(&mut self, other: &Latencies) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.corrected.add(&other.corrected);
        let _ = self.uncorrected.add(&other.uncorrected);
    }

    fn reset(&mut self) {
        self.corrected.reset();
        self.uncorrected.reset();
    }
}

/// The current interval's figures, and the totals of those that ended.
pub(super) struct Recorder {
    counts: Counts,
    lag_max: Option<u64>,
    latencies: Latencies,
    /// The sockets' jitter estimates at each echo of the interval, summed,
    /// and how many there were.
    jitter_sum_ns: f64,
    jitter_samples: u64,
    first_corruption: Option<CorruptEcho>,
    open_loop: bool,
    /// Totals of the intervals ended since the last [`Recorder::restart`].
    pub totals: Counts,
    /// Their latencies.
    pub total_latencies: Latencies,
    /// Their latest send.
    pub total_lag_max: Option<u64>,
    /// How many ended.
    pub intervals: u64,
    /// Their jitter and echoes.
    jitters: Vec<(Option<u64>, u64)>,
    /// Their first corrupted echo.
    pub total_first_corruption: Option<CorruptEcho>,
}

impl Recorder {
    /// A recorder for an open- or closed-loop run.
    pub(super) fn new(open_loop: bool) -> Self {
        let counts = Counts {
            scheduled: open_loop.then_some(0),
            ..Counts::default()
        };
        Recorder {
            counts,
            lag_max: None,
            latencies: Latencies::empty(),
            jitter_sum_ns: 0.0,
            jitter_samples: 0,
            first_corruption: None,
            open_loop,
            totals: counts,
            total_latencies: Latencies::empty(),
            total_lag_max: None,
            intervals: 0,
            jitters: Vec::new(),
            total_first_corruption: None,
        }
    }

    /// An echo came back: `uncorrected` after its write (or connect),
    /// `corrected` after its scheduled send (open loop).
    pub(super) fn echo(&mut self, corrected: Option<Duration>, uncorrected: Duration) {
        self.counts.requests += 1;
        if let Some(corrected) = corrected {
            self.latencies
                .corrected
                .saturating_record(nanos(corrected).max(1));
        }
        self.latencies
            .uncorrected
            .saturating_record(nanos(uncorrected).max(1));
    }

    /// Echoed bytes were verified.
    pub(super) fn bytes(&mut self, n: u64) {
        self.counts.bytes += n;
    }

    /// A message's first byte was written, `lag` after it was due (open
    /// loop).
    pub(super) fn sent(&mut self, lag: Option<Duration>) {
        self.counts.sent += 1;
        if let Some(lag) = lag {
            let lag_ns = nanos(lag);
            self.lag_max = Some(self.lag_max.unwrap_or(0).max(lag_ns));
            self.counts.late += u64::from(lag > LATE);
        }
    }

    /// Datagrams were given up on.
    pub(super) fn lost(&mut self, n: u64) {
        self.counts.lost += n;
    }

    /// An echo came back after its datagram was counted lost.
    pub(super) fn late_echo(&mut self) {
        self.counts.late_echoes += 1;
    }

    /// A datagram was echoed again.
    pub(super) fn duplicate(&mut self) {
        self.counts.duplicates += 1;
    }

    /// An echo came back after a later datagram's.
    pub(super) fn reordered(&mut self) {
        self.counts.reordered += 1;
    }

    /// An echo differed from its datagram.
    pub(super) fn corrupted(&mut self, corrupt: CorruptEcho) {
        self.counts.corrupted += 1;
        self.first_corruption.get_or_insert(corrupt);
    }

    /// A socket's jitter estimate after an echo, in nanoseconds.
    pub(super) fn jitter(&mut self, ns: f64) {
        self.jitter_sum_ns += ns;
        self.jitter_samples += 1;
    }

    /// The jitter of the run so far: the intervals' mean.
    pub(super) fn total_jitter(&self) -> Option<u64> {
        mean_jitter(self.jitters.iter().copied())
    }

    /// A connection was opened.
    pub(super) fn opened(&mut self) {
        self.counts.connections_opened += 1;
    }

    /// A connection failed.
    pub(super) fn error(&mut self) {
        self.counts.errors += 1;
    }

    /// Forgets everything so far (the warm-up).
    pub(super) fn restart(&mut self) {
        *self = Recorder::new(self.open_loop);
    }

    /// Ends the current interval, in which `scheduled` messages were due
    /// and the generator used `cpu`: hands it and its latencies to
    /// `observe`, then adds it to the totals and starts the next.
    pub(super) fn cut<R>(
        &mut self,
        span: (Duration, Duration),
        scheduled: u64,
        cpu: Option<Duration>,
        connections_open: usize,
        observe: impl FnOnce(&Interval, &Latencies) -> R,
    ) -> R {
        let mut counts = self.counts;
        counts.scheduled = self.open_loop.then_some(scheduled);
        counts.cpu_ns = cpu.map(nanos);
        let interval = Interval {
            index: self.intervals,
            start_ns: nanos(span.0),
            duration_ns: nanos(span.1),
            counts,
            connections_open: connections_open as u64,
            send_lag_max_ns: self.lag_max,
            corrected: Latency::of(&self.latencies.corrected),
            uncorrected: Latency::of(&self.latencies.uncorrected),
            jitter_ns: (self.jitter_samples > 0)
                .then(|| (self.jitter_sum_ns / self.jitter_samples as f64) as u64),
            first_corruption: self.first_corruption,
        };
        let observed = observe(&interval, &self.latencies);
        match self.intervals {
            0 => self.totals = counts,
            _ => self.totals += &counts,
        }
        self.total_latencies.add(&self.latencies);
        self.total_lag_max = self.total_lag_max.max(self.lag_max);
        self.intervals += 1;
        self.jitters.push((interval.jitter_ns, counts.requests));
        self.total_first_corruption = self.total_first_corruption.or(self.first_corruption);
        self.jitter_sum_ns = 0.0;
        self.jitter_samples = 0;
        self.first_corruption = None;
        self.counts = Counts {
            scheduled: counts.scheduled.map(|_| 0),
            ..Counts::default()
        };
        self.lag_max = None;
        self.latencies.reset();
        observed
    }
}
