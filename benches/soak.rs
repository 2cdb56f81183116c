//! Soak test: each build of the echo server (native, then wasm under
//! wasmtime) under `echokit bench --mode pingpong --connections 50 --size
//! 512` for `ECHOKIT_SOAK_SECS` seconds (default 60), its resident memory
//! (VmRSS) sampled every second.
//!
//! ```text
//! cargo bench --bench soak                    # 60 s per build
//! ECHOKIT_SOAK_SECS=10 cargo bench --bench soak
//! ```
//!
//! The RSS after warm-up is the sample at 10% of the run (at least 3 s in);
//! the final RSS is the last sample taken while the load ran. A build fails
//! (and the runner exits 1) if the load client reports an error or a wrong
//! byte (it exits non-zero), the server dies, or the final RSS exceeds the
//! warm-up RSS by more than 10%. The load client is always the native
//! `echokit bench`.
//!
//! The native server is the `echokit` binary cargo builds for this bench;
//! the wasm one is `$ECHOKIT_WASM`, else
//! target/wasm32-wasip2/release/echokit.wasm (`just build-wasm`), run by
//! `$WASMTIME`, else `wasmtime` on PATH, else ~/.cargo/bin/wasmtime (`just
//! setup`). A missing tool is a failure, never a skip. `--bench`, which
//! cargo passes, is accepted and ignored.

// Host-only: it starts processes and reads /proc. Built for WASI (as
// `cargo clippy --all-targets --target wasm32-wasip2` does) it is empty.
#![cfg_attr(target_os = "wasi", no_main)]
#![cfg(not(target_os = "wasi"))]

use echokit::bench::Report;
use std::env;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use testkit::{procfs, Build, ServerProcess, StderrTo, Target};

const CONNECTIONS: u32 = 50;
const SIZE: u32 = 512;
/// Allowed RSS growth from warm-up to the end of the run.
const MAX_GROWTH: f64 = 0.10;
/// How long past its duration the load client may run.
const GRACE: Duration = Duration::from_secs(30);

/// One build's figures.
struct Outcome {
    build: Build,
    requests_per_sec: Option<f64>,
    rss_warm: Option<u64>,
    rss_end: Option<u64>,
    failure: Option<String>,
}

impl Outcome {
    fn growth(&self) -> Option<f64> {
        match (self.rss_warm, self.rss_end) {
            (Some(warm), Some(end)) if warm > 0 => Some(end as f64 / warm as f64 - 1.0),
            _ => None,
        }
    }
}

