//! The command line, the same for the native and the WebAssembly build:
//! the arguments (clap derive), one module per subcommand, and the words
//! and exit statuses users see.

mod bench;
mod check;
mod completions;
mod files;
mod log;
mod report;
mod send;
mod serve;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use echokit::bench::log::{Incompatible, LogError};
use echokit::check::{self as conformance, Endpoint};
use echokit::clock::MonotonicClock;
use echokit::net::{HostPort, Io, Network, Protocol};
use echokit::{bench as load, client, proxy};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Exit status when the echo differed from what was sent.
const EXIT_MISMATCH: u8 = 1;
/// Exit status for usage errors (bad arguments), as clap reports them.
const EXIT_USAGE: u8 = 2;
/// Exit status for network and I/O errors: address in use, permission
/// denied, connection refused or reset, unreadable input.
const EXIT_FAILURE: u8 = 3;

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  the echo differed from what was sent, or datagrams were lost
  2  usage error (bad arguments; report: a file that is not a histogram log, or logs that do not merge)
  3  network or I/O error (a name that does not resolve, address in use, permission denied,
     connection refused, ...)
Addresses are IP:PORT (IPv6 as [::1]:PORT, IPv6 only: [::] is no IPv4 address) or HOST:PORT.
The WebAssembly build exits 1 for every failure: a WASI 0.2 exit carries only success or failure.";

/// RFC 862 echo server and client, one codebase for native and WebAssembly (WASI 0.2).
#[derive(Debug, Parser)]
#[command(name = "echokit", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve echo over TCP (default) and/or UDP: every byte received is sent back.
    Serve(serve::ServeArgs),
    /// Send input to an echo server and check that it all comes back.
    Send(send::SendArgs),
    /// Load an echo server and check every echoed byte.
    Bench(bench::BenchArgs),
    /// Merge the histogram logs of bench runs (one machine or several) into one report.
    Report(report::ReportArgs),
    /// Check that an echo endpoint (a server, or a proxy in front of one) keeps TCP and UDP echo intact.
    Check(check::CheckArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish) on stdout.
    Completions(completions::CompletionsArgs),
}

/// The whole command line's definition: for completion scripts, and for
/// the docs test (`tests/docs.rs`), which checks the docs against it.
pub(crate) fn command() -> clap::Command {
    Cli::command()
}

/// Parses the command line, runs the subcommand, and reports how it went.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Send(args) => send::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Check(args) => check::run(args),
        Command::Report(args) => report::run(args),
        Command::Completions(args) => completions::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(usage) = err.downcast_ref::<clap::Error>() {
                let _ = usage.print();
                return ExitCode::from(EXIT_USAGE);
            }
            eprintln!("echokit: {err:#}");
            ExitCode::from(exit_status(&err))
        }
    }
}

/// The I/O backend option of the commands that open sockets.
#[derive(Debug, clap::Args)]
struct IoArgs {
    /// I/O backend: natively auto (io_uring where the kernel allows it, else epoll), uring or
    /// epoll; in the wasm build auto (read and write) or splice (faster on wasmtime, traps on jco)
    #[arg(long, value_enum, env = "ECHOKIT_IO", default_value_t = Io::Auto)]
    io: Io,
}

impl IoArgs {
    /// The backend asked for; on the WebAssembly build, a note at `level`
    /// when one was named.
    fn choice(&self, level: log::Level) -> Io {
        if cfg!(target_os = "wasi") && matches!(self.io, Io::Epoll | Io::Uring) {
            level.say(
                log::Level::Errors,
                format_args!(
                    "note: --io {} ignored: the WebAssembly build runs on wasi sockets",
                    self.io
                        .to_possible_value()
                        .map_or_else(String::new, |v| v.get_name().into())
                ),
            );
        }
        self.io
    }
}

/// The PROXY protocol options of the clients (`send`, `check`, `bench`).
#[derive(Debug, clap::Args)]
struct ProxyArgs {
    /// Start every TCP connection with a PROXY protocol header of this version (v1 or v2),
    /// as a load balancer does, to test a server or balancer that expects one. Its addresses
    /// are the connection's own unless --proxy-source or --proxy-destination say otherwise.
    #[arg(long, value_name = "VERSION", value_parser = parse_version)]
    proxy_protocol: Option<proxy::Version>,

    /// The client address the PROXY header claims (IP:PORT).
    #[arg(long, value_name = "ADDR", requires = "proxy_protocol")]
    proxy_source: Option<SocketAddr>,

    /// The destination address the PROXY header claims (IP:PORT).
    #[arg(long, value_name = "ADDR", requires = "proxy_protocol")]
    proxy_destination: Option<SocketAddr>,
}

