//! `echokit serve` and the open-files limit (native): it raises its soft
//! `RLIMIT_NOFILE` to the hard limit at start, says so under `-v`, and
//! warns when even the hard limit is below what `--max-connections` needs.
//! Each server starts from `sh -c 'ulimit ...; exec echokit serve ...'`,
//! so the limits are lowered for it alone.

#![cfg(not(target_os = "wasi"))]

use std::process::Command;
use std::time::Duration;
use testkit::paths::native_bin;
use testkit::{ServerProcess, StderrTo};

/// Runs `ulimits` in a shell, then `echokit serve` on a free port with
/// `args`; returns what it wrote on stderr once listening and killed.
fn serve_under(ulimits: &str, args: &str) -> String {
    let script = format!(
        "{ulimits}; exec '{}' serve --listen 127.0.0.1:0 {args}",
        native_bin().display()
    );
    let mut command = Command::new("sh");
    command.args(["-c", &script]);
    let mut server = ServerProcess::start(command, StderrTo::Keep, Duration::from_secs(10))
        .unwrap_or_else(|err| panic!("{err}"));
    server.kill();
    server.stderr()
}

/// This process's hard limit, which the shell's child inherits; fails
/// with the remedy when it is too low to lower the soft one below it.
fn hard_limit() -> u64 {
    let (_, hard) = testkit::limits::open_files().expect("getrlimit(RLIMIT_NOFILE)");
    assert!(
        hard > 300,
        "these tests lower the open-files limit below the hard limit, which is {hard}: \
         raise it (`ulimit -Hn 4096` as root, or LimitNOFILE in the container settings)"
    );
    hard
}

#[test]
fn verbose_serve_raises_the_soft_limit_to_the_hard_limit() {
    let hard = hard_limit();
    let stderr = serve_under("ulimit -Sn 256", "-v --max-connections 100");
    assert!(
        stderr.contains(&format!("open files limit: raised 256 → {hard}")),
        "serve -v should say it raised the limit from 256 to {hard}; stderr: {stderr}"
    );
    assert!(!stderr.contains("warning"), "no warning due: {stderr}");
}

#[test]
fn a_limit_already_at_the_hard_limit_is_only_reported() {
    let hard = hard_limit();
    let stderr = serve_under("ulimit -Sn 300; ulimit -Hn 300", "-v --max-connections 100");
    assert!(
        stderr.contains("open files limit: 300\n"),
        "serve -v should report the limit it found (300); stderr: {stderr}"
    );
    assert!(hard > 300);
}

#[test]
fn max_connections_above_the_hard_limit_warns_with_both_numbers() {
    hard_limit();
    let stderr = serve_under("ulimit -Sn 256; ulimit -Hn 300", "--max-connections 5000");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "one warning expected; stderr: {stderr}");
    let warning = warnings[0];
    for needed in [
        "open files limit is 300",
        "--max-connections 5000",
        "ulimit -Hn",
        "LimitNOFILE",
    ] {
        assert!(
            warning.contains(needed),
            "{needed:?} missing from {warning:?}"
        );
    }
    assert!(
        !stderr.contains("open files limit: raised"),
        "without -v only the warning is printed: {stderr}"
    );
}

#[test]
fn max_connections_within_the_limit_does_not_warn() {
    hard_limit();
    let stderr = serve_under("ulimit -Sn 256; ulimit -Hn 300", "--max-connections 200");
    assert!(
        !stderr.contains("warning"),
        "200 connections fit in 300: {stderr}"
    );
}
