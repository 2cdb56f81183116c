//! The benchmark matrix: native echokit, wasm echokit (under wasmtime) and
//! the reference tokio echo server (`examples/tokio_echo.rs`), each loaded
//! by the native `echokit bench --json` client over 127.0.0.1.
//!
//! ```text
//! just build && just build-wasm && cargo build --release --example tokio_echo
//! cargo bench --bench matrix                          # the whole matrix
//! cargo bench --bench matrix -- --only stream         # rows named or starting so
//! cargo bench --bench matrix -- --servers native,wasm # a subset of servers
//! cargo bench --bench matrix -- --check               # targets on the last results
//! ```
//!
//! Every row is measured `ECHOKIT_BENCH_ROUNDS` times (default 3) for
//! `ECHOKIT_BENCH_SECS` seconds (default 2). Each measurement gets a freshly
//! started server, warmed up for 0.3 s first; within a round the servers take
//! turns in an order rotated by the round number, so slow drift of the
//! machine spreads over all of them. The medians over rounds are reported.
//!
//! Progress goes to stderr; the markdown table to stdout and
//! `target/bench/latest.md`; every raw report and the medians to
//! `target/bench/latest.json`, which `--check` reads back and tests against
//! [`TARGETS`].
//!
//! The runner never builds anything: it says which command builds what it
//! misses. Run without `--bench` (as `cargo test --benches` does), it only
//! checks that its tables are consistent.

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::{json, Value};
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::thread;
use std::time::{Duration, SystemTime};
use support::{ServerProcess, StartError, StderrTo};

/// Rounds per row unless `ECHOKIT_BENCH_ROUNDS` says otherwise.
const DEFAULT_ROUNDS: usize = 3;
/// Seconds per measurement unless `ECHOKIT_BENCH_SECS` says otherwise.
const DEFAULT_SECS: f64 = 2.0;
/// Uncounted load on a fresh server before each measurement.
const WARMUP_SECS: f64 = 0.3;
/// How long a server may take to print its listening line (wasmtime
/// compiles the component first when its cache is cold).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a load run may overrun its duration before it is killed.
const RUN_GRACE: Duration = Duration::from_secs(30);
/// Server stderr lines kept per measurement in the JSON.
const STDERR_KEPT: usize = 20;

/// What a row's load looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pingpong,
    Stream,
    Connect,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Pingpong => "pingpong",
            Mode::Stream => "stream",
            Mode::Connect => "connect",
        }
    }

    /// The figure a row is judged by: echoed MiB/s when streaming, echoes
    /// per second otherwise.
    fn unit(self) -> &'static str {
        match self {
            Mode::Stream => "MiB/s",
            Mode::Pingpong | Mode::Connect => "req/s",
        }
    }

    fn report_field(self) -> &'static str {
        match self {
            Mode::Stream => "mib_per_sec",
            Mode::Pingpong | Mode::Connect => "requests_per_sec",
        }
    }
}

/// One row of the matrix.
#[derive(Clone, Copy, Debug)]
struct Row {
    name: &'static str,
    mode: Mode,
    connections: u32,
    size: u32,
    /// Datagrams instead of a stream: echokit only (the tokio reference
    /// echoes TCP).
    udp: bool,
}

const fn row(name: &'static str, mode: Mode, connections: u32, size: u32) -> Row {
    Row {
        name,
        mode,
        connections,
        size,
        udp: false,
    }
}

const fn udp_row(name: &'static str, connections: u32, size: u32) -> Row {
    Row {
        udp: true,
        ..row(name, Mode::Pingpong, connections, size)
    }
}

impl Row {
    /// Whether `kind` can serve this row.
    fn serves(&self, kind: Kind) -> bool {
        !(self.udp && kind == Kind::Tokio)
    }
}

