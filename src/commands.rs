//! The subcommands, glued from the engine, the client and the host network.

use crate::bench::{self, Mode, Plan, Snapshot};
use crate::cli::{exit_status, BenchArgs, Cli, SendArgs, ServeArgs, EXIT_FAILURE};
use crate::client;
use crate::client::datagram::{send_datagrams, DatagramOptions};
use crate::engine::{Config, LogLevel, Server, Stats};
use crate::net::{HostNetwork, Network};
use anyhow::Context;
use clap::CommandFactory;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::Path;
use std::process;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Runs `echokit serve`: natively until SIGINT or SIGTERM, then shuts down
/// gracefully and prints a summary; in wasm until the process is killed.
pub fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let log = match (args.quiet, args.verbose) {
        (true, _) => LogLevel::Silent,
        (false, true) => LogLevel::Connections,
        (false, false) => LogLevel::Errors,
    };
    let config = Config {
        max_connections: args.max_connections as usize,
        idle_timeout: args.idle_timeout,
        log,
        ..Config::default()
    };
    let net = HostNetwork::new().context("cannot open the network")?;
    let mut server = Server::new(net, config);
    let mut addr = args.listen;
    let listen_error = || format!("cannot listen on {}", args.listen);
    if args.tcp || !args.udp {
        addr = server
            .listen_tcp(addr, args.backlog)
            .with_context(listen_error)?;
    }
    if args.udp {
        // With TCP too, UDP takes the port TCP got.
        server
            .listen_udp(addr)
            .with_context(|| format!("{} (udp)", listen_error()))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop = HostNetwork::on_termination(&stop)
        .context("cannot watch for termination signals")?
        .then_some(stop);
    let grace = args.shutdown_timeout;
    let workers = start_workers(&server, args.workers, log, stop.clone(), grace)?;
    let bound = server.local_addr()?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {bound}")?;
    stdout.flush()?;
    if !bound.ip().is_loopback() && log > LogLevel::Silent {
        eprintln!("echokit: warning: {bound} is not a loopback address; the echo service is reachable from the network");
    }
    let mut stats = server
        .serve_until(stop.as_deref(), grace)
        .context("event loop failed")?;
    for worker in workers {
        match worker.join() {
            Ok(worker_stats) => stats += worker_stats?,
            Err(_) => anyhow::bail!("a worker thread panicked"),
        }
    }
    if log > LogLevel::Silent {
        eprintln!(
            "echokit: stopped: served {} connections, echoed {} bytes and {} datagrams; {} connections cut off by --shutdown-timeout",
            stats.connections, stats.bytes, stats.datagrams, stats.cut_off
        );
    }
    Ok(())
}

/// Starts the extra event loops of `serve`. Without `--workers`, runs one
/// loop per core where the build has threads; asked for more loops than it
/// can run, the build says so.
fn start_workers(
    server: &Server<HostNetwork>,
    requested: Option<u32>,
    log: LogLevel,
    stop: Option<Arc<AtomicBool>>,
    grace: Duration,
) -> anyhow::Result<Vec<JoinHandle<io::Result<Stats>>>> {
    let wanted = match requested {
        Some(workers) => workers as usize,
        None => thread::available_parallelism().map_or(1, usize::from),
    };
    let mut workers = Vec::new();
    for number in 1..wanted {
        let share = match server.share() {
            Ok(share) => share,
            // UDP only: one event loop serves the one socket.
            Err(err) if err.kind() == io::ErrorKind::NotFound => break,
            Err(err) if err.kind() == io::ErrorKind::Unsupported => {
                if requested.is_some() && log > LogLevel::Silent {
                    eprintln!("echokit: warning: --workers {wanted} ignored: {err}");
                }
                break;
            }
            Err(err) => return Err(err).context("cannot share the listener with workers"),
        };
        let stop = stop.clone();
        let worker = thread::Builder::new()
            .name(format!("echokit-worker-{number}"))
            .spawn(move || {
                let result = HostNetwork::new()
                    .and_then(|net| Server::adopt(net, share))
                    .and_then(|mut server| server.serve_until(stop.as_deref(), grace));
                if let Err(err) = &result {
                    // A server missing one of its loops is worse than none.
                    eprintln!("echokit: worker {number} failed: {err}");
                    process::exit(EXIT_FAILURE.into());
                }
                result
            })
            .context("cannot start a worker thread")?;
        workers.push(worker);
    }
    Ok(workers)
}

/// Runs `echokit send`: returns an error wrapping
/// [`client::EchoMismatch`] when the echo differs.
pub fn send(args: &SendArgs) -> anyhow::Result<()> {
    let input = read_input(&args.input)?;
    let mut net = HostNetwork::new().context("cannot open the network")?;
    let mut out = open_output(&args.output)?;
    let result = if args.udp {
        let options = DatagramOptions {
            size: args.datagram_size as usize,
            timeout: args.timeout,
            retries: args.retries,
        };
        send_datagrams(&mut net, args.connect, &input, options, &mut out).map(|report| {
            if report.retransmits + report.late > 0 {
                eprintln!(
                    "echokit: {} datagrams echoed; {} sent again after a timeout, {} late echoes (reordered or duplicated)",
                    report.datagrams, report.retransmits, report.late
                );
            }
        })
    } else {
        client::send(&mut net, args.connect, &input, &mut out).map(drop)
    };
    out.flush()?;
    result.map_err(|err| match exit_status(&err) {
        EXIT_FAILURE => err.context(format!("echo via {} failed", args.connect)),
        _ => err,
    })
}

/// Runs `echokit bench`: prints the report, then fails if any connection
/// failed or any echoed byte was wrong.
pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let conflict = if args.udp && args.mode != Mode::Pingpong {
        Some("--udp benchmarks support --mode pingpong only")
    } else if args.reset && args.mode != Mode::Connect {
        Some("--reset applies to --mode connect only")
    } else {
        None
    };
    if let Some(message) = conflict {
        Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit();
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
    if args.reset && !HostNetwork::ABORTS {
        eprintln!(
            "echokit: warning: this build cannot reset connections (WASI 0.2 has no \
             SO_LINGER); --reset closes them normally"
        );
    }
    let mut net = HostNetwork::new().context("cannot open the network")?;
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
    let report = bench::run(&mut net, &plan, show)
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

fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if is_stdio(path) {
        let mut input = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut input)
            .context("cannot read standard input")?;
        return Ok(input);
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn open_output(path: &Path) -> anyhow::Result<Box<dyn Write>> {
    if is_stdio(path) {
        return Ok(Box::new(BufWriter::new(io::stdout().lock())));
    }
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(Box::new(BufWriter::new(file)))
}
