//! Real-socket fault tests: echokit's server under descriptor exhaustion,
//! connection storms, abrupt resets, slowloris and idle peers, idle load,
//! signals, its connection limit and UDP abuse (forged loops, service
//! ports, floods), over 127.0.0.1.
//!
//! The tests are a table, [`FAULTS`]: each fault runs against every build
//! it lists, as one named test per build (`fd_exhaustion_native`,
//! `fd_exhaustion_wasm`): the native server (the `echokit` binary cargo
//! builds) and the wasm server (`wasmtime run -S inherit-network
//! echokit.wasm serve ...`). Graceful shutdown is native only: WASI 0.2
//! has no signals, so the wasm build's test asserts that limitation
//! instead (`signal_kills_wasm_server_without_drain`).
//!
//! The wasm tests find the component and wasmtime as the conformance kit
//! does (testkit's `wasm` module); when either is missing they FAIL and say
//! to run `just setup` and `just build-wasm`; they never skip.
//!
//! The tests that move a lot of traffic or open thousands of connections
//! take the [`heavy`] lock, so that at most one of them runs at a time and
//! the timing and memory figures mean something on a small machine. Run
//! with `cargo test --release --test faults -- --nocapture` to see the
//! figures each test prints.

// The tests drive processes and /proc from the host; built for WASI (as
// `cargo clippy --all-targets --target wasm32-wasip2` does) there is
// nothing to test, and no `main`.
#![cfg_attr(target_os = "wasi", no_main)]
#![cfg(not(target_os = "wasi"))]

mod load;
mod peers;
mod signals;
mod udp;

use libtest_mimic::{Arguments, Trial};
use socket2::SockRef;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};
use testkit::net::{first_difference, EchoError};
use testkit::payload::random_bytes;
use testkit::{procfs, Build, ServerProcess, StderrTo, Target};

/// One fault test: its name (`{build}` stands for the build's), the builds
/// it runs on, and what it does.
struct Fault {
    name: &'static str,
    builds: &'static [Build],
    run: fn(Build),
}

const BOTH: &[Build] = &Build::ALL;
/// Signals reach only the native build: WASI 0.2 has none.
const NATIVE: &[Build] = &[Build::Native];
const WASM: &[Build] = &[Build::Wasm];

