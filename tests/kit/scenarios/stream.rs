//! Stream scenarios: echoes of every size and shape, many at once, a slow
//! reader, resets mid-echo, a thousand connections.

use super::*;
use crate::kit::std_client::IO_TIMEOUT;
use crate::kit::table::param;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Barrier;
use std::thread;
use testkit::{limits, payload as generate};

/// 1-4, 12, and their UDP counterparts: one payload, one client.
pub(super) fn echo(case: &Case) -> Result<(), String> {
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
pub(super) fn many_small(case: &Case) -> Result<(), String> {
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
pub(super) fn concurrent(case: &Case) -> Result<(), String> {
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

/// 8: a slow reader must not hold up other clients.
pub(super) fn slow_reader(case: &Case) -> Result<(), String> {
    let s = &case.scenario;
    let slow_bytes = param!(s, slow_bytes);
    let recv_buffer = param!(s, slow_recv_buffer);
    let stall = Duration::from_millis(param!(s, stall_ms));
    let settle = Duration::from_millis(param!(s, settle_ms));
    let bound = Duration::from_millis(param!(s, latency_bound_ms));
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    let slow_payload = generate::random_bytes(slow_bytes, 8);
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
pub(super) fn reset(case: &Case) -> Result<(), String> {
    let s = &case.scenario;
    let resets = param!(s, resets);
    let bytes = param!(s, reset_bytes);
    let after = param!(s, reset_after_echo_bytes);
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    let mut server = case.start_server()?;
    let dir = tempdir()?;
    for round in 0..resets {
        let data = generate::random_bytes(bytes, 90 + round as u64);
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

/// Foundation acceptance: 1000 connections at once.
pub(super) fn thousand_clients(case: &Case) -> Result<(), String> {
    let s = &case.scenario;
    let n = param!(s, connections);
    let threads = param!(s, threads).clamp(1, n);
    limits::ensure_open_files((2 * n as u64 + 1024).max(4096))?;
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
