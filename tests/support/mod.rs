//! Host-side helpers shared by the integration tests (tests/faults.rs,
//! tests/load_generator.rs, the conformance kit in tests/kit/) and the
//! benches (benches/soak.rs, benches/footprint.rs, benches/matrix.rs): where
//! the programs under test are, the open-files limit, /proc figures, a
//! server process started on a free port, and a plain `std::net` echo round
//! trip.
//!
//! Integration tests include it with `mod support;`, benches with
//! `#[path = "../tests/support/mod.rs"] mod support;`. It builds for
//! wasm32-wasip2 too (benches/matrix.rs compiles there), so the parts that
//! need libc are native only.

// Each test and bench crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Builds and where their programs are
// ---------------------------------------------------------------------------

/// A build of echokit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// The cargo-built binary.
    Native,
    /// `echokit.wasm` run by wasmtime.
    Wasm,
}

impl Build {
    pub fn name(self) -> &'static str {
        match self {
            Build::Native => "native",
            Build::Wasm => "wasm",
        }
    }
}

/// The native binary cargo built for this test or bench.
pub fn native_bin() -> &'static str {
    env!("CARGO_BIN_EXE_echokit")
}

/// The project root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the root),
/// else `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// `$ECHOKIT_WASM` if set, else target/wasm32-wasip2/release/echokit.wasm
/// (`just build-wasm`); it may not exist.
pub fn wasm_artifact() -> PathBuf {
    match std::env::var_os("ECHOKIT_WASM") {
        Some(path) => PathBuf::from(path),
        None => target_dir().join("wasm32-wasip2/release/echokit.wasm"),
    }
}

/// Where to look for wasmtime, in order: `$WASMTIME` alone if set, else
/// `wasmtime` in each `PATH` directory, then `~/.cargo/bin/wasmtime`.
pub fn wasmtime_candidates() -> Vec<PathBuf> {
    if let Some(path) = std::env::var_os("WASMTIME") {
        return vec![PathBuf::from(path)];
    }
    let mut found: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("wasmtime"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        found.push(Path::new(&home).join(".cargo/bin/wasmtime"));
    }
    found
}

/// The first of [`wasmtime_candidates`] that runs `--version`; else the
/// candidates, listed for a message.
pub fn find_wasmtime() -> Result<PathBuf, String> {
    let candidates = wasmtime_candidates();
    candidates
        .iter()
        .find(|path| {
            Command::new(path)
                .arg("--version")
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .cloned()
        .ok_or_else(|| {
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
}

/// Runs `wasmtime run WASM --version` once, so that wasmtime compiles the
/// component into its cache here rather than in the processes a test
/// times; `remedy` ends the message when the component fails.
pub fn warm_wasm(wasmtime: &Path, wasm: &Path, remedy: &str) -> Result<(), String> {
    let out = Command::new(wasmtime)
        .arg("run")
        .arg(wasm)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {}: {err}", wasmtime.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} run {} --version` failed ({}): {}{remedy}",
            wasmtime.display(),
            wasm.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// `wasmtime run -S inherit-network WASM`, echokit's arguments still to add.
pub fn wasm_command(wasmtime: impl AsRef<OsStr>, wasm: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(wasmtime);
    cmd.args(["run", "-S", "inherit-network"]).arg(wasm);
    cmd
}

/// wasmtime and the component it runs.
#[derive(Debug)]
pub struct WasmTools {
    /// The wasmtime executable.
    pub wasmtime: PathBuf,
    /// echokit.wasm.
    pub wasm: PathBuf,
}

/// Finds wasmtime and the wasm artifact, building the latter: once per test
/// binary, whichever test asks first; every wasm test fails with the same
/// message when this does (the tests never skip).
pub fn wasm_tools() -> Result<&'static WasmTools, String> {
    static TOOLS: OnceLock<Result<WasmTools, String>> = OnceLock::new();
    TOOLS
        .get_or_init(find_wasm_tools)
        .as_ref()
        .map_err(Clone::clone)
}

fn find_wasm_tools() -> Result<WasmTools, String> {
    let wasmtime = wasmtime_or_remedy()?;
    let wasm = find_or_build_wasm()?;
    // Warm wasmtime's compilation cache before dozens of parallel processes.
    warm_wasm(&wasmtime, &wasm, "")?;
    Ok(WasmTools { wasmtime, wasm })
}

/// `$WASMTIME`, else `wasmtime` on `PATH`, else `~/.cargo/bin/wasmtime`.
fn wasmtime_or_remedy() -> Result<PathBuf, String> {
    find_wasmtime().map_err(|looked_at| {
        format!(
            "wasmtime not found (looked at {looked_at}): run `just setup` to install it, \
             or set WASMTIME=/path/to/wasmtime"
        )
    })
}

/// `$ECHOKIT_WASM` as is, else `cargo build --release --target
/// wasm32-wasip2` (a no-op when up to date) and the artifact it reports.
fn find_or_build_wasm() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ECHOKIT_WASM") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "ECHOKIT_WASM={} is not a file: run `just build-wasm`, or unset \
                 ECHOKIT_WASM to let the kit build it",
                path.display()
            ))
        };
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let out = Command::new(&cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--bin",
            "echokit",
            "--message-format=json-render-diagnostics",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {}: {err}", Path::new(&cargo).display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "`cargo build --release --target wasm32-wasip2` failed ({}); run `just setup` \
             (installs the wasm32-wasip2 target and wasmtime) and `just build-wasm`, or set \
             ECHOKIT_WASM to a built echokit.wasm:\n{}",
            out.status,
            tail.join("\n")
        ));
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["target"]["name"] != "echokit" {
            continue;
        }
        let wasm = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"));
        if let Some(wasm) = wasm {
            return Ok(PathBuf::from(wasm));
        }
    }
    Err(format!(
        "`cargo build --release --target wasm32-wasip2` reported no echokit .wasm artifact:\n{stderr}"
    ))
}

