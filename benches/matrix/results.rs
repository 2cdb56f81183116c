//! What a matrix run found, as written to `target/bench/latest.json` and
//! read back by `--check`.

use crate::servers::Server;
use echokit::bench::{Mode, Report};
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
    pub(crate) servers: BTreeMap<String, String>,
    /// The servers in the order of round 0 and of the columns.
    pub(crate) order: Vec<String>,
    /// Every row and every server: `--check` can judge every target.
    pub(crate) complete: bool,
}

/// One measurement: a row on a server in a round.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Run {
    pub(crate) row: String,
    /// The server's name (see `Server::name`).
    pub(crate) server: String,
    pub(crate) round: usize,
    /// Its place in the round's rotated order.
    pub(crate) position: usize,
    /// The row's figure (req/s or MiB/s).
    pub(crate) value: Option<f64>,
    /// The server's CPU time (user and system, every thread) during the
    /// measured run.
    pub(crate) server_cpu_ns: Option<u64>,
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
    /// Median of the server's CPU time per request, in µs (per MiB echoed
    /// on the stream rows).
    pub(crate) cpu_us: Option<f64>,
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
    /// Row name, then server name.
    pub(crate) medians: BTreeMap<String, BTreeMap<String, Median>>,
}

impl Results {
    /// The median of `row` on `server`, if measured.
    pub(crate) fn median(&self, row: &str, server: &str) -> Option<&Median> {
        self.medians.get(row)?.get(server)
    }

    /// The servers measured, in the order of the run's settings.
    pub(crate) fn servers(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.settings.servers.keys().map(String::as_str).collect();
        names.sort_by_key(|name| self.settings.order.iter().position(|n| n == name));
        names
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
    servers: &[Server],
) -> BTreeMap<String, BTreeMap<String, Median>> {
    let mut medians = BTreeMap::new();
    for row in rows {
        let mut per_server = BTreeMap::new();
        for server in servers.iter().filter(|server| server.serves(row)) {
            let mine: Vec<&Run> = (runs.iter())
                .filter(|run| run.row == row.name && run.server == server.name)
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
            let cpu_us = (mine.iter())
                .filter_map(|run| cpu_us(row, run.report.as_ref()?, run.server_cpu_ns?))
                .collect();
            per_server.insert(
                server.name.clone(),
                Median {
                    value: median(values.clone()),
                    low: values.iter().copied().reduce(f64::min),
                    high: values.iter().copied().reduce(f64::max),
                    unit: row.unit().to_owned(),
                    p50_us: median(p50s),
                    cpu_us: median(cpu_us),
                    runs: values.len(),
                    failed: mine.iter().filter(|run| run.error.is_some()).count(),
                },
            );
        }
        medians.insert(row.name.to_owned(), per_server);
    }
    medians
}

/// The server's CPU µs per request of `report` (per MiB on stream rows).
fn cpu_us(row: &crate::rows::Row, report: &Report, cpu_ns: u64) -> Option<f64> {
    let per = match row.mode {
        Mode::Stream => report.counts.bytes as f64 / (1024.0 * 1024.0),
        Mode::Pingpong | Mode::Connect => report.counts.requests as f64,
    };
    (per > 0.0).then(|| cpu_ns as f64 / 1e3 / per)
}
