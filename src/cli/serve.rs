//! `echokit serve`: the echo server, on one event loop per worker.

use super::log::{Level, Log};
use super::{parse_seconds, EXIT_CODES};
use anyhow::Context;
use clap::Args;
use echokit::clock::MonotonicClock;
use echokit::engine::guard::GuardConfig;
use echokit::engine::{Config, ConnectionCount, ProxyCounts, Server, Stats};
use echokit::net::{self, Bind, HostPort, Job, Network, PortSharing, Protocol};
use echokit::proxy::Accept;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Options of `echokit serve`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(super) struct ServeArgs {
    /// Address to listen on: IP:PORT (IPv6 as [::1]:PORT) or HOST:PORT, a name listened on at
    /// every address it resolves to. Repeatable: every address is served by the same event
    /// loop(s). An IPv6 address, [::] included, is IPv6 only: add 0.0.0.0:PORT for IPv4.
    /// Port 0 picks a free port; later port-0 addresses take the port the first one got when
    /// it is free there. Prints "listening on IP:PORT" once per address, in order, once all
    /// are bound.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    listen: Vec<HostPort>,

    /// Length of the queue of connections waiting to be accepted.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    backlog: u32,

    /// Connections served at once; further ones are closed as soon as accepted.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// Close connections that move no byte for this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    idle_timeout: Option<Duration>,

    /// Serve TCP echo (the default when neither --tcp nor --udp is given).
    #[arg(long)]
    tcp: bool,

    /// Serve UDP echo; with --tcp too, both on the same address and port. Datagrams from
    /// source ports below 1024 and from peers in an echo loop are dropped (see
    /// docs/security.md).
    #[arg(long)]
    udp: bool,

    /// UDP datagrams per second echoed to one source IP address; the excess is dropped.
    /// `off` for no bound. The default is above what `echokit bench --udp` reaches.
    #[arg(long, value_name = "N|off", default_value = "1000000", value_parser = parse_rate)]
    udp_peer_rate: Rate,

    /// Event loops (threads), each serving every listener; default: one per core.
    /// The WebAssembly build has no threads and always runs one.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    workers: Option<u32>,

    /// On SIGINT or SIGTERM, stop accepting and give open connections this
    /// many seconds to finish their echo before closing them (native build;
    /// a second signal exits at once).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    shutdown_timeout: Duration,

    /// Every TCP connection must start with a PROXY protocol header (HAProxy's, as load
    /// balancers send it with the real client's address) of this version: v1 (text), v2
    /// (binary) or any. The header is consumed, never echoed; a connection whose header is
    /// missing, invalid or late is closed unechoed, its reason counted. -v logs each header.
    /// With --udp, every datagram must start with a v2 DGRAM (or LOCAL) header, stripped
    /// before the echo; datagrams without one are dropped and counted.
    #[arg(long, value_name = "VERSION", value_parser = parse_accept)]
    proxy_protocol: Option<Accept>,

    /// Seconds a connection may take to send its whole PROXY header (with --proxy-protocol).
    #[arg(long, value_name = "SECS", default_value = "3", value_parser = parse_seconds,
          requires = "proxy_protocol")]
    proxy_header_timeout: Duration,

    /// Log every connection's open and close (peer, bytes echoed, duration) to stderr.
    #[arg(short, long, conflicts_with = "quiet")]
    verbose: bool,

    /// Print nothing on stderr, not even errors (the "listening on" line stays).
    #[arg(short, long)]
    quiet: bool,

    #[command(flatten)]
    io: super::IoArgs,
}

/// What every event loop of one server shares.
#[derive(Clone)]
struct Plan {
    config: Config,
    count: ConnectionCount,
    backlog: u32,
    tcp: bool,
    udp: bool,
    log: Log,
    /// Set on SIGINT or SIGTERM, or when an event loop fails.
    stop: Arc<AtomicBool>,
    grace: Duration,
}

