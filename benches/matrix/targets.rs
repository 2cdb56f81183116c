//! The performance targets, and `--check`, which tests the last results
//! against them.

use crate::results::Results;
use crate::rows::ROWS;
use crate::servers::{Server, NATIVE, TOKIO};

/// What a target compares.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Metric {
    /// The row's figure (req/s or MiB/s): higher is better.
    Throughput,
    /// Median echo latency: lower is better.
    P50,
    /// The server's CPU time per request (per MiB on stream rows): lower
    /// is better.
    Cpu,
    /// The lowest round over the highest, of one server: 1 is steady.
    Spread,
}

/// The bound a ratio must keep.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

/// Which rows a target covers.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rows {
    /// Every TCP row (the tokio reference echoes TCP only).
    Tcp,
    Only(&'static [&'static str]),
}

/// `numerator / denominator` of `metric` on each of `rows` must keep
/// `bound` (for [`Metric::Spread`], both name the same server); servers
/// are named as in the table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    pub(crate) rows: Rows,
    pub(crate) metric: Metric,
    pub(crate) numerator: &'static str,
    pub(crate) denominator: &'static str,
    pub(crate) bound: Bound,
    /// The issue that set it.
    pub(crate) why: &'static str,
}

/// The wasm build under echokit-host, the fast host of our own.
const HOST: &str = "wasm@host";
/// Native echokit on epoll.
const EPOLL: &str = "native@epoll";
const PINGPONG: &[&str] = &["pingpong-1x1", "pingpong-50x512", "pingpong-1000x128"];
const STREAM: &[&str] = &["stream-1x65536", "stream-8x65536"];

const fn target(
    rows: &'static [&'static str],
    metric: Metric,
    numerator: &'static str,
    denominator: &'static str,
    bound: Bound,
    why: &'static str,
) -> Target {
    Target {
        rows: Rows::Only(rows),
        metric,
        numerator,
        denominator,
        bound,
        why,
    }
}

/// The performance targets that `--check` (`just bench-check`) tests.
pub(crate) const TARGETS: &[Target] = &[
    // Native echokit never slower than tokio...
    Target {
        rows: Rows::Tcp,
        metric: Metric::Throughput,
        numerator: NATIVE,
        denominator: TOKIO,
        bound: Bound::AtLeast(1.0),
        why: "native at least tokio's speed",
    },
    // ...and ahead of it where io_uring saves system calls.
    target(
        &["pingpong-50x512", "pingpong-1000x128"],
        Metric::Throughput,
        NATIVE,
        TOKIO,
        Bound::AtLeast(1.15),
        "issue 17: io_uring",
    ),
    target(
        &["pingpong-1x1"],
        Metric::Throughput,
        NATIVE,
        TOKIO,
        Bound::AtLeast(1.05),
        "issue 17: io_uring",
    ),
    target(
        &["connect-8x64"],
        Metric::Throughput,
        NATIVE,
        TOKIO,
        Bound::AtLeast(1.2),
        "issue 17: io_uring",
    ),
    target(
        &["udp-pingpong-50x512"],
        Metric::Throughput,
        NATIVE,
        EPOLL,
        Bound::AtLeast(1.3),
        "issue 17: batched UDP",
    ),
    target(
        PINGPONG,
        Metric::Cpu,
        NATIVE,
        TOKIO,
        Bound::AtMost(0.75),
        "issue 17: CPU per echo",
    ),
    // The default backend echoes streams from its receive buffers: no
    // slower, and no more CPU per MiB, than epoll.
    target(
        STREAM,
        Metric::Throughput,
        NATIVE,
        EPOLL,
        Bound::AtLeast(1.0),
        "issue 22: zero-copy streams",
    ),
    target(
        STREAM,
        Metric::Cpu,
        NATIVE,
        EPOLL,
        Bound::AtMost(1.0),
        "issue 22: zero-copy streams",
    ),
    target(
        &["pingpong-50x512"],
        Metric::Spread,
        NATIVE,
        NATIVE,
        Bound::AtLeast(0.9),
        "issue 17: even spread over event loops",
    ),
    // Native single-connection latency within 10% of tokio's.
    target(
        &["pingpong-1x1"],
        Metric::P50,
        NATIVE,
        TOKIO,
        Bound::AtMost(1.10),
        "native latency",
    ),
    // The wasm build on the wasmtime CLI keeps most of native's speed...
    target(
        &["pingpong-50x512"],
        Metric::Throughput,
        "wasm",
        NATIVE,
        Bound::AtLeast(0.7),
        "wasm on the wasmtime CLI",
    ),
    target(
        &["pingpong-1000x128", "stream-1x65536", "stream-8x65536"],
        Metric::Throughput,
        "wasm",
        NATIVE,
        Bound::AtLeast(0.5),
        "wasm on the wasmtime CLI",
    ),
    // ...and nearly all of it on the fast host.
    target(
        PINGPONG,
        Metric::Throughput,
        HOST,
        NATIVE,
        Bound::AtLeast(0.85),
        "issue 14: the fast host",
    ),
    target(
        STREAM,
        Metric::Throughput,
        HOST,
        NATIVE,
        Bound::AtLeast(0.95),
        "issue 14: the fast host",
    ),
    target(
        &["udp-pingpong-50x512"],
        Metric::Throughput,
        HOST,
        NATIVE,
        Bound::AtLeast(0.85),
        "issue 14: UDP in the wasm build",
    ),
];

