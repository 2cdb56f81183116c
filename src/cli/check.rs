//! `echokit check`: the conformance scenarios against any echo endpoint.

use super::{parse_seconds, usage_error, EXIT_CODES};
use anyhow::Context;
use clap::Args;
use echokit::check::{self, Endpoint, Options, Outcome, Scenario, Verdict, SCENARIOS};
use echokit::clock::{Clock, MonotonicClock};
use echokit::net::{self, HostPort, Job, Network, Protocol};
use serde::Serialize;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// The JSON lines' schema: raised when a field changes meaning.
const SCHEMA: u32 = 1;

/// How long the endpoint may take to answer at all.
const REACH_WITHIN: Duration = Duration::from_secs(5);

fn scenarios_help() -> String {
    let mut help = String::from("Scenarios (--list says what each proves):\n");
    for protocol in ["tcp", "udp"] {
        let names: Vec<&str> = (SCENARIOS.iter())
            .filter(|s| s.protocol.name() == protocol)
            .map(|s| s.name)
            .collect();
        help.push_str(&format!("  {protocol}: {}\n", names.join(", ")));
    }
    help.push('\n');
    help.push_str(EXIT_CODES);
    help.push_str(
        "\nHere, 1 means a scenario failed and 3 that the endpoint could not be reached at all.",
    );
    help
}

/// Options of `echokit check`.
#[derive(Debug, Args)]
#[command(after_help = scenarios_help())]
pub(crate) struct CheckArgs {
    /// TCP echo endpoint to check: IP:PORT (IPv6 as [::1]:PORT) or HOST:PORT (default
    /// 127.0.0.1:7878 unless --udp-connect is given). Repeatable: the scenarios run against
    /// each in turn (the Nth --connect with the Nth --udp-connect), e.g. once over IPv4 and
    /// once over IPv6. Of a name's several addresses, the first that answers is checked.
    #[arg(long, value_name = "ADDR")]
    connect: Vec<HostPort>,

    /// UDP echo endpoint to check, as --connect; the UDP scenarios are skipped without it.
    /// Repeatable.
    #[arg(long, value_name = "ADDR")]
    udp_connect: Vec<HostPort>,

    /// Run only the scenarios matching PATTERN (a name; `*` matches anything). Repeatable.
    #[arg(long, value_name = "PATTERN")]
    only: Vec<String>,

    /// Leave out the scenarios matching PATTERN. Repeatable.
    #[arg(long, value_name = "PATTERN")]
    skip: Vec<String>,

    /// List the scenarios and what each proves, and exit.
    #[arg(long)]
    list: bool,

    /// The longest one scenario may take, in seconds.
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = parse_seconds)]
    timeout: Duration,

    /// Print one JSON object per scenario and a summary object (see docs/check.md).
    #[arg(long)]
    json: bool,

    /// Also say what each scenario measured on the way.
    #[arg(short, long)]
    verbose: bool,

    #[command(flatten)]
    proxy: super::ProxyArgs,

    #[command(flatten)]
    io: super::IoArgs,
}

/// One scenario as a JSON line.
#[derive(Serialize)]
struct ScenarioLine<'a> {
    r#type: &'static str,
    name: &'a str,
    protocol: &'a str,
    result: &'a str,
    reason: Option<&'a str>,
    elapsed_ns: u64,
    detail: &'a str,
}

/// The summary as a JSON line.
#[derive(Serialize)]
struct SummaryLine {
    r#type: &'static str,
    schema: u32,
    tcp: Option<SocketAddr>,
    udp: Option<SocketAddr>,
    passed: usize,
    failed: usize,
    skipped: usize,
    elapsed_ns: u64,
}

/// A scenario in `--list --json`.
#[derive(Serialize)]
struct ListedLine<'a> {
    name: &'a str,
    protocol: &'a str,
    about: &'a str,
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The scenarios `--only` and `--skip` pick, in their own order; a
/// pattern of `--only` that matches none is a usage error.
fn selected(args: &CheckArgs) -> anyhow::Result<Vec<&'static Scenario>> {
    for pattern in &args.only {
        if !SCENARIOS.iter().any(|s| check::matches(pattern, s.name)) {
            return Err(usage_error(&format!(
                "--only {pattern} matches no scenario (see `echokit check --list`)"
            )));
        }
    }
    Ok(SCENARIOS
        .iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|p| check::matches(p, s.name)))
        .filter(|s| !args.skip.iter().any(|p| check::matches(p, s.name)))
        .collect())
}

/// Runs `echokit check`: one line per scenario, then the counts; fails
/// when a scenario failed.
pub(crate) fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let scenarios = selected(args)?;
    if args.list {
        let mut stdout = io::stdout().lock();
        for s in &scenarios {
            let protocol = s.protocol.name();
            match args.json {
                true => {
                    let line = ListedLine {
                        name: s.name,
                        protocol,
                        about: s.about,
                    };
                    writeln!(stdout, "{}", serde_json::to_string(&line)?)?;
                }
                false => writeln!(stdout, "{:<18} {protocol}  {}", s.name, s.about)?,
            }
        }
        return Ok(());
    }
    // 1,000 connections at once need as many descriptors.
    let _ = net::raise_open_files();
    let io = args.io.choice(super::log::Level::Errors);
    net::run_on(io, Check { args, scenarios }).context("cannot set up the network")?
}

