//! `echokit bench` from two hosts at once, merged by `echokit report`:
//! three network namespaces made for the test stand for the machines
//! (the server's holds a bridge that both clients' veths join, all in
//! 10.200.0.0/24, which exists only inside them), and are deleted when
//! the test ends, passed or failed.
//!
//! It needs root and `ip` (iproute2), as CI has; without them it fails
//! and says so, rather than skip.

#![cfg(not(target_os = "wasi"))]

use echokit::bench::{Event, Report};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use testkit::bench::bench_run;
use testkit::paths::native_bin;
use testkit::process::finish_within;
use testkit::{ServerProcess, StderrTo};

/// The server's address on the bridge, and the clients'.
const SERVER_IP: &str = "10.200.0.1";
const CLIENT_IPS: [&str; 2] = ["10.200.0.2", "10.200.0.3"];
const PREFIX: &str = "/24";

/// Runs `ip ARGS`, failing with what it said.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| {
            format!("cannot run `ip` ({err}): install iproute2 (`apt-get install iproute2`)")
        })?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Network namespaces, deleted on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    /// Adds namespace `name` (deleted with the others).
    fn add(&mut self, name: String) -> Result<String, String> {
        ip(&["netns", "add", &name]).map_err(|err| {
            format!(
                "cannot create network namespaces, which this test needs (run it as root, as CI \
                 does, with iproute2 installed): {err}"
            )
        })?;
        self.0.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            // Deleting a namespace deletes its veths and the bridge.
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// The server's namespace with its bridge, and one client namespace per
/// address in [`CLIENT_IPS`], joined to the bridge by a veth pair.
fn hosts(namespaces: &mut Namespaces) -> Result<(String, Vec<String>), String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let tag = format!("ek{}-{nanos:x}", std::process::id());
    let server = namespaces.add(format!("{tag}-s"))?;
    for args in [
        &["link", "add", "br0", "type", "bridge"][..],
        &["addr", "add", &format!("{SERVER_IP}{PREFIX}"), "dev", "br0"],
        &["link", "set", "br0", "up"],
    ] {
        ip(&[&["-n", &server][..], args].concat())?;
    }
    let mut clients = Vec::new();
    for (i, client_ip) in CLIENT_IPS.iter().enumerate() {
        let client = namespaces.add(format!("{tag}-{i}"))?;
        let port = format!("port{i}");
        ip(&[
            "-n", &server, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &client,
        ])?;
        ip(&["-n", &server, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &server, "link", "set", &port, "up"])?;
        ip(&[
            "-n",
            &client,
            "addr",
            "add",
            &format!("{client_ip}{PREFIX}"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &client, "link", "set", "eth0", "up"])?;
        clients.push(client);
    }
    Ok((server, clients))
}

/// `ip netns exec NAMESPACE <native echokit>`, arguments still to add.
fn in_namespace(namespace: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", namespace]).arg(native_bin());
    cmd
}

/// One client's run: open loop, its histograms logged to `log`.
fn client(namespace: &str, server: SocketAddr, log: &Path) -> Result<Report, String> {
    let args = [
        "--rate",
        "2000",
        "--connections",
        "4",
        "--size",
        "256",
        "--interval",
        "0.5",
    ];
    let log_args = ["--histogram-log", log.to_str().unwrap_or_default()];
    let duration = Duration::from_secs(2);
    let run = bench_run(
        in_namespace(namespace),
        server,
        &[&args[..], &log_args].concat(),
        duration,
        Duration::from_secs(30),
    );
    if !run.status.is_some_and(|s| s.success()) {
        return Err(format!(
            "bench in {namespace} failed ({:?}): {}",
            run.status, run.stderr
        ));
    }
    let last = testkit::bench::last_line(&run.stdout);
    serde_json::from_str(last).map_err(|err| format!("not a report ({err}): {last}"))
}

#[test]
fn runs_from_two_hosts_merge_into_one_report() {
    let mut namespaces = Namespaces(Vec::new());
    let (server_ns, clients) = hosts(&mut namespaces).unwrap_or_else(|err| panic!("{err}"));
    let mut cmd = in_namespace(&server_ns);
    cmd.args(["serve", "--listen", &format!("{SERVER_IP}:0")]);
    let server = ServerProcess::start(cmd, StderrTo::Keep, Duration::from_secs(10))
        .unwrap_or_else(|err| panic!("{err}"));
    let dir = tempfile::tempdir().unwrap();
    let logs: Vec<_> = (0..clients.len())
        .map(|i| dir.path().join(format!("host{i}.hlog")))
        .collect();
    let runs: Vec<Report> = thread::scope(|scope| {
        let running: Vec<_> = (clients.iter().zip(&logs))
            .map(|(ns, log)| scope.spawn(move || client(ns, server.addr, log)))
            .collect();
        running
            .into_iter()
            .map(|run| run.join().unwrap().unwrap_or_else(|err| panic!("{err}")))
            .collect()
    });
    for run in &runs {
        assert_eq!(run.counts.errors, 0, "{run:?}");
        assert!(run.counts.requests > 1000, "{run:?}");
        // Every byte came back as sent (bench fails on one wrong byte).
        assert_eq!(run.counts.bytes, run.counts.requests * 256, "{run:?}");
    }
    let mut report = Command::new(native_bin());
    report
        .arg("report")
        .arg("--json")
        .args(&logs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let merged = finish_within(report.spawn().unwrap(), Duration::from_secs(30));
    assert!(
        merged.status.is_some_and(|s| s.success()),
        "{}",
        merged.stderr
    );
    let Ok(Event::End(merged)) = serde_json::from_str(merged.stdout.trim()) else {
        panic!("not an end event: {}", merged.stdout);
    };
    let mut sum = runs[0].counts;
    sum += &runs[1].counts;
    assert_eq!(merged.counts, sum);
    assert_eq!(
        (merged.runs, merged.start.connections, merged.start.rate),
        (2, 8, Some(4000))
    );
    // The two ran at once: together they offered both their rates.
    assert!(merged.offered_per_sec > 3000.0, "{merged:?}");
    drop(server);
}
