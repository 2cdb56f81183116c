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

#[cfg(target_os = "wasi")]
fn main() {}

#[cfg(not(target_os = "wasi"))]
fn main() -> std::process::ExitCode {
    host::main()
}

#[cfg(not(target_os = "wasi"))]
#[path = "../tests/support/mod.rs"]
mod support;

#[cfg(not(target_os = "wasi"))]
mod host {
    use crate::support::{self, Build, EchoError, ServerProcess, StartError, StderrTo};
    use std::process::{Command, ExitCode};
    use std::time::{Duration, Instant};
    use std::{env, thread};

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
        let mut command = match build {
            Build::Native => Command::new(support::native_bin()),
            Build::Wasm => {
                let wasm = support::wasm_artifact();
                if !wasm.exists() {
                    return Err(format!(
                        "{} is missing: run `just build-wasm`",
                        wasm.display()
                    ));
                }
                let wasmtime = support::find_wasmtime().map_err(|looked_at| {
                    format!("wasmtime is missing (looked at {looked_at}): run `just setup build`")
                })?;
                support::wasm_command(wasmtime, wasm)
            }
        };
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
        let mut server = ServerProcess::spawn(command, StderrTo::Inherit)
            .map_err(|err| format!("cannot start: {err}"))?;
        let listening = server.wait_listening(STARTUP_TIMEOUT);
        let took = started.elapsed();
        match listening {
            Ok(_) => Ok((server, took)),
            Err(StartError::Read(err)) => Err(err.to_string()),
            Err(StartError::NoLine) => Err(format!("unexpected first line {:?}", "")),
            Err(StartError::NotListening(line)) => {
                Err(format!("unexpected first line {:?}", format!("{line}\n")))
            }
            Err(StartError::Timeout) => {
                Err(format!("no `listening on` line within {STARTUP_TIMEOUT:?}"))
            }
        }
    }

    fn rss_kib(pid: u32) -> u64 {
        support::vm_rss_kib(pid).unwrap_or(0)
    }

    fn raise_open_files_limit() {
        let _ = support::raise_open_files_to_hard();
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
            let mut stream = support::connect(server.addr, IO_TIMEOUT, IO_TIMEOUT)
                .map_err(|err| format!("connection {index}: {err}"))?;
            support::round_trip(&mut stream, b"x").map_err(|err| match err {
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

    pub fn main() -> ExitCode {
        if !env::args().any(|arg| arg == "--bench") {
            // Built by `cargo test --all-targets`: nothing to measure there.
            return ExitCode::SUCCESS;
        }
        raise_open_files_limit();
        let mut failed = false;
        println!("| build | startup (median of {STARTS}) | RSS idle baseline | RSS for {IDLE_CONNECTIONS} idle connections |");
        println!("|---|---:|---:|---:|");
        for build in [Build::Native, Build::Wasm] {
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
}
