//! `echokit bench`: the load generator.

use super::{parse_seconds, parse_seconds_or_zero, usage_error, EXIT_CODES};
use anyhow::Context;
use clap::Args;
use echokit::bench::log::LogWriter;
use echokit::bench::report::{Path, Took};
use echokit::bench::{self, Counts, Event, Interval, Latencies, Mode, Plan, Report};
use echokit::clock::MonotonicClock;
use echokit::net::{self, HostPort, Job, Network, Protocol};
use hdrhistogram::serialization::V2DeflateSerializer;
use std::fs::File;
use std::io::{self, IsTerminal, LineWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// The interval when `--interval` is not given: for the progress line and
/// the histogram log.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// The load generator's share of a core past which it warns that it may be
/// the bottleneck.
const BUSY: f64 = 0.9;

/// Options of `echokit bench`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(super) struct BenchArgs {
    /// Echo server to load: IP:PORT (IPv6 as [::1]:PORT) or HOST:PORT. Of a name's several
    /// addresses, the first that answers is loaded, in the resolver's order.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    connect: HostPort,

    /// Connections kept open at once (in connect mode: connections in flight at once, at most).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,

    /// Message size in bytes; in stream mode, the write size (at most 64 KiB is used).
    #[arg(long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    size: u32,

    /// How long to measure, in seconds (fractions allowed), after the warm-up.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    duration: Duration,

    /// Load for this long first, excluded from every figure.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_seconds_or_zero)]
    warmup: Duration,

    /// Traffic shape.
    #[arg(long, value_enum, default_value_t = Mode::Pingpong)]
    mode: Mode,

    /// Open loop: send N messages per second in all, spread evenly over the
    /// connections, whatever the echoes do (several in flight per
    /// connection); latency counts from each message's scheduled send. In
    /// connect mode: N new connections per second. Default: closed loop.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    rate: Option<u64>,

    /// Open loop: at most N messages in flight on one connection; the
    /// next ones wait in the load generator and are written late (counted
    /// as late; their corrected latency includes the wait).
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pipeline: u32,

    /// Open the connections at N per second instead of all at once (not in
    /// connect mode); the report says when the last was up.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    connect_rate: Option<u64>,

    /// Source addresses, connections spread evenly over them (each has its
    /// own ephemeral ports; loopback has all of 127.0.0.0/8). Each must be
    /// an address of this host.
    /// A host name stands for its addresses of the server's family.
    #[arg(long, value_name = "IP[,IP...]", value_delimiter = ',', value_parser = parse_source)]
    bind: Vec<HostPort>,

    /// Report each interval of this many seconds: a line on stderr, or with
    /// --json a JSON event on stdout.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    interval: Option<Duration>,

    /// Write the latency histograms of every interval (1 s without
    /// --interval) to FILE as an HdrHistogram interval log, for `echokit
    /// report` to merge. The wasm build needs the directory granted
    /// (`wasmtime run --dir`).
    #[arg(long, value_name = "FILE")]
    histogram_log: Option<PathBuf>,

    /// Echo UDP datagrams of --size bytes (at least 8: each begins with its
    /// sequence number; pingpong only), and count what the path did to
    /// them: lost, duplicated, reordered, corrupted, echoed late, and the
    /// round trips' jitter.
    #[arg(long)]
    udp: bool,

    /// With --udp: a datagram not echoed within SECS counts as lost.
    /// Default: twice the smoothed round trip plus four times its
    /// variation (as TCP's retransmission timeout), 0.2 s to 10 s, 1 s
    /// before the first echo.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, requires = "udp")]
    loss_timeout: Option<Duration>,

    /// In connect mode, close each connection with a reset (SO_LINGER 0)
    /// instead of a FIN, so that this machine's ports do not pile up in
    /// TIME_WAIT and the kernel's search for a free one does not bound the
    /// rate. The wasm build cannot, and closes normally.
    #[arg(long)]
    reset: bool,

    /// Print JSON: the end event alone (one object), or with --interval a
    /// stream of one event per line (start, interval..., end).
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    proxy: super::ProxyArgs,

    #[command(flatten)]
    io: super::IoArgs,
}

