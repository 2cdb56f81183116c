//! `echokit bench` runs, as the load of benches and tests.

use crate::process::{finish_within, Finished};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `echokit bench --connect ADDR ARGS --duration SECS --json` with
/// `echokit` (a command running some build, arguments still to add),
/// killing it `grace` past its duration.
pub fn bench_run(
    mut echokit: Command,
    addr: SocketAddr,
    args: &[&str],
    duration: Duration,
    grace: Duration,
) -> Finished {
    let child = echokit
        .arg("bench")
        .args(["--connect", &addr.to_string()])
        .args(args)
        .args(["--duration", &duration.as_secs_f64().to_string()])
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start echokit bench: {err}"));
    finish_within(child, duration + grace)
}

/// [`bench_run`], and the JSON report it printed, or why there is none (a
/// failed run means an error or a wrong byte).
pub fn run_bench(
    echokit: Command,
    addr: SocketAddr,
    args: &[&str],
    duration: Duration,
    grace: Duration,
) -> Result<String, String> {
    let Finished {
        status,
        stdout,
        stderr,
    } = bench_run(echokit, addr, args, duration, grace);
    let Some(status) = status else {
        return Err(format!(
            "echokit bench ran {grace:?} past its duration and was killed"
        ));
    };
    if !status.success() {
        return Err(format!(
            "echokit bench failed ({status}): an error or a wrong byte; stderr: {}; stdout: {}",
            stderr.trim(),
            stdout.trim()
        ));
    }
    Ok(last_line(&stdout).to_owned())
}

/// The last non-empty line of `text`: the report of `bench --json`.
pub fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("")
}