/// One address to listen on, and how the user wrote it.
#[derive(Clone, Debug)]
struct Listen {
    addr: SocketAddr,
    /// The `--listen` value, when it was a name.
    name: Option<HostPort>,
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{} ({name})", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// Every address of `--listen`, names resolved, in order.
fn addresses(given: &[HostPort]) -> anyhow::Result<Vec<Listen>> {
    let mut all = Vec::new();
    for hostport in given {
        let name = hostport.ip().is_none().then(|| hostport.clone());
        let addrs = hostport.resolve().context("--listen")?;
        all.extend(addrs.into_iter().map(|addr| Listen {
            addr,
            name: name.clone(),
        }));
    }
    Ok(all)
}

impl Plan {
    /// A server on `net` listening on every address of `addrs` (TCP, then
    /// UDP on the port TCP got); returns it and the addresses bound, in
    /// order. A port-0 address after the first takes the port the first
    /// port-0 one got, when it is free there.
    fn server<N: Network>(
        &self,
        net: N,
        addrs: &[Listen],
        sharing: PortSharing,
    ) -> anyhow::Result<(Server<N, Log>, Vec<SocketAddr>)> {
        let mut server = Server::new(net, self.config.clone(), self.count.clone(), self.log);
        let bind = Bind {
            backlog: self.backlog,
            sharing,
        };
        let mut bound = Vec::with_capacity(addrs.len());
        let mut chosen = None;
        for listen in addrs {
            let port = match listen.addr.port() {
                0 => chosen,
                _ => None,
            };
            let got = self.bind(&mut server, listen, port, bind)?;
            if listen.addr.port() == 0 {
                chosen.get_or_insert(got.port());
            }
            bound.push(got);
        }
        Ok((server, bound))
    }

    /// Binds `listen` on `server` for each protocol served, at `port` when
    /// given and free, else at its own port.
    fn bind<N: Network>(
        &self,
        server: &mut Server<N, Log>,
        listen: &Listen,
        port: Option<u16>,
        bind: Bind,
    ) -> anyhow::Result<SocketAddr> {
        let listen_error = || format!("cannot listen on {listen}");
        let first = match self.tcp {
            true => Protocol::Tcp,
            false => Protocol::Udp,
        };
        let addr = listen.addr;
        let at = port.map_or(addr, |port| SocketAddr::new(addr.ip(), port));
        let mut bound = match at == addr {
            true => listen_patiently(server, first, addr, bind),
            false => match server.listen(first, at, bind) {
                Err(err) if err.kind() == io::ErrorKind::AddrInUse => {
                    listen_patiently(server, first, addr, bind)
                }
                result => result,
            },
        }
        .with_context(|| match first {
            Protocol::Tcp => listen_error(),
            Protocol::Udp => format!("{} (udp)", listen_error()),
        })?;
        if self.tcp && self.udp {
            bound = listen_patiently(server, Protocol::Udp, bound, bind)
                .with_context(|| format!("{} (udp)", listen_error()))?;
        }
        Ok(bound)
    }

    /// Runs `server` until the plan's stop; a failure stops the others.
    fn serve<N: Network>(&self, server: &mut Server<N, Log>, watched: bool) -> io::Result<Stats> {
        let clock = MonotonicClock::new();
        let stop = watched.then_some(&*self.stop);
        let result = server.serve_until(&clock, stop, self.grace);
        if result.is_err() {
            self.stop.store(true, Ordering::Relaxed);
        }
        result
    }
}

/// Runs `echokit serve`: natively until SIGINT or SIGTERM, then shuts down
/// gracefully and prints a summary; in wasm until the process is killed.
pub(super) fn run(args: &ServeArgs) -> anyhow::Result<()> {
    if args.udp && args.proxy_protocol == Some(Accept::V1) {
        return Err(super::usage_error(
            "--proxy-protocol v1 has no UDP form: with --udp, use v2 or any (a v2 DGRAM header per datagram)",
        ));
    }
    let io = args.io.choice(Level::from_flags(args.quiet, args.verbose));
    net::run_on(io, Serve(args)).context("cannot set up the network")?
}

/// `serve` on the network a [`Job`] is given.
struct Serve<'a>(&'a ServeArgs);