/// Runs `echokit bench`: prints the report, then fails if any connection
/// failed or any echoed byte was wrong.
pub(super) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let misuse = [
        (args.udp && args.mode != Mode::Pingpong, "--udp benchmarks support --mode pingpong only"),
        (args.udp && (args.size as usize) < bench::DATAGRAM_HEADER, "--udp needs --size 8 or more: each datagram begins with its 8-byte sequence number"),
        (args.reset && args.mode != Mode::Connect, "--reset applies to --mode connect only"),
        (args.rate.is_some() && args.mode == Mode::Stream, "--rate applies to --mode pingpong and connect, not stream"),
        (args.connect_rate.is_some() && args.mode == Mode::Connect, "--connect-rate does not apply to --mode connect: --rate sets its connections per second"),
    ];
    if let Some((_, message)) = misuse.iter().find(|(misused, _)| *misused) {
        return Err(usage_error(message));
    }
    // The load generator's `auto` is epoll: measured side by side (pingpong
    // 50 × 512 B, 5 rounds, 2026-12-02), io_uring cost it 10.7 µs of CPU
    // per request and epoll 7.1, so the generator, not the server, would
    // be the bottleneck sooner.
    let io = match args.io.choice(super::log::Level::Errors) {
        net::Io::Auto => net::Io::Epoll,
        chosen => chosen,
    };
    net::run_on(io, Bench { args }).context("cannot set up the network")?
}

/// A `--bind` value: an IP address or a host name (held with port 0).
fn parse_source(text: &str) -> Result<HostPort, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 0).into());
    }
    match format!("{text}:0").parse::<HostPort>() {
        Ok(name) if name.ip().is_none() => Ok(name),
        _ => Err(format!("{text:?} is neither an IP address nor a host name")),
    }
}

/// The source addresses of `--bind` for connections to `server`: IP
/// addresses as given, a name's addresses of `server`'s family.
fn sources(args: &BenchArgs, server: SocketAddr) -> anyhow::Result<Vec<IpAddr>> {
    let mut all = Vec::new();
    for given in &args.bind {
        if let Some(addr) = given.ip() {
            all.push(addr.ip());
            continue;
        }
        let before = all.len();
        let ips = given
            .resolve()
            .context("--bind")?
            .into_iter()
            .map(|a| a.ip());
        all.extend(ips.filter(|ip| ip.is_ipv4() == server.is_ipv4()));
        if all.len() == before {
            let family = if server.is_ipv4() { "IPv4" } else { "IPv6" };
            let name = given.to_string();
            let name = name.strip_suffix(":0").unwrap_or(&name);
            anyhow::bail!("--bind: {name} has no {family} address, as the server {server} needs");
        }
    }
    Ok(all)
}

/// The load `args` ask for, on the server at `addr`, from `bind`.
fn plan(args: &BenchArgs, addr: SocketAddr, bind: Vec<IpAddr>) -> Plan {
    Plan {
        addr,
        connections: args.connections as usize,
        size: args.size as usize,
        warmup: args.warmup,
        duration: args.duration,
        interval: args.interval.unwrap_or(DEFAULT_INTERVAL),
        mode: args.mode,
        udp: args.udp,
        reset: args.reset,
        rate: args.rate,
        pipeline: args.pipeline as usize,
        connect_rate: args.connect_rate,
        bind,
        proxy: args.proxy.header(),
        loss_timeout: args.loss_timeout,
    }
}

/// `bench` on the network a [`Job`] is given.
struct Bench<'a> {
    args: &'a BenchArgs,
}

impl Job for Bench<'_> {
    type Output = anyhow::Result<()>;

    fn run<N: Network + 'static>(self, open: fn() -> std::io::Result<N>) -> Self::Output {
        let args = self.args;
        let mut net = open().context("cannot open the network")?;
        let protocol = match args.udp {
            true => Protocol::Udp,
            false => Protocol::Tcp,
        };
        let addr = super::client_addr(&mut net, "--connect", &args.connect, protocol)?;
        let bind = sources(args, addr)?;
        measure(args, &plan(args, addr, bind), net)
    }
}

