//! The scenario drivers: one function per `kind` of the table.

use super::check::{self, Outcome};
use super::payload::{self, Loaded};
use super::server::{lock, Server};
use super::std_client::{self, is_closed_by_peer, round_trip, IO_TIMEOUT};
use super::table::{param, Build, Column, Deviation, Expect, Kind, Scenario, Stdin};
use super::target::Target;
use super::{limits, world};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Shorter limit for commands expected to fail at once: one that wrongly
/// starts serving is killed after this.
const FAIL_FAST_TIMEOUT: Duration = Duration::from_secs(20);

/// One scenario in one pairing.
pub struct Case {
    pub scenario: Arc<Scenario>,
    pub server: Option<Build>,
    pub client: Option<Column>,
    pub fixtures: PathBuf,
}

impl Case {
    /// The declared deviation covering this pairing, if any.
    pub fn deviation(&self) -> Option<&Deviation> {
        self.scenario
            .deviations
            .iter()
            .find(|d| d.applies(self.server, self.client))
    }

    /// The expected outcome, after any deviation.
    fn expect(&self) -> &Expect {
        self.deviation()
            .and_then(|d| d.expect.as_ref())
            .unwrap_or(&self.scenario.expect)
    }

    fn payload(&self, seed_offset: u64) -> Result<Loaded, String> {
        let spec = self
            .scenario
            .payload
            .as_ref()
            .ok_or_else(|| format!("scenario `{}` needs a payload", self.scenario.name))?;
        payload::load(spec, &self.fixtures, seed_offset)
    }

    fn server_build(&self) -> Result<Build, String> {
        self.server
            .ok_or_else(|| "this scenario needs a server build".to_owned())
    }

    fn column(&self) -> Result<Column, String> {
        self.client
            .ok_or_else(|| "this scenario needs a client column".to_owned())
    }

    fn start_server(&self) -> Result<Server, String> {
        let s = &self.scenario;
        let server = Server::start(
            &Target::new(self.server_build()?),
            &s.listen,
            &s.server_args,
        )?;
        if let Some(prefix) = &s.listening_prefix {
            if !server.line.starts_with(prefix.as_str()) {
                return Err(format!(
                    "the server printed {:?}, expected it to start with {prefix:?}",
                    server.line
                ));
            }
        }
        Ok(server)
    }
}

/// Runs one case; a failure says what the scenario shows and which
/// declared deviation applied.
pub fn run(case: &Case) -> Result<(), String> {
    run_kind(case).map_err(|err| {
        let mut msg = format!(
            "scenario `{}`: {}\n",
            case.scenario.name, case.scenario.about
        );
        if let Some(d) = case.deviation() {
            msg.push_str(&format!("declared deviation: {}\n", d.reason));
        }
        msg + &err
    })
}

fn run_kind(case: &Case) -> Result<(), String> {
    match case.scenario.kind {
        Kind::Echo => echo(case),
        Kind::ManySmall => many_small(case),
        Kind::Concurrent => concurrent(case),
        Kind::SlowReader => slow_reader(case),
        Kind::Reset => reset(case),
        Kind::IdleTimeout => idle_timeout(case),
        Kind::MaxConnections => max_connections(case),
        Kind::Restart => restart(case),
        Kind::ServeFails => serve_fails(case),
        Kind::SendFails => send_fails(case),
        Kind::NoNetwork => no_network(case),
        Kind::ComponentWorld => component_world(case),
        Kind::ThousandClients => thousand_clients(case),
        Kind::UdpBurst => udp_burst(case),
        Kind::UdpTwoClients => udp_two_clients(case),
        Kind::TcpAndUdp => tcp_and_udp(case),
    }
}

/// Adds the server's command and stderr to a failure.
fn with_server<T>(server: &Server, result: Result<T, String>) -> Result<T, String> {
    result.map_err(|err| format!("{err}\n{}", server.describe()))
}

/// Values for the `{...}` placeholders of `client_args`.
#[derive(Default)]
struct Places {
    server: Option<SocketAddr>,
    payload: Option<PathBuf>,
    output: Option<PathBuf>,
    closed: Option<SocketAddr>,
    datagram_size: Option<usize>,
}

fn substitute(args: &[String], places: &Places) -> Result<Vec<String>, String> {
    args.iter()
        .map(|arg| {
            let mut arg = arg.clone();
            let values = [
                ("{server}", places.server.map(|a| a.to_string())),
                (
                    "{payload}",
                    places.payload.as_ref().map(|p| p.display().to_string()),
                ),
                (
                    "{output}",
                    places.output.as_ref().map(|p| p.display().to_string()),
                ),
                ("{closed}", places.closed.map(|a| a.to_string())),
                (
                    "{datagram_size}",
                    places.datagram_size.map(|n| n.to_string()),
                ),
            ];
            for (key, value) in values {
                if arg.contains(key) {
                    let value =
                        value.ok_or_else(|| format!("no value for {key} in this scenario"))?;
                    arg = arg.replace(key, &value);
                }
            }
            Ok(arg)
        })
        .collect()
}

