//! Addresses as users write them, on every way to run echokit
//! (`Target::every`: native on each backend, the component on each
//! runtime), one named test per target (`wildcard_v6_is_ipv6_only::wasm@jco`):
//! `[::]` is IPv6 only, several `--listen`
//! addresses serve both families, host names (`localhost`) for servers and
//! clients, a name that does not resolve, and the wasm build without name
//! lookup granted. Traffic goes to loopback only; the unresolvable name is
//! under `.invalid` (RFC 6761), which resolvers answer without the network.

// Host-only: it starts processes. Built for WASI (as `cargo clippy
// --all-targets --target wasm32-wasip2` does) there is nothing to test.
#![cfg_attr(target_os = "wasi", no_main)]
#![cfg(not(target_os = "wasi"))]

use libtest_mimic::{Arguments, Trial};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};
use testkit::process::run_with_input;
use testkit::{Build, ServerProcess, StderrTo, Target};

const STARTUP: Duration = Duration::from_secs(60);
const V4: [u8; 4] = [127, 0, 0, 1];
const V6: [u16; 8] = [0, 0, 0, 0, 0, 0, 0, 1];
const UNRESOLVABLE: &str = "no-such-host.invalid";

/// `echokit serve ARGS` of `target`; fails with what the server said.
fn serve(target: &Target, args: &[&str]) -> ServerProcess {
    let mut cmd = target.must();
    cmd.arg("serve").args(args);
    ServerProcess::start(cmd, StderrTo::Keep, STARTUP).unwrap_or_else(|err| panic!("{err}"))
}

/// Every `listening on` address the server printed, waiting for `count`.
fn listening(server: &ServerProcess, count: usize) -> Vec<SocketAddr> {
    let deadline = Instant::now() + STARTUP;
    loop {
        let rest = String::from_utf8_lossy(&server.extra_stdout()).into_owned();
        let mut all = vec![server.addr];
        all.extend(rest.lines().filter_map(testkit::process::parse_listening));
        if all.len() >= count || Instant::now() > deadline {
            assert_eq!(all.len(), count, "{}: {:?}", server.line, rest);
            return all;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP echo round trip to `addr`.
fn tcp_echo(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = testkit::net::connect(addr, Duration::from_secs(5), Duration::from_secs(10))?;
    stream.write_all(b"hello over tcp")?;
    stream.shutdown(Shutdown::Write)?;
    let mut back = Vec::new();
    stream.read_to_end(&mut back)?;
    assert_eq!(back, b"hello over tcp", "TCP echo from {addr}");
    Ok(())
}

/// Whether a datagram sent to `addr` comes back within a second (three
/// tries).
fn udp_echoes(addr: SocketAddr) -> bool {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (V4, 0).into(),
        SocketAddr::V6(_) => (V6, 0).into(),
    };
    let socket = UdpSocket::bind(local).expect("a UDP socket on loopback");
    socket
        .set_read_timeout(Some(Duration::from_millis(330)))
        .expect("a read timeout");
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        // Sending may fail once an ICMP error came back: that is no echo.
        if socket.send_to(b"hello over udp", addr).is_err() {
            continue;
        }
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            assert_eq!(&buf[..n], b"hello over udp", "UDP echo from {from}");
            return true;
        }
    }
    false
}

fn both(port: u16) -> [SocketAddr; 2] {
    [(V4, port).into(), (V6, port).into()]
}

fn wildcard_v6_is_ipv6_only(target: &Target) {
    // No name in the addresses: the wasm build runs without name lookup.
    let server = serve(target, &["--listen", "[::]:0", "--tcp", "--udp"]);
    let [v4, v6] = both(server.addr.port());
    tcp_echo(v6).unwrap_or_else(|err| panic!("TCP over IPv6 to {v6}: {err}"));
    assert!(udp_echoes(v6), "no UDP echo from {v6}");
    let refused = tcp_echo(v4).expect_err("[::] must not accept IPv4 connections");
    assert_eq!(
        refused.kind(),
        ErrorKind::ConnectionRefused,
        "{v4}: {refused}"
    );
    assert!(!udp_echoes(v4), "[::] must not echo IPv4 datagrams ({v4})");
}

fn two_listeners_serve_both_families(target: &Target) {
    let args = [
        "--listen",
        "0.0.0.0:0",
        "--listen",
        "[::]:0",
        "--tcp",
        "--udp",
    ];
    let server = serve(target, &args);
    let addrs = listening(&server, 2);
    let port = addrs[0].port();
    assert_eq!(addrs[0], SocketAddr::from(([0, 0, 0, 0], port)));
    assert_eq!(
        addrs[1],
        SocketAddr::from(([0u16; 8], port)),
        "the same port"
    );
    for addr in both(port) {
        tcp_echo(addr).unwrap_or_else(|err| panic!("TCP to {addr}: {err}"));
        assert!(udp_echoes(addr), "no UDP echo from {addr}");
    }
    // `check` over both families: the scenarios against each endpoint.
    let [v4, v6] = both(port).map(|addr| addr.to_string());
    let mut args = vec!["check", "--only", "hello", "--only", "udp_hello"];
    for addr in [&v4, &v6] {
        args.extend(["--connect", addr, "--udp-connect", addr]);
    }
    let (code, out, err) = run(target, &args, b"");
    assert_eq!(code, Some(0), "check: {out}{err}");
    for addr in [&v4, &v6] {
        assert!(
            out.contains(&format!("checking tcp {addr} udp {addr}\n")),
            "{out}"
        );
    }
    assert_eq!(
        out.matches("2 passed, 0 failed, 0 skipped").count(),
        2,
        "{out}"
    );
}

