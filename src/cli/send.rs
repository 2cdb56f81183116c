//! `echokit send`: one echo, checked byte for byte.

use super::files::{open_output, read_input};
use super::{parse_seconds, EXIT_CODES};
use anyhow::Context;
use clap::Args;
use echokit::client::datagram::{send_datagrams, DatagramOptions, MAX_DATAGRAM};
use echokit::client::{self, Error};
use echokit::clock::MonotonicClock;
use echokit::net::{self, HostPort, Job, Network, Protocol};
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `echokit send`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub(super) struct SendArgs {
    /// Echo server to connect to: IP:PORT (IPv6 as [::1]:PORT) or HOST:PORT. Of a name's
    /// several addresses, the first that answers is used, in the resolver's order.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    connect: HostPort,

    /// File to send; "-" reads standard input.
    #[arg(long, value_name = "FILE", default_value = "-")]
    input: PathBuf,

    /// File to write the echo to; "-" writes standard output.
    #[arg(long, value_name = "FILE", default_value = "-")]
    output: PathBuf,

    /// Send over UDP, one datagram at a time, each waiting for its echo.
    #[arg(long)]
    udp: bool,

    /// Bytes per datagram (with --udp; at most 65507).
    #[arg(long, value_name = "BYTES", default_value_t = 1024, requires = "udp",
          value_parser = clap::value_parser!(u32).range(1..=MAX_DATAGRAM as i64))]
    datagram_size: u32,

    /// Seconds to wait for each datagram's echo before sending it again (with --udp).
    #[arg(long, value_name = "SECS", default_value = "1", requires = "udp",
          value_parser = parse_seconds)]
    timeout: Duration,

    /// How many times a datagram is sent again before it counts as lost (with --udp).
    #[arg(long, value_name = "N", default_value_t = 3, requires = "udp")]
    retries: u32,

    #[command(flatten)]
    proxy: super::ProxyArgs,

    #[command(flatten)]
    io: super::IoArgs,
}

/// Runs `echokit send`; a wrong echo is a [`client::Error`] that says how.
pub(super) fn run(args: &SendArgs) -> anyhow::Result<()> {
    if args.udp && args.proxy.header().is_some() {
        return Err(super::usage_error(
            "--proxy-protocol heads TCP connections; it does not go with --udp",
        ));
    }
    let input = read_input(&args.input)?;
    let io = args.io.choice(super::log::Level::Errors);
    net::run_on(io, Send { args, input }).context("cannot set up the network")?
}

/// `send` on the network a [`Job`] is given.
struct Send<'a> {
    args: &'a SendArgs,
    input: Vec<u8>,
}

impl Job for Send<'_> {
    type Output = anyhow::Result<()>;

    fn run<N: Network + 'static>(self, open: fn() -> io::Result<N>) -> Self::Output {
        let Send { args, input } = self;
        let mut net = open().context("cannot open the network")?;
        let protocol = match args.udp {
            true => Protocol::Udp,
            false => Protocol::Tcp,
        };
        let addr = super::client_addr(&mut net, "--connect", &args.connect, protocol)?;
        let mut out = open_output(&args.output)?;
        let clock = MonotonicClock::new();
        let proxy_header = args.proxy.header();
        let result = if args.udp {
            let options = DatagramOptions {
                size: args.datagram_size as usize,
                timeout: args.timeout,
                retries: args.retries,
            };
            send_datagrams(&mut net, &clock, addr, &input, options, &mut out).map(|report| {
                if report.retransmits + report.late > 0 {
                    eprintln!(
                        "echokit: {} datagrams echoed; {} sent again after a timeout, {} late echoes (reordered or duplicated)",
                        report.datagrams, report.retransmits, report.late
                    );
                }
            })
        } else {
            client::send(&mut net, &clock, addr, &input, proxy_header, &mut out).map(drop)
        };
        out.flush()?;
        let err = match result {
            Ok(()) => return Ok(()),
            Err(err) if err.is_mismatch() => return Err(err.into()),
            Err(Error::Cut(cut)) if cut.closed_at_once() => {
                anyhow::anyhow!("{cut}; is it at its --max-connections?")
            }
            Err(err) => err.into(),
        };
        Err(err.context(format!("echo via {addr} failed")))
    }
}
