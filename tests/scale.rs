//! A reduced scale test: 5,000 concurrent TCP connections to each build's
//! server (native, and wasm under its runtime), every echo verified, then
//! an ordinary `send` client served once they have all closed; and the
//! component's cost in wasmtime's handles per connection.
//! Correctness only: `just scale` measures how many connections a server
//! holds and what they cost.
//!
//! Each process needs a descriptor per connection: the test raises its
//! soft open-files limit (which the server and `bench` inherit) and fails,
//! saying how to raise the hard limit, when that is too low. Connections
//! come from 127.0.0.1, whose ephemeral ports (32768–60999 by default) are
//! enough for 5,000.

#![cfg(not(target_os = "wasi"))]

use echokit::bench::Report;
use std::process::Command;
use std::time::Duration;
use testkit::bench::run_bench;
use testkit::process::run_with_input;
use testkit::{Build, ServerProcess, StderrTo, Target};

/// Connections open at once.
const CONNECTIONS: u64 = 5_000;
/// Messages per second over all of them, and their size.
const RATE: u64 = 2_500;
const SIZE: u64 = 128;
/// How fast they are opened (each server's backlog is 1,024).
const CONNECT_RATE: &str = "5000";
/// How long the load runs once they are open.
const MEASURE: Duration = Duration::from_secs(3);
/// Descriptors each process needs besides the connections.
const MARGIN: u64 = 100;

/// `server` (echokit, `serve`'s arguments still to add) holds
/// `connections` at once, each echoing, and then serves a `send`.
fn holds(mut server: Command, connections: u64) {
    testkit::limits::ensure_open_files(connections + MARGIN).unwrap_or_else(|err| panic!("{err}"));
    server.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--max-connections",
        &(connections + MARGIN).to_string(),
    ]);
    let mut server = ServerProcess::start(server, StderrTo::Keep, Duration::from_secs(60))
        .unwrap_or_else(|err| panic!("{err}"));
    // The load comes from the native build: the server is under test.
    let line = run_bench(
        Target::new(Build::Native).must(),
        server.addr,
        &[
            "--connections",
            &connections.to_string(),
            "--rate",
            &RATE.to_string(),
            "--size",
            &SIZE.to_string(),
            "--connect-rate",
            CONNECT_RATE,
            "--warmup",
            "1.5",
        ],
        MEASURE,
        Duration::from_secs(15),
    )
    .unwrap_or_else(|err| panic!("{err}; {}", server.describe()));
    let report: Report =
        serde_json::from_str(&line).unwrap_or_else(|err| panic!("not a report ({err}): {line}"));
    let counts = report.counts;
    assert_eq!(counts.errors, 0, "{line}");
    assert_eq!(counts.lost, 0, "{line}");
    assert!(counts.requests > 0, "no echo completed: {line}");
    assert_eq!(counts.bytes, counts.requests * SIZE, "{line}");
    // Every message is echoed but those still in flight at the end: at
    // most half a second's worth.
    assert!(
        counts.sent.saturating_sub(counts.requests) <= RATE / 2,
        "{} of {} messages sent were not echoed: {line}",
        counts.sent.saturating_sub(counts.requests),
        counts.sent
    );
    assert!(
        report.connected_ns.is_some(),
        "not all {connections} connections were up and echoing: {line}"
    );
    server.ensure_alive().unwrap_or_else(|err| panic!("{err}"));
    assert!(
        !server.stderr().contains("accept failed"),
        "{}",
        server.describe()
    );
    served_after(&server);
}

/// An ordinary `echokit send` gets its echo once the load has closed.
fn served_after(server: &ServerProcess) {
    let input = b"after the load\n";
    let mut send = Target::new(Build::Native).must();
    send.args(["send", "--connect", &server.addr.to_string()]);
    let finished =
        run_with_input(send, input, Duration::from_secs(10)).expect("start echokit send");
    assert!(
        finished.status.is_some_and(|status| status.success()),
        "send failed: {finished:?}; {}",
        server.describe()
    );
    assert_eq!(finished.stdout.as_bytes(), input);
}

#[test]
fn native_holds_5000_connections() {
    holds(Target::new(Build::Native).must(), CONNECTIONS);
}

#[test]
fn wasm_holds_5000_connections() {
    holds(Target::new(Build::Wasm).must(), CONNECTIONS);
}

/// wasmtime caps the component handles a store holds at once (100,000 by
/// default, `-S max-component-handles`), and a connection's socket,
/// streams and pollables count, as does each pollable `poll` borrows.
/// Under a cap of 5,500 the component must hold 1,000 connections: at most
/// five handles each (six before the output's pollable was made only when
/// needed; that bound 17,910 connections under the default).
#[test]
fn wasm_connection_costs_at_most_five_handles() {
    let tools = testkit::wasm::wasm_tools().unwrap_or_else(|err| panic!("{err}"));
    let mut server = Command::new(&tools.wasmtime);
    server
        .args(["run", "-S", "inherit-network", "-S"])
        .arg("max-component-handles=5500")
        .arg(&tools.wasm);
    holds(server, 1_000);
}
