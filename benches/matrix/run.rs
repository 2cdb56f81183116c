//! Running the matrix: every row, round and server, each measurement on a
//! freshly started server after a warm-up.

use crate::results::{medians, Machine, Results, Run, Settings};
use crate::rows::Row;
use crate::servers::{Server, Tools};
use echokit::bench::Report;
use std::process::Command;
use std::time::Duration;
use testkit::bench::run_bench;
use testkit::procfs;

/// Uncounted load on a fresh server before each measurement.
pub(crate) const WARMUP_SECS: f64 = 0.3;
/// How long a load run may overrun its duration before it is killed.
const RUN_GRACE: Duration = Duration::from_secs(30);
/// Server stderr lines kept per measurement in the results.
const STDERR_KEPT: usize = 20;

/// One measurement's outcome.
struct Measured {
    report: Report,
    server_cpu_ns: Option<u64>,
    warmup_error: Option<String>,
    server_stderr: Vec<String>,
}

/// Runs `rows` on `servers`, `rounds` times `secs` seconds each; within a
/// round the servers take turns in an order rotated by the round number,
/// so slow drift of the machine spreads over all of them.
pub(crate) fn matrix(
    tools: &Tools,
    rows: &[Row],
    servers: &[Server],
    rounds: usize,
    secs: f64,
    machine: Machine,
    complete: bool,
) -> Results {
    let mut runs = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        for round in 0..rounds {
            let mut order: Vec<&Server> = servers.iter().filter(|s| s.serves(row)).collect();
            let len = order.len().max(1);
            order.rotate_left(round % len);
            for (position, &server) in order.iter().enumerate() {
                let tag = format!(
                    "[{}/{} {}] round {}/{rounds} {}",
                    index + 1,
                    rows.len(),
                    row.name,
                    round + 1,
                    server.name
                );
                let mut run = Run {
                    row: row.name.to_owned(),
                    server: server.name.clone(),
                    round,
                    position,
                    value: None,
                    server_cpu_ns: None,
                    report: None,
                    error: None,
                    warmup_error: None,
                    server_stderr: Vec::new(),
                };
                match measure(tools, row, server, secs, &tag) {
                    Ok(measured) => {
                        let value = row.figure(&measured.report);
                        let p50 = (measured.report.uncorrected)
                            .map(|l| format!(", p50 {:.1} us", l.p50_ns as f64 / 1e3))
                            .unwrap_or_default();
                        eprintln!("{tag}: {value:.1} {}{p50}", row.unit());
                        run.value = Some(value);
                        run.server_cpu_ns = measured.server_cpu_ns;
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
            servers: (servers.iter())
                .map(|server| {
                    let command = tools.server_command(server, &rows[0]);
                    let command = command.map_or_else(|err| err, |c| tools.describe(&c));
                    (server.name.clone(), command)
                })
                .collect(),
            order: servers.iter().map(|server| server.name.clone()).collect(),
            complete,
        },
        medians: medians(&runs, rows, servers),
        runs,
    }
}

/// Starts a fresh `under_test` server, warms it up, measures `row` on it
/// and the server's CPU time meanwhile.
fn measure(
    tools: &Tools,
    row: &Row,
    under_test: &Server,
    secs: f64,
    tag: &str,
) -> Result<Measured, String> {
    eprintln!("{tag}: starting");
    let mut server = tools.start(under_test, row)?;
    let warmup_error = load(tools, server.addr, row, WARMUP_SECS).err();
    if let Some(error) = &warmup_error {
        eprintln!("{tag}: warm-up failed: {error}");
    }
    let cpu_before = procfs::cpu_time(server.pid()).ok();
    let result = load(tools, server.addr, row, secs);
    let cpu_after = procfs::cpu_time(server.pid()).ok();
    let server_cpu_ns = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => u64::try_from((after - before).as_nanos()).ok(),
        _ => None,
    };
    let died = (server.exited()).map(|status| {
        format!(
            "{} server exited during the run ({status})",
            under_test.name
        )
    });
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
        server_cpu_ns,
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
