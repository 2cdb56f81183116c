//! What a matrix run found, as written to `target/bench/latest.json` and
//! read back by `--check`.

use crate::servers::Kind;
use echokit::bench::Report;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The machine the run measured.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub(crate) nproc: usize,
    pub(crate) cpu: String,
    pub(crate) date: String,
    pub(crate) rustc: String,
    pub(crate) wasmtime: String,
}

impl Machine {
    /// The line that heads the table.
    pub(crate) fn line(&self) -> String {
        format!(
            "machine: {} cores, {}; {}; {}; {}",
            self.nproc, self.cpu, self.date, self.rustc, self.wasmtime
        )
    }
}

/// How the run was made.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) rounds: usize,
    pub(crate) seconds: f64,
    pub(crate) warmup_seconds: f64,
    /// Each server and the command that starts it.
    pub(crate) servers: BTreeMap<Kind, String>,
    /// Every row and every server: `--check` can judge every target.
    pub(crate) complete: bool,
}

/// One measurement: a row on a server in a round.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Run {
    pub(crate) row: String,
    pub(crate) server: Kind,
    pub(crate) round: usize,
    /// Its place in the round's rotated order.
    pub(crate) position: usize,
    /// The row's figure (req/s or MiB/s).
    pub(crate) value: Option<f64>,
    pub(crate) report: Option<Report>,
    pub(crate) error: Option<String>,
    pub(crate) warmup_error: Option<String>,
    /// The first lines the server wrote on stderr.
    pub(crate) server_stderr: Vec<String>,
}

/// A row's figures on one server over the rounds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Median {
    /// Median of the row's figure.
    pub(crate) value: Option<f64>,
    /// Lowest and highest round.
    pub(crate) low: Option<f64>,
    pub(crate) high: Option<f64>,
    pub(crate) unit: String,
    /// Median of the p50 echo latency.
    pub(crate) p50_us: Option<f64>,
    /// Rounds measured, and rounds that failed.
    pub(crate) runs: usize,
    pub(crate) failed: usize,
}

/// The whole run.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) machine: Machine,
    pub(crate) settings: Settings,
    pub(crate) runs: Vec<Run>,
    /// Row name, then server.
    pub(crate) medians: BTreeMap<String, BTreeMap<Kind, Median>>,
}

impl Results {
    /// The median of `row` on `kind`, if measured.
    pub(crate) fn median(&self, row: &str, kind: Kind) -> Option<&Median> {
        self.medians.get(row)?.get(&kind)
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(match values.len() % 2 {
        1 => values[mid],
        _ => (values[mid - 1] + values[mid]) / 2.0,
    })
}

/// The medians of every row and server of `runs`.
pub(crate) fn medians(
    runs: &[Run],
    rows: &[crate::rows::Row],
    kinds: &[Kind],
) -> BTreeMap<String, BTreeMap<Kind, Median>> {
    let mut medians = BTreeMap::new();
    for row in rows {
        let mut per_server = BTreeMap::new();
        for &kind in kinds.iter().filter(|kind| kind.serves(row)) {
            let mine: Vec<&Run> = (runs.iter())
                .filter(|run| run.row == row.name && run.server == kind)
                .collect();
            let values: Vec<f64> = mine.iter().filter_map(|run| run.value).collect();
            let p50s = (mine.iter())
                .filter_map(|run| {
                    run.report
                        .as_ref()?
                        .uncorrected
                        .map(|l| l.p50_ns as f64 / 1e3)
                })
                .collect();
            per_server.insert(
                kind,
                Median {
                    value: median(values.clone()),
                    low: values.iter().copied().reduce(f64::min),
                    high: values.iter().copied().reduce(f64::max),
                    unit: row.unit().to_owned(),
                    p50_us: median(p50s),
                    runs: values.len(),
                    failed: mine.iter().filter(|run| run.error.is_some()).count(),
                },
            );
        }
        medians.insert(row.name.to_owned(), per_server);
    }
    medians
}
