//! Running one echokit command and checking its outcome against the
//! table's `expect`, with the `predicates` crate.

use super::table::{Expect, OutputCheck};
use predicates::prelude::*;
use predicates::BoxPredicate;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use testkit::payload::sha256_hex;
use testkit::{Build, Target};

/// Longest any single echokit client or failing server may run.
pub(crate) const PROCESS_TIMEOUT: Duration = Duration::from_secs(45);

/// What one echokit process did.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub what: String,
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

/// Runs `target ARGS` to completion (killed after `timeout`), with `stdin`
/// as standard input (empty if `None`).
pub(crate) fn run(
    target: &Target,
    args: &[String],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Outcome, String> {
    let mut cmd = assert_cmd::Command::from_std(target.command()?);
    cmd.args(args)
        .timeout(timeout)
        .write_stdin(stdin.unwrap_or_default().to_vec());
    let what = describe(target, args);
    let start = Instant::now();
    let out = cmd
        .output()
        .map_err(|err| format!("`{what}` could not run to completion: {err}"))?;
    Ok(Outcome {
        what,
        code: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
        elapsed: start.elapsed(),
    })
}

/// One command of [`run_together`]: what to run and its standard input.
pub(crate) struct Invocation {
    pub target: Target,
    pub args: Vec<String>,
    pub stdin: Vec<u8>,
}

/// Runs several commands at the same time, and makes them start their real
/// work together: each gets all of its standard input at once, but the
/// pipes are closed only when every command has taken all of its input, so
/// a command that reads its input to EOF before sending (as `echokit send
/// --input -` does) is held until the others are ready too. Each is killed
/// after `timeout`.
pub(crate) fn run_together(
    invocations: &[Invocation],
    timeout: Duration,
) -> Result<Vec<Outcome>, String> {
    let mut children: Vec<(String, Child)> = Vec::new();
    for inv in invocations {
        let what = describe(&inv.target, &inv.args);
        let spawned = inv
            .target
            .command()
            .and_then(|mut cmd| {
                cmd.args(&inv.args)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|err| err.to_string())
            })
            .map_err(|err| format!("cannot start `{what}`: {err}"));
        match spawned {
            Ok(child) => children.push((what, child)),
            Err(err) => {
                for (_, child) in &mut children {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(err);
            }
        }
    }
    let start = Instant::now();
    let fed = Barrier::new(children.len());
    let outcomes = thread::scope(|scope| {
        let handles: Vec<_> = children
            .iter_mut()
            .zip(invocations)
            .map(|((what, child), inv)| {
                let stdin = child.stdin.take();
                let stdout = child.stdout.take();
                let stderr = child.stderr.take();
                let fed = &fed;
                let feeder = scope.spawn(move || {
                    let result = stdin.map(|mut pipe| {
                        let written = pipe.write_all(&inv.stdin);
                        // Every feeder reaches the barrier, written or not.
                        fed.wait();
                        drop(pipe);
                        written
                    });
                    result.unwrap_or(Ok(()))
                });
                let out = scope.spawn(move || read_all(stdout));
                let err = scope.spawn(move || read_all(stderr));
                (what, child, feeder, out, err)
            })
            .collect();
        handles
            .into_iter()
            .map(|(what, child, feeder, out, err)| {
                let code = wait_until(child, start + timeout);
                let fed = feeder.join().unwrap_or(Ok(()));
                let stdout = out.join().unwrap_or_default();
                let stderr = err.join().unwrap_or_default();
                let mut stderr = stderr;
                if let Err(e) = fed {
                    stderr.extend_from_slice(format!("\n[kit: writing stdin: {e}]").as_bytes());
                }
                Outcome {
                    what: what.clone(),
                    code,
                    stdout,
                    stderr,
                    elapsed: start.elapsed(),
                }
            })
            .collect()
    });
    Ok(outcomes)
}

/// Waits for `child` until `deadline`, then kills it; its exit code
/// (`None` if killed or killed by a signal).
fn wait_until(child: &mut Child, deadline: Instant) -> Option<i32> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.code(),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn read_all(from: Option<impl Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut from) = from {
        let _ = from.read_to_end(&mut buf);
    }
    buf
}

/// How a command is shown in messages.
fn describe(target: &Target, args: &[String]) -> String {
    format!(
        "{} {}",
        match (target.build, target.network) {
            (Build::Native, _) => format!("echokit ({})", target.label()),
            (_, true) => format!("{} [network] echokit.wasm", target.label()),
            (_, false) => format!("{} [no network] echokit.wasm", target.label()),
        },
        args.join(" ")
    )
}