/// Runs `plan` on `net`, printing its events and writing its log.
fn measure<N: Network>(args: &BenchArgs, plan: &Plan, mut net: N) -> anyhow::Result<()> {
    if args.reset && !net.capabilities().reset {
        eprintln!(
            "echokit: warning: this build cannot reset connections (WASI 0.2 has no \
             SO_LINGER); --reset closes them normally"
        );
    }
    for &ip in &plan.bind {
        net::check_local(&mut net, ip).context("--bind")?;
    }
    let start = plan.start(net.capabilities().name);
    let streaming = args.json && args.interval.is_some();
    if streaming {
        print_event(&Event::Start(start.clone()))?;
    }
    let mut file = match &args.histogram_log {
        Some(path) => Some(LineWriter::new(File::create(path).with_context(|| {
            let hint = match net::BUILD {
                "wasm" => {
                    " (the wasm build writes only in directories granted with `wasmtime run --dir`)"
                }
                _ => "",
            };
            format!("cannot create {}{hint}", path.display())
        })?)),
        None => None,
    };
    let mut serializer = V2DeflateSerializer::new();
    let began = SystemTime::now() + plan.warmup;
    let mut log = match &mut file {
        Some(file) => Some(LogWriter::begin(file, &mut serializer, &start, began)?),
        None => None,
    };
    let mut progress = Progress::new(args, plan.duration);
    let mut observe = |interval: &Interval, latencies: &Latencies| -> io::Result<()> {
        if let Some(log) = &mut log {
            log.interval(interval, latencies)?;
        }
        match (args.interval.is_some(), args.json) {
            (true, true) => print_event(&Event::Interval(interval.clone())),
            (true, false) => {
                eprintln!("{interval}");
                Ok(())
            }
            (false, _) => {
                progress.show(interval);
                Ok(())
            }
        }
    };
    let report = bench::run(&mut net, &MonotonicClock::new(), plan, &mut observe)
        .with_context(|| format!("benchmark against {} failed", plan.addr))?;
    progress.done();
    match args.json {
        true => print_event(&Event::End(Box::new(report.clone())))?,
        false => println!("{report}"),
    }
    if let Some(log) = &mut log {
        log.end(&report).context("cannot write the histogram log")?;
    }
    warn(&report, args.json);
    if report.counts.errors > 0 {
        anyhow::bail!(
            "{} connections failed during the benchmark",
            report.counts.errors
        );
    }
    Ok(())
}

/// One JSON event on its own line of stdout, flushed.
fn print_event(event: &Event) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    serde_json::to_writer(&mut stdout, event)?;
    writeln!(stdout)?;
    stdout.flush()
}

/// Warnings on stderr: a generator that may be the bottleneck, and (with
/// JSON, which has no text to say it) corrupted echoes and writes behind
/// the schedule.
fn warn(report: &Report, json: bool) {
    if let Some(cores) = report.cpu_cores.filter(|&cores| cores > BUSY) {
        eprintln!(
            "echokit: warning: the load generator used {:.0}% of a core on its one event loop: \
             it, not the server, may be the bottleneck",
            cores * 100.0
        );
    }
    if let (Some(first), true) = (report.first_corruption, json) {
        let message = first
            .message
            .map_or("unknown".to_owned(), |m| m.to_string());
        eprintln!(
            "echokit: warning: {} echoes differed from the datagram sent; the first: connection {}, message {message}, from offset {}",
            report.counts.corrupted, first.connection, first.offset
        );
    }
    if let (Some(short), true) = (report.shortfall(), json) {
        eprintln!(
            "echokit: warning: the writes fell behind the schedule: offered {:.0} req/s, {:.1}% short",
            report.offered_per_sec,
            short * 100.0
        );
    }
}

/// The progress line on a terminal: the run so far.
struct Progress {
    on: bool,
    total: f64,
    counts: Counts,
    seconds: f64,
    udp: bool,
}

impl Progress {
    fn new(args: &BenchArgs, duration: Duration) -> Self {
        Progress {
            on: io::stderr().is_terminal() && args.interval.is_none(),
            total: duration.as_secs_f64(),
            counts: Counts::default(),
            seconds: 0.0,
            udp: args.udp,
        }
    }

    fn show(&mut self, interval: &Interval) {
        if !self.on {
            return;
        }
        self.counts += &interval.counts;
        self.seconds += interval.duration_ns as f64 / 1e9;
        let secs = self.seconds.max(f64::MIN_POSITIVE);
        eprint!(
            "\r{:.0}/{:.0}s  {:.0} req/s  {:.1} MiB/s  {} errors ",
            self.seconds,
            self.total,
            self.counts.requests as f64 / secs,
            self.counts.bytes as f64 / secs / (1024.0 * 1024.0),
            self.counts.errors
        );
        if self.udp {
            eprint!(" {} ", Path(&self.counts));
            if let Some(jitter) = interval.jitter_ns {
                eprint!(" jitter {} ", Took(jitter));
            }
        }
    }

    fn done(&self) {
        if self.on && self.seconds > 0.0 {
            eprintln!();
        }
    }
}
