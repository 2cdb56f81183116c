//! How many concurrent TCP connections one server process holds, and what
//! they cost (`just scale`), for each target (native, then wasm under
//! wasmtime).
//!
//! For each target, one server on 127.0.0.1 and the connections from
//! [`LOADERS`] native `echokit bench` processes, each from its own source
//! address (127.0.0.2, 127.0.0.3...: its own ephemeral ports):
//!
//! 1. at rest: the server's RSS before any connection;
//! 2. idle at peak: as many connections as the open-files limit lets the
//!    server hold (the hard limit less [`MARGIN`]; fewer, by a tenth each
//!    time, up to [`ATTEMPTS`] tries, if they cannot all be opened),
//!    opened at [`CONNECT_RATE`] per second, one 128-byte message per
//!    second per load process: connections held (the server's
//!    descriptors, /proc/PID/fd), server CPU over
//!    [`IDLE`] and the kernel's TCP memory (/proc/net/sockstat);
//! 3. load: as many connections again, echoing 128 B at [`RATE`] messages
//!    per second in all (open loop), every echo verified, for `ECHOKIT_SCALE_SECS`
//!    (default 30) after the ramp-up: time to open them all (until each
//!    had written), messages per second, p50/p99/p99.9 (corrected for
//!    coordinated omission; the worst of the load processes), peak RSS
//!    (VmHWM);
//! 4. after close: the RSS, and an ordinary `echokit send` served.
//!
//! Arguments after `--` name the targets to measure by the kit's labels
//! (`native`, `native@epoll`, `wasm`, `wasm@NAME` for a runtime of
//! fixtures/runtimes.toml or `ECHOKIT_RUNTIME`); `native wasm` when none.
//! (`just scale native@epoll` passes them on.)
//!
//! It prints a Markdown table and exits 1 if a target failed (an error, a
//! wrong byte, a server that died or would not serve). Targets are printed
//! as met or missed, not enforced. It measures only when cargo passes
//! `--bench` (`cargo test --all-targets` runs it to no effect).

// Host-only: it starts processes and reads /proc. Built for WASI (as
// `cargo clippy --all-targets --target wasm32-wasip2` does) it is empty.
#![cfg_attr(target_os = "wasi", no_main)]
#![cfg(not(target_os = "wasi"))]

use echokit::bench::Report;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs, thread};
use testkit::process::finish_within;
use testkit::{procfs, Build, ServerProcess, StderrTo, Target};

/// Load processes, each with a share of the connections and of the rate.
const LOADERS: u64 = 4;
/// Descriptors each process keeps besides its connections.
const MARGIN: u64 = 100;
/// Connections opened per second, in all.
const CONNECT_RATE: u64 = 4_000;
/// Messages per second under load, in all, and their size.
const RATE: u64 = 20_000;
const SIZE: &str = "128";
/// Tries, each with a tenth fewer connections than the last.
const ATTEMPTS: u32 = 5;
/// How long the idle server's CPU time is measured.
const IDLE: Duration = Duration::from_secs(4);

/// What one target did.
#[derive(Default)]
struct Figures {
    held: u64,
    open_time: Duration,
    rate: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    rest_kib: u64,
    idle_kib: u64,
    peak_kib: u64,
    closed_kib: u64,
    idle_cpu: f64,
    kernel_kib: u64,
    wrong: u64,
}