/// The matrix, in the order it runs and prints.
const ROWS: &[Row] = &[
    row("pingpong-1x1", Mode::Pingpong, 1, 1),
    row("pingpong-50x512", Mode::Pingpong, 50, 512),
    row("pingpong-1000x128", Mode::Pingpong, 1000, 128),
    row("stream-1x65536", Mode::Stream, 1, 65536),
    row("stream-8x65536", Mode::Stream, 8, 65536),
    row("connect-8x64", Mode::Connect, 8, 64),
    udp_row("udp-pingpong-50x512", 50, 512),
];

/// The servers under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Tokio,
    Native,
    Wasm,
}

/// Every server, in the order of round 0 and of the table's columns.
const KINDS: [Kind; 3] = [Kind::Tokio, Kind::Native, Kind::Wasm];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tokio => "tokio",
            Kind::Native => "native",
            Kind::Wasm => "wasm",
        }
    }

    fn parse(name: &str) -> Option<Kind> {
        KINDS.into_iter().find(|kind| kind.name() == name)
    }
}

/// What a target compares.
#[derive(Clone, Copy, Debug)]
enum Metric {
    /// The row's figure (req/s or MiB/s): higher is better.
    Throughput,
    /// Median echo latency: lower is better.
    P50,
}

/// The bound a ratio must keep.
#[derive(Clone, Copy, Debug)]
enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

/// Which rows a target covers.
#[derive(Clone, Copy, Debug)]
enum Rows {
    All,
    Only(&'static [&'static str]),
}

/// `numerator / denominator` of `metric` on each of `rows` must keep `bound`.
#[derive(Clone, Copy, Debug)]
struct Target {
    rows: Rows,
    metric: Metric,
    numerator: Kind,
    denominator: Kind,
    bound: Bound,
}

/// The performance targets that `--check` (`just bench-check`) tests.
const TARGETS: &[Target] = &[
    // Native echokit at least as fast as tokio everywhere.
    Target {
        rows: Rows::All,
        metric: Metric::Throughput,
        numerator: Kind::Native,
        denominator: Kind::Tokio,
        bound: Bound::AtLeast(1.0),
    },
    // The wasm build keeps most of native's speed on moderate concurrency...
    Target {
        rows: Rows::Only(&["pingpong-50x512"]),
        metric: Metric::Throughput,
        numerator: Kind::Wasm,
        denominator: Kind::Native,
        bound: Bound::AtLeast(0.7),
    },
    // ...and at least half of it under many connections and bulk data.
    Target {
        rows: Rows::Only(&["pingpong-1000x128", "stream-1x65536", "stream-8x65536"]),
        metric: Metric::Throughput,
        numerator: Kind::Wasm,
        denominator: Kind::Native,
        bound: Bound::AtLeast(0.5),
    },
    // Native single-connection latency within 10% of tokio's.
    Target {
        rows: Rows::Only(&["pingpong-1x1"]),
        metric: Metric::P50,
        numerator: Kind::Native,
        denominator: Kind::Tokio,
        bound: Bound::AtMost(1.10),
    },
];

impl Target {
    fn rows(&self) -> Vec<&'static str> {
        match self.rows {
            Rows::All => ROWS
                .iter()
                .filter(|row| row.serves(self.numerator) && row.serves(self.denominator))
                .map(|row| row.name)
                .collect(),
            Rows::Only(names) => names.to_vec(),
        }
    }
}

/// Command-line options after cargo's.
#[derive(Debug, Default)]
struct Options {
    /// Cargo passes `--bench` under `cargo bench`; without it, test mode.
    bench: bool,
    check: bool,
    only: Vec<String>,
    servers: Option<Vec<Kind>>,
}

const USAGE: &str = "\
usage: cargo bench --bench matrix [-- OPTIONS]

  --only ROW[,ROW...]       run only these rows (a prefix such as `stream` picks all that start so)
  --servers S[,S...]        run only these servers: tokio, native, wasm
  --check                   test target/bench/latest.json against the targets; runs nothing