/// Every fault test.
const FAULTS: &[Fault] = &[
    Fault {
        name: "fd_exhaustion_{build}",
        builds: BOTH,
        run: load::fd_exhaustion,
    },
    Fault {
        name: "connection_storm_{build}",
        builds: BOTH,
        run: load::connection_storm,
    },
    Fault {
        name: "reset_before_accept_{build}",
        builds: BOTH,
        run: load::reset_before_accept,
    },
    Fault {
        name: "resets_mid_echo_{build}",
        builds: BOTH,
        run: load::resets_mid_echo,
    },
    Fault {
        name: "idle_cpu_{build}",
        builds: BOTH,
        run: load::idle_cpu,
    },
    Fault {
        name: "slowloris_and_idle_{build}",
        builds: BOTH,
        run: peers::slowloris_and_idle,
    },
    Fault {
        name: "non_reading_peer_{build}",
        builds: BOTH,
        run: peers::non_reading_peer,
    },
    Fault {
        name: "max_connections_{build}",
        builds: BOTH,
        run: peers::max_connections,
    },
    Fault {
        name: "udp_forged_loop_{build}",
        builds: BOTH,
        run: udp::forged_loop,
    },
    Fault {
        name: "udp_service_ports_{build}",
        builds: BOTH,
        run: udp::service_ports,
    },
    Fault {
        name: "udp_rate_bound_{build}",
        builds: BOTH,
        run: udp::rate_bound,
    },
    Fault {
        name: "sigterm_drains_open_echo_{build}",
        builds: NATIVE,
        run: signals::sigterm_drains_open_echo,
    },
    Fault {
        name: "shutdown_timeout_cuts_off_{build}",
        builds: NATIVE,
        run: signals::shutdown_timeout_cuts_off,
    },
    Fault {
        name: "second_signal_exits_at_once_{build}",
        builds: NATIVE,
        run: signals::second_signal_exits_at_once,
    },
    Fault {
        name: "connections_per_event_loop_{build}",
        builds: NATIVE,
        run: signals::connections_per_event_loop,
    },
    Fault {
        name: "signal_kills_{build}_server_without_drain",
        builds: WASM,
        run: signals::signal_kills_server_without_drain,
    },
];

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let trials = FAULTS
        .iter()
        .flat_map(|fault| {
            fault.builds.iter().map(move |&build| {
                let name = fault.name.replace("{build}", build.name());
                let run = fault.run;
                Trial::test(name, move || {
                    run(build);
                    Ok(())
                })
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// Raises this process's soft open-files limit to its hard limit (once):
/// the tests hold a thousand or more sockets at a time.
fn raise_open_files() {
    static DONE: OnceLock<Result<u64, String>> = OnceLock::new();
    let result = DONE.get_or_init(|| {
        testkit::limits::raise_open_files_to_hard().map_err(|err| format!("setrlimit: {err}"))
    });
    match result {
        Ok(soft) if *soft >= 4096 => {}
        Ok(soft) => panic!(
            "these tests need 4096 open files but the hard limit is {soft}: raise it \
             (`ulimit -Hn 8192` as root, or LimitNOFILE in the container settings)"
        ),
        Err(err) => panic!("raising the open-files limit: {err}"),
    }
}

/// Held by the tests that load the machine, so that they run one at a time.
fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    testkit::lock(&HEAVY)
}

/// Starts `build`'s `echokit serve --listen 127.0.0.1:0 EXTRA...`, with
/// RLIMIT_NOFILE set to `open_files` when given.
fn start_server(build: Build, extra: &[&str], open_files: Option<u64>) -> ServerProcess {
    raise_open_files();
    let mut cmd = Target::new(build).must();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(extra);
    if let Some(n) = open_files {
        testkit::limits::limit_open_files(&mut cmd, n);
    }
    ServerProcess::start(cmd, StderrTo::Keep, Duration::from_secs(30))
        .unwrap_or_else(|err| panic!("{err}"))
}

/// Fails the test if the server died.
fn alive(server: &mut ServerProcess) {
    server.ensure_alive().unwrap_or_else(|err| panic!("{err}"));
}

/// User plus system CPU time of the whole server (all threads).
fn cpu(server: &ServerProcess) -> Duration {
    procfs::cpu_time(server.pid()).unwrap_or_else(|err| panic!("{err}"))
}

/// The server's resident memory in KiB; 0 if it is gone.
fn rss_kib(server: &ServerProcess) -> u64 {
    procfs::rss_kib(server.pid()).unwrap_or(0)
}

/// The native server's exit summary, checked word for word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Summary {
    served: u64,
    bytes: u64,
    datagrams: u64,
    cut_off: u64,
}

fn parse_summary(stderr: &str) -> Result<Summary, String> {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("echokit: stopped:"))
        .collect();
    let [line] = lines[..] else {
        return Err(format!(
            "expected exactly one `echokit: stopped:` line, got {}; stderr: {stderr:?}",
            lines.len()
        ));
    };
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    let [served, bytes, datagrams, cut_off] = numbers[..] else {
        return Err(format!("summary line {line:?} does not have four numbers"));
    };
    let expected = format!(
        "echokit: stopped: served {served} connections, echoed {bytes} bytes and \
         {datagrams} datagrams; {cut_off} connections cut off by --shutdown-timeout"
    );
    if line != expected {
        return Err(format!(
            "summary line {line:?} is not in the form {expected:?}"
        ));
    }
    Ok(Summary {
        served,
        bytes,
        datagrams,
        cut_off,
    })
}

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = testkit::net::connect(addr, Duration::from_secs(3), IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Writes `data`, reads as much back and compares (small data only: no
/// concurrent reading).
fn echo_small(stream: &mut TcpStream, data: &[u8]) -> Result<(), String> {
    testkit::net::round_trip(stream, data).map_err(|err| match err {
        EchoError::Write(err) => format!("write: {err}"),
        EchoError::Read(err) => format!("read: {err}"),
        EchoError::Wrong(got) => format!("wrong echo: {}", first_difference(&got, data)),
    })
}

/// Echoes `data` full duplex (a writer thread, reading here), then half
/// closes and expects exactly `data` back before the end of stream.
fn echo_full_duplex(stream: TcpStream, data: Arc<Vec<u8>>) -> Result<(), String> {
    let mut writer = stream.try_clone().map_err(|err| err.to_string())?;
    let to_send = Arc::clone(&data);
    let write = thread::spawn(move || -> io::Result<()> {
        for chunk in to_send.chunks(16 * 1024) {
            writer.write_all(chunk)?;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut got = Vec::with_capacity(data.len());
    let read = (&stream).take(data.len() as u64 + 1).read_to_end(&mut got);
    let written = write.join().map_err(|_| "writer panicked".to_owned())?;
    written.map_err(|err| format!("write: {err}"))?;
    read.map_err(|err| format!("read after {} bytes: {err}", got.len()))?;
    if got[..] != data[..] {
        return Err(format!("wrong echo: {}", first_difference(&got, &data)));
    }
    Ok(())
}

/// One `echokit send` (native client) of 64 KiB to `addr`, killed after
/// `limit`.
fn echokit_send(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    let payload = random_bytes(64 * 1024, addr.port() as u64);
    let mut child = Target::new(Build::Native)
        .must()
        .args(["send", "--connect", &addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot start echokit send: {err}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = payload.clone();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let errors = thread::spawn(move || {
        let mut out = String::new();
        let _ = stderr.read_to_string(&mut out);
        out
    });
    let status = testkit::process::wait_deadline(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let err = errors.join().unwrap_or_default();
    match status {
        None => Err(format!(
            "echokit send took more than {limit:?}; stderr: {err}"
        )),
        Some(status) if !status.success() => Err(format!("echokit send: {status}: {err}")),
        Some(_) if out != payload => Err(format!(
            "echokit send: wrong echo: {}",
            first_difference(&out, &payload)
        )),
        Some(_) => Ok(()),
    }
}

/// Retries `echokit send` until it succeeds or `within` runs out; returns
/// how long it took.
fn send_within(addr: SocketAddr, within: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::new();
    for _ in 0..100 {
        let left = within.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        match echokit_send(addr, left.max(Duration::from_millis(200))) {
            Ok(()) => return Ok(start.elapsed()),
            Err(err) => last = err,
        }
        thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "no successful `echokit send` to {addr} within {within:?}; last: {last}"
    ))
}

/// Whether the peer closed `stream` (end of stream or reset) within
/// `limit`; data that arrives meanwhile is discarded.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    for _ in 0..10_000 {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).ok()?;
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

fn reset_and_close(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}
