//! Runs the built `echokit-host` on small hand-written components and checks
//! exit statuses and messages, and runs a real echokit server and client
//! under it (the component testkit finds or builds, as the conformance kit
//! does; when it cannot, those tests fail with the command to run).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A `run` that returns `ok`.
const RUN_OK: &str = include_str!("fixtures/run_ok.wat");

/// A `run` that returns `err`.
const RUN_ERR: &str = r#"
(component
  (core module $m (func (export "run") (result i32) i32.const 1))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $inst (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $inst)))
"#;

/// A `run` that traps.
const RUN_TRAP: &str = r#"
(component
  (core module $m (func $boom (export "run") (result i32) unreachable))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $inst (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $inst)))
"#;

/// A component that exports no `wasi:cli/run`.
const NO_RUN: &str = r#"(component)"#;

/// A `run` that calls `wasi:cli/exit` with `STATUS` (0 is `ok`), then traps
/// if that returned.
const RUN_EXIT: &str = r#"
(component
  (import "wasi:cli/exit@0.2.0" (instance $exit
    (export "exit" (func (param "status" (result))))))
  (core func $exit_lowered (canon lower (func $exit "exit")))
  (core instance $host (export "exit" (func $exit_lowered)))
  (core module $m
    (import "host" "exit" (func $exit (param i32)))
    (func (export "run") (result i32) i32.const STATUS call $exit unreachable))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $inst (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $inst)))
"#;

/// A `run` that calls `wasi:cli/exit.exit-with-code(42)`.
const RUN_EXIT_42: &str = r#"
(component
  (import "wasi:cli/exit@0.2.12" (instance $exit
    (export "exit-with-code" (func (param "status-code" u8)))))
  (core func $exit_lowered (canon lower (func $exit "exit-with-code")))
  (core instance $host (export "exit" (func $exit_lowered)))
  (core module $m
    (import "host" "exit" (func $exit (param i32)))
    (func (export "run") (result i32) i32.const 42 call $exit unreachable))
  (core instance $i (instantiate $m (with "host" (instance $host))))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $inst (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $inst)))
"#;

/// A scratch directory holding components, and where the host caches.
struct Scratch {
    /// The directory, removed on drop.
    dir: tempfile::TempDir,
    /// The host's `XDG_CACHE_HOME`.
    cache_home: PathBuf,
}

impl Scratch {
    /// A new, empty scratch directory, with the cache in it.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cache_home = dir.path().join("cache");
        Scratch { dir, cache_home }
    }

    /// A new scratch directory whose cache outlives it, in the target
    /// directory: for the large echokit component, compiled once for all
    /// tests and runs.
    fn with_shared_cache() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cache_home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cache");
        Scratch { dir, cache_home }
    }

    /// Writes a component (WAT text, which the host accepts) to `name`.
    fn component(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The cache directory the host uses under this scratch directory.
    fn cache_dir(&self) -> PathBuf {
        self.cache_home.join("echokit-host")
    }

    /// `echokit-host ARGS`, with its cache here.
    fn host(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_echokit-host"));
        command.args(args).env("XDG_CACHE_HOME", &self.cache_home);
        command
    }

    /// Runs `echokit-host ARGS` to completion, stdin closed.
    fn run(&self, args: &[&str]) -> Output {
        self.host(args).stdin(Stdio::null()).output().unwrap()
    }
}

/// The argument form of a path.
fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The exit status of a finished run.
fn code(output: &Output) -> i32 {
    output.status.code().expect("exited, not killed")
}

/// The standard error of a finished run.
fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn run_ok_exits_0_and_err_exits_1() {
    let scratch = Scratch::new();
    let ok = scratch.component("ok.wat", RUN_OK);
    let output = scratch.run(&["run", arg(&ok)]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(output.stderr.is_empty());

    let err = scratch.component("err.wat", RUN_ERR);
    let output = scratch.run(&["run", arg(&err)]);
    assert_eq!(code(&output), 1);
    assert!(output.stderr.is_empty(), "the guest's failure is its own");
}

#[test]
fn exit_statuses_are_the_guests() {
    let scratch = Scratch::new();
    for (status, expected) in [(0, 0), (1, 1)] {
        let text = RUN_EXIT.replace("STATUS", &status.to_string());
        let path = scratch.component(&format!("exit{status}.wat"), &text);
        let output = scratch.run(&["run", arg(&path)]);
        assert_eq!(code(&output), expected, "{}", stderr(&output));
        assert!(output.stderr.is_empty(), "{}", stderr(&output));
    }
    let path = scratch.component("exit42.wat", RUN_EXIT_42);
    let output = scratch.run(&["run", arg(&path)]);
    assert_eq!(code(&output), 42, "{}", stderr(&output));
}

#[test]
fn a_trap_exits_134_with_one_line() {
    let scratch = Scratch::new();
    let path = scratch.component("trap.wat", RUN_TRAP);
    let output = scratch.run(&["run", arg(&path)]);
    assert_eq!(code(&output), 134);
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with(&format!("echokit-host: {}: ", arg(&path))),
        "{message}"
    );
    assert!(message.contains("unreachable"), "{message}");
    assert!(message.contains("in boom"), "{message}");
}