impl ProxyArgs {
    /// The header to send first, if any.
    fn header(&self) -> Option<proxy::ClientHeader> {
        self.proxy_protocol.map(|version| proxy::ClientHeader {
            version,
            source: self.proxy_source,
            destination: self.proxy_destination,
        })
    }
}

/// A client's `--proxy-protocol` version.
fn parse_version(text: &str) -> Result<proxy::Version, String> {
    match text {
        "v1" => Ok(proxy::Version::V1),
        "v2" => Ok(proxy::Version::V2),
        _ => Err(format!(
            "{text:?} is not a PROXY protocol version: v1 or v2"
        )),
    }
}

/// A usage error in clap's words, for arguments that parse but do not go
/// together.
fn usage_error(message: &str) -> anyhow::Error {
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .into()
}

/// The exit status for an error returned by a subcommand.
fn exit_status(err: &anyhow::Error) -> u8 {
    if err.is::<Incompatible>() || matches!(err.downcast_ref(), Some(LogError::NotALog(_))) {
        return EXIT_USAGE;
    }
    let mismatch = match (
        err.downcast_ref::<client::Error>(),
        err.downcast_ref::<load::Error>(),
    ) {
        (Some(err), _) => err.is_mismatch(),
        (_, Some(err)) => matches!(err, load::Error::Mismatch(_)),
        _ => err.is::<check::CheckFailed>(),
    };
    match mismatch {
        true => EXIT_MISMATCH,
        false => EXIT_FAILURE,
    }
}

/// How long a client waits for each address of a name with several
/// (a connection to open, a datagram to come back) before it tries the next.
const PROBE_WITHIN: Duration = Duration::from_secs(1);

/// The address of `given` (the value of `flag`) a client talks to over
/// `protocol`: an IP address as given; a name's only address; of a name's
/// several, the first in the resolver's order that answers (a TCP
/// connection opens, a datagram comes back within [`PROBE_WITHIN`]).
fn client_addr<N: Network>(
    net: &mut N,
    flag: &str,
    given: &HostPort,
    protocol: Protocol,
) -> anyhow::Result<SocketAddr> {
    let addrs = given.resolve().with_context(|| flag.to_owned())?;
    let (first, rest) = addrs
        .split_first()
        .with_context(|| format!("{flag}: {given} has no address"))?;
    if rest.is_empty() {
        return Ok(*first);
    }
    let clock = MonotonicClock::new();
    let mut last = None;
    for &addr in &addrs {
        let endpoint = match protocol {
            Protocol::Tcp => Endpoint {
                tcp: Some(addr),
                udp: None,
            },
            Protocol::Udp => Endpoint {
                tcp: None,
                udp: Some(addr),
            },
        };
        match conformance::reach(net, &clock, &endpoint, PROBE_WITHIN) {
            Ok(()) => return Ok(addr),
            Err(unreachable) => last = Some(unreachable),
        }
    }
    let last = last.map(|err| err.to_string()).unwrap_or_default();
    anyhow::bail!("{flag}: no address of {given} answers; the last: {last}")
}

/// A number of seconds that may be zero, fractions allowed.
fn parse_seconds_or_zero(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(0.0) => Ok(Duration::ZERO),
        _ => parse_seconds(text),
    }
}

/// A positive, finite number of seconds, fractions allowed.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("expected a number of seconds, got {text:?}"))?;
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!(
            "expected a positive number of seconds, got {text:?}"
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seconds_accept_fractions_and_reject_nonsense() {
        assert_eq!(parse_seconds("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["0", "-1", "nan", "inf", "soon", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn addresses_are_ips_or_names_with_a_port() {
        assert!(Cli::try_parse_from(["echokit", "serve", "--listen", "nonsense"]).is_err());
        assert!(Cli::try_parse_from(["echokit", "serve", "--listen", "[::1]:0"]).is_ok());
        let both = [
            "echokit",
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--listen",
            "[::]:0",
        ];
        assert!(Cli::try_parse_from(both).is_ok());
        assert!(Cli::try_parse_from(["echokit", "send", "--connect", "localhost"]).is_err());
        assert!(Cli::try_parse_from(["echokit", "send", "--connect", "localhost:7"]).is_ok());
        let checks = [
            "echokit",
            "check",
            "--connect",
            "127.0.0.1:7",
            "--connect",
            "[::1]:7",
        ];
        assert!(Cli::try_parse_from(checks).is_ok());
    }

    #[test]
    fn mismatches_exit_1_and_failures_3() {
        let mismatch = client::Error::Mismatch(client::EchoMismatch {
            sent: 2,
            received: 1,
            first_difference: 1,
        });
        assert_eq!(exit_status(&mismatch.into()), EXIT_MISMATCH);
        let refused = client::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        let wrapped = anyhow::Error::from(refused).context("echo via 127.0.0.1:7 failed");
        assert_eq!(exit_status(&wrapped), EXIT_FAILURE);
    }
}
