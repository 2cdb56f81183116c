//! Server behaviour: idle timeouts, the connection limit, restarts, and
//! refusing to start.

use super::*;
use crate::kit::std_client::{is_closed_by_peer, round_trip};
use crate::kit::table::param;
use std::io::Read;
use std::net::{Shutdown, TcpListener};
use std::thread;

/// 10: idle connections close after the timeout, active ones stay.
pub(super) fn idle_timeout(case: &Case) -> Result<(), String> {
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
pub(super) fn max_connections(case: &Case) -> Result<(), String> {
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
                case.client_target(build),
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
pub(super) fn restart(case: &Case) -> Result<(), String> {
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    let mut first = case.start_server()?;
    let addr = first.addr;
    let mut held = with_server(
        &first,
        std_client::connect(addr).map_err(|err| format!("connect: {err}")),
    )?;
    with_server(&first, round_trip(&mut held, b"before the restart\n"))?;
    first.kill();
    let target = case.server_target()?;
    let mut second =
        start_server(&target, &addr.to_string(), &case.scenario.server_args).map_err(|err| {
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
pub(super) fn serve_fails(case: &Case) -> Result<(), String> {
    let target = case.server_target()?;
    let s = &case.scenario;
    // Held until the end: the port it occupies is `{busy}`.
    let busy = TcpListener::bind("127.0.0.1:0").map_err(|err| format!("bind: {err}"))?;
    let busy_addr = busy.local_addr().map_err(|err| err.to_string())?;
    let listen = s.listen.replace("{busy}", &busy_addr.to_string());
    let mut args = vec!["serve".to_owned(), "--listen".to_owned(), listen];
    args.extend(s.server_args.iter().cloned());
    let out = check::run(&target, &args, None, FAIL_FAST_TIMEOUT)?;
    check::check(case.expect(), &out, &Arc::from(&[][..]), None)?;
    drop(busy);
    Ok(())
}