/// Runs an echokit client build as the table says: writes the payload to
/// `dir`, substitutes the placeholders, checks the outcome.
fn echokit_client(
    case: &Case,
    target: Target,
    places: Places,
    payload: &Arc<[u8]>,
    dir: &Path,
    index: usize,
    expect: &Expect,
) -> Result<Outcome, String> {
    let payload_path = dir.join(format!("payload-{index}.bin"));
    std::fs::write(&payload_path, &payload[..])
        .map_err(|err| format!("cannot write {}: {err}", payload_path.display()))?;
    let output_path = dir.join(format!("output-{index}.bin"));
    let places = Places {
        payload: Some(payload_path),
        output: Some(output_path.clone()),
        datagram_size: case.scenario.params.datagram_size,
        ..places
    };
    let args = substitute(&case.scenario.client_args, &places)?;
    let stdin = case
        .scenario
        .client_stdin
        .map(|Stdin::Payload| &payload[..]);
    let out = check::run(&target.with_dir(dir), &args, stdin, check::PROCESS_TIMEOUT)?;
    let uses_output = case
        .scenario
        .client_args
        .iter()
        .any(|a| a.contains("{output}"));
    check::check(
        expect,
        &out,
        payload,
        uses_output.then_some(output_path.as_path()),
    )?;
    Ok(out)
}

/// Bytes per datagram of the std UDP client: `params.datagram_size`, else
/// 1024 as `echokit send --udp`.
fn datagram_size(case: &Case) -> usize {
    case.scenario
        .params
        .datagram_size
        .unwrap_or(DEFAULT_DATAGRAM_SIZE)
}

const DEFAULT_DATAGRAM_SIZE: usize = 1024;

/// One echo by the case's client column against `addr`; returns how long
/// the client took.
fn column_echo(
    case: &Case,
    addr: SocketAddr,
    payload: &Arc<[u8]>,
    dir: &Path,
    index: usize,
) -> Result<Duration, String> {
    match case.column()?.build() {
        None => {
            let start = Instant::now();
            let echo = if case.scenario.udp {
                std_client::udp_echo(addr, payload, datagram_size(case))?
            } else {
                std_client::echo(addr, payload)?
            };
            let elapsed = start.elapsed();
            check::verify_echo(payload, &echo)?;
            Ok(elapsed)
        }
        Some(build) => {
            let places = Places {
                server: Some(addr),
                ..Places::default()
            };
            let out = echokit_client(
                case,
                Target::new(build),
                places,
                payload,
                dir,
                index,
                case.expect(),
            )?;
            Ok(out.elapsed)
        }
    }
}

fn tempdir() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("echokit-conformance-")
        .tempdir()
        .map_err(|err| format!("cannot create a temporary directory: {err}"))
}

/// 1-4, 12, and their UDP counterparts: one payload, one client.
fn echo(case: &Case) -> Result<(), String> {
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    let mut server = case.start_server()?;
    let dir = tempdir()?;
    with_server(
        &server,
        column_echo(case, server.addr, &payload, dir.path(), 0),
    )?;
    server.ensure_alive()
}

/// 6: many small writes on one connection.
fn many_small(case: &Case) -> Result<(), String> {
    let loaded = case.payload(0)?;
    let payload: Arc<[u8]> = loaded.bytes.into();
    let mut server = case.start_server()?;
    let dir = tempdir()?;
    match case.column()? {
        Column::Std => {
            let chunks = loaded
                .chunks
                .ok_or("many_small needs a `messages` payload to make separate writes")?;
            let echo = with_server(&server, std_client::echo_chunks(server.addr, &chunks))?;
            with_server(&server, check::verify_echo(&payload, &echo))?;
        }
        column => {
            let one_stream = case.deviation().is_some_and(|d| d.send_as_one_stream);
            if !one_stream {
                return Err(format!(
                    "the {column} client cannot make separate writes, and \
                     fixtures/scenarios.toml declares no deviation \
                     (send_as_one_stream) for it"
                ));
            }
            with_server(
                &server,
                column_echo(case, server.addr, &payload, dir.path(), 0),
            )?;
        }
    }
    server.ensure_alive()
}

/// 7: many clients at once, distinct payloads.
fn concurrent(case: &Case) -> Result<(), String> {
    let n = param!(case.scenario, connections);
    let payloads = (0..n)
        .map(|i| case.payload(i as u64).map(|p| Arc::<[u8]>::from(p.bytes)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut server = case.start_server()?;
    let dir = tempdir()?;
    // Every client thread waits at this gate; it opens once all exist, so
    // the clients start together (or, if a thread cannot be made, not at all).
    let gate = Gate::default();
    let failures = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for (i, payload) in payloads.iter().enumerate() {
            let (gate, failures, dir, addr) = (&gate, &failures, dir.path(), server.addr);
            let spawned =
                thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(scope, move || {
                        if !gate.pass() {
                            return;
                        }
                        if let Err(err) = column_echo(case, addr, payload, dir, i) {
                            lock(failures).push(format!("client {i}: {err}"));
                        }
                    });
            if let Err(err) = spawned {
                lock(failures).push(format!("cannot start client thread {i}: {err}"));
                gate.open(false);
                return;
            }
        }
        gate.open(true);
    });
    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    if !failures.is_empty() {
        return with_server(
            &server,
            Err(format!(
                "{} of {n} concurrent clients failed; the first ones:\n{}",
                failures.len(),
                failures
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            )),
        );
    }
    server.ensure_alive()
}