/// `check` on the network a [`Job`] is given.
struct Check<'a> {
    args: &'a CheckArgs,
    scenarios: Vec<&'static Scenario>,
}

impl Job for Check<'_> {
    type Output = anyhow::Result<()>;

    fn run<N: Network + 'static>(self, open: fn() -> io::Result<N>) -> Self::Output {
        let net = open().context("cannot open the network")?;
        check_on(self.args, &self.scenarios, net)
    }
}

/// The endpoints to check, in order: the Nth `--connect` with the Nth
/// `--udp-connect`, names resolved to the address that answers.
fn endpoints<N: Network>(args: &CheckArgs, net: &mut N) -> anyhow::Result<Vec<Endpoint>> {
    let default_tcp = [HostPort::from(SocketAddr::from(([127, 0, 0, 1], 7878)))];
    let tcp = match (args.connect.is_empty(), args.udp_connect.is_empty()) {
        (true, true) => &default_tcp[..],
        _ => &args.connect[..],
    };
    let mut endpoints = Vec::new();
    for i in 0..tcp.len().max(args.udp_connect.len()) {
        let mut pick = |given: Option<&HostPort>, flag, protocol| {
            given
                .map(|given| super::client_addr(net, flag, given, protocol))
                .transpose()
        };
        endpoints.push(Endpoint {
            tcp: pick(tcp.get(i), "--connect", Protocol::Tcp)?,
            udp: pick(args.udp_connect.get(i), "--udp-connect", Protocol::Udp)?,
        });
    }
    Ok(endpoints)
}

/// The check itself, on `net`: every endpoint must answer before any
/// scenario runs; then the scenarios against each endpoint in turn.
fn check_on<N: Network>(
    args: &CheckArgs,
    scenarios: &[&'static Scenario],
    mut net: N,
) -> anyhow::Result<()> {
    let endpoints = endpoints(args, &mut net)?;
    let clock = MonotonicClock::new();
    for endpoint in &endpoints {
        check::reach(&mut net, &clock, endpoint, REACH_WITHIN)?;
    }
    let mut failed = 0;
    for endpoint in &endpoints {
        if endpoints.len() > 1 && !args.json {
            let mut stdout = io::stdout().lock();
            let named = |name: &str, addr: Option<SocketAddr>| {
                addr.map(|addr| format!(" {name} {addr}"))
                    .unwrap_or_default()
            };
            writeln!(
                stdout,
                "checking{}{}",
                named("tcp", endpoint.tcp),
                named("udp", endpoint.udp)
            )?;
        }
        failed += check_one(args, scenarios, &mut net, endpoint)?;
    }
    match failed {
        0 => Ok(()),
        failed => Err(CheckFailed(failed).into()),
    }
}

/// The scenarios against one endpoint, reported; how many failed.
fn check_one<N: Network>(
    args: &CheckArgs,
    scenarios: &[&'static Scenario],
    net: &mut N,
    endpoint: &Endpoint,
) -> anyhow::Result<usize> {
    let mut stdout = io::stdout().lock();
    let clock = MonotonicClock::new();
    let options = Options {
        timeout: args.timeout,
        proxy: args.proxy.header(),
    };
    let mut failure = None;
    let summary = check::run(net, &clock, endpoint, options, scenarios, |outcome| {
        if let Err(err) = report(&mut stdout, args, outcome) {
            failure.get_or_insert(err);
        }
    });
    if let Some(err) = failure {
        return Err(err).context("cannot write the report");
    }
    match args.json {
        true => {
            let line = SummaryLine {
                r#type: "summary",
                schema: SCHEMA,
                tcp: endpoint.tcp,
                udp: endpoint.udp,
                passed: summary.passed,
                failed: summary.failed,
                skipped: summary.skipped,
                elapsed_ns: nanos(clock.now()),
            };
            writeln!(stdout, "{}", serde_json::to_string(&line)?)?;
        }
        false => writeln!(stdout, "{summary}")?,
    }
    stdout.flush()?;
    Ok(summary.failed)
}

/// One outcome, as a line of text or JSON.
fn report(out: &mut impl Write, args: &CheckArgs, outcome: &Outcome) -> io::Result<()> {
    let name = outcome.scenario.name;
    if args.json {
        let line = ScenarioLine {
            r#type: "scenario",
            name,
            protocol: outcome.scenario.protocol.name(),
            result: match outcome.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail(_) => "fail",
                Verdict::Skip(_) => "skip",
            },
            reason: outcome.verdict.reason(),
            elapsed_ns: nanos(outcome.elapsed),
            detail: &outcome.detail,
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
        return out.flush();
    }
    let seconds = outcome.elapsed.as_secs_f64();
    let reason = outcome
        .verdict
        .reason()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    writeln!(
        out,
        "{} {name} ({seconds:.3}s){reason}",
        outcome.verdict.word()
    )?;
    if args.verbose && !outcome.detail.is_empty() {
        writeln!(out, "     {}", outcome.detail)?;
    }
    out.flush()
}

/// Some scenarios failed: the check's verdict, exit status 1.
#[derive(Debug)]
pub(crate) struct CheckFailed(usize);

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} scenario(s) failed", self.0)
    }
}

impl std::error::Error for CheckFailed {}
