//! Startup time and memory footprint of both builds (`just footprint`).
//!
//! - Startup: from spawning the server to reading its `listening on` line;
//!   the median of 11 starts. The wasm build gets one start first so that
//!   wasmtime's compilation cache is warm.
//! - Idle connections: the server's RSS with 10,000 idle connections (each
//!   echoed one byte first, so every one was accepted and served), minus
//!   its RSS before them.
//!
//! Targets: native ≤ 20 MiB for 10,000 idle connections, wasm startup
//! ≤ 150 ms; the run exits non-zero when either is missed.

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

/// `echokit serve` of `build` on a free port, room for 20,000
/// connections; its stderr passes through.
fn command(build: Build) -> Result<Command, String> {
    let mut command = Target::new(build).command()?;
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--max-connections",
        "20000",
    ]);
    Ok(command)
}

/// Starts a server; returns it and how long its `listening on` line took.
fn start(build: Build) -> Result<(ServerProcess, Duration), String> {
    let command = command(build)?;
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

fn measure(build: Build) -> Result<Figures, String> {
    drop(start(build)?);
    let mut startups: Vec<Duration> = Vec::new();
    for _ in 0..STARTS {
        startups.push(start(build)?.1);
    }
    startups.sort();
    let (server, _) = start(build)?;
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
    for build in Build::ALL {
        match measure(build) {
            Ok(figures) => {
                println!(
                    "| {} | {:.1} ms | {:.1} MiB | +{:.1} MiB ({:.0} B each) |",
                    build.name(),
                    figures.startup.as_secs_f64() * 1000.0,
                    figures.baseline_kib as f64 / 1024.0,
                    figures.idle_kib as f64 / 1024.0,
                    figures.idle_kib as f64 * 1024.0 / IDLE_CONNECTIONS as f64
                );
                if build == Build::Native && figures.idle_kib > NATIVE_IDLE_LIMIT_KIB {
                    eprintln!("FAIL: native idle connections over 20 MiB");
                    failed = true;
                }
                if build == Build::Wasm && figures.startup > WASM_STARTUP_LIMIT {
                    eprintln!("FAIL: wasm startup over 150 ms");
                    failed = true;
                }
            }
            Err(err) => {
                eprintln!("FAIL: {}: {err}", build.name());
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
