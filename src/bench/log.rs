//! Histogram logs: each interval's latency histograms as an HdrHistogram
//! interval log (V2 compressed histograms, base64, one line each; tags
//! `corrected` and `uncorrected`; values in nanoseconds, `Interval_Max`
//! in milliseconds), which other HdrHistogram tools read, with the run's
//! events as comments, which `echokit report` merges across runs:
//!
//! ```text
//! #echokit histogram log, schema 2 (latencies in ns)
//! #echokit-start {"event":"start",...}
//! #[StartTime: 1764000000.123 (seconds since epoch)]
//! #[BaseTime: 1764000000.123 (seconds since epoch)]
//! #[MaxValueDivisor: 1000000.000]
//! Tag=corrected,0.000,1.000,1.234,HISTFAAAA...
//! Tag=uncorrected,0.000,1.000,0.210,HISTFAAAA...
//! #echokit-interval {"event":"interval","index":0,...}
//! ...
//! #echokit-end {"event":"end",...}
//! ```
//!
//! The end line is written last: a log without one, or whose intervals do
//! not add up to it, is truncated.

use super::record::Latencies;
use super::report::{mean_jitter, Counts, Event, Interval, Latency, Load, Report, Start, SCHEMA};
use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriter, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, SystemTime};

/// The first line's text, after the `#`.
const HEADER: &str = "echokit histogram log";
/// Prefixes of the event comments.
const START: &str = "echokit-start ";
const INTERVAL: &str = "echokit-interval ";
const END: &str = "echokit-end ";
/// Tags of the two histograms of an interval.
const CORRECTED: &str = "corrected";
const UNCORRECTED: &str = "uncorrected";

/// Writes a run's histogram log as its intervals end.
pub struct LogWriter<'a, W: Write> {
    log: IntervalLogWriter<'a, 'a, W, V2DeflateSerializer>,
    start: Start,
}

impl<'a, W: Write> LogWriter<'a, W> {
    /// Writes the header of the run `start`, measured from `wall`, to
    /// `out` (a line-buffered file, so that each line is out when
    /// written).
    pub fn begin(
        out: &'a mut W,
        serializer: &'a mut V2DeflateSerializer,
        start: &Start,
        wall: SystemTime,
    ) -> io::Result<Self> {
        let log = IntervalLogWriterBuilder::new()
            .add_comment(&format!("{HEADER}, schema {SCHEMA} (latencies in ns)"))
            .add_comment(&format!("{START}{}", json(&Event::Start(start.clone()))))
            .with_start_time(wall)
            .with_base_time(wall)
            .with_max_value_divisor(1e6)
            .begin_log_with(out, serializer)?;
        Ok(LogWriter {
            log,
            start: start.clone(),
        })
    }

    /// Writes `interval`, its histograms and its figures.
    pub fn interval(&mut self, interval: &Interval, latencies: &Latencies) -> io::Result<()> {
        let start = Duration::from_nanos(interval.start_ns);
        let length = Duration::from_nanos(interval.duration_ns);
        let mut tagged = Vec::new();
        if self.start.load == Load::Open {
            tagged.push((&latencies.corrected, CORRECTED));
        }
        if self.start.mode != super::Mode::Stream {
            tagged.push((&latencies.uncorrected, UNCORRECTED));
        }
        for (histogram, tag) in tagged {
            self.log
                .write_histogram(histogram, start, length, Tag::new(tag))
                .map_err(|err| io::Error::other(err.to_string()))?;
        }
        let event = Event::Interval(interval.clone());
        self.log
            .write_comment(&format!("{INTERVAL}{}", json(&event)))
    }

    /// Writes the end line, which makes the log complete.
    pub fn end(&mut self, report: &Report) -> io::Result<()> {
        let event = Event::End(Box::new(report.clone()));
        self.log.write_comment(&format!("{END}{}", json(&event)))
    }
}

fn json(event: &Event) -> String {
    // Plain structs of numbers and strings always serialize.
    serde_json::to_string(event).unwrap_or_default()
}

/// Why a file cannot be read as a histogram log.
#[derive(Debug)]
pub enum LogError {
    /// It is not an echokit histogram log at all.
    NotALog(String),
    /// It began as one but is cut short or damaged.
    Damaged(String),
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::NotALog(why) => write!(f, "not an echokit histogram log: {why}"),
            LogError::Damaged(why) => write!(f, "truncated or damaged histogram log: {why}"),
        }
    }
}

