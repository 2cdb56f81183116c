//! The markdown table of a run's medians.

use crate::results::Results;
use crate::rows::Row;
use crate::servers::Kind;
use crate::targets::{metric, ratio, Metric};
use std::fmt::Write as _;

fn format_value(row: &Row, value: Option<f64>) -> String {
    match value {
        None => "–".to_owned(),
        Some(v) => format!("{} {}", grouped(v, row.unit() == "MiB/s"), row.unit()),
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

/// The table: each server's median (and its spread), the ratios the
/// targets judge, and the p50 latencies.
pub(crate) fn table(rows: &[Row], results: &Results) -> String {
    let mut out = String::from(
        "| row | tokio | native | wasm | native/tokio | wasm/native | tokio p50 µs | native p50 µs | native/tokio p50 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let get = |kind: Kind, m: Metric| metric(results, row.name, kind, m);
        let cell = |kind: Kind| {
            let Some(median) = results.median(row.name, kind) else {
                return "–".to_owned();
            };
            let value = format_value(row, median.value);
            match median.failed {
                0 => value,
                failed => format!("{value} ({failed} failed)"),
            }
        };
        let p50 = |kind: Kind| {
            get(kind, Metric::P50).map_or_else(|| "–".to_owned(), |p| format!("{p:.1}"))
        };
        let throughput = |kind| get(kind, Metric::Throughput);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.name,
            cell(Kind::Tokio),
            cell(Kind::Native),
            cell(Kind::Wasm),
            format_ratio(ratio(throughput(Kind::Native), throughput(Kind::Tokio))),
            format_ratio(ratio(throughput(Kind::Wasm), throughput(Kind::Native))),
            p50(Kind::Tokio),
            p50(Kind::Native),
            format_ratio(ratio(
                get(Kind::Native, Metric::P50),
                get(Kind::Tokio, Metric::P50)
            )),
        );
    }
    out.push_str("\nSpread over the rounds (lowest–highest):\n\n");
    for row in rows {
        let spreads: Vec<String> = (results.medians.get(row.name).into_iter().flatten())
            .filter_map(|(kind, median)| {
                let (low, high) = (median.low?, median.high?);
                let unit_free = |v| format_value(row, Some(v));
                Some(format!(
                    "{} {}–{}",
                    kind.name(),
                    unit_free(low),
                    unit_free(high)
                ))
            })
            .collect();
        let _ = writeln!(out, "- {}: {}", row.name, spreads.join("; "));
    }
    out.pop();
    out
}