fn main() -> ExitCode {
    if !env::args().any(|arg| arg == "--bench") {
        // Built by `cargo test --all-targets`: nothing to measure there.
        return ExitCode::SUCCESS;
    }
    let secs = env::var("ECHOKIT_SCALE_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .unwrap_or(30);
    let hard = match testkit::limits::raise_open_files_to_hard() {
        Ok(hard) => hard,
        Err(err) => {
            eprintln!("FAIL: cannot raise the open-files limit: {err}");
            return ExitCode::FAILURE;
        }
    };
    let most = hard.saturating_sub(MARGIN);
    println!(
        "open-files limit {hard}: trying {most} connections; {RATE} msg/s of {SIZE} B under load for {secs} s"
    );
    let mut failed = false;
    let mut rows = Vec::new();
    let targets = match targets() {
        Ok(targets) => targets,
        Err(err) => {
            eprintln!("FAIL: {err}");
            return ExitCode::FAILURE;
        }
    };
    for target in targets {
        match measure(&target, most, Duration::from_secs(secs)) {
            Ok(figures) => rows.push((target, figures)),
            Err(err) => {
                eprintln!("FAIL: {}: {err}", target.label());
                failed = true;
            }
        }
    }
    print_table(&rows);
    match failed {
        true => ExitCode::FAILURE,
        false => ExitCode::SUCCESS,
    }
}

/// The targets the arguments name by their labels, each one of
/// [`Target::every`]; native and wasm when none.
fn targets() -> Result<Vec<Target>, String> {
    let labels: Vec<String> = env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    if labels.is_empty() {
        return Ok(Build::ALL.into_iter().map(Target::new).collect());
    }
    let every = Target::every()?;
    let known = || {
        every
            .iter()
            .map(Target::label)
            .collect::<Vec<_>>()
            .join(", ")
    };
    labels
        .iter()
        .map(|label| {
            (every.iter().find(|target| target.label() == *label))
                .cloned()
                .ok_or_else(|| format!("no target {label:?}; there are {}", known()))
        })
        .collect()
}

fn print_table(rows: &[(Target, Figures)]) {
    println!("| target | connections held | time to open | msg/s | p50 | p99 | p99.9 | RSS at rest | RSS idle at peak | RSS peak | RSS after close | idle CPU at peak | kernel TCP memory | wrong bytes |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let ms = |ns: u64| format!("{:.2} ms", ns as f64 / 1e6);
    for (target, f) in rows {
        let label = target.label();
        println!(
            "| {label} | {} | {:.1} s | {:.0} | {} | {} | {} | {} | {} | {} | {} | {:.2}% | {} | {} |",
            f.held,
            f.open_time.as_secs_f64(),
            f.rate,
            ms(f.p50),
            ms(f.p99),
            ms(f.p999),
            mib(f.rest_kib),
            mib(f.idle_kib),
            mib(f.peak_kib),
            mib(f.closed_kib),
            f.idle_cpu * 100.0,
            mib(f.kernel_kib),
            f.wrong
        );
        let per_conn = |kib: u64| kib.saturating_sub(f.rest_kib) as f64 * 1024.0 / f.held as f64;
        println!(
            "<!-- {label}: {:.0} B of user-space RSS per connection idle, {:.0} B at peak; {:.0} B of kernel TCP memory -->",
            per_conn(f.idle_kib),
            per_conn(f.peak_kib),
            f.kernel_kib as f64 * 1024.0 / f.held as f64
        );
    }
    for (target, f) in rows.iter().filter(|(t, _)| t.build == Build::Native) {
        let growth = f.peak_kib.saturating_sub(f.rest_kib);
        let verdict = |met: bool| if met { "met" } else { "MISSED" };
        println!(
            "{} targets: 0 wrong bytes {}; RSS growth {:.1} MiB ≤ 16 MiB {}; idle CPU {:.2}% ≤ 2% {}; p99 {:.2} ms ≤ 5 ms {}",
            target.label(),
            verdict(f.wrong == 0),
            growth as f64 / 1024.0,
            verdict(growth <= 16 * 1024),
            f.idle_cpu * 100.0,
            verdict(f.idle_cpu <= 0.02),
            f.p99 as f64 / 1e6,
            verdict(f.p99 <= 5_000_000)
        );
    }
    for (target, f) in rows.iter().filter(|(t, _)| t.build == Build::Wasm) {
        println!(
            "{} target: p99 {:.2} ms ≤ 50 ms {}",
            target.label(),
            f.p99 as f64 / 1e6,
            if f.p99 <= 50_000_000 { "met" } else { "MISSED" }
        );
    }
}

/// The kernel's TCP buffer memory in KiB (/proc/net/sockstat `TCP: ...
/// mem PAGES`).
fn kernel_tcp_kib() -> u64 {
    let sockstat = fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let pages = sockstat
        .lines()
        .find_map(|line| line.strip_prefix("TCP:"))
        .and_then(|fields| {
            let fields: Vec<&str> = fields.split_whitespace().collect();
            let at = fields.iter().position(|&field| field == "mem")?;
            fields.get(at + 1)?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page / 1024
}

/// Descriptors `pid` holds.
fn descriptors(pid: u32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count() as u64)
}

fn measure(target: &Target, most: u64, duration: Duration) -> Result<Figures, String> {
    let mut figures = Figures::default();
    let mut connections = most;
    for attempt in 0..ATTEMPTS {
        let mut server = start_server(target, connections)?;
        let pid = server.pid();
        thread::sleep(Duration::from_millis(500));
        figures.rest_kib = procfs::rss_kib(pid).unwrap_or(0);
        let kernel_before = kernel_tcp_kib();
        let before = descriptors(pid);
        match idle(&mut server, connections, before, &mut figures) {
            Ok(()) => {
                figures.kernel_kib = kernel_tcp_kib().saturating_sub(kernel_before);
                load(&mut server, connections, duration, &mut figures)?;
                thread::sleep(Duration::from_secs(2));
                figures.closed_kib = procfs::rss_kib(pid).unwrap_or(0);
                served_after(&server)?;
                return Ok(figures);
            }
            Err(err) => eprintln!(
                "{}: attempt {attempt} with {connections}: {err}",
                target.label()
            ),
        }
        connections = connections * 9 / 10;
    }
    Err(format!(
        "could not hold the connections in {ATTEMPTS} tries"
    ))
}

fn start_server(target: &Target, connections: u64) -> Result<ServerProcess, String> {
    let mut server = target.command()?;
    server.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--backlog",
        "4096",
        "--max-connections",
        &(connections + MARGIN).to_string(),
    ]);
    ServerProcess::start(server, StderrTo::Keep, Duration::from_secs(60))
}

/// Starts the load processes, `connections` and `rate` shared among them.
fn loaders(
    addr: SocketAddr,
    connections: u64,
    rate: u64,
    args: &[&str],
) -> Result<Vec<Child>, String> {
    (0..LOADERS)
        .map(|index| {
            let share = connections / LOADERS + u64::from(index < connections % LOADERS);
            let mut bench = Target::new(Build::Native).command()?;
            bench
                .args(["bench", "--connect", &addr.to_string()])
                .args(["--connections", &share.to_string()])
                .args(["--rate", &(rate / LOADERS).max(1).to_string()])
                .args(["--size", SIZE])
                .args(["--connect-rate", &(CONNECT_RATE / LOADERS).to_string()])
                .args(["--bind", &format!("127.0.0.{}", index + 2)])
                .args(args)
                .arg("--json")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            bench
                .spawn()
                .map_err(|err| format!("cannot start echokit bench: {err}"))
        })
        .collect()
}

/// Waits for the load processes: their reports.
fn reports(children: Vec<Child>, limit: Duration) -> Result<Vec<Report>, String> {
    let mut reports = Vec::new();
    for child in children {
        let finished = finish_within(child, limit);
        let line = testkit::bench::last_line(&finished.stdout).to_owned();
        match serde_json::from_str::<Report>(&line) {
            Ok(report) if finished.status.is_some_and(|status| status.success()) => {
                reports.push(report)
            }
            _ => {
                return Err(format!(
                    "echokit bench failed ({:?}): {}; {}",
                    finished.status,
                    finished.stderr.trim(),
                    line
                ))
            }
        }
    }
    Ok(reports)
}

fn ramp(connections: u64) -> Duration {
    Duration::from_secs_f64(connections as f64 / CONNECT_RATE as f64 + 2.0)
}

/// Phase 2: the connections open and idle; the server's CPU and memory.
fn idle(
    server: &mut ServerProcess,
    connections: u64,
    before: u64,
    figures: &mut Figures,
) -> Result<(), String> {
    let pid = server.pid();
    let ramp = ramp(connections);
    let total = ramp + IDLE + Duration::from_secs(2);
    let children = loaders(
        server.addr,
        connections,
        LOADERS,
        &["--duration", &total.as_secs_f64().to_string()],
    )?;
    thread::sleep(ramp + Duration::from_secs(1));
    figures.held = descriptors(pid).saturating_sub(before);
    let cpu_before = procfs::cpu_time(pid)?;
    let started = Instant::now();
    thread::sleep(IDLE);
    let cpu = procfs::cpu_time(pid)?.saturating_sub(cpu_before);
    figures.idle_cpu = cpu.as_secs_f64() / started.elapsed().as_secs_f64();
    figures.idle_kib = procfs::rss_kib(pid).unwrap_or(0);
    let reports = reports(children, total + Duration::from_secs(30))
        .map_err(|err| format!("{err}; {}", server.describe()))?;
    server.ensure_alive()?;
    figures.wrong += reports
        .iter()
        .map(|report| report.counts.errors)
        .sum::<u64>();
    if figures.held < connections {
        return Err(format!(
            "the server held {} of the {connections} connections",
            figures.held
        ));
    }
    Ok(())
}

/// Phase 3: the connections under load.
fn load(
    server: &mut ServerProcess,
    connections: u64,
    duration: Duration,
    figures: &mut Figures,
) -> Result<(), String> {
    let warmup = ramp(connections);
    let children = loaders(
        server.addr,
        connections,
        RATE,
        &[
            "--warmup",
            &warmup.as_secs_f64().to_string(),
            "--duration",
            &duration.as_secs_f64().to_string(),
        ],
    )?;
    let reports = reports(children, warmup + duration + Duration::from_secs(60))
        .map_err(|err| format!("{err}; {}", server.describe()))?;
    let slowest = reports
        .iter()
        .filter_map(|report| report.connected_ns)
        .max();
    match (
        slowest,
        reports.iter().all(|report| report.connected_ns.is_some()),
    ) {
        (Some(ns), true) => figures.open_time = Duration::from_nanos(ns),
        _ => return Err("not every connection was opened and echoing".into()),
    }
    figures.peak_kib = procfs::status_kib(server.pid(), "VmHWM").unwrap_or(0);
    server.ensure_alive()?;
    figures.rate = reports.iter().map(|report| report.requests_per_sec).sum();
    let worst = |pick: fn(&echokit::bench::Latency) -> u64| {
        reports
            .iter()
            .filter_map(|report| report.corrected.as_ref().map(pick))
            .max()
            .unwrap_or(0)
    };
    figures.p50 = worst(|latency| latency.p50_ns);
    figures.p99 = worst(|latency| latency.p99_ns);
    figures.p999 = worst(|latency| latency.p999_ns);
    for report in &reports {
        let unanswered = report.counts.sent.saturating_sub(report.counts.requests);
        figures.wrong += report.counts.errors;
        if report.counts.errors > 0 || unanswered > RATE / LOADERS {
            return Err(format!(
                "{} errors, {unanswered} of {} messages not echoed",
                report.counts.errors, report.counts.sent
            ));
        }
    }
    Ok(())
}

/// Phase 4: an ordinary `echokit send` gets its echo.
fn served_after(server: &ServerProcess) -> Result<(), String> {
    let input = b"after the scale run\n";
    let mut send = Target::new(Build::Native).command()?;
    send.args(["send", "--connect", &server.addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = send
        .spawn()
        .map_err(|err| format!("cannot start echokit send: {err}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|err| format!("send's input: {err}"))?;
    }
    let finished = finish_within(child, Duration::from_secs(10));
    match finished.status.is_some_and(|status| status.success())
        && finished.stdout.as_bytes() == input
    {
        true => Ok(()),
        false => Err(format!("send after close was not served: {finished:?}")),
    }
}
