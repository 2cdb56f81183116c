//! `echokit bench`: the load generator.

use super::{parse_seconds, usage_error, EXIT_CODES};
use anyhow::Context;
use clap::Args;
use echokit::bench::{self, Mode, Plan, Snapshot};
use echokit::clock::MonotonicClock;
use echokit::net::{self, Job, Network};
use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// Options of `echokit bench`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(super) struct BenchArgs {
    /// Echo server to load, IP:PORT.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    connect: SocketAddr,

    /// Connections kept open at once (in connect mode: concurrent connect loops).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,

    /// Message size in bytes; in stream mode, the write size (at most 64 KiB is used).
    #[arg(long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    size: u32,

    /// How long to run, in seconds (fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    duration: Duration,

    /// Traffic shape.
    #[arg(long, value_enum, default_value_t = Mode::Pingpong)]
    mode: Mode,

    /// Echo UDP datagrams of --size bytes (pingpong only); a datagram not
    /// back within 200 ms counts as lost.
    #[arg(long)]
    udp: bool,

    /// In connect mode, close each connection with a reset (SO_LINGER 0)
    /// instead of a FIN, so that this machine's ports do not pile up in
    /// TIME_WAIT and the kernel's search for a free one does not bound the
    /// rate. The wasm build cannot, and closes normally.
    #[arg(long)]
    reset: bool,

    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    io: super::IoArgs,
}

/// Runs `echokit bench`: prints the report, then fails if any connection
/// failed or any echoed byte was wrong.
pub(super) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.udp && args.mode != Mode::Pingpong {
        return Err(usage_error("--udp benchmarks support --mode pingpong only"));
    }
    if args.reset && args.mode != Mode::Connect {
        return Err(usage_error("--reset applies to --mode connect only"));
    }
    let plan = Plan {
        addr: args.connect,
        connections: args.connections as usize,
        size: args.size as usize,
        duration: args.duration,
        mode: args.mode,
        udp: args.udp,
        reset: args.reset,
    };
    let io = args.io.choice(super::log::Level::Errors);
    net::run_on(io, Bench { args, plan }).context("cannot set up the network")?
}

/// `bench` on the network a [`Job`] is given.
struct Bench<'a> {
    args: &'a BenchArgs,
    plan: Plan,
}

impl Job for Bench<'_> {
    type Output = anyhow::Result<()>;

    fn run<N: Network + 'static>(self, open: fn() -> std::io::Result<N>) -> Self::Output {
        let Bench { args, plan } = self;
        measure(args, &plan, open().context("cannot open the network")?)
    }
}

/// Runs `plan` on `net` and prints the report.
fn measure<N: Network>(args: &BenchArgs, plan: &Plan, mut net: N) -> anyhow::Result<()> {
    if args.reset && !net.capabilities().reset {
        eprintln!(
            "echokit: warning: this build cannot reset connections (WASI 0.2 has no \
             SO_LINGER); --reset closes them normally"
        );
    }
    let on_terminal = io::stderr().is_terminal();
    let total = plan.duration.as_secs_f64();
    let show = |s: &Snapshot| {
        if on_terminal {
            let secs = s.elapsed.as_secs_f64();
            eprint!(
                "\r{secs:.0}/{total:.0}s  {:.0} req/s  {:.1} MiB/s  {} errors ",
                s.requests as f64 / secs,
                s.bytes as f64 / secs / (1024.0 * 1024.0),
                s.errors
            );
        }
    };
    let report = bench::run(&mut net, &MonotonicClock::new(), plan, show)
        .with_context(|| format!("benchmark against {} failed", plan.addr))?;
    if on_terminal {
        eprintln!();
    }
    let mut stdout = io::stdout().lock();
    match args.json {
        true => writeln!(stdout, "{}", serde_json::to_string(&report)?)?,
        false => writeln!(stdout, "{report}")?,
    }
    stdout.flush()?;
    if report.errors > 0 {
        anyhow::bail!("{} connections failed during the benchmark", report.errors);
    }
    Ok(())
}
