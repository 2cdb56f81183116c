//! `echokit bench` through impaired paths that the tests build (the
//! relays of `testkit::impair`; this kernel has no `sch_netem`, so no
//! `tc netem`): what the UDP relay did to the datagrams (drops, duplicates,
//! corruption, reordering, delay and jitter) is what the bench reports,
//! exactly where the relay is deterministic; and a 300 ms TCP round trip
//! in open loop is measured, not timed out.
//!
//! One connection each, so that the bench's echoes are, in order, a
//! prefix of what the relay delivered.

#![cfg(not(target_os = "wasi"))]

use echokit::bench::{Event, Report};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;
use testkit::bench::bench_run;
use testkit::impair::{Delivery, Impairment, TcpDelay, UdpRelay};
use testkit::{native_server, Build, Target};

/// How long a run may overrun before it is killed.
const GRACE: Duration = Duration::from_secs(30);

/// The native `echokit bench --connect ADDR ARGS --duration SECS --json`,
/// which must succeed: its events.
fn bench(addr: SocketAddr, args: &[&str], secs: f64) -> Vec<Event> {
    let target = Target::new(Build::Native);
    let run = bench_run(
        target.must(),
        addr,
        args,
        Duration::from_secs_f64(secs),
        GRACE,
    );
    assert!(
        run.status.is_some_and(|s| s.success()),
        "bench {args:?} failed ({:?}): {}",
        run.status,
        run.stderr
    );
    (run.stdout.lines())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The end event, last of `events`.
fn end(events: &[Event]) -> &Report {
    match events.last() {
        Some(Event::End(report)) => report,
        other => panic!("the last event is not the end: {other:?}"),
    }
}

/// What the bench should have counted of `deliveries`, the echoes the
/// relay delivered to one socket in order, up to the `echoes`th intact
/// first echo.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    duplicates: u64,
    reordered: u64,
    corrupted: u64,
    /// The mean of RFC 3550's running jitter over the round trips, in ns.
    jitter_ns: f64,
}

fn expected(deliveries: &[Delivery], echoes: u64) -> Expected {
    let mut seen = HashSet::new();
    let mut latest = None;
    let (mut jitter, mut last, mut sum): (f64, Option<f64>, f64) = (0.0, None, 0.0);
    let mut e = Expected::default();
    let mut intact = 0;
    for d in deliveries {
        if intact == echoes {
            break;
        }
        let first = seen.insert(d.seq);
        if first {
            e.reordered += u64::from(latest.is_some_and(|latest| latest > d.seq));
            latest = latest.max(Some(d.seq));
        }
        match (d.corrupted, first) {
            (true, _) => e.corrupted += 1,
            (false, false) => e.duplicates += 1,
            (false, true) => {
                let rtt = d.round_trip.as_nanos() as f64;
                if let Some(last) = last {
                    jitter += ((rtt - last).abs() - jitter) / 16.0;
                }
                last = Some(rtt);
                sum += jitter;
                intact += 1;
            }
        }
    }
    assert_eq!(
        intact, echoes,
        "the bench counted echoes the relay never delivered"
    );
    e.jitter_ns = sum / echoes.max(1) as f64;
    e
}

