//! Running the matrix: every row, round and server, each measurement on a
//! freshly started server after a warm-up.

use crate::results::{medians, Machine, Results, Run, Settings};
use crate::rows::Row;
use crate::servers::{Kind, Tools};
use echokit::bench::Report;
use std::process::Command;
use std::time::Duration;
use testkit::bench::run_bench;

/// Uncounted load on a fresh server before each measurement.
pub(crate) const WARMUP_SECS: f64 = 0.3;
/// How long a load run may overrun its duration before it is killed.
const RUN_GRACE: Duration = Duration::from_secs(30);
/// Server stderr lines kept per measurement in the results.
const STDERR_KEPT: usize = 20;

/// One measurement's outcome.
struct Measured {
    report: Report,
    warmup_error: Option<String>,
    server_stderr: Vec<String>,
}

/// Runs `rows` on `kinds`, `rounds` times `secs` seconds each; within a
/// round the servers take turns in an order rotated by the round number,
/// so slow drift of the machine spreads over all of them.
pub(crate) fn matrix(
    tools: &Tools,
    rows: &[Row],
    kinds: &[Kind],
    rounds: usize,
    secs: f64,
    machine: Machine,
    complete: bool,
) -> Results {
    let mut runs = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        for round in 0..rounds {
            let mut order: Vec<Kind> = kinds.iter().copied().filter(|k| k.serves(row)).collect();
            let len = order.len().max(1);
            order.rotate_left(round % len);
            for (position, &kind) in order.iter().enumerate() {
                let tag = format!(
                    "[{}/{} {}] round {}/{rounds} {}",
                    index + 1,
                    rows.len(),
                    row.name,
                    round + 1,
                    kind.name()
                );
                let mut run = Run {
                    row: row.name.to_owned(),
                    server: kind,
                    round,
                    position,
                    value: None,
                    report: None,
                    error: None,
                    warmup_error: None,
                    server_stderr: Vec::new(),
                };
                match measure(tools, row, kind, secs, &tag) {
                    Ok(measured) => {
                        let value = row.figure(&measured.report);
                        let p50 = (measured.report.uncorrected)
                            .map(|l| format!(", p50 {:.1} us", l.p50_ns as f64 / 1e3))
                            .unwrap_or_default();
                        eprintln!("{tag}: {value:.1} {}{p50}", row.unit());
                        run.value = Some(value);
                        run.report = Some(measured.report);
                        run.warmup_error = measured.warmup_error;
                        run.server_stderr = measured.server_stderr;
                    }
                    Err(error) => {
                        eprintln!("{tag}: FAILED: {error}");
                        run.error = Some(error);
                    }
                }
                runs.push(run);
            }
        }
    }
    Results {
        machine,
        settings: Settings {
            rounds,
            seconds: secs,
            warmup_seconds: WARMUP_SECS,
            servers: (kinds.iter())
                .map(|&kind| {
                    let command = tools.server_command(kind, &rows[0]);
                    (kind, tools.describe(&command))
                })
                .collect(),
            complete,
        },
        medians: medians(&runs, rows, kinds),
        runs,
    }
}

/// Starts a fresh `kind` server, warms it up, measures `row` on it.
fn measure(tools: &Tools, row: &Row, kind: Kind, secs: f64, tag: &str) -> Result<Measured, String> {
    eprintln!("{tag}: starting");
    let mut server = tools.start(kind, row)?;
    let warmup_error = load(tools, server.addr, row, WARMUP_SECS).err();
    if let Some(error) = &warmup_error {
        eprintln!("{tag}: warm-up failed: {error}");
    }
    let result = load(tools, server.addr, row, secs);
    let died = server
        .exited()
        .map(|status| format!("{} server exited during the run ({status})", kind.name()));
    server.kill();
    let mut server_stderr: Vec<String> = server.stderr().lines().map(str::to_owned).collect();
    server_stderr.truncate(STDERR_KEPT);
    let report = match (result, died) {
        (Ok(report), None) => report,
        (Ok(_), Some(died)) => return Err(died),
        (Err(error), None) => return Err(error),
        (Err(error), Some(died)) => return Err(format!("{error}; {died}")),
    };
    // The client's clock starts before it connects: a server slow to take
    // connections can leave no time for echoes at all.
    if report.seconds() > secs * 1.5 {
        eprintln!(
            "{tag}: warning: the run took {:.2} s of {secs} s asked (slow connects?)",
            report.seconds()
        );
    }
    Ok(Measured {
        report,
        warmup_error,
        server_stderr,
    })
}

/// Runs the native `echokit bench --json` against `addr`; its report.
fn load(tools: &Tools, addr: std::net::SocketAddr, row: &Row, secs: f64) -> Result<Report, String> {
    let args = row.load_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let duration = Duration::from_secs_f64(secs);
    let line = run_bench(
        Command::new(&tools.echokit),
        addr,
        &args,
        duration,
        RUN_GRACE,
    )?;
    serde_json::from_str(&line).map_err(|err| format!("not a bench report ({err}): {line}"))
}