impl Job for Serve<'_> {
    type Output = anyhow::Result<()>;

    fn run<N: Network + 'static>(self, open: fn() -> io::Result<N>) -> Self::Output {
        let args = self.0;
        let level = Level::from_flags(args.quiet, args.verbose);
        let plan = Plan {
            config: Config {
                max_connections: args.max_connections as usize,
                idle_timeout: args.idle_timeout,
                udp_guard: GuardConfig {
                    peer_rate: args.udp_peer_rate.0,
                },
                proxy: args.proxy_protocol,
                proxy_timeout: args.proxy_header_timeout,
                ..Config::default()
            },
            count: ConnectionCount::default(),
            backlog: args.backlog,
            tcp: args.tcp || !args.udp,
            udp: args.udp,
            log: Log(level),
            stop: Arc::new(AtomicBool::new(false)),
            grace: args.shutdown_timeout,
        };
        let listen = addresses(&args.listen)?;
        let signals =
            net::watch_termination(&plan.stop).context("cannot watch for termination signals")?;
        let net = open().context("cannot open the network")?;
        let capabilities = net.capabilities();
        level.say(
            Level::Connections,
            format_args!("I/O backend: {}", capabilities.name),
        );
        let loops = event_loops(args.workers, capabilities.threads, level);
        open_files(args.max_connections, loops, level);
        let sharing = match loops {
            1 => PortSharing::Alone,
            _ => PortSharing::First,
        };
        let (mut server, bound) = plan.server(net, &listen, sharing)?;
        let joined: Vec<Listen> = (listen.iter().zip(&bound))
            .map(|(given, &addr)| Listen {
                addr,
                name: given.name.clone(),
            })
            .collect();
        let workers = (1..loops)
            .map(|number| start_worker(&plan, open, joined.clone(), number))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut stdout = io::stdout().lock();
        for addr in &bound {
            writeln!(stdout, "listening on {addr}")?;
        }
        stdout.flush()?;
        for addr in bound.iter().filter(|addr| !addr.ip().is_loopback()) {
            level.say(
                Level::Errors,
                format_args!(
                    "warning: {addr} is not a loopback address; the echo service is reachable from the network"
                ),
            );
        }
        // With workers, a failing loop stops the others through the flag.
        let watched = signals || loops > 1;
        let mut stats = plan
            .serve(&mut server, watched)
            .context("event loop failed")?;
        let mut per_loop = vec![stats.connections];
        for worker in workers {
            match worker.join() {
                Ok(worker_stats) => {
                    let worker_stats = worker_stats.context("a worker's event loop failed")?;
                    per_loop.push(worker_stats.connections);
                    stats += worker_stats;
                }
                Err(_) => anyhow::bail!("a worker thread panicked"),
            }
        }
        if per_loop.len() > 1 {
            let counts: Vec<String> = per_loop.iter().map(u64::to_string).collect();
            level.say(
                Level::Connections,
                format_args!("connections per event loop: {}", counts.join(", ")),
            );
        }
        let dropped = stats.dropped;
        let dropped = match plan.udp {
            true => format!(
                "; dropped {} datagrams ({} from service ports, {} in echo loops, {} over --udp-peer-rate)",
                dropped.total(), dropped.service_port, dropped.looping, dropped.rate
            ),
            false => String::new(),
        };
        let proxied = match plan.config.proxy {
            Some(_) => proxy_summary(&stats.proxy),
            None => String::new(),
        };
        level.say(
            Level::Errors,
            format_args!(
                "stopped: served {} connections, echoed {} bytes and {} datagrams; {} connections cut off by --shutdown-timeout{dropped}{proxied}",
                stats.connections, stats.bytes, stats.datagrams, stats.cut_off
            ),
        );
        Ok(())
    }
}

/// How many event loops to run: `--workers`, else one per core where the
/// build has `threads`; asked for more than it can run, the build says so.
fn event_loops(requested: Option<u32>, threads: bool, level: Level) -> usize {
    let wanted = match requested {
        Some(workers) => workers as usize,
        None => thread::available_parallelism().map_or(1, usize::from),
    };
    if threads || wanted == 1 {
        return wanted;
    }
    if requested.is_some() {
        level.say(
            Level::Errors,
            format_args!(
                "warning: --workers {wanted} ignored: this build has no threads and runs one event loop"
            ),
        );
    }
    1
}

/// Starts event loop `number` on its own thread, on a network `open`
/// opens there, serving `bound` (the addresses the first loop bound);
/// returns once it listens, or with the reason it cannot.
fn start_worker<N: Network + 'static>(
    plan: &Plan,
    open: fn() -> io::Result<N>,
    bound: Vec<Listen>,
    number: usize,
) -> anyhow::Result<JoinHandle<io::Result<Stats>>> {
    let (listening, started) = mpsc::channel();
    let plan = plan.clone();
    let worker = thread::Builder::new()
        .name(format!("echokit-worker-{number}"))
        .spawn(move || {
            let server = (open().context("cannot open the network"))
                .and_then(|net| plan.server(net, &bound, PortSharing::Join));
            match server {
                Ok((mut server, _)) => {
                    let _ = listening.send(Ok(()));
                    plan.serve(&mut server, true)
                }
                Err(err) => {
                    let _ = listening.send(Err(err));
                    Ok(Stats::default())
                }
            }
        })
        .context("cannot start a worker thread")?;
    match started.recv() {
        Ok(Ok(())) => Ok(worker),
        Ok(Err(err)) => Err(err.context(format!("worker {number} cannot serve"))),
        Err(_) => anyhow::bail!("worker {number} ended before it could serve"),
    }
}

