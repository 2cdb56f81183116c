//! echokit with the PROXY protocol against the real thing: behind HAProxy
//! (`send-proxy`, `send-proxy-v2`), `serve -v` names the address of the
//! client that connected to HAProxy; and a connection without a valid
//! header is refused with its reason, counted, and never echoed.

use crate::endpoint::{free_port, start_upstream, Group};
use libtest_mimic::Trial;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};
use testkit::ServerProcess;

/// The trials: each HAProxy option, and the refusals.
pub(crate) fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for (option, version) in [("send-proxy", "v1"), ("send-proxy-v2", "v2")] {
        let name = format!(
            "proxy::haproxy_{}::serve_names_the_client",
            option.replace('-', "_")
        );
        trials.push(Trial::test(name, move || {
            behind_haproxy(option, version).map_err(Into::into)
        }));
    }
    trials.push(Trial::test("proxy::refused_unechoed", || {
        refused_unechoed().map_err(Into::into)
    }));
    trials
}

/// Sends `payload` (after `header`) on a new connection to `addr` and
/// reads until the server closes: the connection's local address and what
/// came back (a reset reads as the bytes before it).
fn exchange(
    addr: SocketAddr,
    header: &[u8],
    payload: &[u8],
) -> Result<(SocketAddr, Vec<u8>), String> {
    let mut stream = TcpStream::connect(addr).map_err(|err| format!("connect {addr}: {err}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let local = stream.local_addr().map_err(|err| err.to_string())?;
    stream
        .write_all(header)
        .map_err(|err| format!("write: {err}"))?;
    // Nagle's delay apart: the header and the payload may still arrive
    // in one segment, which the server must split.
    stream
        .write_all(payload)
        .map_err(|err| format!("write: {err}"))?;
    let _ = stream.shutdown(Shutdown::Write);
    let mut back = Vec::new();
    match stream.read_to_end(&mut back) {
        Ok(_) => Ok((local, back)),
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => Ok((local, back)),
        Err(err) => Err(format!("read: {err}")),
    }
}

/// Stops `server` with SIGINT and returns its stderr once it exited.
fn stop(mut server: ServerProcess) -> Result<String, String> {
    server.signal(libc::SIGINT).map_err(|err| err.to_string())?;
    match server.wait_exit(Duration::from_secs(10)) {
        Some(_) => Ok(server.stderr()),
        None => Err(format!("{} did not stop on SIGINT", server.what)),
    }
}

/// echokit `serve -v --proxy-protocol VERSION` behind HAProxy's `option`:
/// the echo is whole, and the log names this test's socket as the client
/// and HAProxy's frontend as the destination.
fn behind_haproxy(option: &str, version: &str) -> Result<(), String> {
    let args: Vec<String> = ["--proxy-protocol", version, "-v"]
        .map(String::from)
        .to_vec();
    let upstream = start_upstream(&args)?;
    let port = free_port()?;
    let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
    let config = dir.path().join("haproxy.cfg");
    let text = format!(
        "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend echo\n    bind 127.0.0.1:{port}\n    default_backend echokit\n\
         backend echokit\n    server upstream {} {option}\n",
        upstream.addr
    );
    std::fs::write(&config, text).map_err(|err| err.to_string())?;
    let haproxy = ["haproxy", "-db", "-f"].map(String::from).into_iter();
    let args: Vec<String> = haproxy.chain([config.display().to_string()]).collect();
    let group = Group::spawn(&args, Some("haproxy"), dir.path())?;
    let frontend = SocketAddr::from(([127, 0, 0, 1], port));
    let result = (|| {
        let start = Instant::now();
        let (client, back) = loop {
            match exchange(frontend, b"", b"who am I?\n") {
                Ok(found) => break found,
                Err(_) if start.elapsed() < Duration::from_secs(10) => {
                    thread::sleep(Duration::from_millis(50))
                }
                Err(err) => return Err(format!("HAProxy on {frontend}: {err}")),
            }
        };
        if back != b"who am I?\n" {
            return Err(format!(
                "through HAProxy the echo was {:?}",
                String::from_utf8_lossy(&back)
            ));
        }
        Ok(client)
    })();
    let haproxy_said = group.stop();
    let log = stop(upstream)?;
    let client = result.map_err(|err| format!("{err}; HAProxy said {haproxy_said:?}"))?;
    let named = format!("{version} PROXY client {client} to {frontend}");
    if !log.lines().any(|line| line.contains(&named)) {
        return Err(format!("serve -v did not log {named:?}:\n{log}"));
    }
    if !log.contains("; PROXY headers: ") {
        return Err(format!("the summary does not count PROXY headers:\n{log}"));
    }
    Ok(())
}

/// A connection without a header and one with a header of the wrong
/// version: closed with nothing echoed, and counted by reason.
fn refused_unechoed() -> Result<(), String> {
    let args: Vec<String> = ["--proxy-protocol", "v2", "-v"].map(String::from).to_vec();
    let server = start_upstream(&args)?;
    let addr = server.addr;
    let cases: [&[u8]; 2] = [b"", b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"];
    let mut echoed = Vec::new();
    for header in cases {
        let (_, back) = exchange(addr, header, b"must not come back\n")?;
        echoed.push(back);
    }
    let log = stop(server)?;
    if echoed.iter().any(|back| !back.is_empty()) {
        return Err(format!("refused connections got {echoed:?} back:\n{log}"));
    }
    let counted = "2 refused (1 signature, 1 v1_not_accepted)";
    let reason = "PROXY header refused: no PROXY header";
    if !log.contains(counted) || !log.contains(reason) {
        return Err(format!("the log lacks {counted:?} or {reason:?}:\n{log}"));
    }
    Ok(())
}