/// Holds threads until opened; `open(false)` sends them home.
#[derive(Default)]
struct Gate {
    state: Mutex<Option<bool>>,
    opened: Condvar,
}

impl Gate {
    fn open(&self, go: bool) {
        *lock(&self.state) = Some(go);
        self.opened.notify_all();
    }

    /// Waits for the gate; whether to go on.
    fn pass(&self) -> bool {
        let mut state = lock(&self.state);
        loop {
            if let Some(go) = *state {
                return go;
            }
            state = self.opened.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// 8: a slow reader must not hold up other clients.
fn slow_reader(case: &Case) -> Result<(), String> {
    let s = &case.scenario;
    let slow_bytes = param!(s, slow_bytes);
    let recv_buffer = param!(s, slow_recv_buffer);
    let stall = Duration::from_millis(param!(s, stall_ms));
    let settle = Duration::from_millis(param!(s, settle_ms));
    let bound = Duration::from_millis(param!(s, latency_bound_ms));
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    let slow_payload = payload::random_bytes(slow_bytes, 8);
    let mut server = case.start_server()?;
    let addr = server.addr;
    let dir = tempdir()?;

    // An echokit client's run time includes process start-up: measure it
    // against the idle server first (best of three) and bound the extra.
    let column = case.column()?;
    let baseline = match column {
        Column::Std => Duration::ZERO,
        _ => {
            let mut best = Duration::MAX;
            for i in 0..3 {
                best = best.min(with_server(
                    &server,
                    column_echo(case, addr, &payload, dir.path(), 100 + i),
                )?);
            }
            best
        }
    };

    let slow = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(|err| format!("slow client: socket: {err}"))?;
    slow.set_recv_buffer_size(recv_buffer)
        .map_err(|err| format!("slow client: SO_RCVBUF: {err}"))?;
    slow.connect_timeout(&addr.into(), IO_TIMEOUT)
        .map_err(|err| format!("slow client: connect: {err}"))?;
    let slow: TcpStream = slow.into();
    slow.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| slow.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|err| format!("slow client: timeouts: {err}"))?;
    let started = Instant::now();

    let result = thread::scope(|scope| -> Result<(), String> {
        let writer = scope.spawn(|| -> io::Result<Instant> {
            (&slow).write_all(&slow_payload)?;
            slow.shutdown(Shutdown::Write)?;
            Ok(Instant::now())
        });
        thread::sleep(settle);
        let took = column_echo(case, addr, &payload, dir.path(), 0)?;
        let during_stall = started.elapsed();
        let extra = took.saturating_sub(baseline);
        if extra > bound {
            return Err(format!(
                "while a client stalled, the {column} client took {took:?} \
                 (baseline {baseline:?}): {extra:?} over, more than {bound:?}"
            ));
        }
        if during_stall >= stall {
            return Err(format!(
                "the second client finished {during_stall:?} after the slow client \
                 started, not within its {stall:?} stall"
            ));
        }
        thread::sleep(stall.saturating_sub(started.elapsed()));
        let mut echo = Vec::with_capacity(slow_bytes);
        (&slow)
            .read_to_end(&mut echo)
            .map_err(|err| format!("slow client: reading its echo after the stall: {err}"))?;
        let wrote = writer
            .join()
            .map_err(|_| "slow client writer panicked".to_owned())?
            .map_err(|err| format!("slow client: writing 4 MiB: {err}"))?;
        check::verify_echo(&slow_payload, &echo).map_err(|err| format!("slow client: {err}"))?;
        let _ = wrote;
        Ok(())
    });
    with_server(&server, result)?;
    server.ensure_alive()
}

/// 9: clients resetting mid-echo do not hurt the server.
fn reset(case: &Case) -> Result<(), String> {
    let s = &case.scenario;
    let resets = param!(s, resets);
    let bytes = param!(s, reset_bytes);
    let after = param!(s, reset_after_echo_bytes);
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    let mut server = case.start_server()?;
    let dir = tempdir()?;
    for round in 0..resets {
        let data = payload::random_bytes(bytes, 90 + round as u64);
        with_server(&server, reset_mid_echo(server.addr, &data, after))
            .map_err(|err| format!("reset round {round}: {err}"))?;
    }
    // Give the server a moment to run into the resets before checking it.
    thread::sleep(Duration::from_millis(100));
    server.ensure_alive()?;
    with_server(
        &server,
        column_echo(case, server.addr, &payload, dir.path(), 0),
    )?;
    server.ensure_alive()
}

/// Sends `data` while reading its echo; once `after` bytes came back,
/// closes with SO_LINGER 0, which resets the connection.
fn reset_mid_echo(addr: SocketAddr, data: &[u8], after: usize) -> Result<(), String> {
    let mut stream = std_client::connect(addr).map_err(|err| format!("connect: {err}"))?;
    stream
        .set_nonblocking(true)
        .map_err(|err| format!("set_nonblocking: {err}"))?;
    let deadline = Instant::now() + IO_TIMEOUT;
    let (mut written, mut received) = (0, Vec::new());
    let mut buf = vec![0; 64 * 1024];
    while received.len() < after {
        let mut progress = false;
        if written < data.len() {
            match stream.write(&data[written..]) {
                Ok(n) => {
                    written += n;
                    progress = true;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(format!("write: {err}")),
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err(format!("the server closed after {} bytes", received.len())),
            Ok(n) => {
                received.extend_from_slice(&buf[..n]);
                progress = true;
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(format!("read: {err}")),
        }
        if !progress {
            if Instant::now() > deadline {
                return Err(format!("stuck after echoing {} bytes", received.len()));
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
    check::verify_echo(&data[..received.len()], &received)?;
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .map_err(|err| format!("SO_LINGER: {err}"))?;
    drop(stream);
    Ok(())
}

/// 10: idle connections close after the timeout, active ones stay.
fn idle_timeout(case: &Case) -> Result<(), String> {
    let s = &case.scenario;
    let idle_min = Duration::from_millis(param!(s, idle_min_ms));
    let idle_max = Duration::from_millis(param!(s, idle_max_ms));
    let interval = Duration::from_millis(param!(s, active_interval_ms));
    let active_for = Duration::from_millis(param!(s, active_ms));
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    let mut server = case.start_server()?;
    let addr = server.addr;
    let dir = tempdir()?;

    let result = thread::scope(|scope| {
        let idle = scope.spawn(move || -> Result<(), String> {
            let mut stream = std_client::connect(addr).map_err(|err| format!("connect: {err}"))?;
            let start = Instant::now();
            stream
                .set_read_timeout(Some(idle_max + Duration::from_secs(5)))
                .map_err(|err| err.to_string())?;
            let closed = match stream.read(&mut [0; 16]) {
                Ok(0) => Ok(()),
                Ok(n) => Err(format!("the idle connection received {n} bytes")),
                Err(err) if is_closed_by_peer(&err) => Ok(()),
                Err(err) => Err(format!(
                    "the idle connection was not closed ({err}) after {:?}",
                    start.elapsed()
                )),
            };
            closed?;
            let after = start.elapsed();
            if after < idle_min || after > idle_max {
                return Err(format!(
                    "the idle connection was closed after {after:?}, expected between \
                     {idle_min:?} and {idle_max:?}"
                ));
            }
            Ok(())
        });
        let active = scope.spawn(move || -> Result<(), String> {
            let mut stream = std_client::connect(addr).map_err(|err| format!("connect: {err}"))?;
            let start = Instant::now();
            let mut sent = 0u32;
            while start.elapsed() < active_for {
                let byte = [b'a' + (sent % 26) as u8];
                round_trip(&mut stream, &byte).map_err(|err| {
                    format!(
                        "the active connection failed after {:?} ({sent} bytes echoed): {err}",
                        start.elapsed()
                    )
                })?;
                sent += 1;
                let next = interval * sent;
                thread::sleep(next.saturating_sub(start.elapsed()));
            }
            stream
                .shutdown(Shutdown::Write)
                .map_err(|err| format!("shutdown: {err}"))?;
            let mut rest = Vec::new();
            stream
                .read_to_end(&mut rest)
                .map_err(|err| format!("the active connection's close: {err}"))?;
            if !rest.is_empty() {
                return Err(format!("unexpected bytes at close: {rest:?}"));
            }
            Ok(())
        });
        let idle = idle
            .join()
            .unwrap_or_else(|_| Err("idle thread panicked".into()));
        let active = active
            .join()
            .unwrap_or_else(|_| Err("active thread panicked".into()));
        idle.and(active)
    });
    with_server(&server, result)?;
    with_server(&server, column_echo(case, addr, &payload, dir.path(), 0))?;
    server.ensure_alive()
}

/// 11: past --max-connections, connections are closed at once.
fn max_connections(case: &Case) -> Result<(), String> {
    let s = &case.scenario;
    let held_count = param!(s, held_connections);
    let within = Duration::from_millis(param!(s, refuse_within_ms));
    let refused_expect = param!(s, refused_expect);
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    let mut server = case.start_server()?;
    let addr = server.addr;
    let dir = tempdir()?;

    let mut held = Vec::new();
    for i in 0..held_count {
        let mut stream = with_server(
            &server,
            std_client::connect(addr).map_err(|err| format!("connection {i}: connect: {err}")),
        )?;
        with_server(
            &server,
            round_trip(&mut stream, format!("held {i}\n").as_bytes()),
        )?;
        held.push(stream);
    }

    // The one too many.
    let refused = match case.column()?.build() {
        None => refused_std(addr, within),
        Some(build) => {
            let places = Places {
                server: Some(addr),
                ..Places::default()
            };
            echokit_client(
                case,
                Target::new(build),
                places,
                &payload,
                dir.path(),
                0,
                &refused_expect,
            )
            .and_then(|out| {
                if out.elapsed > within {
                    Err(format!(
                        "the client over the limit took {:?} to be turned away, more than {within:?}",
                        out.elapsed
                    ))
                } else {
                    Ok(())
                }
            })
        }
    };
    with_server(
        &server,
        refused.map_err(|err| format!("the client over the limit: {err}")),
    )?;

    for (i, stream) in held.iter_mut().enumerate() {
        with_server(
            &server,
            round_trip(stream, format!("still {i}\n").as_bytes()),
        )
        .map_err(|err| format!("held connection {i} after the refusal: {err}"))?;
        stream
            .shutdown(Shutdown::Write)
            .map_err(|err| format!("shutdown: {err}"))?;
        let mut rest = Vec::new();
        with_server(
            &server,
            stream
                .read_to_end(&mut rest)
                .map_err(|err| format!("held connection {i}: close: {err}")),
        )?;
    }
    drop(held);
    with_server(&server, column_echo(case, addr, &payload, dir.path(), 1))
        .map_err(|err| format!("once the held connections closed: {err}"))?;
    server.ensure_alive()
}

fn refused_std(addr: SocketAddr, within: Duration) -> Result<(), String> {
    let mut stream = std_client::connect(addr).map_err(|err| format!("connect: {err}"))?;
    let start = Instant::now();
    stream
        .set_read_timeout(Some(within + Duration::from_secs(5)))
        .map_err(|err| err.to_string())?;
    match stream.read(&mut [0; 16]) {
        Ok(0) => {}
        Err(err) if is_closed_by_peer(&err) => {}
        Ok(n) => return Err(format!("received {n} bytes instead of being closed")),
        Err(err) => return Err(format!("not closed ({err}) after {:?}", start.elapsed())),
    }
    let after = start.elapsed();
    if after > within {
        return Err(format!(
            "closed only after {after:?}, not within {within:?}"
        ));
    }
    Ok(())
}

/// 17: the port is free again as soon as the server is killed.
fn restart(case: &Case) -> Result<(), String> {
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    let mut first = case.start_server()?;
    let addr = first.addr;
    let mut held = with_server(
        &first,
        std_client::connect(addr).map_err(|err| format!("connect: {err}")),
    )?;
    with_server(&first, round_trip(&mut held, b"before the restart\n"))?;
    first.kill();
    let target = Target::new(case.server_build()?);
    let mut second = Server::start(&target, &addr.to_string(), &case.scenario.server_args)
        .map_err(|err| {
            format!("restarting on {addr} right after killing the server failed: {err}")
        })?;
    if second.addr != addr {
        return Err(format!("restarted on {}, not {addr}", second.addr));
    }
    let dir = tempdir()?;
    with_server(&second, column_echo(case, addr, &payload, dir.path(), 0))?;
    // The connection to the killed server is over, not hanging.
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|err| err.to_string())?;
    match held.read(&mut [0; 16]) {
        Ok(0) => {}
        Err(err) if is_closed_by_peer(&err) => {}
        other => {
            return Err(format!(
                "the connection to the killed server reads {other:?}"
            ))
        }
    }
    second.ensure_alive()
}

/// 13, 14: `serve` refuses to start.
fn serve_fails(case: &Case) -> Result<(), String> {
    let build = case.server_build()?;
    let s = &case.scenario;
    // Held until the end: the port it occupies is `{busy}`.
    let busy = TcpListener::bind("127.0.0.1:0").map_err(|err| format!("bind: {err}"))?;
    let busy_addr = busy.local_addr().map_err(|err| err.to_string())?;
    let listen = s.listen.replace("{busy}", &busy_addr.to_string());
    let mut args = vec!["serve".to_owned(), "--listen".to_owned(), listen];
    args.extend(s.server_args.iter().cloned());
    let out = check::run(&Target::new(build), &args, None, FAIL_FAST_TIMEOUT)?;
    check::check(case.expect(), &out, &Arc::from(&[][..]), None)?;
    drop(busy);
    Ok(())
}

/// A loopback address nobody listens on (TCP) or receives on (UDP):
/// bound, then released.
fn closed_addr(udp: bool) -> Result<SocketAddr, String> {
    if udp {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(|err| format!("bind: {err}"))?;
        return socket.local_addr().map_err(|err| err.to_string());
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|err| format!("bind: {err}"))?;
    listener.local_addr().map_err(|err| err.to_string())
}

/// 14, 15, udp_refused: `send` fails.
fn send_fails(case: &Case) -> Result<(), String> {
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    let closed = closed_addr(case.scenario.udp)?;
    let expect = case.expect();
    match case.column()?.build() {
        None if case.scenario.udp => {
            let wanted = expect
                .std_error
                .as_deref()
                .ok_or("the std column needs `expect.std_error` (an io::ErrorKind) in the table")?;
            let err = std_client::udp_refused(closed)?;
            if format!("{:?}", err.kind()) == wanted {
                Ok(())
            } else {
                Err(format!(
                    "std UDP client: a datagram to {closed} met {:?} ({err}), expected {wanted}",
                    err.kind()
                ))
            }
        }
        None => {
            let wanted = expect
                .std_error
                .as_deref()
                .ok_or("the std column needs `expect.std_error` (an io::ErrorKind) in the table")?;
            match TcpStream::connect_timeout(&closed, IO_TIMEOUT) {
                Ok(_) => Err(format!("std client: connecting to {closed} succeeded")),
                Err(err) if format!("{:?}", err.kind()) == wanted => Ok(()),
                Err(err) => Err(format!(
                    "std client: connecting to {closed} failed with {:?} ({err}), expected {wanted}",
                    err.kind()
                )),
            }
        }
        Some(build) => {
            let dir = tempdir()?;
            let places = Places {
                closed: Some(closed),
                ..Places::default()
            };
            echokit_client(
                case,
                Target::new(build),
                places,
                &payload,
                dir.path(),
                0,
                expect,
            )
            .map(|_| ())
        }
    }
}

/// 16: the wasm build without `-S inherit-network`.
fn no_network(case: &Case) -> Result<(), String> {
    let target = Target::without_network(Build::Wasm);
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    match (case.server, case.client) {
        (Some(Build::Wasm), None) => {
            let out = check::run(&target, &["serve".to_owned()], None, FAIL_FAST_TIMEOUT)?;
            check::check(case.expect(), &out, &payload, None)
        }
        (None, Some(Column::Wasm)) => {
            let args = substitute(&case.scenario.client_args, &Places::default())?;
            let stdin = case.scenario.client_stdin.map(|_| &payload[..]);
            let out = check::run(&target, &args, stdin, FAIL_FAST_TIMEOUT)?;
            check::check(case.expect(), &out, &payload, None)
        }
        _ => Err("no_network runs the wasm server or the wasm client".into()),
    }
}

/// 18: the component's imports are all in the WIT world.
fn component_world(case: &Case) -> Result<(), String> {
    let s = &case.scenario;
    let wit_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(param!(s, wit_dir));
    let tools = crate::support::wasm_tools()?;
    world::check_imports(
        &tools.wasm,
        &wit_dir,
        &param!(s, package),
        &param!(s, world),
    )
}

/// Foundation acceptance: 1000 connections at once.
fn thousand_clients(case: &Case) -> Result<(), String> {
    let s = &case.scenario;
    let n = param!(s, connections);
    let threads = param!(s, threads).clamp(1, n);
    limits::ensure_open_files((2 * n + 1024).max(4096))?;
    let payloads = (0..n)
        .map(|i| case.payload(i as u64).map(|p| p.bytes))
        .collect::<Result<Vec<_>, _>>()?;
    let mut server = case.start_server()?;
    let addr = server.addr;
    let per_thread = n.div_ceil(threads);
    let connected = Barrier::new(threads);
    let first_halves = Barrier::new(threads);
    let result = thread::scope(|scope| {
        let handles: Vec<_> = payloads
            .chunks(per_thread)
            .enumerate()
            .map(|(t, chunk)| {
                let (connected, first_halves) = (&connected, &first_halves);
                scope.spawn(move || {
                    many_connections(addr, t * per_thread, chunk, connected, first_halves)
                })
            })
            .collect();
        let mut errors = Vec::new();
        for h in handles {
            if let Err(err) = h.join().unwrap_or_else(|_| Err("thread panicked".into())) {
                errors.push(err);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    });
    with_server(&server, result)?;
    server.ensure_alive()
}

/// One thread's share of [`thousand_clients`]: connects all its sockets,
/// waits for every thread, echoes each first half with all connections
/// open, waits again, then sends the rest, half-closes and reads to EOF.
/// Every barrier is passed even on failure, so no thread waits forever.
fn many_connections(
    addr: SocketAddr,
    first_index: usize,
    payloads: &[Vec<u8>],
    connected: &Barrier,
    first_halves: &Barrier,
) -> Result<(), String> {
    let mut streams = Vec::with_capacity(payloads.len());
    let mut failure = None;
    for i in 0..payloads.len() {
        match std_client::connect(addr).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(s) => streams.push(s),
            Err(err) => {
                failure = Some(format!(
                    "connection {} of the run: connect: {err}",
                    first_index + i
                ));
                break;
            }
        }
    }
    connected.wait();
    let mut conns: Vec<Conn> = streams
        .into_iter()
        .zip(payloads)
        .map(|(stream, payload)| Conn {
            stream,
            payload,
            written: 0,
            echo: Vec::with_capacity(payload.len()),
            shut: false,
            eof: false,
        })
        .collect();
    if failure.is_none() {
        failure = drive(&mut conns, first_index, |c| c.payload.len() / 2, false).err();
    }
    first_halves.wait();
    if let Some(failure) = failure {
        return Err(failure);
    }
    drive(&mut conns, first_index, |c| c.payload.len(), true)?;
    for (i, c) in conns.iter().enumerate() {
        check::verify_echo(c.payload, &c.echo)
            .map_err(|err| format!("connection {}: {err}", first_index + i))?;
    }
    Ok(())
}

fn fail(c: &Conn<'_>, index: usize, what: &str, err: io::Error) -> String {
    format!(
        "connection {index} ({} of {} bytes written, {} echoed): {what}: {err}",
        c.written,
        c.payload.len(),
        c.echo.len()
    )
}

struct Conn<'a> {
    stream: TcpStream,
    payload: &'a [u8],
    written: usize,
    echo: Vec<u8>,
    shut: bool,
    eof: bool,
}

/// Drives non-blocking connections until each has written `upto(c)` bytes
/// and received as many back (and, when `finish`, half-closed and read
/// EOF).
fn drive(
    conns: &mut [Conn<'_>],
    first_index: usize,
    upto: impl Fn(&Conn<'_>) -> usize,
    finish: bool,
) -> Result<(), String> {
    let mut deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = vec![0; 16 * 1024];
    loop {
        let mut progress = false;
        let mut done = true;
        for (i, c) in conns.iter_mut().enumerate() {
            let target = upto(c);
            if c.written < target {
                match (&c.stream).write(&c.payload[c.written..target]) {
                    Ok(n) => {
                        c.written += n;
                        progress |= n > 0;
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) => return Err(fail(c, first_index + i, "write", err)),
                }
            }
            if finish && c.written == c.payload.len() && !c.shut {
                c.stream
                    .shutdown(Shutdown::Write)
                    .map_err(|err| fail(c, first_index + i, "shutdown", err))?;
                c.shut = true;
                progress = true;
            }
            let wants_more = if finish {
                !c.eof
            } else {
                c.echo.len() < target
            };
            if wants_more {
                match (&c.stream).read(&mut buf) {
                    Ok(0) => {
                        if !finish || !c.shut {
                            return Err(fail(
                                c,
                                first_index + i,
                                "read",
                                io::ErrorKind::UnexpectedEof.into(),
                            ));
                        }
                        c.eof = true;
                        progress = true;
                    }
                    Ok(n) => {
                        c.echo.extend_from_slice(&buf[..n]);
                        progress = true;
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) => return Err(fail(c, first_index + i, "read", err)),
                }
            }
            let finished = c.written >= target
                && if finish {
                    c.eof
                } else {
                    c.echo.len() >= target
                };
            done &= finished;
        }
        if done {
            return Ok(());
        }
        if progress {
            deadline = Instant::now() + IO_TIMEOUT;
        } else {
            if Instant::now() > deadline {
                let stuck = conns
                    .iter()
                    .filter(|c| {
                        if finish {
                            !c.eof
                        } else {
                            c.echo.len() < upto(c)
                        }
                    })
                    .count();
                return Err(format!(
                    "{stuck} connections made no progress for {IO_TIMEOUT:?}"
                ));
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Longest a std UDP burst may run before the datagrams not yet sent are
/// reported as such.
const BURST_LIMIT: Duration = Duration::from_secs(30);

/// UDP burst: many datagrams, loss and order counted.
fn udp_burst(case: &Case) -> Result<(), String> {
    let s = &case.scenario;
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    let size = param!(s, datagram_size);
    let mut server = case.start_server()?;
    let dir = tempdir()?;
    match case.column()? {
        Column::Std => {
            let window = param!(s, window);
            let datagrams: Vec<&[u8]> = payload.chunks(size.max(1)).collect();
            let report = with_server(
                &server,
                std_client::udp_burst(server.addr, &datagrams, window, BURST_LIMIT),
            )?;
            // libtest-mimic does not capture output: this line shows in the
            // run's output next to the test's result.
            println!(
                "{}::{}_server::std_client: {report}",
                s.name,
                case.server_build()?
            );
            if !report.clean() {
                return with_server(
                    &server,
                    Err(format!(
                        "the burst did not come back whole on loopback: {report}"
                    )),
                );
            }
        }
        _ => {
            with_server(
                &server,
                column_echo(case, server.addr, &payload, dir.path(), 0),
            )?;
        }
    }
    server.ensure_alive()
}

/// Two UDP clients, distinct payloads, interleaved: each gets only its own
/// echoes.
fn udp_two_clients(case: &Case) -> Result<(), String> {
    let size = param!(case.scenario, datagram_size);
    let payloads: Vec<Arc<[u8]>> = (0..2)
        .map(|i| case.payload(i).map(|p| p.bytes.into()))
        .collect::<Result<_, _>>()?;
    let mut server = case.start_server()?;
    let addr = server.addr;
    let result = match case.column()?.build() {
        None => two_std_udp_clients(addr, &payloads[0], &payloads[1], size),
        Some(build) => {
            let dir = tempdir()?;
            let clients: Vec<TogetherClient<'_>> = payloads
                .iter()
                .enumerate()
                .map(|(i, payload)| TogetherClient {
                    args: &case.scenario.client_args,
                    payload: payload.clone(),
                    label: format!("client {i}"),
                })
                .collect();
            echokit_clients_together(case, build, addr, &clients, dir.path())
        }
    };
    with_server(&server, result)?;
    server.ensure_alive()
}

/// The std column of [`udp_two_clients`]: two sockets; datagram i of each
/// is sent (a's, then b's) before either echo is read, so the server always
/// holds both clients' datagrams at once. Each echo must be the client's own
/// datagram i; one that is not is named: the other client's datagram (the
/// echoes went to the wrong client), an earlier one of its own (late or
/// duplicated), or none (changed).
fn two_std_udp_clients(addr: SocketAddr, a: &[u8], b: &[u8], size: usize) -> Result<(), String> {
    let sockets = [
        std_client::udp_socket(addr).map_err(|err| format!("std UDP client 0: bind: {err}"))?,
        std_client::udp_socket(addr).map_err(|err| format!("std UDP client 1: bind: {err}"))?,
    ];
    let datagrams: [Vec<&[u8]>; 2] = [a.chunks(size).collect(), b.chunks(size).collect()];
    let rounds = datagrams[0].len().max(datagrams[1].len());
    for i in 0..rounds {
        for (c, socket) in sockets.iter().enumerate() {
            if let Some(d) = datagrams[c].get(i) {
                socket
                    .send_to(d, addr)
                    .map_err(|err| format!("std UDP client {c}: sending datagram {i}: {err}"))?;
            }
        }
        for (c, socket) in sockets.iter().enumerate() {
            let Some(&d) = datagrams[c].get(i) else {
                continue;
            };
            let what = format!("client {c}'s datagram {i} of {}", datagrams[c].len());
            let received = std_client::udp_receive(socket, addr, d.len(), &what);
            let echo = received.map_err(|err| {
                if stray(&sockets[1 - c], d) {
                    format!(
                        "{err}; client {}'s socket received it instead: echoes went to the \
                         wrong client",
                        1 - c
                    )
                } else {
                    err
                }
            })?;
            if echo == d {
                continue;
            }
            let find = |c: usize| datagrams[c].iter().position(|x| *x == echo.as_slice());
            return Err(match (find(1 - c), find(c)) {
                (Some(j), _) => format!(
                    "client {c} received client {}'s datagram {j} instead of the echo of its \
                     own datagram {i}: echoes went to the wrong client",
                    1 - c
                ),
                (None, Some(j)) => format!(
                    "client {c} received its own datagram {j} again instead of the echo of \
                     datagram {i} (late or duplicated)"
                ),
                (None, None) => format!("the echo of {what} differs: {}", check::compare(d, &echo)),
            });
        }
    }
    Ok(())
}

/// Whether `datagram` is waiting on `socket` (read without blocking).
fn stray(socket: &UdpSocket, datagram: &[u8]) -> bool {
    let mut buf = vec![0; 65_536];
    let found = socket.set_nonblocking(true).is_ok()
        && (0..64)
            .any(|_| matches!(socket.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == datagram));
    let _ = socket.set_nonblocking(false);
    found
}

/// One of the echokit clients [`echokit_clients_together`] runs.
struct TogetherClient<'a> {
    /// `client_args` or `udp_client_args` of the table.
    args: &'a [String],
    payload: Arc<[u8]>,
    label: String,
}

/// Runs echokit clients of `build` against `addr` at the same time (see
/// [`check::run_together`]), each with its payload on standard input, and
/// checks each against the table's `expect`.
fn echokit_clients_together(
    case: &Case,
    build: Build,
    addr: SocketAddr,
    clients: &[TogetherClient<'_>],
    dir: &Path,
) -> Result<(), String> {
    let mut invocations = Vec::new();
    let mut outputs = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let output = dir.join(format!("output-{i}.bin"));
        let places = Places {
            server: Some(addr),
            output: Some(output.clone()),
            datagram_size: case.scenario.params.datagram_size,
            ..Places::default()
        };
        let args = substitute(client.args, &places)?;
        let uses_output = client.args.iter().any(|a| a.contains("{output}"));
        outputs.push(uses_output.then_some(output));
        invocations.push(check::Invocation {
            target: Target::new(build).with_dir(dir),
            args,
            stdin: client.payload.to_vec(),
        });
    }
    let outcomes = check::run_together(&invocations, check::PROCESS_TIMEOUT)?;
    let problems: Vec<String> = clients
        .iter()
        .zip(&outcomes)
        .zip(&outputs)
        .filter_map(|((client, out), output)| {
            check::check(case.expect(), out, &client.payload, output.as_deref())
                .err()
                .map(|err| format!("{}: {err}", client.label))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// TCP and UDP on one port: a TCP echo and a UDP echo at the same time.
fn tcp_and_udp(case: &Case) -> Result<(), String> {
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    let mut server = case.start_server()?;
    let addr = server.addr;
    let result = match case.column()?.build() {
        None => {
            let size = datagram_size(case);
            let both = Barrier::new(2);
            thread::scope(|scope| {
                let tcp = scope.spawn(|| {
                    both.wait();
                    std_client::echo(addr, &payload)
                        .and_then(|echo| check::verify_echo(&payload, &echo))
                        .map_err(|err| format!("TCP: {err}"))
                });
                let udp = scope.spawn(|| {
                    both.wait();
                    std_client::udp_echo(addr, &payload, size)
                        .and_then(|echo| check::verify_echo(&payload, &echo))
                        .map_err(|err| format!("UDP: {err}"))
                });
                let tcp = tcp
                    .join()
                    .unwrap_or_else(|_| Err("TCP thread panicked".into()));
                let udp = udp
                    .join()
                    .unwrap_or_else(|_| Err("UDP thread panicked".into()));
                match (tcp, udp) {
                    (Ok(()), Ok(())) => Ok(()),
                    (a, b) => Err([a.err(), b.err()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join("\n")),
                }
            })
        }
        Some(build) => {
            let dir = tempdir()?;
            let clients = [
                TogetherClient {
                    args: &case.scenario.client_args,
                    payload: payload.clone(),
                    label: "TCP client".into(),
                },
                TogetherClient {
                    args: &case.scenario.udp_client_args,
                    payload: payload.clone(),
                    label: "UDP client".into(),
                },
            ];
            echokit_clients_together(case, build, addr, &clients, dir.path())
        }
    };
    with_server(&server, result)?;
    server.ensure_alive()
}
