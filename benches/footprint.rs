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
mod host {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::path::PathBuf;
    use std::process::{Child, Command, ExitCode, Stdio};
    use std::time::{Duration, Instant};
    use std::{env, fs, thread};

    const STARTS: usize = 11;
    const IDLE_CONNECTIONS: usize = 10_000;
    const NATIVE_IDLE_LIMIT_KIB: u64 = 20 * 1024;
    const WASM_STARTUP_LIMIT: Duration = Duration::from_millis(150);

    #[derive(Clone, Copy, PartialEq)]
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

        fn command(self) -> Result<Command, String> {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let (program, args): (PathBuf, Vec<String>) = match self {
                Build::Native => (root.join("target/release/echokit"), vec![]),
                Build::Wasm => {
                    let wasm = root.join("target/wasm32-wasip2/release/echokit.wasm");
                    if !wasm.exists() {
                        return Err(format!(
                            "{} is missing: run `just build-wasm`",
                            wasm.display()
                        ));
                    }
                    let wasmtime = env::var_os("WASMTIME").map_or_else(
                        || {
                            PathBuf::from(env::var("HOME").unwrap_or_default())
                                .join(".cargo/bin/wasmtime")
                        },
                        PathBuf::from,
                    );
                    let args = ["run", "-S", "inherit-network"].map(String::from).into();
                    let mut args: Vec<String> = args;
                    args.push(wasm.display().to_string());
                    (wasmtime, args)
                }
            };
            if !program.exists() {
                return Err(format!(
                    "{} is missing: run `just setup build`",
                    program.display()
                ));
            }
            let mut command = Command::new(program);
            command
                .args(args)
                .args([
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--max-connections",
                    "20000",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            Ok(command)
        }
    }

    struct Server {
        child: Child,
        addr: SocketAddr,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Starts a server; returns it and how long its `listening on` line took.
    fn start(build: Build) -> Result<(Server, Duration), String> {
        let mut command = build.command()?;
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|err| format!("cannot start: {err}"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|err| err.to_string())?;
        let took = started.elapsed();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| format!("unexpected first line {line:?}"))?;
        Ok((Server { child, addr }, took))
    }

    fn rss_kib(pid: u32) -> u64 {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    fn raise_open_files_limit() {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain system calls on a local struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
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
        let pid = server.child.id();
        let baseline_kib = rss_kib(pid);
        let mut connections = Vec::with_capacity(IDLE_CONNECTIONS);
        for index in 0..IDLE_CONNECTIONS {
            let mut stream = TcpStream::connect(server.addr)
                .map_err(|err| format!("connection {index}: {err}"))?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            stream.write_all(b"x").map_err(|err| err.to_string())?;
            let mut byte = [0];
            stream
                .read_exact(&mut byte)
                .map_err(|err| format!("connection {index}: no echo: {err}"))?;
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
