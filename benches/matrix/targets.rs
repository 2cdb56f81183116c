//! The performance targets, and `--check`, which tests the last results
//! against them.

use crate::results::Results;
use crate::rows::ROWS;
use crate::servers::Kind;

/// What a target compares.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Metric {
    /// The row's figure (req/s or MiB/s): higher is better.
    Throughput,
    /// Median echo latency: lower is better.
    P50,
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
    All,
    Only(&'static [&'static str]),
}

/// `numerator / denominator` of `metric` on each of `rows` must keep `bound`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    pub(crate) rows: Rows,
    pub(crate) metric: Metric,
    pub(crate) numerator: Kind,
    pub(crate) denominator: Kind,
    pub(crate) bound: Bound,
}

/// The performance targets that `--check` (`just bench-check`) tests.
pub(crate) const TARGETS: &[Target] = &[
    // Native echokit at least as fast as tokio everywhere.
    Target {
        rows: Rows::All,
        metric: Metric::Throughput,
        numerator: Kind::Native,
        denominator: Kind::Tokio,
        bound: Bound::AtLeast(1.0),
    },
    // The wasm build keeps most of native's speed on moderate concurrency...
    Target {
        rows: Rows::Only(&["pingpong-50x512"]),
        metric: Metric::Throughput,
        numerator: Kind::Wasm,
        denominator: Kind::Native,
        bound: Bound::AtLeast(0.7),
    },
    // ...and at least half of it under many connections and bulk data.
    Target {
        rows: Rows::Only(&["pingpong-1000x128", "stream-1x65536", "stream-8x65536"]),
        metric: Metric::Throughput,
        numerator: Kind::Wasm,
        denominator: Kind::Native,
        bound: Bound::AtLeast(0.5),
    },
    // Native single-connection latency within 10% of tokio's.
    Target {
        rows: Rows::Only(&["pingpong-1x1"]),
        metric: Metric::P50,
        numerator: Kind::Native,
        denominator: Kind::Tokio,
        bound: Bound::AtMost(1.10),
    },
];

impl Target {
    /// The rows this target judges.
    pub(crate) fn rows(&self) -> Vec<&'static str> {
        match self.rows {
            Rows::All => ROWS
                .iter()
                .filter(|row| self.numerator.serves(row) && self.denominator.serves(row))
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

/// `metric`'s median for `row` on `kind`.
pub(crate) fn metric(results: &Results, row: &str, kind: Kind, metric: Metric) -> Option<f64> {
    let median = results.median(row, kind)?;
    match metric {
        Metric::Throughput => median.value,
        Metric::P50 => median.p50_us,
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
            let what = match target.metric {
                Metric::Throughput => "throughput",
                Metric::P50 => "p50 latency",
            };
            let name = format!(
                "{row}: {}/{} {what}",
                target.numerator.name(),
                target.denominator.name()
            );
            let Some(value) = ratio(num, den) else {
                let unmeasured: Vec<&str> = [target.numerator, target.denominator]
                    .iter()
                    .filter(|&&kind| results.median(row, kind).is_none())
                    .map(|kind| kind.name())
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
                Metric::Throughput => results
                    .median(row, target.numerator)
                    .map_or(String::new(), |median| median.unit.clone()),
            };
            let show = |v: Option<f64>| format!("{:.1} {unit}", v.unwrap_or(f64::NAN));
            report(
                ok,
                format!(
                    "{name} = {value:.2} (target {sign} {bound:.2}; {} {}, {} {})",
                    target.numerator.name(),
                    show(num),
                    target.denominator.name(),
                    show(den)
                ),
            );
        }
    }
    let failed: Vec<String> = (results.runs.iter())
        .filter(|run| run.error.is_some())
        .map(|run| format!("{} {} round {}", run.row, run.server.name(), run.round))
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
    let mut names: Vec<_> = ROWS.iter().map(|row| row.name).collect();
    names.sort();
    names.dedup();
    if names.len() != ROWS.len() {
        return Err("two rows share a name".to_owned());
    }
    Ok(())
}