impl std::error::Error for LogError {}

/// One interval read back, with its histograms.
#[derive(Clone, Debug)]
struct Logged {
    interval: Interval,
    /// When it began, since the epoch.
    began: Duration,
    latencies: Latencies,
}

/// A histogram log read back whole.
#[derive(Clone, Debug)]
pub struct RunLog {
    start: Start,
    intervals: Vec<Logged>,
    end: Report,
}

/// Reads a histogram log that `bench --histogram-log` wrote.
pub fn read(bytes: &[u8]) -> Result<RunLog, LogError> {
    let not_a_log = |why: &str| Err(LogError::NotALog(why.to_owned()));
    let damaged = |line: usize, why: &str| LogError::Damaged(format!("line {line}: {why}"));
    let Ok(text) = std::str::from_utf8(bytes) else {
        return not_a_log("it is not text");
    };
    let mut lines = text
        .split_inclusive('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l));
    match lines.next() {
        None => return not_a_log("it is empty"),
        Some((_, first)) if !first.starts_with(&format!("#{HEADER}")) => {
            return not_a_log(&format!(
                "its first line is not `#{HEADER}, ...` (echokit report reads what \
                 `echokit bench --histogram-log FILE` writes)"
            ))
        }
        Some(_) => {}
    }
    let mut start: Option<Start> = None;
    let mut base = None;
    let mut pending = Latencies::empty();
    let mut intervals = Vec::new();
    let mut end = None;
    for (number, line) in lines {
        let fail = |why: &str| damaged(number, why);
        if !line.ends_with('\n') {
            return Err(fail("the log ends in the middle of a line"));
        }
        if end.is_some() {
            return Err(fail("there is more after the end line"));
        }
        let body = line.trim_end();
        let event = |prefix: &str| body.strip_prefix('#')?.strip_prefix(prefix);
        if let Some(json) = event(START) {
            let Ok(Event::Start(first)) = serde_json::from_str(json) else {
                return Err(fail("the start line is not a start event"));
            };
            if first.schema != SCHEMA {
                return not_a_log(&format!(
                    "it has schema {}; this echokit reads schema {SCHEMA}",
                    first.schema
                ));
            }
            start = Some(first);
        } else if let Some(json) = event(INTERVAL) {
            let Ok(Event::Interval(interval)) = serde_json::from_str(json) else {
                return Err(fail("an interval line is not an interval event"));
            };
            let base = base.ok_or_else(|| fail("an interval before the BaseTime line"))?;
            let latencies = std::mem::replace(&mut pending, Latencies::empty());
            check_counts(&interval, &latencies).map_err(|why| fail(&why))?;
            intervals.push(Logged {
                began: base + Duration::from_nanos(interval.start_ns),
                interval,
                latencies,
            });
        } else if let Some(json) = event(END) {
            let Ok(Event::End(report)) = serde_json::from_str(json) else {
                return Err(fail("the end line is not an end event"));
            };
            end = Some(*report);
        } else {
            match IntervalLogIterator::new(line.as_bytes()).next() {
                None => {}
                Some(Ok(LogEntry::BaseTime(time))) => base = Some(time),
                Some(Ok(LogEntry::StartTime(_))) => {}
                Some(Ok(LogEntry::Interval(logged))) => {
                    let histogram = decode(logged.encoded_histogram()).map_err(|why| fail(&why))?;
                    let slot = match logged.tag().map(|tag| tag.as_str()) {
                        Some(CORRECTED) => &mut pending.corrected,
                        Some(UNCORRECTED) => &mut pending.uncorrected,
                        _ => return Err(fail("a histogram with neither echokit tag")),
                    };
                    slot.add(&histogram)
                        .map_err(|_| fail("a histogram's values are out of range"))?;
                }
                Some(Err(_)) => return Err(fail("not a line of an interval log")),
            }
        }
    }
    let start = start.ok_or_else(|| LogError::Damaged("no start line".to_owned()))?;
    let end = end.ok_or_else(|| {
        LogError::Damaged(
            "no end line: the run did not finish writing it (killed, or the log was cut)"
                .to_owned(),
        )
    })?;
    let sum = Counts::sum(intervals.iter().map(|logged| &logged.interval.counts));
    if sum != end.counts || intervals.len() as u64 != end.intervals {
        return Err(LogError::Damaged(format!(
            "its {} intervals do not add up to its end line: lines are missing",
            intervals.len()
        )));
    }
    Ok(RunLog {
        start,
        intervals,
        end,
    })
}

/// A base64 V2 histogram.
fn decode(encoded: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|err| format!("a histogram is not base64 ({err})"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|err| format!("a histogram does not decode ({err})"))
}

/// An interval's requests are the values of its histograms.
fn check_counts(interval: &Interval, latencies: &Latencies) -> Result<(), String> {
    let requests = interval.counts.requests;
    let corrected = latencies.corrected.len();
    let uncorrected = latencies.uncorrected.len();
    let open = interval.counts.scheduled.is_some();
    match uncorrected == requests && (!open || corrected == requests) {
        true => Ok(()),
        false => Err(format!(
            "interval {} counts {requests} requests but its histograms hold {uncorrected} and {corrected} values",
            interval.index
        )),
    }
}

/// Why logs cannot be merged.
#[derive(Debug)]
pub struct Incompatible(pub String);

impl fmt::Display for Incompatible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Incompatible {}

/// Merges runs, each named (its file) for messages, into one report:
/// counts and histograms added, rates over the time any run was
/// measuring.
pub fn merge(runs: &[(String, RunLog)]) -> Result<Report, Incompatible> {
    let Some((first_name, first)) = runs.first() else {
        return Err(Incompatible("no log to merge".to_owned()));
    };
    let shape = |s: &Start| (s.protocol.clone(), s.mode, s.size, s.load);
    let mut start = first.start.clone();
    start.connections = 0;
    start.rate = start.rate.map(|_| 0);
    let mut builds: Vec<&str> = Vec::new();
    let mut latencies = Latencies::empty();
    let mut spans = Vec::new();
    let mut lag = None;
    let mut connected = None;
    let mut intervals = 0;
    for (name, run) in runs {
        let s = &run.start;
        if shape(s) != shape(&first.start) {
            return Err(Incompatible(format!(
                "cannot merge {name} ({} {:?} {} B, {:?} loop) with {first_name} ({} {:?} {} B, {:?} loop): \
                 only runs of the same protocol, mode, size and loop merge",
                s.protocol, s.mode, s.size, s.load, first.start.protocol, first.start.mode,
                first.start.size, first.start.load
            )));
        }
        start.connections += s.connections;
        start.rate = start.rate.zip(s.rate).map(|(a, b)| a + b);
        if !builds.contains(&s.build.as_str()) {
            builds.push(&s.build);
        }
        for logged in &run.intervals {
            // Histograms of the same bounds as those recorded.
            latencies.corrected.add(&logged.latencies.corrected).ok();
            latencies
                .uncorrected
                .add(&logged.latencies.uncorrected)
                .ok();
            let length = Duration::from_nanos(logged.interval.duration_ns);
            spans.push((logged.began, logged.began + length));
            lag = lag.max(logged.interval.send_lag_max_ns);
            intervals += 1;
        }
        connected = connected.max(run.end.connected_ns);
    }
    start.build = builds.join("+");
    let all = runs.iter().flat_map(|(_, run)| &run.intervals);
    let counts = Counts::sum(all.map(|logged| &logged.interval.counts));
    let mut report = Report::derive(start, counts, covered(spans));
    let intervals_of = || runs.iter().flat_map(|(_, run)| &run.intervals);
    report.jitter_ns = mean_jitter(
        intervals_of().map(|logged| (logged.interval.jitter_ns, logged.interval.counts.requests)),
    );
    report.first_corruption = intervals_of().find_map(|logged| logged.interval.first_corruption);
    report.runs = runs.len() as u64;
    report.intervals = intervals;
    report.send_lag_max_ns = lag;
    report.corrected = Latency::of(&latencies.corrected);
    report.uncorrected = Latency::of(&latencies.uncorrected);
    report.connected_ns = connected;
    Ok(report)
}

/// How much time the union of `spans` covers.
fn covered(mut spans: Vec<(Duration, Duration)>) -> Duration {
    spans.sort();
    let mut total = Duration::ZERO;
    let mut reach: Option<Duration> = None;
    for (from, to) in spans {
        let from = reach.map_or(from, |reach| from.max(reach));
        total += to.saturating_sub(from);
        reach = Some(reach.map_or(to, |reach| reach.max(to)));
    }
    total
}

#[cfg(test)]
mod tests;
