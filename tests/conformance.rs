//! The cross-target conformance kit: every scenario of
//! `fixtures/scenarios.toml` against every pairing of server build × client
//! column, each pairing its own named test, e.g.
//! `large_8mib::wasm_server::native_client`.
//!
//! Builds (testkit's `Target`):
//! - native: the `echokit` binary cargo builds for this test, on its
//!   default backend (io_uring where the kernel allows it); every
//!   native-only pairing runs again with both ends on epoll
//!   (`::native_server@epoll::native_client@epoll`, through `ECHOKIT_IO`);
//! - wasm: `wasmtime run -S inherit-network <echokit.wasm> ARGS...`; when a
//!   client names files (`--input`/`--output`), their temporary directory is
//!   preopened at the same path (`--dir DIR::DIR`), the WASI way of granting
//!   files, so the arguments read the same for both builds.
//!
//! Scenarios speak TCP, UDP (`udp = true`: `serve --udp`, `send --udp`, and
//! the std column's `std::net::UdpSocket` client), or both at once.
//!
//! Where the builds must behave differently, fixtures/scenarios.toml says so
//! in a `[[scenario.deviation]]` with its reason, and the test is listed as
//! `[deviation]`; a pairing needing an undeclared difference fails.
//!
//! Client columns: native, wasm (each build's `echokit send`), and std, a
//! plain `std::net` client (TCP and UDP) in tests/kit/std_client.rs that
//! shares no code with echokit's client.
//!
//! # How the kit finds wasmtime and echokit.wasm
//!
//! Resolved once per run, guarded by a `std::sync::OnceLock`, by the first
//! wasm test that needs them (the others wait for it):
//! - wasmtime: `$WASMTIME` if set, else `wasmtime` on `PATH`, else
//!   `~/.cargo/bin/wasmtime`. `just setup` installs it.
//! - echokit.wasm: `$ECHOKIT_WASM` if set, used as is; otherwise the kit
//!   runs `cargo build --release --target wasm32-wasip2 --bin echokit` (a
//!   no-op when up to date, so the tested component always matches the
//!   sources) and takes the artifact cargo reports, normally
//!   target/wasm32-wasip2/release/echokit.wasm. Cargo's own lock on the
//!   target directory serializes this with any other build; `cargo test`
//!   has released that lock by the time tests run.
//! - Then it runs the component once (`--version`), so that wasmtime's
//!   compilation cache is warm before dozens of wasm processes start.
//!
//! If any of this fails, every wasm test FAILS with the reason and the
//! remedy (`just setup`, `just build-wasm`, or the variables above); none
//! is skipped. Native tests do not need any of it.
//!
//! # Running
//!
//! `cargo test --release --test conformance` runs everything;
//! `... -- wasm_server` filters by name, `... -- --list` lists the tests.
//! Tests run on 6 threads unless `--test-threads` or `RUST_TEST_THREADS`
//! says otherwise (most of the time is spent waiting on sockets and
//! processes). Scenarios marked `exclusive` in the table (the ones that
//! measure time) run alone: they take a write lock that every other test
//! holds for reading.
//!
//! The kit checks itself too: `kit::wasm_coverage` fails unless the wasm
//! tests are at least three times the network (TCP or UDP) scenarios.

// Host-only: it starts processes and reads /proc. Built for WASI (as
// `cargo clippy --all-targets --target wasm32-wasip2` does) it is empty.
#![cfg_attr(target_os = "wasi", no_main)]
#![cfg(not(target_os = "wasi"))]

mod kit;

use crate::kit::scenarios::Case;
use crate::kit::table::{Build, Column, Kind, Scenario};
use libtest_mimic::{Arguments, Failed, Trial};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use testkit::target::EPOLL;

/// Held for reading by every test, for writing by exclusive ones.
static MACHINE: RwLock<()> = RwLock::new(());

const DEFAULT_THREADS: usize = 6;

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(
            std::env::var("RUST_TEST_THREADS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(DEFAULT_THREADS),
        );
    }
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let trials = match kit::table::load(&fixtures.join("scenarios.toml")) {
        Ok(table) => trials(table.scenario, &fixtures),
        // A broken table is one failing test, not a crash with no report.
        Err(err) => vec![Trial::test("kit::scenario_table", move || Err(err.into()))],
    };
    libtest_mimic::run(&args, trials).exit_code()
}

