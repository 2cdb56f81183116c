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

#[cfg(not(target_os = "wasi"))]
fn main() -> std::process::ExitCode {
    soak::main()
}

#[cfg(target_os = "wasi")]
fn main() -> std::process::ExitCode {
    eprintln!("the soak bench runs on the host (it starts wasmtime itself): run it natively");
    std::process::ExitCode::FAILURE
}

#[cfg(not(target_os = "wasi"))]
mod soak {
    use serde_json::Value;
    use std::env;
    use std::fs;
    use std::io::{BufRead, BufReader, Read};
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc, Mutex};
    use std::thread;
    use std::time::{Duration, Instant};

    const CONNECTIONS: u32 = 50;
    const SIZE: u32 = 512;
    /// Allowed RSS growth from warm-up to the end of the run.
    const MAX_GROWTH: f64 = 0.10;
    /// How long past its duration the load client may run.
    const GRACE: Duration = Duration::from_secs(30);

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Build {
        Native,
        Wasm,
    }

    impl Build {
        fn name(self) -> &'static str {
            match self {
                Build::Native => "native",
                Build::Wasm => "wasm",
            }
        }
    }

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

    pub fn main() -> ExitCode {
        for arg in env::args().skip(1) {
            if arg != "--bench" {
                eprintln!("soak: ignoring argument {arg:?}");
            }
        }
        let secs = match env::var("ECHOKIT_SOAK_SECS") {
            Err(_) => 60.0,
            Ok(text) => match text.trim().parse::<f64>() {
                Ok(secs) if (5.0..=86_400.0).contains(&secs) => secs,
                _ => {
                    eprintln!("soak: ECHOKIT_SOAK_SECS={text:?} is not a number of seconds from 5 to 86400");
                    return ExitCode::FAILURE;
                }
            },
        };
        let duration = Duration::from_secs_f64(secs);
        let warm_at = duration.mul_f64(0.1).max(Duration::from_secs(3));
        eprintln!(
            "soak: {secs} s per build, pingpong, {CONNECTIONS} connections of {SIZE} bytes; \
             warm-up RSS at {warm_at:?}"
        );
        let outcomes: Vec<Outcome> = [Build::Native, Build::Wasm]
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
        let mut server = match Server::start(build) {
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
                        if let Some(rss) = vm_rss_kib(pid) {
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
                outcome.requests_per_sec = report["requests_per_sec"].as_f64();
                let errors = report["errors"].as_u64().unwrap_or(0);
                let lost = report["lost"].as_u64().unwrap_or(0);
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
    fn load(addr: SocketAddr, duration: Duration) -> Result<Value, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_echokit"))
            .arg("bench")
            .args(["--connect", &addr.to_string()])
            .args(["--mode", "pingpong"])
            .args(["--connections", &CONNECTIONS.to_string()])
            .args(["--size", &SIZE.to_string()])
            .args(["--duration", &duration.as_secs_f64().to_string()])
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| format!("cannot start echokit bench: {err}"))?;
        let stdout = read_all(child.stdout.take());
        let stderr = read_all(child.stderr.take());
        let status = wait_deadline(&mut child, duration + GRACE);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        let stderr = stderr.trim();
        let Some(status) = status else {
            return Err(format!(
                "echokit bench ran {GRACE:?} past its duration and was killed"
            ));
        };
        if !status.success() {
            return Err(format!(
                "echokit bench failed ({status}): an error or a wrong byte; stderr: {stderr}; \
                 stdout: {}",
                stdout.trim()
            ));
        }
        let last = stdout
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("");
        serde_json::from_str(last)
            .map_err(|err| format!("echokit bench printed no JSON report ({err}): {last:?}"))
    }

    fn read_all(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    }

    fn wait_deadline(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < end => thread::sleep(Duration::from_millis(10)),
                _ => return None,
            }
        }
    }

    fn vm_rss_kib(pid: u32) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// A server on 127.0.0.1 and a free port; killed on drop.
    struct Server {
        child: Child,
        addr: SocketAddr,
        stderr: Arc<Mutex<String>>,
    }

    impl Server {
        fn start(build: Build) -> Result<Server, String> {
            let mut command = match build {
                Build::Native => Command::new(env!("CARGO_BIN_EXE_echokit")),
                Build::Wasm => {
                    let (wasmtime, wasm) = wasm_tools()?;
                    let mut command = Command::new(wasmtime);
                    command.args(["run", "-S", "inherit-network"]).arg(wasm);
                    command
                }
            };
            let mut child = command
                .args(["serve", "--listen", "127.0.0.1:0"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|err| format!("cannot start the {} server: {err}", build.name()))?;
            let stderr = Arc::new(Mutex::new(String::new()));
            if let Some(pipe) = child.stderr.take() {
                let kept = Arc::clone(&stderr);
                thread::spawn(move || {
                    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                        eprintln!("    [server] {line}");
                        let mut kept = kept.lock().unwrap();
                        kept.push_str(&line);
                        kept.push('\n');
                    }
                });
            }
            let (tx, rx) = mpsc::channel();
            let stdout = child.stdout.take().expect("piped stdout");
            thread::spawn(move || {
                let mut stdout = BufReader::new(stdout);
                let mut line = String::new();
                let _ = tx.send(stdout.read_line(&mut line).map(|_| line));
                let _ = std::io::copy(&mut stdout, &mut std::io::sink());
            });
            let mut server = Server {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                stderr,
            };
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .map_err(|_| format!("the {} server printed no listening line", build.name()))?
                .map_err(|err| format!("reading the {} server's stdout: {err}", build.name()))?;
            server.addr = line
                .trim()
                .strip_prefix("listening on ")
                .and_then(|addr| addr.parse().ok())
                .ok_or_else(|| {
                    format!(
                        "the {} server printed {:?}, not `listening on IP:PORT`; stderr: {}",
                        build.name(),
                        line.trim_end(),
                        server.stderr()
                    )
                })?;
            Ok(server)
        }

        fn pid(&self) -> u32 {
            self.child.id()
        }

        fn exited(&mut self) -> Option<ExitStatus> {
            self.child.try_wait().ok().flatten()
        }

        fn stderr(&self) -> String {
            self.stderr.lock().unwrap().clone()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// wasmtime and echokit.wasm, or what to run to get them.
    fn wasm_tools() -> Result<(PathBuf, PathBuf), String> {
        let wasm = match env::var_os("ECHOKIT_WASM") {
            Some(path) => PathBuf::from(path),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/wasm32-wasip2/release/echokit.wasm"),
        };
        if !wasm.is_file() {
            return Err(format!(
                "{} is missing: run `just setup` and `just build-wasm` (or set ECHOKIT_WASM)",
                wasm.display()
            ));
        }
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(path) = env::var_os("WASMTIME") {
            candidates.push(PathBuf::from(path));
        } else {
            if let Some(paths) = env::var_os("PATH") {
                candidates.extend(env::split_paths(&paths).map(|dir| dir.join("wasmtime")));
            }
            if let Some(home) = env::var_os("HOME") {
                candidates.push(Path::new(&home).join(".cargo/bin/wasmtime"));
            }
        }
        let wasmtime = candidates
            .into_iter()
            .find(|path| path.is_file())
            .ok_or("wasmtime not found (WASMTIME, PATH, ~/.cargo/bin): run `just setup`")?;
        Ok((wasmtime, wasm))
    }
}