/// A command running `build` of echokit, arguments still to add.
/// Panics with the remedy when the wasm tools cannot be had.
pub fn echokit(build: Build) -> Command {
    match build {
        Build::Native => Command::new(native_bin()),
        Build::Wasm => match wasm_tools() {
            Ok(tools) => wasm_command(&tools.wasmtime, &tools.wasm),
            Err(err) => panic!("{err}"),
        },
    }
}

// ---------------------------------------------------------------------------
// The open-files limit and /proc (native only: libc)
// ---------------------------------------------------------------------------

/// This process's `RLIMIT_NOFILE` as (soft, hard).
#[cfg(not(target_os = "wasi"))]
pub fn open_files_limit() -> io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Sets this process's `RLIMIT_NOFILE` (children inherit it).
#[cfg(not(target_os = "wasi"))]
pub fn set_open_files_limit(soft: libc::rlim_t, hard: libc::rlim_t) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft open-files limit to the hard one; returns the soft
/// limit now in force.
#[cfg(not(target_os = "wasi"))]
pub fn raise_open_files_to_hard() -> io::Result<libc::rlim_t> {
    let (soft, hard) = open_files_limit()?;
    if soft < hard {
        set_open_files_limit(hard, hard)?;
    }
    Ok(hard.max(soft))
}

/// A `kB` field of /proc/PID/status, such as `VmRSS` or `VmHWM`; `None` if
/// the process is gone or the field missing.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The resident memory of `pid` in KiB.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS")
}

/// User plus system CPU time of the whole process `pid` (all threads),
/// from /proc/PID/stat.
#[cfg(not(target_os = "wasi"))]
pub fn cpu_time(pid: u32) -> Result<Duration, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|err| format!("reading /proc/{pid}/stat: {err}"))?;
    // Fields after the command name, which is in parentheses: the state is
    // field 3, utime field 14 and stime field 15.
    let rest = &stat[stat.rfind(')').ok_or("/proc/PID/stat: no comm")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat: field {} is not a number", i + 3))
    };
    let ticks = tick(11)? + tick(12)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(Duration::from_secs_f64(ticks as f64 / hz))
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/// Locks, ignoring poisoning (a panicking test thread must not hide output).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits up to `limit` for `child` to exit.
pub fn wait_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < end => thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}

