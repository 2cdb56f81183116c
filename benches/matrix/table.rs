//! The markdown table of a run's medians.

use crate::results::Results;
use crate::rows::Row;
use crate::servers::{NATIVE, TOKIO};
use crate::targets::{metric, ratio, Metric};
use echokit::bench::Mode;
use std::fmt::Write as _;

fn format_value(row: &Row, value: Option<f64>) -> String {
    match value {
        None => "–".to_owned(),
        Some(v) => format!("{} {}", grouped(v, row.mode == Mode::Stream), row.unit()),
    }
}

/// `v` with thousands separators (one decimal for MiB/s).
fn grouped(v: f64, decimal: bool) -> String {
    if decimal {
        return format!("{v:.1}");
    }
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn format_ratio(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}"))
}

/// A markdown table: a header, then one line per row of cells.
fn markdown(header: &[String], lines: impl Iterator<Item = Vec<String>>) -> String {
    let mut out = format!("| {} |\n|---|", header.join(" | "));
    out.push_str(&"---:|".repeat(header.len() - 1));
    out.push('\n');
    for cells in lines {
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// The tables: each server's median; each server's ratio to native (and
/// native's to tokio, which the native targets judge); p50 latencies; the
/// servers' CPU per request; then the spread over the rounds.
pub(crate) fn table(rows: &[Row], results: &Results) -> String {
    let servers = results.servers();
    let header = |what: &str, names: &[String]| {
        std::iter::once(what.to_owned())
            .chain(names.iter().cloned())
            .collect::<Vec<_>>()
    };
    let names: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
    let cell = |row: &Row, server: &str| {
        let Some(median) = results.median(row.name, server) else {
            return "–".to_owned();
        };
        let value = format_value(row, median.value);
        match median.failed {
            0 => value,
            failed => format!("{value} ({failed} failed)"),
        }
    };
    let mut out = markdown(
        &header("row", &names),
        rows.iter().map(|row| {
            let cells = servers.iter().map(|server| cell(row, server));
            std::iter::once(row.name.to_owned()).chain(cells).collect()
        }),
    );
    let throughput =
        |row: &Row, server: &str| metric(results, row.name, server, Metric::Throughput);
    let relative: Vec<&str> = (servers.iter().copied()).filter(|&s| s != NATIVE).collect();
    let ratio_names: Vec<String> = (relative.iter())
        .map(|&s| match s {
            TOKIO => "native/tokio".to_owned(),
            other => format!("{other}/native"),
        })
        .collect();
    out.push_str("\nThroughput relative to native (native's to tokio):\n\n");
    out.push_str(&markdown(
        &header("row", &ratio_names),
        rows.iter().map(|row| {
            let cells = relative.iter().map(|&server| {
                let native = throughput(row, NATIVE);
                format_ratio(match server {
                    TOKIO => ratio(native, throughput(row, TOKIO)),
                    other => ratio(throughput(row, other), native),
                })
            });
            std::iter::once(row.name.to_owned()).chain(cells).collect()
        }),
    ));
    for (title, what, decimals) in [
        ("\nMedian echo latency (p50, µs):\n\n", Metric::P50, 1),
        (
            "\nServer CPU per request (µs; per MiB on the stream rows), all its threads:\n\n",
            Metric::Cpu,
            2,
        ),
    ] {
        out.push_str(title);
        out.push_str(&markdown(
            &header("row", &names),
            rows.iter().map(|row| {
                let cells = servers.iter().map(|&server| {
                    metric(results, row.name, server, what)
                        .map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
                });
                std::iter::once(row.name.to_owned()).chain(cells).collect()
            }),
        ));
    }
    out.push_str("\nSpread over the rounds (lowest–highest):\n\n");
    for row in rows {
        let spreads: Vec<String> = (servers.iter())
            .filter_map(|&server| {
                let median = results.median(row.name, server)?;
                let (low, high) = (median.low?, median.high?);
                let unit_free = |v| format_value(row, Some(v));
                Some(format!("{server} {}–{}", unit_free(low), unit_free(high)))
            })
            .collect();
        let _ = writeln!(out, "- {}: {}", row.name, spreads.join("; "));
    }
    out.pop();
    out
}