environment: ECHOKIT_BENCH_ROUNDS (default 3), ECHOKIT_BENCH_SECS (default 2)";

fn parse_options() -> Result<Options, String> {
    let mut options = Options::default();
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "--bench" => options.bench = true,
            "--check" => options.check = true,
            "--only" => options
                .only
                .extend(value("--only")?.split(',').map(str::to_string)),
            "--servers" => {
                let kinds = options.servers.get_or_insert_with(Vec::new);
                for name in value("--servers")?.split(',') {
                    let kind = Kind::parse(name).ok_or_else(|| {
                        format!("unknown server {name:?}: expected tokio, native or wasm")
                    })?;
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok(options)
}

/// The rows `--only` picks: exact names, or else every row starting so.
fn select_rows(only: &[String]) -> Result<Vec<Row>, String> {
    if only.is_empty() {
        return Ok(ROWS.to_vec());
    }
    let mut picked = Vec::new();
    for wanted in only {
        let exact: Vec<Row> = ROWS
            .iter()
            .filter(|row| row.name == wanted)
            .copied()
            .collect();
        let matches = match exact.is_empty() {
            false => exact,
            true => ROWS
                .iter()
                .filter(|row| row.name.starts_with(wanted.as_str()))
                .copied()
                .collect(),
        };
        if matches.is_empty() {
            let names: Vec<_> = ROWS.iter().map(|row| row.name).collect();
            return Err(format!(
                "no row named {wanted:?}; the rows are {}",
                names.join(", ")
            ));
        }
        for row in matches {
            if !picked.iter().any(|picked: &Row| picked.name == row.name) {
                picked.push(row);
            }
        }
    }
    // Keep the matrix order whatever order they were asked in.
    picked.sort_by_key(|row| ROWS.iter().position(|r| r.name == row.name));
    Ok(picked)
}

fn env_number<T: std::str::FromStr>(
    name: &str,
    default: T,
    valid: impl Fn(&T) -> bool,
) -> Result<T, String> {
    match env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => text
            .trim()
            .parse()
            .ok()
            .filter(valid)
            .ok_or_else(|| format!("{name}={text:?} is not a valid value")),
    }
}

/// Where the programs under test are, each with the command that builds it.
struct Tools {
    root: PathBuf,
    target: PathBuf,
    echokit: PathBuf,
    tokio_echo: PathBuf,
    wasm: PathBuf,
    wasmtime: PathBuf,
}

impl Tools {
    fn locate() -> Tools {
        let target = support::target_dir();
        Tools {
            echokit: target.join("release").join("echokit"),
            tokio_echo: target.join("release").join("examples").join("tokio_echo"),
            wasm: support::wasm_artifact(),
            wasmtime: find_wasmtime(),
            root: support::root(),
            target,
        }
    }

    /// Fails, naming the build command, unless everything `kinds` needs is
    /// there; warns about builds older than the sources.
    fn require(&self, kinds: &[Kind]) -> Result<(), String> {
        // (program, what it is, the command that builds it, its sources)
        let mut needed = vec![(
            &self.echokit,
            "native echokit (also the load client)",
            "just build",
            Some("src"),
        )];
        if kinds.contains(&Kind::Tokio) {
            needed.push((
                &self.tokio_echo,
                "the tokio reference server",
                "cargo build --release --example tokio_echo",
                Some("examples/tokio_echo.rs"),
            ));
        }
        if kinds.contains(&Kind::Wasm) {
            needed.push((
                &self.wasm,
                "the wasm echokit component",
                "just build-wasm",
                Some("src"),
            ));
            needed.push((&self.wasmtime, "wasmtime", "just setup", None));
        }
        let missing: Vec<String> = needed
            .iter()
            .filter(|(path, ..)| !path.is_file())
            .map(|(path, what, build, _)| {
                format!("  {} ({what}) is missing: run `{build}`", self.show(path))
            })
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "cannot run the matrix; it builds nothing itself:\n{}",
                missing.join("\n")
            ));
        }
        for (path, _, build, sources) in &needed {
            let Some(sources) = sources else { continue };
            let edited = newest_mtime(&self.root.join(sources));
            let built = fs::metadata(path).and_then(|meta| meta.modified()).ok();
            if let (Some(edited), Some(built)) = (edited, built) {
                if built < edited {
                    eprintln!(
                        "matrix: warning: {} is older than {sources}: run `{build}` to measure the current code",
                        self.show(path)
                    );
                }
            }
        }
        Ok(())
    }

    fn show<'a>(&self, path: &'a Path) -> std::borrow::Cow<'a, str> {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
    }

    fn server_command(&self, kind: Kind, row: &Row) -> Command {
        let listen: &[&str] = match row.udp {
            true => &["--listen", "127.0.0.1:0", "--udp"],
            false => &["--listen", "127.0.0.1:0"],
        };
        match kind {
            Kind::Tokio => {
                let mut command = Command::new(&self.tokio_echo);
                command.args(listen);
                command
            }
            Kind::Native => {
                let mut command = Command::new(&self.echokit);
                command.arg("serve").args(listen);
                command
            }
            Kind::Wasm => {
                let mut command = Command::new(&self.wasmtime);
                command
                    .args(["run", "-S", "inherit-network"])
                    .arg(&self.wasm)
                    .arg("serve")
                    .args(listen);
                command
            }
        }
    }

    fn describe(&self, command: &Command) -> String {
        std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|part| self.show(Path::new(part)).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The first wasmtime that runs (`$WASMTIME`, `PATH`, ~/.cargo/bin), else
/// where `cargo install` puts it, to be reported missing.
fn find_wasmtime() -> PathBuf {
    support::find_wasmtime().unwrap_or_else(|_| {
        let home = env::var_os("HOME").unwrap_or_default();
        Path::new(&home).join(".cargo").join("bin").join("wasmtime")
    })
}

/// The last modification of `path` or, for a directory, of anything in it.
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    if !path.is_dir() {
        return fs::metadata(path).and_then(|meta| meta.modified()).ok();
    }
    let mut newest = None;
    for entry in fs::read_dir(path).ok()?.flatten() {
        newest = newest.max(newest_mtime(&entry.path()));
    }
    newest
}