#[test]
fn a_wan_path_is_measured_as_the_relay_impaired_it() {
    let server = native_server(&["--udp"]);
    // 200 datagrams a second for 4 s, the first 2.5 s of them impaired:
    // those that follow are delivered in order, long before the run ends.
    let relay = UdpRelay::start(
        server.addr,
        Impairment {
            seed: 24,
            drop: 0.02,
            duplicate: 0.10,
            corrupt: 0.01,
            reorder: 0.05,
            hold: Duration::from_millis(60),
            delay: Duration::from_millis(150),
            jitter: Duration::from_millis(20),
            impair_below: 500,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("wan.hlog");
    let log_path = log_path.to_str().unwrap();
    let args = [
        "--udp",
        "--connections",
        "1",
        "--rate",
        "200",
        "--pipeline",
        "1000",
        "--interval",
        "1",
        "--histogram-log",
        log_path,
    ];
    let events = bench(relay.addr, &args, 4.0);
    let report = end(&events);
    let log = relay.log();
    let fates = log.fates;
    println!("relay: {fates:?}; bench: {:?}", report.counts);
    assert!(
        fates.dropped > 0 && fates.duplicated > 0 && fates.corrupted > 0 && fates.held > 0,
        "the relay did not impair the path as asked: {fates:?}"
    );
    let c = &report.counts;
    let want = expected(&log.deliveries, c.requests);
    assert!(want.reordered > 0, "the path reordered nothing: {want:?}");
    let got = (c.duplicates, c.reordered, c.corrupted);
    assert_eq!(
        got,
        (want.duplicates, want.reordered, want.corrupted),
        "{report:?}"
    );
    assert_eq!(want.duplicates, fates.duplicated);
    assert_eq!(want.corrupted, fates.corrupted);
    // Every drop is long past its loss timeout at the end, and nothing
    // else was lost: the timeout followed the 300 ms round trips.
    assert_eq!((c.lost, c.late_echoes), (fates.dropped, 0), "{report:?}");
    let rtt = report.uncorrected.expect("round trips").p50_ns;
    assert!((290_000_000..450_000_000).contains(&rtt), "{report:?}");
    let jitter = report.jitter_ns.expect("a jitter") as f64;
    println!(
        "jitter: bench {jitter:.0} ns, relay {:.0} ns",
        want.jitter_ns
    );
    assert!(
        (jitter - want.jitter_ns).abs() < 1e6 + 0.1 * want.jitter_ns,
        "jitter {jitter} ns, the relay's {} ns",
        want.jitter_ns
    );
    let corruption = report.first_corruption.expect("a corrupted echo");
    assert_eq!(corruption.connection, 0);
    let intervals: Vec<_> = (events.iter())
        .filter_map(|e| match e {
            Event::Interval(interval) => Some(interval.counts),
            _ => None,
        })
        .collect();
    assert_eq!(echokit::bench::Counts::sum(&intervals), *c);
    // `report` reads the same counts, jitter and corruption from the log.
    let merged = Target::new(Build::Native)
        .must()
        .args(["report", "--json", log_path])
        .output()
        .expect("run echokit report");
    let merged = String::from_utf8_lossy(&merged.stdout);
    let Ok(Event::End(merged)) = serde_json::from_str(merged.trim()) else {
        panic!("report printed no end event: {merged}");
    };
    assert_eq!(merged.counts, *c);
    assert_eq!(merged.jitter_ns, report.jitter_ns);
    assert_eq!(merged.first_corruption, report.first_corruption);
}

#[test]
fn drops_duplicates_corruption_and_late_echoes_are_counted_exactly() {
    let server = native_server(&["--udp"]);
    // Closed loop, no delay: a held datagram's echo comes 400 ms late,
    // after its 100 ms loss timeout.
    let relay = UdpRelay::start(
        server.addr,
        Impairment {
            seed: 7,
            drop: 0.05,
            duplicate: 0.05,
            corrupt: 0.05,
            reorder: 0.05,
            hold: Duration::from_millis(400),
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            impair_below: 120,
        },
    );
    let args = ["--udp", "--connections", "1", "--loss-timeout", "0.1"];
    let report = end(&bench(relay.addr, &args, 3.0)).clone();
    let fates = relay.log().fates;
    println!("relay: {fates:?}; bench: {:?}", report.counts);
    let c = &report.counts;
    assert!(
        c.sent > 130,
        "the run did not get past the impaired datagrams in 3 s: {report:?}"
    );
    assert!(fates.held > 0 && fates.dropped > 0 && fates.corrupted > 0 && fates.duplicated > 0);
    assert_eq!(c.lost, fates.dropped + fates.held, "{report:?}");
    assert_eq!(c.late_echoes, fates.held, "{report:?}");
    assert_eq!(c.duplicates, fates.duplicated, "{report:?}");
    assert_eq!(c.corrupted, fates.corrupted, "{report:?}");
    assert_eq!(c.reordered, 0, "{report:?}");
    assert_eq!(report.start.loss_timeout_ns, Some(100_000_000));
}

#[test]
fn a_300_ms_tcp_round_trip_is_measured_in_open_loop() {
    let server = native_server(&[]);
    let relay = TcpDelay::start(server.addr, Duration::from_millis(150));
    // 50 messages a second per connection, 15 in flight on each.
    let args = ["--connections", "2", "--rate", "100", "--pipeline", "32"];
    let report = end(&bench(relay.addr, &args, 2.0)).clone();
    println!("{report:?}");
    let c = &report.counts;
    assert_eq!(c.errors, 0, "{report:?}");
    // The pipeline holds the 15 in flight: no write waits for an echo (a
    // busy machine may still write one a few milliseconds late).
    let lag = report.send_lag_max_ns.expect("open loop");
    assert!(lag < 100_000_000, "writes waited for echoes: {report:?}");
    assert!(c.requests >= 100, "{report:?}");
    for latency in [report.uncorrected, report.corrected] {
        let p50 = latency.expect("latencies").p50_ns;
        assert!((300_000_000..450_000_000).contains(&p50), "{report:?}");
    }
}
