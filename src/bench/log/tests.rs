use super::*;
use crate::bench::{CorruptEcho, Mode, Plan};
use std::net::SocketAddr;

/// An open-loop run's parameters.
fn start(size: usize) -> Start {
    Plan {
        addr: SocketAddr::from(([127, 0, 0, 1], 7)),
        connections: 2,
        size,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(4),
        interval: Duration::from_secs(1),
        mode: Mode::Pingpong,
        udp: false,
        reset: false,
        rate: Some(100),
        pipeline: 1,
        connect_rate: None,
        bind: Vec::new(),
        proxy: None,
        loss_timeout: None,
    }
    .start("test")
}

/// Interval `index` of one second, whose echoes took `values` ns after
/// their write and 1 ms more after their schedule, with `index` µs more
/// jitter than the last, and a datagram of each fate (interval 1 the
/// first corrupted).
fn interval(index: u64, values: &[u64]) -> (Interval, Latencies) {
    let mut latencies = Latencies::empty();
    for &value in values {
        latencies.uncorrected.record(value).unwrap();
        latencies.corrected.record(value + 1_000_000).unwrap();
    }
    let n = values.len() as u64;
    let interval = Interval {
        index,
        start_ns: index * 1_000_000_000,
        duration_ns: 1_000_000_000,
        counts: Counts {
            requests: n,
            bytes: n * 64,
            sent: n,
            scheduled: Some(n + 1),
            cpu_ns: Some(1000),
            lost: index,
            late_echoes: 1,
            duplicates: index + 1,
            reordered: 2 * index,
            corrupted: u64::from(index >= 1),
            ..Counts::default()
        },
        connections_open: 2,
        send_lag_max_ns: Some(index),
        corrected: Latency::of(&latencies.corrected),
        uncorrected: Latency::of(&latencies.uncorrected),
        jitter_ns: Some(1000 * (index + 1)),
        first_corruption: (index >= 1).then_some(CorruptEcho {
            connection: 1,
            message: Some(index),
            offset: 9,
        }),
    };
    (interval, latencies)
}

fn intervals() -> Vec<(Interval, Latencies)> {
    let values: [&[u64]; 4] = [&[10, 20, 30], &[5_000_000, 7], &[1, 2, 3, 4, 5], &[999]];
    (0..4).map(|i| interval(i as u64, values[i])).collect()
}

/// The log of `intervals`, complete with its end line.
fn write(start: &Start, intervals: &[(Interval, Latencies)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut log = LogWriter::begin(&mut out, &mut serializer, start, wall).unwrap();
    for (interval, latencies) in intervals {
        log.interval(interval, latencies).unwrap();
    }
    let counts = Counts::sum(intervals.iter().map(|(i, _)| &i.counts));
    let mut report = Report::derive(start.clone(), counts, Duration::from_secs(1));
    report.intervals = intervals.len() as u64;
    log.end(&report).unwrap();
    out
}

fn merged(logs: &[&[u8]]) -> Report {
    let runs: Vec<_> = (logs.iter().enumerate())
        .map(|(i, log)| (format!("log {i}"), read(log).unwrap()))
        .collect();
    merge(&runs).unwrap()
}

#[test]
fn a_log_reads_back_with_the_same_counts_and_percentiles() {
    let intervals = intervals();
    let report = merged(&[&write(&start(64), &intervals)]);
    let mut whole = Latencies::empty();
    for (_, latencies) in &intervals {
        whole.corrected.add(&latencies.corrected).unwrap();
        whole.uncorrected.add(&latencies.uncorrected).unwrap();
    }
    assert_eq!(report.corrected, Latency::of(&whole.corrected));
    assert_eq!(report.uncorrected, Latency::of(&whole.uncorrected));
    assert_eq!(report.counts.requests, 11);
    assert_eq!(report.counts.scheduled, Some(15));
    assert_eq!(report.counts.cpu_ns, Some(4000));
    assert_eq!(report.measured_ns, 4_000_000_000);
    assert_eq!(report.send_lag_max_ns, Some(3));
    let c = &report.counts;
    let fates = (
        c.lost,
        c.late_echoes,
        c.duplicates,
        c.reordered,
        c.corrupted,
    );
    assert_eq!(fates, (6, 4, 10, 12, 3));
    // 3, 2, 5 and 1 echoes at 1, 2, 3 and 4 µs.
    assert_eq!(report.jitter_ns, Some(26_000 / 11));
    assert_eq!(report.first_corruption.and_then(|c| c.message), Some(1));
}

#[test]
fn two_halves_merge_into_the_whole() {
    let intervals = intervals();
    let whole = merged(&[&write(&start(64), &intervals)]);
    let first = write(&start(64), &intervals[..2]);
    let second = write(&start(64), &intervals[2..]);
    let halves = merged(&[&first, &second]);
    assert_eq!(halves.corrected, whole.corrected);
    assert_eq!(halves.uncorrected, whole.uncorrected);
    assert_eq!(halves.counts, whole.counts);
    assert_eq!(halves.jitter_ns, whole.jitter_ns);
    assert_eq!(halves.first_corruption, whole.first_corruption);
    assert_eq!(halves.measured_ns, whole.measured_ns);
    assert_eq!(halves.runs, 2);
    assert_eq!(halves.start.connections, 4);
    assert_eq!(halves.start.rate, Some(200));
}

#[test]
fn a_log_cut_anywhere_is_refused() {
    let log = write(&start(64), &intervals());
    for cut in (0..log.len()).step_by(7) {
        assert!(read(&log[..cut]).is_err(), "cut at {cut} was read");
    }
    // Cut at a line boundary: the end line's totals are missing.
    let text = std::str::from_utf8(&log).unwrap();
    let without_end = &text[..text.rfind("#echokit-end").unwrap()];
    assert!(matches!(
        read(without_end.as_bytes()),
        Err(LogError::Damaged(why)) if why.contains("no end line")
    ));
    // A line lost from the middle: the intervals no longer add up.
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let interval_line = lines
        .iter()
        .position(|l| l.starts_with("#echokit-interval"))
        .unwrap();
    let fewer: String = (lines.iter().enumerate())
        .filter(|(i, _)| *i != interval_line)
        .map(|(_, l)| *l)
        .collect();
    assert!(matches!(read(fewer.as_bytes()), Err(LogError::Damaged(_))));
}

#[test]
fn other_files_are_not_logs() {
    for file in [
        &b""[..],
        b"hello\n",
        b"{\"event\":\"end\"}\n",
        &[0xff, 0xfe, 0],
    ] {
        assert!(
            matches!(read(file), Err(LogError::NotALog(_))),
            "{file:?} was taken for a log"
        );
    }
}

#[test]
fn runs_of_different_shapes_do_not_merge() {
    let a = read(&write(&start(64), &intervals())).unwrap();
    let b = read(&write(&start(128), &intervals())).unwrap();
    let err = merge(&[("a".to_owned(), a), ("b".to_owned(), b)]).unwrap_err();
    assert!(err.0.contains("cannot merge b"), "{err}");
}