/// Checks an outcome: exit status, stdout, stderr, and the `--output` file.
pub(crate) fn check(
    expect: &Expect,
    out: &Outcome,
    payload: &Arc<[u8]>,
    output_file: Option<&Path>,
) -> Result<(), String> {
    let mut problems = Vec::new();
    if !expect.accepts_exit(out.code) {
        problems.push(match out.code {
            Some(code) => format!("exit status {code}, expected {}", expect.describe_exit()),
            None => format!(
                "killed by a signal (after the time limit?), expected exit status {}",
                expect.describe_exit()
            ),
        });
    }
    if let Some(c) = &expect.stdout {
        if let Err(p) = check_bytes("stdout", c, &out.stdout, payload) {
            problems.push(p);
        }
    }
    if let Some(c) = &expect.stderr {
        if let Err(p) = check_bytes("stderr", c, &out.stderr, payload) {
            problems.push(p);
        }
    }
    if let Some(c) = &expect.output {
        match output_file.map(std::fs::read) {
            Some(Ok(bytes)) => {
                if let Err(p) = check_bytes("the --output file", c, &bytes, payload) {
                    problems.push(p);
                }
            }
            Some(Err(err)) => problems.push(format!("cannot read the --output file: {err}")),
            None => problems.push("the table checks an --output file but passes none".into()),
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "`{}` (ran {:?}):\n  - {}\n  stdout: {}\n  stderr: {}",
        out.what,
        out.elapsed,
        problems.join("\n  - "),
        preview(&out.stdout),
        preview(&out.stderr)
    ))
}

/// Builds the predicate an [`OutputCheck`] describes.
pub(crate) fn predicate(check: &OutputCheck, payload: &Arc<[u8]>) -> BoxPredicate<[u8]> {
    let mut all: BoxPredicate<[u8]> = predicate::always().boxed();
    if check.is_empty {
        all = all
            .and(predicate::function(|b: &[u8]| b.is_empty()).fn_name("is_empty"))
            .boxed();
    }
    if check.equals_payload {
        let p = payload.clone();
        all = all
            .and(predicate::function(move |b: &[u8]| b == &p[..]).fn_name("equals_payload"))
            .boxed();
    }
    if check.digest_of_payload {
        let (len, hash) = (payload.len(), sha256_hex(payload));
        all = all
            .and(
                predicate::function(move |b: &[u8]| b.len() == len && sha256_hex(b) == hash)
                    .fn_name("same_length_and_sha256_as_payload"),
            )
            .boxed();
    }
    for needle in &check.contains {
        all = all
            .and(predicate::str::contains(needle.clone()).from_utf8())
            .boxed();
    }
    if !check.contains_any.is_empty() {
        let mut any: BoxPredicate<[u8]> = predicate::never().boxed();
        for needle in &check.contains_any {
            any = any
                .or(predicate::str::contains(needle.clone()).from_utf8())
                .boxed();
        }
        all = all.and(any).boxed();
    }
    all
}

fn check_bytes(
    what: &str,
    check: &OutputCheck,
    bytes: &[u8],
    payload: &Arc<[u8]>,
) -> Result<(), String> {
    let pred = predicate(check, payload);
    if pred.eval(bytes) {
        return Ok(());
    }
    let mut msg = format!("{what} fails `{pred}`");
    if check.equals_payload || check.digest_of_payload {
        msg.push_str(&format!(": {}", compare(payload, bytes)));
    }
    Err(msg)
}

/// Describes how `got` differs from `sent`.
pub(crate) fn compare(sent: &[u8], got: &[u8]) -> String {
    let first = sent.iter().zip(got).take_while(|(a, b)| a == b).count();
    if first == sent.len() && first == got.len() {
        return format!("identical ({} bytes)", sent.len());
    }
    format!(
        "sent {} bytes (sha256 {}), got {} (sha256 {}), first difference at offset {first}",
        sent.len(),
        sha256_hex(sent),
        got.len(),
        sha256_hex(got)
    )
}

/// Verifies an echo: identical bytes, reported by length, hash and offset.
pub(crate) fn verify_echo(sent: &[u8], got: &[u8]) -> Result<(), String> {
    if sent == got {
        Ok(())
    } else {
        Err(format!("echo differs: {}", compare(sent, got)))
    }
}

/// At most 400 bytes, lossily, for messages.
pub(crate) fn preview(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(400)];
    let mut s = format!("{:?}", String::from_utf8_lossy(shown));
    if bytes.len() > shown.len() {
        s.push_str(&format!(" ... ({} bytes)", bytes.len()));
    }
    s
}
