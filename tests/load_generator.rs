//! The load generator, `echokit bench`, against real servers over
//! 127.0.0.1: every mode reports echoes it verified, a wrong byte fails the
//! run, `--reset` closes with a reset and the default with a FIN, refused
//! connections and misused flags are reported, and the wasm build's bench
//! client (run by wasmtime) works too.
//!
//! The wasm test finds the component and wasmtime as the conformance kit
//! does, and fails with the command to run when either is missing.

#![cfg(not(target_os = "wasi"))]

use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;
use testkit::bench::{bench_run, last_line, run_bench};
use testkit::{native_server, Build, Finished, Target};

/// How long each load runs.
const RUN: Duration = Duration::from_millis(400);
/// How long a load may overrun before it is killed.
const GRACE: Duration = Duration::from_secs(20);

/// Runs `build`'s `echokit bench --connect ADDR ARGS --duration RUN --json`.
fn bench(build: Build, addr: SocketAddr, args: &[&str]) -> Finished {
    bench_run(Target::new(build).must(), addr, args, RUN, GRACE)
}

/// `bench --json`'s report.
fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|err| panic!("not a JSON report ({err}): {line}"))
}

/// The report of a run that must have succeeded.
fn report(build: Build, addr: SocketAddr, args: &[&str]) -> Value {
    let line = run_bench(Target::new(build).must(), addr, args, RUN, GRACE);
    parse(&line.unwrap_or_else(|err| panic!("{err}")))
}

fn count(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {report}"))
}

/// Checks a report: echoes were verified and nothing failed.
fn assert_clean(report: &Value, size: u64) {
    assert_eq!(count(report, "errors"), 0, "{report}");
    assert_eq!(count(report, "lost"), 0, "{report}");
    assert_echoed(report, size);
}

/// Checks that echoes of `size` bytes were verified.
fn assert_echoed(report: &Value, size: u64) {
    let requests = count(report, "requests");
    assert!(requests > 0, "no echo completed: {report}");
    assert_eq!(count(report, "bytes"), requests * size, "{report}");
    assert!(report["uncorrected"]["p50_ns"].as_u64().unwrap() > 0);
}

#[test]
fn every_tcp_mode_verifies_its_echoes() {
    let server = native_server(&[]);
    let pingpong = report(
        Build::Native,
        server.addr,
        &["--connections", "4", "--size", "100"],
    );
    assert_clean(&pingpong, 100);
    assert_eq!(count(&pingpong, "connections_opened"), 4);

    let stream = ["--mode", "stream", "--connections", "2", "--size", "65536"];
    let stream = report(Build::Native, server.addr, &stream);
    assert_eq!(count(&stream, "errors"), 0, "{stream}");
    assert!(
        count(&stream, "bytes") > 1 << 20,
        "under 1 MiB echoed: {stream}"
    );

    for reset in [false, true] {
        let mut args = vec!["--mode", "connect", "--connections", "4", "--size", "64"];
        args.extend(reset.then_some("--reset"));
        let connect = report(Build::Native, server.addr, &args);
        assert_clean(&connect, 64);
        // A connection per echo, plus those still open at the end.
        let (opened, requests) = (
            count(&connect, "connections_opened"),
            count(&connect, "requests"),
        );
        assert!(
            (requests..=requests + 4).contains(&opened),
            "{opened} connections for {requests} echoes: {connect}"
        );
    }
}

#[test]
fn udp_pingpong_verifies_every_datagram() {
    let server = native_server(&["--udp"]);
    let udp = ["--udp", "--connections", "4", "--size", "512"];
    let udp = report(Build::Native, server.addr, &udp);
    assert_echoed(&udp, 512);
    // Loopback drops nothing at four datagrams in flight, but a datagram
    // counts as lost after 200 ms at least: a stalled test machine may
    // lose one. Nothing else happens to a datagram on loopback.
    assert!(count(&udp, "lost") <= 1, "{udp}");
    for path in ["duplicates", "reordered", "corrupted"] {
        assert_eq!(count(&udp, path), 0, "{udp}");
    }
    assert!(udp["jitter_ns"].is_u64(), "{udp}");
}