impl Target {
    /// The rows this target judges.
    pub(crate) fn rows(&self) -> Vec<&'static str> {
        match self.rows {
            Rows::Tcp => ROWS
                .iter()
                .filter(|row| !row.udp)
                .map(|row| row.name)
                .collect(),
            Rows::Only(names) => names.to_vec(),
        }
    }
}

/// `numerator / denominator`, when both are there.
pub(crate) fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    match (numerator, denominator) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

/// `metric`'s median for `row` on `server` (for [`Metric::Spread`], its
/// lowest round over its highest).
pub(crate) fn metric(results: &Results, row: &str, server: &str, metric: Metric) -> Option<f64> {
    let median = results.median(row, server)?;
    match metric {
        Metric::Throughput => median.value,
        Metric::P50 => median.p50_us,
        Metric::Cpu => median.cpu_us,
        Metric::Spread => ratio(median.low, median.high),
    }
}

/// Tests `results` against [`TARGETS`], printing a line per check;
/// whether all passed.
pub(crate) fn check(results: &Results) -> bool {
    let mut passed = true;
    let mut report = |ok: bool, line: String| {
        passed &= ok;
        println!("{} {line}", if ok { "PASS" } else { "FAIL" });
    };
    for target in TARGETS {
        for row in target.rows() {
            let num = metric(results, row, target.numerator, target.metric);
            let den = metric(results, row, target.denominator, target.metric);
            let (name, value) = match target.metric {
                Metric::Spread => (
                    format!("{row}: {} lowest/highest round", target.numerator),
                    num,
                ),
                other => {
                    let what = match other {
                        Metric::P50 => "p50 latency",
                        Metric::Cpu => "server CPU per request",
                        _ => "throughput",
                    };
                    let (n, d) = (target.numerator, target.denominator);
                    (format!("{row}: {n}/{d} {what}"), ratio(num, den))
                }
            };
            let Some(value) = value else {
                let unmeasured: Vec<&str> = [target.numerator, target.denominator]
                    .into_iter()
                    .filter(|server| results.median(row, server).is_none())
                    .collect();
                let why = match unmeasured.is_empty() {
                    false => format!(
                        "{} not measured in these results; run `just bench` for the whole matrix",
                        unmeasured.join(" and ")
                    ),
                    true => "no successful measurement to compare".to_owned(),
                };
                report(false, format!("{name}: {why}"));
                continue;
            };
            let (ok, sign, bound) = match target.bound {
                Bound::AtLeast(bound) => (value >= bound, "≥", bound),
                Bound::AtMost(bound) => (value <= bound, "≤", bound),
            };
            let unit = match target.metric {
                Metric::P50 => "us".to_owned(),
                Metric::Cpu => "us CPU".to_owned(),
                Metric::Throughput | Metric::Spread => (results.median(row, target.numerator))
                    .map_or(String::new(), |median| median.unit.clone()),
            };
            let show = |v: Option<f64>| format!("{:.1} {unit}", v.unwrap_or(f64::NAN));
            let figures = match target.metric {
                Metric::Spread => {
                    let median = results.median(row, target.numerator);
                    let low = median.and_then(|m| m.low);
                    let high = median.and_then(|m| m.high);
                    format!("lowest {}, highest {}", show(low), show(high))
                }
                _ => format!(
                    "{} {}, {} {}",
                    target.numerator,
                    show(num),
                    target.denominator,
                    show(den)
                ),
            };
            report(
                ok,
                format!(
                    "{name} = {value:.2} (target {sign} {bound:.2}, {}; {figures})",
                    target.why
                ),
            );
        }
    }
    let failed: Vec<String> = (results.runs.iter())
        .filter(|run| run.error.is_some())
        .map(|run| format!("{} {} round {}", run.row, run.server, run.round))
        .collect();
    match failed.is_empty() {
        true => report(true, "every measurement completed without error".to_owned()),
        false => report(false, format!("measurements failed: {}", failed.join(", "))),
    }
    passed
}

/// Checks that the targets name only rows of the matrix, and that rows
/// have distinct names.
pub(crate) fn self_test() -> Result<(), String> {
    for target in TARGETS {
        for row in target.rows() {
            if !ROWS.iter().any(|r| r.name == row) {
                return Err(format!("target names row {row:?}, which is not in ROWS"));
            }
        }
    }
    let servers: Vec<String> = Server::all()?.into_iter().map(|s| s.name).collect();
    for target in TARGETS {
        for name in [target.numerator, target.denominator] {
            if !servers.iter().any(|s| s == name) {
                return Err(format!(
                    "a target names server {name:?}, which is not in the matrix"
                ));
            }
        }
    }
    let mut names: Vec<_> = ROWS.iter().map(|row| row.name).collect();
    names.sort();
    names.dedup();
    if names.len() != ROWS.len() {
        return Err("two rows share a name".to_owned());
    }
    Ok(())
}