#[test]
fn unreadable_or_invalid_components_exit_1_naming_the_file() {
    let scratch = Scratch::new();
    let missing = scratch.dir.path().join("missing.wasm");
    let output = scratch.run(&["run", arg(&missing)]);
    assert_eq!(code(&output), 1);
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains(arg(&missing)), "{message}");
    assert!(message.contains("cannot read"), "{message}");

    let garbage = scratch.component("garbage.wasm", "\0asm garbage");
    let output = scratch.run(&["run", arg(&garbage)]);
    assert_eq!(code(&output), 1);
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("cannot compile"), "{message}");

    let no_run = scratch.component("norun.wat", NO_RUN);
    let output = scratch.run(&["run", arg(&no_run)]);
    assert_eq!(code(&output), 1);
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("wasi:cli/run"), "{message}");
}

#[test]
fn usage_errors_exit_2() {
    let scratch = Scratch::new();
    let ok = scratch.component("ok.wat", RUN_OK);
    let output = scratch.run(&["run", "-S", "nn", arg(&ok)]);
    assert_eq!(code(&output), 2);
    let message = stderr(&output);
    assert!(message.contains("`nn`"), "{message}");
    assert!(message.contains("inherit-network"), "{message}");
    assert_eq!(code(&scratch.run(&["run"])), 2);
    assert_eq!(code(&scratch.run(&["walk", arg(&ok)])), 2);
}

#[test]
fn a_missing_directory_exits_1() {
    let scratch = Scratch::new();
    let ok = scratch.component("ok.wat", RUN_OK);
    let missing = scratch.dir.path().join("no-such-dir");
    let output = scratch.run(&["run", "--dir", arg(&missing), arg(&ok)]);
    assert_eq!(code(&output), 1);
    assert!(stderr(&output).contains("cannot open directory"));
}

#[test]
fn the_cache_is_filled_once_and_can_be_turned_off() {
    let scratch = Scratch::new();
    let ok = scratch.component("ok.wat", RUN_OK);
    let output = scratch.run(&["run", "-C", "cache=n", arg(&ok)]);
    assert_eq!(code(&output), 0);
    assert!(!scratch.cache_dir().exists());
    for _ in 0..2 {
        let output = scratch.run(&["run", arg(&ok)]);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        let entries = std::fs::read_dir(scratch.cache_dir()).unwrap().count();
        assert_eq!(entries, 1);
    }
}

/// The echokit component the network tests run.
fn echokit() -> PathBuf {
    testkit::wasm::component().unwrap_or_else(|err| panic!("{err}"))
}

/// A server child process, killed on drop.
struct Server {
    /// The `echokit-host run ... serve` process.
    child: Child,
    /// The address it printed.
    addr: String,
}

impl Server {
    /// Starts `echokit serve` under the host and waits for its address.
    fn start(scratch: &Scratch, component: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["run", "-S", "inherit-network", arg(component)];
        args.extend(["serve", "--listen", "127.0.0.1:0"]);
        args.extend(extra);
        let mut child = scratch
            .host(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `echokit send` under the host with `input` on stdin.
fn send(
    scratch: &Scratch,
    component: &Path,
    host_args: &[&str],
    guest: &[&str],
    input: &[u8],
) -> Output {
    let mut args = host_args.to_vec();
    args.push(arg(component));
    args.push("send");
    args.extend(guest);
    let mut child = scratch
        .host(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn echokit_serves_and_sends_over_tcp_and_udp() {
    let component = echokit();
    let scratch = Scratch::with_shared_cache();
    let input: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for udp in [false, true] {
        let extra: &[&str] = if udp { &["--udp"] } else { &[] };
        let server = Server::start(&scratch, &component, extra);
        let mut guest = vec!["--connect", server.addr.as_str()];
        guest.extend(extra);
        let data = if udp { &input[..1000] } else { &input[..] };
        let output = send(
            &scratch,
            &component,
            &["run", "-S", "inherit-network"],
            &guest,
            data,
        );
        assert_eq!(code(&output), 0, "udp={udp}: {}", stderr(&output));
        assert_eq!(output.stdout, data, "udp={udp}");
    }
}

#[test]
fn echokit_without_the_network_says_so() {
    let component = echokit();
    let scratch = Scratch::with_shared_cache();
    let server = Server::start(&scratch, &component, &[]);
    for host_args in [
        &["run"][..],
        &["run", "-S", "inherit-network", "-S", "tcp=n"],
    ] {
        let output = send(
            &scratch,
            &component,
            host_args,
            &["--connect", &server.addr],
            b"hi",
        );
        assert_eq!(code(&output), 1);
        let message = stderr(&output);
        assert!(message.contains("-S inherit-network"), "{message}");
    }
}
