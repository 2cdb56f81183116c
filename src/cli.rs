//! Command-line interface, the same for the native and the WebAssembly build.

use crate::bench::{BenchMismatch, Mode};
use crate::client::datagram::{DatagramMismatch, MAX_DATAGRAM};
use crate::client::EchoMismatch;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Exit status when the echo differed from what was sent.
pub const EXIT_MISMATCH: u8 = 1;
/// Exit status for usage errors (bad arguments), as clap reports them.
pub const EXIT_USAGE: u8 = 2;
/// Exit status for network and I/O errors: address in use, permission
/// denied, connection refused or reset, unreadable input.
pub const EXIT_FAILURE: u8 = 3;

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  the echo differed from what was sent, or datagrams were lost
  2  usage error (bad arguments)
  3  network or I/O error (address in use, permission denied, connection refused, ...)
The WebAssembly build exits 1 for every failure: a WASI 0.2 exit carries only success or failure.";

/// RFC 862 echo server and client, one codebase for native and WebAssembly (WASI 0.2).
#[derive(Debug, Parser)]
#[command(name = "echokit", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve echo over TCP (default) and/or UDP: every byte received is sent back.
    Serve(ServeArgs),
    /// Send input to an echo server and check that it all comes back.
    Send(SendArgs),
    /// Load an echo server and check every echoed byte.
    Bench(BenchArgs),
}

/// Options of `echokit serve`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct ServeArgs {
    /// Address to listen on, IP:PORT (IPv6 as [::1]:PORT); port 0 picks a free port.
    /// Prints "listening on IP:PORT" once bound.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,

    /// Length of the queue of connections waiting to be accepted.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub backlog: u32,

    /// Connections served at once; further ones are closed as soon as accepted.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Close connections that move no byte for this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub idle_timeout: Option<Duration>,

    /// Serve TCP echo (the default when neither --tcp nor --udp is given).
    #[arg(long)]
    pub tcp: bool,

    /// Serve UDP echo; with --tcp too, both on the same address and port.
    #[arg(long)]
    pub udp: bool,

    /// Event loops (threads) sharing the listener; default: one per core.
    /// The WebAssembly build has no threads and always runs one.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: Option<u32>,

    /// On SIGINT or SIGTERM, stop accepting and give open connections this
    /// many seconds to finish their echo before closing them (native build;
    /// a second signal exits at once).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub shutdown_timeout: Duration,

    /// Log every connection's open and close (peer, bytes echoed, duration) to stderr.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Print nothing on stderr, not even errors (the "listening on" line stays).
    #[arg(short, long)]
    pub quiet: bool,
}

/// Options of `echokit send`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct SendArgs {
    /// Echo server to connect to, IP:PORT.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    pub connect: SocketAddr,

    /// File to send; "-" reads standard input.
    #[arg(long, value_name = "FILE", default_value = "-")]
    pub input: PathBuf,

    /// File to write the echo to; "-" writes standard output.
    #[arg(long, value_name = "FILE", default_value = "-")]
    pub output: PathBuf,

    /// Send over UDP, one datagram at a time, each waiting for its echo.
    #[arg(long)]
    pub udp: bool,

    /// Bytes per datagram (with --udp; at most 65507).
    #[arg(long, value_name = "BYTES", default_value_t = 1024, requires = "udp",
          value_parser = clap::value_parser!(u32).range(1..=MAX_DATAGRAM as i64))]
    pub datagram_size: u32,

    /// Seconds to wait for each datagram's echo before sending it again (with --udp).
    #[arg(long, value_name = "SECS", default_value = "1", requires = "udp",
          value_parser = parse_seconds)]
    pub timeout: Duration,

    /// How many times a datagram is sent again before it counts as lost (with --udp).
    #[arg(long, value_name = "N", default_value_t = 3, requires = "udp")]
    pub retries: u32,
}

/// Options of `echokit bench`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct BenchArgs {
    /// Echo server to load, IP:PORT.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    pub connect: SocketAddr,

    /// Connections kept open at once (in connect mode: concurrent connect loops).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,

    /// Message size in bytes; in stream mode, the write size (at most 64 KiB is used).
    #[arg(long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    pub size: u32,

    /// How long to run, in seconds (fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub duration: Duration,

    /// Traffic shape.
    #[arg(long, value_enum, default_value_t = Mode::Pingpong)]
    pub mode: Mode,

    /// Echo UDP datagrams of --size bytes (pingpong only); a datagram not
    /// back within 200 ms counts as lost.
    #[arg(long)]
    pub udp: bool,

    /// In connect mode, close each connection with a reset (SO_LINGER 0)
    /// instead of a FIN, so that this machine's ports do not pile up in
    /// TIME_WAIT and the kernel's search for a free one does not bound the
    /// rate. The wasm build cannot, and closes normally.
    #[arg(long)]
    pub reset: bool,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The exit status for an error returned by a subcommand.
pub fn exit_status(err: &anyhow::Error) -> u8 {
    if err.is::<EchoMismatch>() || err.is::<BenchMismatch>() || err.is::<DatagramMismatch>() {
        EXIT_MISMATCH
    } else {
        EXIT_FAILURE
    }
}

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
    use clap::CommandFactory;

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
    fn addresses_must_be_ip_and_port() {
        assert!(Cli::try_parse_from(["echokit", "serve", "--listen", "nonsense"]).is_err());
        assert!(Cli::try_parse_from(["echokit", "serve", "--listen", "[::1]:0"]).is_ok());
        assert!(Cli::try_parse_from(["echokit", "send", "--connect", "localhost"]).is_err());
    }
}