fn main() -> ExitCode {
    for arg in env::args().skip(1) {
        if arg != "--bench" {
            eprintln!("soak: ignoring argument {arg:?}");
        }
    }
    let secs = match env::var("ECHOKIT_SOAK_SECS") {
        Err(_) => 60.0,
        Ok(text) => {
            match text.trim().parse::<f64>() {
                Ok(secs) if (5.0..=86_400.0).contains(&secs) => secs,
                _ => {
                    eprintln!("soak: ECHOKIT_SOAK_SECS={text:?} is not a number of seconds from 5 to 86400");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let duration = Duration::from_secs_f64(secs);
    let warm_at = duration.mul_f64(0.1).max(Duration::from_secs(3));
    eprintln!(
        "soak: {secs} s per build, pingpong, {CONNECTIONS} connections of {SIZE} bytes; \
         warm-up RSS at {warm_at:?}"
    );
    let outcomes: Vec<Outcome> = Build::ALL
        .into_iter()
        .map(|build| {
            eprintln!("soak: {} server...", build.name());
            soak(build, duration, warm_at)
        })
        .collect();

    println!();
    println!(
        "{:<8} {:>12} {:>14} {:>14} {:>9}  result",
        "build", "req/s", "RSS warm-up", "RSS end", "growth"
    );
    let mut failed = false;
    for outcome in &outcomes {
        let kib = |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{v} KiB"));
        println!(
            "{:<8} {:>12} {:>14} {:>14} {:>9}  {}",
            outcome.build.name(),
            outcome
                .requests_per_sec
                .map_or("-".to_owned(), |r| format!("{r:.0}")),
            kib(outcome.rss_warm),
            kib(outcome.rss_end),
            outcome
                .growth()
                .map_or("-".to_owned(), |g| format!("{:+.1}%", g * 100.0)),
            if outcome.failure.is_some() {
                "FAIL"
            } else {
                "ok"
            }
        );
        failed |= outcome.failure.is_some();
    }
    for outcome in &outcomes {
        if let Some(failure) = &outcome.failure {
            eprintln!("soak: {} FAILED: {failure}", outcome.build.name());
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn soak(build: Build, duration: Duration, warm_at: Duration) -> Outcome {
    let mut outcome = Outcome {
        build,
        requests_per_sec: None,
        rss_warm: None,
        rss_end: None,
        failure: None,
    };
    let mut server = match start_server(build) {
        Ok(server) => server,
        Err(err) => {
            outcome.failure = Some(err);
            return outcome;
        }
    };

    // VmRSS once a second, with the time since the load started.
    let samples = Arc::new(Mutex::new(Vec::<(Duration, u64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let sampler = {
        let (samples, stop, pid) = (Arc::clone(&samples), Arc::clone(&stop), server.pid());
        let limit = duration + GRACE;
        thread::spawn(move || {
            let mut next = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
                let now = start.elapsed();
                if now >= next {
                    if let Some(rss) = procfs::rss_kib(pid) {
                        samples.lock().unwrap().push((now, rss));
                    }
                    next += Duration::from_secs(1);
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let report = load(server.addr, duration);
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let samples = samples.lock().unwrap().clone();

    outcome.rss_warm = samples
        .iter()
        .find(|(at, _)| *at >= warm_at)
        .map(|&(_, rss)| rss);
    outcome.rss_end = samples
        .iter()
        .rev()
        .find(|(at, _)| *at <= duration)
        .map(|&(_, rss)| rss);
    let mut failures = Vec::new();
    match report {
        Ok(report) => {
            outcome.requests_per_sec = Some(report.requests_per_sec);
            let (errors, lost) = (report.counts.errors, report.counts.lost);
            if errors > 0 || lost > 0 {
                failures.push(format!(
                    "the load client reported {errors} errors and {lost} lost messages"
                ));
            }
        }
        Err(err) => failures.push(err),
    }
    if let Some(status) = server.exited() {
        failures.push(format!(
            "the server exited during the run ({status}); stderr: {}",
            server.stderr()
        ));
    }
    match (outcome.rss_warm, outcome.rss_end, outcome.growth()) {
        (Some(warm), Some(end), Some(growth)) if growth > MAX_GROWTH => {
            failures.push(format!(
                "RSS grew from {warm} KiB after warm-up to {end} KiB at the end \
                 ({:+.1}%, more than {:.0}%); samples (s, KiB): {}",
                growth * 100.0,
                MAX_GROWTH * 100.0,
                samples
                    .iter()
                    .map(|(at, rss)| format!("{:.0}:{rss}", at.as_secs_f64()))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        (Some(_), Some(_), Some(_)) => {}
        _ => failures.push(format!("not enough RSS samples ({} taken)", samples.len())),
    }
    if !failures.is_empty() {
        outcome.failure = Some(failures.join("; "));
    }
    outcome
}

/// Runs the native `echokit bench --json` against `addr`; its report.
fn load(addr: SocketAddr, duration: Duration) -> Result<Report, String> {
    let (connections, size) = (CONNECTIONS.to_string(), SIZE.to_string());
    let args = [
        "--mode",
        "pingpong",
        "--connections",
        &connections,
        "--size",
        &size,
    ];
    let echokit = Target::new(Build::Native).command()?;
    let line = testkit::bench::run_bench(echokit, addr, &args, duration, GRACE)?;
    serde_json::from_str(&line).map_err(|err| format!("not a bench report ({err}): {line}"))
}

/// A server on 127.0.0.1 and a free port; killed on drop.
fn start_server(build: Build) -> Result<ServerProcess, String> {
    let mut command = Target::new(build).command()?;
    command.args(["serve", "--listen", "127.0.0.1:0"]);
    let stderr = StderrTo::EchoAndKeep("    [server] ".to_owned());
    ServerProcess::start(command, stderr, Duration::from_secs(60))
}