#[test]
fn wasm_bench_client_verifies_its_echoes() {
    let server = native_server(&[]);
    let pingpong = ["--connections", "4", "--size", "100"];
    assert_clean(&report(Build::Wasm, server.addr, &pingpong), 100);
    let connect = ["--mode", "connect", "--connections", "4", "--size", "64"];
    assert_clean(&report(Build::Wasm, server.addr, &connect), 64);
    let stream = ["--mode", "stream", "--connections", "2", "--size", "65536"];
    let stream = report(Build::Wasm, server.addr, &stream);
    assert!(count(&stream, "bytes") > 0, "{stream}");
    // WASI cannot reset: the run closes normally and says so.
    let run = bench(Build::Wasm, server.addr, &["--mode", "connect", "--reset"]);
    assert!(run.status.is_some_and(|s| s.success()), "{}", run.stderr);
    assert!(
        run.stderr.contains("this build cannot reset connections"),
        "{}",
        run.stderr
    );
    assert_echoed(&parse(last_line(&run.stdout)), 64);
}

/// A server that echoes every byte but the 1025th of each connection,
/// which it flips.
fn lying_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut buf = [0; 4096];
                let mut offset = 0;
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    if (offset..offset + n).contains(&1024) {
                        buf[1024 - offset] ^= 1;
                    }
                    offset += n;
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_wrong_byte_fails_the_run() {
    let addr = lying_server();
    let run = bench(
        Build::Native,
        addr,
        &["--connections", "1", "--size", "512"],
    );
    assert_eq!(run.status.and_then(|s| s.code()), Some(1), "{}", run.stderr);
    // Bytes 1024.. of the connection are its third message.
    assert!(
        run.stderr
            .contains("echo mismatch: connection 0, message 2")
            && run.stderr.contains("offset 0"),
        "{}",
        run.stderr
    );
}

/// How the first connection to a one-shot echo server ended after its
/// 8-byte echo, as `echokit bench --mode connect ARGS` closed it: `Ok(0)`
/// for a FIN, an error for a reset.
fn first_close(args: &[&str]) -> std::io::Result<usize> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let observer = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut message = [0; 8];
        stream.read_exact(&mut message).unwrap();
        stream.write_all(&message).unwrap();
        let end = stream.read(&mut message);
        // Later connections stay in the backlog, unanswered, to the end.
        drop(stream);
        (end, listener)
    });
    let mut all = vec!["--mode", "connect", "--connections", "1", "--size", "8"];
    all.extend(args);
    let run = bench(Build::Native, addr, &all);
    assert!(run.status.is_some_and(|s| s.success()), "{}", run.stderr);
    observer.join().unwrap().0
}

#[test]
fn reset_closes_with_a_reset_and_the_default_with_a_fin() {
    assert_eq!(first_close(&[]).unwrap(), 0, "expected an orderly end");
    let reset = first_close(&["--reset"]).expect_err("expected a reset");
    assert_eq!(reset.kind(), ErrorKind::ConnectionReset, "{reset}");
}

#[test]
fn refused_connections_and_misused_flags_are_reported() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    assert!(
        TcpStream::connect(closed).is_err(),
        "port {closed} is in use"
    );
    // The wasm build exits 1 for every failure (WASI 0.2 exits carry no code).
    for (build, code) in [(Build::Native, 3), (Build::Wasm, 1)] {
        for mode in ["pingpong", "connect"] {
            let run = bench(build, closed, &["--mode", mode]);
            assert_eq!(
                run.status.and_then(|s| s.code()),
                Some(code),
                "{}",
                run.stderr
            );
            assert!(
                run.stderr
                    .contains("connection refused; is an echo server listening there?"),
                "{}",
                run.stderr
            );
        }
    }
    for (args, message) in [
        (&["--reset"][..], "--reset applies to --mode connect only"),
        (
            &["--udp", "--mode", "stream"][..],
            "--udp benchmarks support --mode pingpong only",
        ),
        (
            &["--udp", "--size", "7"][..],
            "--udp needs --size 8 or more",
        ),
        (&["--loss-timeout", "1"][..], "--udp"),
    ] {
        let run = bench(Build::Native, closed, args);
        assert_eq!(run.status.and_then(|s| s.code()), Some(2), "{}", run.stderr);
        assert!(run.stderr.contains(message), "{}", run.stderr);
    }
}

#[test]
fn a_server_that_never_answers_fails_the_run() {
    // Connections complete in the kernel's backlog; nobody reads them.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let run = bench(Build::Native, addr, &["--connections", "2"]);
    assert_eq!(run.status.and_then(|s| s.code()), Some(3), "{}", run.stderr);
    assert!(run.stderr.contains("no echo came back"), "{}", run.stderr);
    drop(listener);
}