/// Reads `pipe` to the end on a thread.
pub fn read_all(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// A child's exit status (`None`: killed at its deadline) and output.
pub struct Finished {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Waits up to `limit` for a started `child` with piped stdout and stderr,
/// killing it then; collects its output.
pub fn finish_within(mut child: Child, limit: Duration) -> Finished {
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let status = wait_deadline(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

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

/// [`bench_run`], and its report, or why there is none (a failed run means
/// an error or a wrong byte).
pub fn run_bench(
    echokit: Command,
    addr: SocketAddr,
    args: &[&str],
    duration: Duration,
    grace: Duration,
) -> Result<serde_json::Value, String> {
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
    bench_report(&stdout)
}

/// The report `echokit bench --json` printed: its last non-empty line.
pub fn bench_report(stdout: &str) -> Result<serde_json::Value, String> {
    let last = stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last)
        .map_err(|err| format!("echokit bench printed no JSON report ({err}): {last:?}"))
}

/// What happens to a server's stderr.
pub enum StderrTo {
    /// Passed through to ours.
    Inherit,
    /// Kept, for [`ServerProcess::stderr`].
    Keep,
    /// Kept, and each line also printed on our stderr after this prefix.
    EchoAndKeep(String),
}

/// Why a server did not report its address.
#[derive(Debug)]
pub enum StartError {
    /// Its stdout ended before a line (it exited, most likely).
    NoLine,
    /// Reading its stdout failed.
    Read(io::Error),
    /// No line within the time allowed.
    Timeout,
    /// The first line, which is not `listening on IP:PORT`.
    NotListening(String),
}

/// A server process (anything printing `listening on IP:PORT` first on
/// stdout); killed on drop unless it has been seen to exit.
pub struct ServerProcess {
    pub child: Child,
    /// The address from the `listening on` line, once read.
    pub addr: SocketAddr,
    /// The `listening on` line, without its newline.
    pub line: String,
    /// How it exited, once known.
    pub status: Option<ExitStatus>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
    extra_stdout: Arc<Mutex<Vec<u8>>>,
    first_line: mpsc::Receiver<io::Result<String>>,
}

impl ServerProcess {
    /// Starts `cmd` (stdin null, stdout piped) and the threads that read
    /// its output; [`ServerProcess::wait_listening`] then reads its address.
    pub fn spawn(mut cmd: Command, stderr_to: StderrTo) -> io::Result<ServerProcess> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        cmd.stderr(match stderr_to {
            StderrTo::Inherit => Stdio::inherit(),
            _ => Stdio::piped(),
        });
        let mut child = cmd.spawn()?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = child.stderr.take().map(|pipe| {
            let into = Arc::clone(&stderr);
            match stderr_to {
                StderrTo::EchoAndKeep(prefix) => thread::spawn(move || {
                    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                        eprintln!("{prefix}{line}");
                        let mut kept = lock(&into);
                        kept.extend_from_slice(line.as_bytes());
                        kept.push(b'\n');
                    }
                }),
                _ => drain(pipe, into),
            }
        });
        // The first stdout line is the address; the rest is kept, so that
        // the server never blocks on a full pipe.
        let extra_stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, first_line) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let rest = Arc::clone(&extra_stdout);
            thread::spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut line = String::new();
                let _ = tx.send(reader.read_line(&mut line).map(|_| line));
                let mut buf = Vec::new();
                let _ = reader.read_to_end(&mut buf);
                lock(&rest).extend_from_slice(&buf);
            });
        }
        Ok(ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            line: String::new(),
            status: None,
            stderr,
            stderr_reader,
            extra_stdout,
            first_line,
        })
    }

    /// Waits up to `timeout` for the `listening on IP:PORT` line and sets
    /// [`ServerProcess::addr`] and [`ServerProcess::line`] from it.
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<SocketAddr, StartError> {
        let line = match self.first_line.recv_timeout(timeout) {
            Ok(Ok(line)) if !line.is_empty() => line,
            Ok(Ok(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(StartError::NoLine)
            }
            Ok(Err(err)) => return Err(StartError::Read(err)),
            Err(mpsc::RecvTimeoutError::Timeout) => return Err(StartError::Timeout),
        };
        let line = line.trim_end_matches('\n').to_owned();
        let addr = parse_listening(&line).ok_or_else(|| StartError::NotListening(line.clone()))?;
        self.addr = addr;
        self.line = line;
        Ok(addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server wrote on stderr so far (nothing if inherited).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stderr)).into_owned()
    }

    /// What the server wrote on stdout after its first line, so far.
    pub fn extra_stdout(&self) -> Vec<u8> {
        lock(&self.extra_stdout).clone()
    }

    /// How the server exited, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `limit` for the server to exit; then its stderr is
    /// complete.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = wait_deadline(&mut self.child, limit);
        }
        if self.status.is_some() {
            self.join_stderr();
        }
        self.status
    }

    /// Kills the server (SIGKILL) unless it has exited, and waits for it
    /// and for the rest of its stderr.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.join_stderr();
    }

    fn join_stderr(&mut self) {
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address of a `listening on IP:PORT` line.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix("listening on ")
        .and_then(|addr| addr.parse().ok())
}

fn drain(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            lock(&into).extend_from_slice(&buf[..n]);
        }
    })
}

// ---------------------------------------------------------------------------
// A std client
// ---------------------------------------------------------------------------

/// Connects within `connect_timeout`, with `io_timeout` on reads and writes.
pub fn connect(
    addr: SocketAddr,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, connect_timeout)?;
    stream.set_read_timeout(Some(io_timeout))?;
    stream.set_write_timeout(Some(io_timeout))?;
    Ok(stream)
}

/// How a [`round_trip`] failed.
#[derive(Debug)]
pub enum EchoError {
    Write(io::Error),
    Read(io::Error),
    /// The bytes that came back instead.
    Wrong(Vec<u8>),
}

/// Writes `bytes` and reads exactly as many back on an open connection;
/// fails unless they are the same.
pub fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), EchoError> {
    stream.write_all(bytes).map_err(EchoError::Write)?;
    let mut back = vec![0; bytes.len()];
    stream.read_exact(&mut back).map_err(EchoError::Read)?;
    if back != bytes {
        return Err(EchoError::Wrong(back));
    }
    Ok(())
}
