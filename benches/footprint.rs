//! Startup time and memory footprint of every way to run echokit (`just
//! footprint`): native on each backend, the component on each runtime.
//!
//! - Startup: from spawning the server to reading its `listening on` line;
//!   the median of 11 starts. Each gets one start first so that
//!   compilation caches (wasmtime's, jco's transpiled module) are warm.
//! - Idle connections: the server's RSS with 10,000 idle connections (each
//!   echoed one byte first, so every one was accepted and served), minus
//!   its RSS before them.
//!
//! Targets: native ≤ 20 MiB for 10,000 idle connections (each backend),
//! wasm startup on the default runtime ≤ 150 ms; the run exits non-zero
//! when either is missed. The other runtimes' figures are reported.

// Host-only: it starts processes and reads /proc. Built for WASI (as
// `cargo clippy --all-targets --target wasm32-wasip2` does) it is empty.
#![cfg_attr(target_os = "wasi", no_main)]
#![cfg(not(target_os = "wasi"))]

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};
use std::{env, thread};
use testkit::net::{connect, round_trip, EchoError};
use testkit::{procfs, Build, ServerProcess, StderrTo, Target};

const STARTS: usize = 11;
const IDLE_CONNECTIONS: usize = 10_000;
const NATIVE_IDLE_LIMIT_KIB: u64 = 20 * 1024;
const WASM_STARTUP_LIMIT: Duration = Duration::from_millis(150);
/// Connect, read and write timeout of each idle connection.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to print its `listening on` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// `echokit serve` of `target` on a free port, with room for the idle
/// connections (and within the usual open-files limits, so that the
/// server does not warn); its stderr passes through.
fn command(target: &Target) -> Result<Command, String> {
    let mut command = target.command()?;
    let room = (IDLE_CONNECTIONS + 1_000).to_string();
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--max-connections",
        &room,
    ]);
    Ok(command)
}

/// Starts a server; returns it and how long its `listening on` line took.
fn start(target: &Target) -> Result<(ServerProcess, Duration), String> {
    let command = command(target)?;
    let started = Instant::now();
    let server = ServerProcess::start(command, StderrTo::Inherit, STARTUP_TIMEOUT)?;
    Ok((server, started.elapsed()))
}

fn rss_kib(pid: u32) -> u64 {
    procfs::rss_kib(pid).unwrap_or(0)
}

struct Figures {
    startup: Duration,
    idle_kib: u64,
    baseline_kib: u64,
}

fn measure(target: &Target) -> Result<Figures, String> {
    drop(start(target)?);
    let mut startups: Vec<Duration> = Vec::new();
    for _ in 0..STARTS {
        startups.push(start(target)?.1);
    }
    startups.sort();
    let (server, _) = start(target)?;
    thread::sleep(Duration::from_millis(300));
    let pid = server.pid();
    let baseline_kib = rss_kib(pid);
    let mut connections = Vec::with_capacity(IDLE_CONNECTIONS);
    for index in 0..IDLE_CONNECTIONS {
        let mut stream = connect(server.addr, IO_TIMEOUT, IO_TIMEOUT)
            .map_err(|err| format!("connection {index}: {err}"))?;
        round_trip(&mut stream, b"x").map_err(|err| match err {
            EchoError::Write(err) => err.to_string(),
            EchoError::Read(err) => format!("connection {index}: no echo: {err}"),
            EchoError::Wrong(got) => format!("connection {index}: echoed {got:?}"),
        })?;
        connections.push(stream);
    }
    thread::sleep(Duration::from_millis(500));
    let idle_kib = rss_kib(pid).saturating_sub(baseline_kib);
    drop(connections);
    Ok(Figures {
        startup: startups[STARTS / 2],
        idle_kib,
        baseline_kib,
    })
}

fn main() -> ExitCode {
    if !env::args().any(|arg| arg == "--bench") {
        // Built by `cargo test --all-targets`: nothing to measure there.
        return ExitCode::SUCCESS;
    }
    let _ = testkit::limits::raise_open_files_to_hard();
    let mut failed = false;
    println!("| build | startup (median of {STARTS}) | RSS idle baseline | RSS for {IDLE_CONNECTIONS} idle connections |");
    println!("|---|---:|---:|---:|");
    let targets = match Target::every() {
        Ok(targets) => targets,
        Err(err) => {
            eprintln!("FAIL: {err}");
            return ExitCode::FAILURE;
        }
    };
    for target in &targets {
        let build = target.build;
        match measure(target) {
            Ok(figures) => {
                println!(
                    "| {} | {:.1} ms | {:.1} MiB | +{:.1} MiB ({:.0} B each) |",
                    target.label(),
                    figures.startup.as_secs_f64() * 1000.0,
                    figures.baseline_kib as f64 / 1024.0,
                    figures.idle_kib as f64 / 1024.0,
                    figures.idle_kib as f64 * 1024.0 / IDLE_CONNECTIONS as f64
                );
                if build == Build::Native && figures.idle_kib > NATIVE_IDLE_LIMIT_KIB {
                    eprintln!("FAIL: {}: idle connections over 20 MiB", target.label());
                    failed = true;
                }
                let default_runtime = build == Build::Wasm && target.variant.is_none();
                if default_runtime && figures.startup > WASM_STARTUP_LIMIT {
                    eprintln!("FAIL: wasm startup over 150 ms");
                    failed = true;
                }
            }
            Err(err) => {
                eprintln!("FAIL: {}: {err}", target.label());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