/// Runs `echokit ARGS` of `target` to the end: (exit code, stdout, stderr).
fn run(target: &Target, args: &[&str], input: &[u8]) -> (Option<i32>, String, String) {
    let mut cmd: Command = target.must();
    cmd.args(args);
    let done = run_with_input(cmd, input, Duration::from_secs(60)).expect("echokit starts");
    (done.status.and_then(|s| s.code()), done.stdout, done.stderr)
}

/// The exit status of a network error: 3 natively, 1 from a WASI 0.2 exit.
fn network_error(build: Build) -> Option<i32> {
    match build {
        Build::Native => Some(3),
        Build::Wasm => Some(1),
    }
}

fn localhost_for_server_and_clients(target: &Target) {
    let named = target.clone().with_name_lookup();
    let server = serve(&named, &["--listen", "localhost:0", "--tcp", "--udp"]);
    let port = server.addr.port();
    assert!(server.addr.ip().is_loopback(), "{}", server.line);
    let at = format!("localhost:{port}");
    // The native client, and the server's own build and runtime.
    let mut clients = vec![Target::new(Build::Native)];
    if target.build == Build::Wasm {
        clients.push(target.clone());
    }
    for client in clients {
        let client = client.with_name_lookup();
        for udp in [false, true] {
            let mut args = vec!["send", "--connect", &at];
            args.extend(udp.then_some("--udp"));
            let (code, out, err) = run(&client, &args, b"hello, localhost\n");
            assert_eq!(code, Some(0), "{} {args:?}: {err}", client.label());
            assert_eq!(out, "hello, localhost\n");
        }
        let bench = [
            "bench",
            "--connect",
            &at,
            "--bind",
            "localhost",
            "--duration",
            "0.3",
        ];
        let (code, out, err) = run(&client, &bench, b"");
        assert_eq!(code, Some(0), "{} bench: {out}{err}", client.label());
        let args = ["check", "--connect", &at, "--udp-connect", &at];
        let only = ["--only", "hello", "--only", "udp_hello"];
        let (code, out, err) = run(&client, &[&args[..], &only].concat(), b"");
        assert_eq!(code, Some(0), "{} check: {out}{err}", client.label());
        assert!(out.contains("2 passed, 0 failed"), "{out}");
    }
}

fn unresolvable_name_fails_fast(target: &Target) {
    let named = target.clone().with_name_lookup();
    let at = format!("{UNRESOLVABLE}:7");
    let commands: [&[&str]; 3] = [
        &["serve", "--listen", &at],
        &["send", "--connect", &at],
        &["check", "--connect", &at],
    ];
    for args in commands {
        let started = Instant::now();
        let (code, _, err) = run(&named, args, b"x");
        let flag = args[1];
        let line = format!("echokit: {flag}: cannot resolve {UNRESOLVABLE}: ");
        assert!(err.starts_with(&line), "{args:?}: {err:?}");
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert_eq!(code, network_error(target.build), "{args:?}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{args:?} was slow"
        );
    }
}

fn failed_listener_names_its_address(target: &Target) {
    let taken = serve(&Target::new(Build::Native), &["--listen", "127.0.0.1:0"]);
    let busy = taken.addr.to_string();
    let args = ["serve", "--listen", "127.0.0.1:0", "--listen", &busy];
    let (code, out, err) = run(target, &args, b"");
    assert_eq!(code, network_error(target.build), "{err}");
    assert_eq!(out, "", "nothing starts unless every address is bound");
    assert!(err.contains(&format!("cannot listen on {busy}")), "{err}");
}

/// The component on `target`'s runtime, name lookup not granted.
fn without_name_lookup_names_the_flag(target: &Target) {
    let denied = target.clone();
    for args in [
        &["serve", "--listen", "localhost:0"][..],
        &["send", "--connect", "localhost:7"],
    ] {
        let (code, _, err) = run(&denied, args, b"x");
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains("cannot resolve localhost"), "{args:?}: {err}");
        assert!(err.contains("-S allow-ip-name-lookup"), "{args:?}: {err}");
    }
}

/// One test: its name and what it runs on a target.
type Test = (&'static str, fn(&Target));

const TESTS: &[Test] = &[
    ("wildcard_v6_is_ipv6_only", wildcard_v6_is_ipv6_only),
    (
        "two_listeners_serve_both_families",
        two_listeners_serve_both_families,
    ),
    (
        "localhost_for_server_and_clients",
        localhost_for_server_and_clients,
    ),
    ("unresolvable_name_fails_fast", unresolvable_name_fails_fast),
    (
        "failed_listener_names_its_address",
        failed_listener_names_its_address,
    ),
];

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let targets = match Target::every() {
        Ok(targets) => targets,
        Err(err) => {
            eprintln!("addresses: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut trials = Vec::new();
    for target in &targets {
        let mut tests = TESTS.to_vec();
        if target.build == Build::Wasm {
            tests.push((
                "without_name_lookup_names_the_flag",
                without_name_lookup_names_the_flag,
            ));
        }
        for (name, test) in tests {
            let target = target.clone();
            trials.push(Trial::test(
                format!("{name}::{}", target.label()),
                move || {
                    test(&target);
                    Ok(())
                },
            ));
        }
    }
    libtest_mimic::run(&args, trials).exit_code()
}