/// A server process, killed when dropped.
struct Server {
    kind: Kind,
    process: ServerProcess,
    addr: SocketAddr,
}

impl Server {
    /// Starts `kind` on a free port and waits for its listening line.
    fn start(tools: &Tools, kind: Kind, row: &Row) -> Result<Server, String> {
        let command = tools.server_command(kind, row);
        let described = tools.describe(&command);
        // The server's stderr goes on ours, tagged, and into the results.
        let stderr_to = StderrTo::EchoAndKeep(format!("    [{} server] ", kind.name()));
        let process = ServerProcess::spawn(command, stderr_to)
            .map_err(|err| format!("cannot start `{described}`: {err}"))?;
        let mut server = Server {
            kind,
            process,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = match server.process.wait_listening(STARTUP_TIMEOUT) {
            Ok(addr) => {
                server.addr = addr;
                return Ok(server);
            }
            Err(StartError::Read(err)) => {
                return Err(format!("`{described}`: cannot read its stdout: {err}"))
            }
            Err(StartError::Timeout) => {
                return Err(format!(
                    "`{described}` printed no listening line within {STARTUP_TIMEOUT:?}"
                ))
            }
            Err(StartError::NoLine) => String::new(),
            Err(StartError::NotListening(line)) => line,
        };
        let status = server.stop().0;
        Err(format!(
            "`{described}` printed {:?} instead of \"listening on IP:PORT\"{}",
            line.trim_end(),
            status
                .map(|s| format!(" and exited ({s})"))
                .unwrap_or_default()
        ))
    }

    /// Why the server is no longer running, if it is not.
    fn exited(&mut self) -> Option<String> {
        let status = self.process.exited()?;
        Some(format!(
            "{} server exited during the run ({status})",
            self.kind.name()
        ))
    }

    /// Kills the server; returns how it had exited on its own, if it had,
    /// and the lines it wrote on stderr.
    fn stop(&mut self) -> (Option<String>, Vec<String>) {
        let status = self.process.exited().map(|exit| exit.to_string());
        self.process.kill();
        let lines = self.process.stderr().lines().map(str::to_owned).collect();
        (status, lines)
    }
}

/// Runs `echokit bench --json` against `addr`; returns its report.
fn load(tools: &Tools, addr: SocketAddr, row: &Row, secs: f64) -> Result<Value, String> {
    let (connections, size) = (row.connections.to_string(), row.size.to_string());
    let mut args = vec!["--connections", &connections, "--size", &size];
    args.extend(["--mode", row.mode.name()]);
    args.extend(row.udp.then_some("--udp"));
    // Closing with FINs, the load generator's ports pile up in TIME_WAIT
    // and its kernel's search for a free one bounds every server alike.
    args.extend((row.mode == Mode::Connect).then_some("--reset"));
    let duration = Duration::from_secs_f64(secs);
    support::run_bench(
        Command::new(&tools.echokit),
        addr,
        &args,
        duration,
        RUN_GRACE,
    )
}

/// The figures a run is judged by.
fn figures(row: &Row, report: &Value) -> (Option<f64>, Option<f64>) {
    let value = report[row.mode.report_field()].as_f64();
    let p50 = report["latency"]["p50_us"].as_f64();
    (value, p50)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(match values.len() % 2 {
        1 => values[mid],
        _ => (values[mid - 1] + values[mid]) / 2.0,
    })
}

fn command_output(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

fn machine_info(tools: &Tools) -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    let rustc = env::var_os("RUSTC")
        .map(PathBuf::from)
        .unwrap_or_else(|| "rustc".into());
    json!({
        "nproc": thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": cpu,
        "date": command_output(Path::new("date"), &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "rustc": command_output(&rustc, &["-V"]),
        "wasmtime": command_output(&tools.wasmtime, &["--version"]),
    })
}

fn machine_line(machine: &Value) -> String {
    format!(
        "machine: {} cores, {}; {}; {}; {}",
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["date"].as_str().unwrap_or("?"),
        machine["rustc"].as_str().unwrap_or("?"),
        machine["wasmtime"].as_str().unwrap_or("?"),
    )
}

/// Runs the matrix and writes the results.
fn bench(options: &Options) -> Result<bool, String> {
    let rows = select_rows(&options.only)?;
    let kinds: Vec<Kind> = match &options.servers {
        Some(kinds) => KINDS
            .into_iter()
            .filter(|kind| kinds.contains(kind))
            .collect(),
        None => KINDS.to_vec(),
    };
    let rounds = env_number("ECHOKIT_BENCH_ROUNDS", DEFAULT_ROUNDS, |&n| n >= 1)?;
    let secs = env_number("ECHOKIT_BENCH_SECS", DEFAULT_SECS, |&s: &f64| {
        s > 0.0 && s.is_finite()
    })?;
    let tools = Tools::locate();
    tools.require(&kinds)?;
    let machine = machine_info(&tools);
    eprintln!("{}", machine_line(&machine));
    eprintln!(
        "matrix: {} rows x {} servers x {rounds} rounds, {secs} s each after a {WARMUP_SECS} s warm-up",
        rows.len(),
        kinds.len()
    );

    let mut runs = Vec::new();
    let mut failures = 0;
    for (index, row) in rows.iter().enumerate() {
        for round in 0..rounds {
            let mut order: Vec<Kind> = kinds.iter().copied().filter(|&k| row.serves(k)).collect();
            let len = order.len();
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
                let run = measure(&tools, row, kind, secs, &tag);
                let mut entry = json!({
                    "row": row.name,
                    "server": kind.name(),
                    "round": round,
                    "position": position,
                });
                match run {
                    Ok(measured) => {
                        let (value, p50) = figures(row, &measured.report);
                        eprintln!(
                            "{tag}: {}{}",
                            format_value(row, value),
                            p50.map(|p| format!(", p50 {p:.1} us")).unwrap_or_default()
                        );
                        entry["ok"] = json!(true);
                        entry["value"] = json!(value);
                        entry["p50_us"] = json!(p50);
                        entry["report"] = measured.report;
                        if let Some(warmup) = measured.warmup_error {
                            entry["warmup_error"] = json!(warmup);
                        }
                        entry["server_stderr"] = json!(measured.server_stderr);
                    }
                    Err(error) => {
                        failures += 1;
                        eprintln!("{tag}: FAILED: {error}");
                        entry["ok"] = json!(false);
                        entry["error"] = json!(error);
                    }
                }
                runs.push(entry);
            }
        }
    }

    let mut medians = serde_json::Map::new();
    for row in &rows {
        let mut per_server = serde_json::Map::new();
        for &kind in &kinds {
            let mine = |field: &str| -> Vec<f64> {
                runs.iter()
                    .filter(|run| run["row"] == row.name && run["server"] == kind.name())
                    .filter_map(|run| run[field].as_f64())
                    .collect()
            };
            let failed = runs
                .iter()
                .filter(|run| run["row"] == row.name && run["server"] == kind.name())
                .filter(|run| run["ok"] == false)
                .count();
            per_server.insert(
                kind.name().to_string(),
                json!({
                    "value": median(mine("value")),
                    "unit": row.mode.unit(),
                    "p50_us": median(mine("p50_us")),
                    "runs": mine("value").len(),
                    "failed": failed,
                }),
            );
        }
        medians.insert(row.name.to_string(), Value::Object(per_server));
    }
    let medians = Value::Object(medians);
    let table = table(&rows, &kinds, &medians);
    let markdown = format!("{}\n\n{table}", machine_line(&machine));

    let complete = rows.len() == ROWS.len() && kinds.len() == KINDS.len();
    let results = json!({
        "machine": machine,
        "settings": {
            "rounds": rounds,
            "seconds": secs,
            "warmup_seconds": WARMUP_SECS,
            "rows": rows.iter().map(|row| json!({
                "name": row.name,
                "mode": row.mode.name(),
                "connections": row.connections,
                "size": row.size,
                "udp": row.udp,
                "unit": row.mode.unit(),
            })).collect::<Vec<_>>(),
            "servers": kinds.iter().map(|kind| json!({
                "name": kind.name(),
                "command": tools.describe(&tools.server_command(*kind, &ROWS[0])),
            })).collect::<Vec<_>>(),
            "complete": complete,
        },
        "runs": runs,
        "medians": medians,
    });
    let dir = tools.target.join("bench");
    fs::create_dir_all(&dir).map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    let json_path = dir.join("latest.json");
    let md_path = dir.join("latest.md");
    let pretty = serde_json::to_string_pretty(&results).expect("JSON values serialize");
    fs::write(&json_path, pretty + "\n")
        .map_err(|err| format!("cannot write {}: {err}", json_path.display()))?;
    fs::write(&md_path, markdown.clone() + "\n")
        .map_err(|err| format!("cannot write {}: {err}", md_path.display()))?;

    println!("{markdown}");
    eprintln!(
        "matrix: wrote {} and {}",
        tools.show(&json_path),
        tools.show(&md_path)
    );
    if !complete {
        eprintln!("matrix: partial run (--only/--servers): `--check` will report what is missing");
    }
    if failures > 0 {
        eprintln!("matrix: {failures} measurement(s) failed; see the FAILED lines above");
    }
    Ok(failures == 0)
}

/// One measurement's outcome.
struct Measured {
    report: Value,
    warmup_error: Option<String>,
    server_stderr: Vec<String>,
}

/// Starts a fresh `kind` server, warms it up, measures `row` on it.
fn measure(tools: &Tools, row: &Row, kind: Kind, secs: f64, tag: &str) -> Result<Measured, String> {
    eprintln!("{tag}: starting");
    let mut server = Server::start(tools, kind, row)?;
    let warmup_error = load(tools, server.addr, row, WARMUP_SECS).err();
    if let Some(error) = &warmup_error {
        eprintln!("{tag}: warm-up failed: {error}");
    }
    let result = load(tools, server.addr, row, secs);
    let died = server.exited();
    let (_, mut server_stderr) = server.stop();
    server_stderr.truncate(STDERR_KEPT);
    let report = match (result, died) {
        (Ok(report), None) => report,
        (Ok(_), Some(died)) => return Err(died),
        (Err(error), None) => return Err(error),
        (Err(error), Some(died)) => return Err(format!("{error}; {died}")),
    };
    // The client's clock starts before it connects: a server slow to take
    // connections can leave no time for echoes at all.
    let took = report["seconds"].as_f64().unwrap_or(0.0);
    if report["bytes"].as_u64() == Some(0) {
        return Err(format!(
            "no byte echoed in the measured {took:.2} s (of {secs} s asked): connecting took it all?"
        ));
    }
    if took > secs * 1.5 {
        eprintln!("{tag}: warning: the run took {took:.2} s of {secs} s asked (slow connects?)");
    }
    Ok(Measured {
        report,
        warmup_error,
        server_stderr,
    })
}

fn format_value(row: &Row, value: Option<f64>) -> String {
    match (value, row.mode) {
        (None, _) => "n/a".to_string(),
        (Some(v), Mode::Stream) => format!("{v:.1} MiB/s"),
        (Some(v), _) => format!("{v:.0} req/s"),
    }
}

fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    match (numerator, denominator) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

fn format_ratio(ratio: Option<f64>) -> String {
    ratio
        .map(|r| format!("{r:.2}"))
        .unwrap_or_else(|| "–".to_string())
}

fn metric(medians: &Value, row: &str, kind: Kind, metric: Metric) -> Option<f64> {
    let cell = &medians[row][kind.name()];
    match metric {
        Metric::Throughput => cell["value"].as_f64(),
        Metric::P50 => cell["p50_us"].as_f64(),
    }
}

/// The markdown table of the medians.
fn table(rows: &[Row], kinds: &[Kind], medians: &Value) -> String {
    let mut out = String::from(
        "| row | tokio | native | wasm | native/tokio | wasm/native | tokio p50 µs | native p50 µs | native/tokio p50 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let get = |kind: Kind, m: Metric| match kinds.contains(&kind) {
            true => metric(medians, row.name, kind, m),
            false => None,
        };
        let cell = |kind: Kind| {
            if !kinds.contains(&kind) {
                return "–".to_string();
            }
            let info = &medians[row.name][kind.name()];
            let failed = info["failed"].as_u64().unwrap_or(0);
            let value = format_value(row, get(kind, Metric::Throughput));
            match failed {
                0 => value,
                _ => format!("{value} ({failed} failed)"),
            }
        };
        let p50 = |kind: Kind| {
            get(kind, Metric::P50)
                .map(|p| format!("{p:.1}"))
                .unwrap_or_else(|| "–".to_string())
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
    out.pop();
    out
}

/// Tests the last results against [`TARGETS`]; `Ok(true)` if all pass.
fn check() -> Result<bool, String> {
    let tools = Tools::locate();
    let path = tools.target.join("bench").join("latest.json");
    let text = fs::read_to_string(&path).map_err(|err| {
        format!(
            "no benchmark results to check at {} ({err}): run `just bench` (or `cargo bench --bench matrix`) first",
            tools.show(&path)
        )
    })?;
    let results: Value = serde_json::from_str(&text).map_err(|err| {
        format!(
            "{} is not valid JSON ({err}): run `just bench` again",
            tools.show(&path)
        )
    })?;
    let medians = &results["medians"];
    println!(
        "checking {} ({})",
        tools.show(&path),
        machine_line(&results["machine"])
    );
    if results["settings"]["complete"] != true {
        println!("note: these results come from a partial run (--only/--servers)");
    }
    let mut passed = true;
    let mut report = |ok: bool, line: String| {
        passed &= ok;
        println!("{} {line}", if ok { "PASS" } else { "FAIL" });
    };
    for target in TARGETS {
        for row in target.rows() {
            let num = metric(medians, row, target.numerator, target.metric);
            let den = metric(medians, row, target.denominator, target.metric);
            let what = match target.metric {
                Metric::Throughput => "throughput",
                Metric::P50 => "p50 latency",
            };
            let name = format!(
                "{row}: {}/{} {what}",
                target.numerator.name(),
                target.denominator.name()
            );
            let Some(value) = ratio(num, den) else {
                let unmeasured: Vec<&str> = [target.numerator, target.denominator]
                    .iter()
                    .filter(|kind| medians[row][kind.name()].is_null())
                    .map(|kind| kind.name())
                    .collect();
                let why = match unmeasured.is_empty() {
                    false => format!(
                        "{} not measured in these results; run `just bench` for the whole matrix",
                        unmeasured.join(" and ")
                    ),
                    true => "no successful measurement to compare".to_string(),
                };
                report(false, format!("{name}: {why}"));
                continue;
            };
            let (ok, sign, bound) = match target.bound {
                Bound::AtLeast(bound) => (value >= bound, "≥", bound),
                Bound::AtMost(bound) => (value <= bound, "≤", bound),
            };
            let show = |v: Option<f64>| match target.metric {
                Metric::P50 => format!("{:.1} us", v.unwrap_or(f64::NAN)),
                Metric::Throughput => {
                    let unit = medians[row][target.numerator.name()]["unit"]
                        .as_str()
                        .unwrap_or("");
                    format!("{:.1} {unit}", v.unwrap_or(f64::NAN))
                }
            };
            report(
                ok,
                format!(
                    "{name} = {value:.2} (target {sign} {bound:.2}; {} {}, {} {})",
                    target.numerator.name(),
                    show(num),
                    target.denominator.name(),
                    show(den)
                ),
            );
        }
    }
    let failed: Vec<String> = results["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|run| run["ok"] == false)
        .map(|run| {
            format!(
                "{} {} round {}",
                run["row"].as_str().unwrap_or("?"),
                run["server"].as_str().unwrap_or("?"),
                run["round"]
            )
        })
        .collect();
    match failed.is_empty() {
        true => report(
            true,
            "every measurement completed without error".to_string(),
        ),
        false => report(false, format!("measurements failed: {}", failed.join(", "))),
    }
    Ok(passed)
}

/// Without `--bench`: checks that the tables agree, quickly.
fn self_test() -> Result<bool, String> {
    for target in TARGETS {
        for row in target.rows() {
            if !ROWS.iter().any(|r| r.name == row) {
                return Err(format!("target names row {row:?}, which is not in ROWS"));
            }
        }
    }
    let names: Vec<_> = ROWS.iter().map(|row| row.name).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != names.len() {
        return Err("two rows share a name".to_string());
    }
    eprintln!(
        "matrix: {} rows and {} targets are consistent; run `cargo bench --bench matrix` to measure",
        ROWS.len(),
        TARGETS.len()
    );
    Ok(true)
}

fn main() -> ExitCode {
    let outcome = parse_options().and_then(|options| {
        if options.check {
            check()
        } else if options.bench {
            bench(&options)
        } else {
            self_test()
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("matrix: {message}");
            ExitCode::from(2)
        }
    }
}