/// Descriptors a server needs besides its connections: stdin, stdout and
/// stderr, a few spares (the runtime's, a resolver's), and for each event
/// loop its listeners (TCP, UDP) and its own (epoll or io_uring, waker,
/// timer, an accept in progress).
fn descriptor_margin(loops: usize) -> u64 {
    3 + 8 + 6 * loops as u64
}

/// Raises the open-files limit to the hard limit, as nginx's
/// `worker_rlimit_nofile` does: one descriptor per connection. Says so
/// under `-v`; warns once when even the raised limit is below what
/// `--max-connections` needs.
fn open_files(max_connections: u32, loops: usize, level: Level) {
    let limit = match net::raise_open_files() {
        Ok(Some(limit)) => limit,
        Ok(None) => {
            level.say(
                Level::Connections,
                format_args!(
                    "open files limit: the WebAssembly runtime's, which this build cannot \
                     read or raise (wasmtime inherits the shell's `ulimit -n`)"
                ),
            );
            return;
        }
        Err(err) => {
            level.say(
                Level::Errors,
                format_args!("warning: cannot raise the open files limit: {err}"),
            );
            return;
        }
    };
    match limit.before < limit.now {
        true => level.say(
            Level::Connections,
            format_args!("open files limit: raised {} → {}", limit.before, limit.now),
        ),
        false => level.say(
            Level::Connections,
            format_args!("open files limit: {}", limit.now),
        ),
    }
    let needed = u64::from(max_connections) + descriptor_margin(loops);
    if limit.now < needed {
        level.say(
            Level::Errors,
            format_args!(
                "warning: the open files limit is {}, below the {needed} that \
                 --max-connections {max_connections} needs (one per connection, {} for \
                 listeners, stdio and {loops} event loops); connections past the limit \
                 fail to be accepted. Raise the hard limit: `ulimit -Hn {needed}` (as root) \
                 before starting, LimitNOFILE={needed} in a systemd unit, or --ulimit \
                 nofile={needed} for docker; or lower --max-connections",
                limit.now,
                descriptor_margin(loops)
            ),
        );
    }
}

/// The PROXY protocol part of the summary: headers accepted, without a
/// client address, refused by reason.
fn proxy_summary(counts: &ProxyCounts) -> String {
    let reasons: Vec<String> = (counts.refusals())
        .map(|(reason, count)| format!("{count} {}", reason.name()))
        .collect();
    let reasons = match reasons.is_empty() {
        true => String::new(),
        false => format!(" ({})", reasons.join(", ")),
    };
    format!(
        "; PROXY headers: {} accepted ({} LOCAL or without addresses), {} refused{reasons}",
        counts.accepted,
        counts.local,
        counts.refused_total()
    )
}

/// A `--proxy-protocol` version.
fn parse_accept(text: &str) -> Result<Accept, String> {
    match text {
        "v1" => Ok(Accept::V1),
        "v2" => Ok(Accept::V2),
        "any" => Ok(Accept::Any),
        _ => Err(format!(
            "{text:?} is not a PROXY protocol version: v1, v2 or any"
        )),
    }
}

/// A `--udp-peer-rate`: datagrams per second, or `None` for no bound.
#[derive(Clone, Copy, Debug)]
struct Rate(Option<u32>);

fn parse_rate(text: &str) -> Result<Rate, String> {
    match text {
        "off" => Ok(Rate(None)),
        _ => match text.parse::<u32>() {
            Ok(0) | Err(_) => Err(format!(
                "{text:?} is not a positive number of datagrams per second, nor `off`"
            )),
            Ok(rate) => Ok(Rate(Some(rate))),
        },
    }
}

/// How long `serve` waits for a port that is in use to be freed (nginx
/// retries likewise): a server killed a moment ago may hold its sockets a
/// few milliseconds longer, where the kernel tears its io_uring down after
/// the process is gone (5–10 ms measured, at once on epoll).
const IN_USE_PATIENCE: Duration = Duration::from_millis(500);
/// How often a port in use is tried again meanwhile.
const IN_USE_RETRY: Duration = Duration::from_millis(10);

/// Listens on `addr` as [`Server::listen`] does, trying a port in use
/// again for up to [`IN_USE_PATIENCE`] (port 0 is never in use).
fn listen_patiently<N: Network>(
    server: &mut Server<N, Log>,
    protocol: Protocol,
    addr: SocketAddr,
    bind: Bind,
) -> io::Result<SocketAddr> {
    let deadline = Instant::now() + IN_USE_PATIENCE;
    loop {
        match server.listen(protocol, addr, bind) {
            Err(err) if err.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                thread::sleep(IN_USE_RETRY);
            }
            result => return result,
        }
    }
}