/// One trial per scenario and pairing, plus the kit's self-check.
fn trials(scenarios: Vec<Scenario>, fixtures: &std::path::Path) -> Vec<Trial> {
    let other_runtimes: Vec<_> = match testkit::runtime::all() {
        Ok(all) => all.iter().filter(|r| !r.default).cloned().collect(),
        Err(err) => return vec![Trial::test("kit::runtimes", move || Err(err.into()))],
    };
    let mut trials = Vec::new();
    let mut network_scenarios = 0usize;
    let mut wasm_tests = 0usize;
    for scenario in scenarios {
        let scenario = Arc::new(scenario);
        network_scenarios += usize::from(scenario.tcp || scenario.udp);
        for (server, client) in pairings(&scenario) {
            let wasm = server == Some(Build::Wasm)
                || client.and_then(Column::build) == Some(Build::Wasm)
                || scenario.kind == Kind::ComponentWorld;
            wasm_tests += usize::from(wasm);
            // Every pairing as listed, then every one with wasm in it on
            // each other runtime (both ends on it when both are wasm).
            let mut runtimes = vec![None];
            if wasm && scenario.kind != Kind::ComponentWorld {
                let wasm_clients = match client {
                    Some(column) if column.is_check() => 1,
                    Some(column) if column.build() == Some(Build::Wasm) => {
                        client_processes(&scenario)
                    }
                    _ => 0,
                };
                let fits = |r: &&Arc<testkit::runtime::Runtime>| {
                    r.processes_at_once.is_none_or(|most| wasm_clients <= most)
                };
                runtimes.extend(
                    other_runtimes
                        .iter()
                        .filter(fits)
                        .map(|r| Some(r.name.clone())),
                );
            }
            // Native-only pairings again on the other native backend
            // (epoll; io_uring is the default where the kernel has it),
            // both ends on it.
            let epoll =
                (!wasm && server == Some(Build::Native)).then(|| (None, Some(EPOLL.to_owned())));
            let variants = runtimes.into_iter().map(|r| (r, None)).chain(epoll);
            for (runtime, native) in variants {
                let on = |build: Option<Build>| match build {
                    Some(Build::Wasm) => runtime.clone(),
                    Some(Build::Native) => native.clone(),
                    None => None,
                };
                trials.push(trial(Case {
                    scenario: scenario.clone(),
                    server,
                    client,
                    server_on: on(server),
                    client_on: on(client.and_then(Column::build)),
                    fixtures: fixtures.to_path_buf(),
                }));
            }
        }
    }
    trials.push(Trial::test("kit::wasm_coverage", move || {
        if wasm_tests >= 3 * network_scenarios {
            Ok(())
        } else {
            Err(format!(
                "{wasm_tests} wasm-involving tests for {network_scenarios} network (TCP or \
                 UDP) scenarios: the kit promises at least three per network scenario"
            )
            .into())
        }
    }));
    trials
}

/// How many client processes a scenario starts at once.
fn client_processes(s: &Scenario) -> usize {
    match s.kind {
        Kind::Concurrent => s.params.connections.unwrap_or(1),
        Kind::UdpTwoClients | Kind::TcpAndUdp => 2,
        _ => 1,
    }
}

/// The test of one case: exclusive scenarios (and pairings a deviation
/// makes exclusive) run alone.
fn trial(case: Case) -> Trial {
    let name = test_name(&case);
    let deviates = case.deviation().is_some();
    let exclusive = case.scenario.exclusive || case.deviation().is_some_and(|d| d.exclusive);
    let trial = Trial::test(name, move || {
        let result = if exclusive {
            let _alone = MACHINE.write().unwrap_or_else(|e| e.into_inner());
            kit::scenarios::run(&case)
        } else {
            let _shared = MACHINE.read().unwrap_or_else(|e| e.into_inner());
            kit::scenarios::run(&case)
        };
        result.map_err(Failed::from)
    });
    match deviates {
        true => trial.with_kind("deviation"),
        false => trial,
    }
}

/// The (server, client) pairings of a scenario, in table order, then the
/// check columns for every server when the scenario names a check.
fn pairings(s: &Scenario) -> Vec<(Option<Build>, Option<Column>)> {
    if s.kind == Kind::NoNetwork {
        // `serve` and `send` on their own: there is no connection to pair.
        let servers = s.servers.iter().map(|&b| (Some(b), None));
        return servers
            .chain(s.clients.iter().map(|&c| (None, Some(c))))
            .collect();
    }
    let mut pairs: Vec<_> = match (s.servers.is_empty(), s.clients.is_empty()) {
        (false, false) => s
            .servers
            .iter()
            .flat_map(|&server| s.clients.iter().map(move |&c| (Some(server), Some(c))))
            .collect(),
        (false, true) => s.servers.iter().map(|&b| (Some(b), None)).collect(),
        (true, false) => s.clients.iter().map(|&c| (None, Some(c))).collect(),
        (true, true) => vec![(None, None)],
    };
    if s.check.is_some() {
        for &server in &s.servers {
            pairs.extend(Column::CHECKS.map(|c| (Some(server), Some(c))));
        }
    }
    pairs
}

/// `NAME::SERVER_server[@ON]::CLIENT_client[@ON]`, e.g.
/// `large_8mib::wasm_server@jco::native_client`.
fn test_name(case: &Case) -> String {
    let at = |on: &Option<String>| on.as_ref().map(|on| format!("@{on}")).unwrap_or_default();
    let mut name = case.scenario.name.clone();
    if let Some(server) = case.server {
        name.push_str(&format!("::{server}_server{}", at(&case.server_on)));
    }
    if let Some(client) = case.client {
        name.push_str(&format!("::{client}_client{}", at(&case.client_on)));
    }
    if case.server.is_none() && case.client.is_none() {
        name.push_str("::wasm_component");
    }
    name
}
