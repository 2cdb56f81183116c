//! Sockets as the engine sees them, and the backends that provide them.
//!
//! [`Network`] is small and readiness-based: every operation on a
//! connection or datagram socket is non-blocking and reports
//! [`io::ErrorKind::WouldBlock`] when it cannot make progress, and
//! [`Network::wait`] sleeps until some socket may be ready. Readiness is
//! only a hint: callers retry after any wake-up and tolerate spurious ones.
//! That contract fits edge-triggered epoll (through `mio`) and
//! level-triggered `wasi:io/poll` alike. What a backend can do beyond the
//! contract is data, [`Capabilities`], asked the same way of every backend.
//!
//! `Network` has no provided methods: a backend or a middleware that leaves
//! one out does not compile, so a wrapper cannot silently drop a call.
//!
//! Backends, one file each; this module is the only place that chooses
//! one by the target it is built for:
//! - `native`: the operating system's sockets (`socket2`), readiness from
//!   `mio` (epoll on Linux);
//! - `uring` (Linux): the same sockets, readiness emulated over io_uring
//!   completions, one system call per loop turn;
//! - `wasi`: WASI 0.2 sockets and pollables through the `wasi` crate;
//! - `loopback` (feature `simulation`): in-memory and deterministic, for
//!   tests.
//!
//! Middleware: `faults` (feature `simulation`) wraps any network and
//! injects the faults real networks have.

#[cfg(any(test, feature = "simulation"))]
pub mod faults;
#[cfg(any(test, feature = "simulation"))]
pub mod loopback;

mod name;
#[cfg(not(target_os = "wasi"))]
mod native;
#[cfg(not(target_os = "wasi"))]
mod sockets;
#[cfg(target_os = "linux")]
mod uring;
#[cfg(target_os = "wasi")]
mod wasi;

pub use name::{BadAddress, HostPort};
#[cfg(not(target_os = "wasi"))]
pub use native::{cpu_time, raise_open_files, watch_termination, NativeNetwork};
#[cfg(target_os = "linux")]
pub use uring::{Setup, UringNetwork};
// The resolver for host names: the system's natively, wasi:sockets'
// ip-name-lookup in the WebAssembly build.
#[cfg(not(target_os = "wasi"))]
use sockets::resolve;
#[cfg(target_os = "wasi")]
use wasi::resolve;
#[cfg(target_os = "wasi")]
pub use wasi::{cpu_time, raise_open_files, watch_termination, WasiNetwork};

/// Which build this is, as reports name it: `native` or `wasm`.
#[cfg(not(target_os = "wasi"))]
pub const BUILD: &str = "native";
/// Which build this is, as reports name it: `native` or `wasm`.
#[cfg(target_os = "wasi")]
pub const BUILD: &str = "wasm";

/// Which I/O backend to run on (`--io`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Io {
    /// The fastest the host lets this process set up.
    #[default]
    Auto,
    /// Readiness from epoll (native).
    Epoll,
    /// Completions from io_uring (Linux).
    Uring,
    /// The WebAssembly build, echoing with `output-stream.splice`: the
    /// bytes stay in the runtime (faster on wasmtime; jco 1.35 traps).
    Splice,
}

/// Work generic over the network it runs on: see [`run_on`].
pub trait Job {
    /// What the work returns.
    type Output;

    /// Does the work; `open` opens a network of the chosen backend, one
    /// per event loop (a function, so that other threads can call it).
    fn run<N: Network + 'static>(self, open: fn() -> io::Result<N>) -> Self::Output;
}

/// Runs `job` on the backend `io` names, or the host's best for
/// [`Io::Auto`]; fails when the named backend cannot be set up here.
/// The WebAssembly build has one backend and runs every job on it.
pub fn run_on<J: Job>(io: Io, job: J) -> io::Result<J::Output> {
    #[cfg(target_os = "wasi")]
    let ran = match io {
        Io::Splice => job.run(WasiNetwork::splicing),
        _ => job.run(WasiNetwork::new),
    };
    #[cfg(target_os = "linux")]
    let ran = match io {
        Io::Epoll => job.run(NativeNetwork::new),
        // A ring set up here says whether the event loops' rings can be.
        Io::Uring => {
            UringNetwork::new()?;
            job.run(UringNetwork::new)
        }
        Io::Auto => match UringNetwork::new() {
            Ok(_) => job.run(UringNetwork::new),
            Err(_) => job.run(NativeNetwork::new),
        },
        Io::Splice => return Err(splice_is_wasi()),
    };
    #[cfg(not(any(target_os = "linux", target_os = "wasi")))]
    let ran = match io {
        Io::Auto | Io::Epoll => job.run(NativeNetwork::new),
        Io::Uring => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring is not available in this build",
            ))
        }
        Io::Splice => return Err(splice_is_wasi()),
    };
    Ok(ran)
}

/// The error for `--io splice` in a native build.
#[cfg(not(target_os = "wasi"))]
fn splice_is_wasi() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "--io splice is for the WebAssembly build (wasi's output-stream.splice); \
         natively, use --io auto, uring or epoll",
    )
}

#[cfg(test)]
mod contract;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Names one socket owned by a [`Network`].
///
/// Ids are small integers that a backend reuses after [`Network::close`], so
/// callers can index tables with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub usize);

/// What a caller wants to be woken for on one socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    /// Wake when the socket may be readable (or, for a listener, acceptable).
    pub read: bool,
    /// Wake when the socket may accept more output.
    pub write: bool,
}

impl Interest {
    /// No wake-ups at all.
    pub const NONE: Interest = Interest {
        read: false,
        write: false,
    };
    /// Wake-ups for reading or accepting only.
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    /// Wake-ups for reading and for room to write.
    pub const BOTH: Interest = Interest {
        read: true,
        write: true,
    };
}

/// TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Byte streams over TCP.
    Tcp,
    /// Datagrams over UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// What a backend can do beyond the [`Network`] contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The backend's name for messages: `epoll`, `wasi`, `loopback`...
    pub name: &'static str,
    /// [`Network::splice`] moves bytes from a socket's input to its output
    /// without the caller copying them; without it, callers read and write.
    pub splice: bool,
    /// [`Close::Reset`] really resets the connection; without it the
    /// connection closes in order.
    pub reset: bool,
    /// Several event loops may run at once, one per thread, each with a
    /// network of its own, listening on the same ports
    /// ([`PortSharing`]).
    pub threads: bool,
    /// The host may hold connections open after [`Network::close`]; they
    /// are counted by [`Network::lingering`].
    pub lingering: bool,
}

/// What one [`Network::splice`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spliced {
    /// Moved this many bytes, at least one.
    Bytes(usize),
    /// The input has nothing to read now.
    InputEmpty,
    /// The input has ended: the peer closed its side.
    InputEnded,
    /// The output cannot take a byte now.
    OutputFull,
}

/// How [`Network::close`] ends a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Sends what is left, then a FIN.
    Orderly,
    /// Drops anything unsent and resets the connection, so that neither
    /// side keeps its address in TIME_WAIT; an orderly close on backends
    /// without [`Capabilities::reset`].
    Reset,
}

/// How a listening socket shares its port with the other event loops of
/// the same server (on backends with [`Capabilities::threads`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortSharing {
    /// The only socket on this port: anything else bound there is an
    /// error.
    Alone,
    /// The first of a group: fails as [`PortSharing::Alone`] would if
    /// anything already holds the port, then lets [`PortSharing::Join`]
    /// sockets of this process bind it too; the kernel spreads incoming
    /// connections (or datagrams, by sender) over the group.
    First,
    /// Joins the group a [`PortSharing::First`] socket opened.
    Join,
}

/// The open-files limit ([`raise_open_files`]): each socket is a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit before it was raised.
    pub before: u64,
    /// The soft limit now: as high as the hard limit lets it.
    pub now: u64,
}

/// A listening or bound socket's options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bind {
    /// Queue of connections waiting to be accepted (TCP listeners).
    pub backlog: u32,
    /// Whether other event loops bind the same port.
    pub sharing: PortSharing,
}

impl Default for Bind {
    fn default() -> Self {
        Bind {
            backlog: 1024,
            sharing: PortSharing::Alone,
        }
    }
}

/// A host's TCP and UDP sockets, driven by readiness.
///
/// Addresses are taken as written: an IPv6 address (the wildcard `[::]`
/// included) means IPv6 only, on every backend.
pub trait Network {
    /// What this backend can do beyond the contract.
    fn capabilities(&self) -> Capabilities;

    /// Binds `addr` and listens on it.
    fn listen(&mut self, addr: SocketAddr, bind: Bind) -> io::Result<SocketId>;

    /// Starts connecting to `peer` (from `local`, when given; port chosen
    /// by the host) without waiting for the handshake.
    ///
    /// Until the connection is up, reads, writes and [`shutdown_write`]
    /// report `WouldBlock`; the socket reports writable once it is up or
    /// has failed, so callers wait with write interest. A failure such as
    /// [`io::ErrorKind::ConnectionRefused`] comes either from this call or
    /// from the socket's next operation.
    ///
    /// [`shutdown_write`]: Network::shutdown_write
    fn connect(&mut self, peer: SocketAddr, local: Option<IpAddr>) -> io::Result<SocketId>;

    /// Accepts one pending connection, returning it and its peer address.
    fn accept(&mut self, listener: SocketId) -> io::Result<(SocketId, SocketAddr)>;

    /// The local address a socket is bound to.
    fn local_addr(&self, id: SocketId) -> io::Result<SocketAddr>;

    /// Binds a UDP socket to `addr` (port 0 picks a free port).
    fn bind_udp(&mut self, addr: SocketAddr, bind: Bind) -> io::Result<SocketId>;

    /// Receives one datagram into `buf` (cut to `buf`'s length): its length
    /// and sender.
    fn recv_from(&mut self, id: SocketId, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;

    /// Sends `datagram` whole to `to`. A backend may queue it and send it
    /// later (at the latest in the next [`Network::wait`]); a send that
    /// fails then is reported by a later `recv_from`, the way Linux reports
    /// an ICMP error for an earlier datagram.
    fn send_to(&mut self, id: SocketId, datagram: &[u8], to: SocketAddr) -> io::Result<()>;

    /// Reads into `buf`; `Ok(0)` means the peer closed its side.
    fn read(&mut self, id: SocketId, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes a prefix of `buf`, returning how much was taken.
    fn write(&mut self, id: SocketId, buf: &[u8]) -> io::Result<usize>;

    /// Moves up to `max` bytes from the socket's input straight to its own
    /// output, taking only what the output accepts now, so that no byte is
    /// ever held in between.
    ///
    /// Only backends with [`Capabilities::splice`] splice; the others fail
    /// with [`io::ErrorKind::Unsupported`]. A backend that splices may
    /// still refuse one splice that way (the fault injector does), and
    /// callers then read and write for that once.
    fn splice(&mut self, id: SocketId, max: usize) -> io::Result<Spliced>;

    /// Half-closes the socket's sending side once everything written has
    /// been handed to the host; may report `WouldBlock` until then.
    fn shutdown_write(&mut self, id: SocketId) -> io::Result<()>;

    /// Closes a socket and forgets its id.
    fn close(&mut self, id: SocketId, how: Close);

    /// Connections closed with [`Network::close`] that the host still holds
    /// open (always 0 without [`Capabilities::lingering`]); a server counts
    /// them against its connection limit.
    fn lingering(&self) -> usize;

    /// Sets which readiness events [`Network::wait`] reports for `id`.
    fn set_interest(&mut self, id: SocketId, interest: Interest);

    /// Waits up to `timeout` (forever if `None`) and appends to `ready` the
    /// sockets that may now make progress.
    ///
    /// With no socket interested in anything and no timeout, nothing could
    /// ever end the wait: every backend then fails at once with
    /// [`io::ErrorKind::InvalidInput`] rather than block forever. With a
    /// timeout it sleeps that long.
    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<SocketId>) -> io::Result<()>;
}

/// The error of [`Network::wait`] with nothing to wait for and no timeout.
fn nothing_to_wait_for() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "wait with no socket of interest and no timeout would never end",
    )
}

/// The error for an id that names no socket of the kind an operation needs.
fn not_a(id: SocketId, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("socket {} is not a {what}", id.0),
    )
}

/// The error of [`Network::splice`] on backends that cannot splice (all
/// but the wasi one, and the loopback one when told).
#[cfg(any(not(target_os = "wasi"), test, feature = "simulation"))]
fn no_splice() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "this backend cannot splice")
}

/// Adds the likely cause and remedy to the listen and connect errors users
/// meet most.
pub fn explain(err: io::Error, addr: SocketAddr) -> io::Error {
    let hint = match err.kind() {
        io::ErrorKind::AddrInUse => "is another server running there? (port 0 picks a free port)",
        io::ErrorKind::ConnectionRefused => "is an echo server listening there?",
        io::ErrorKind::PermissionDenied if (1..1024).contains(&addr.port()) => {
            "ports below 1024 are privileged: run as root, grant CAP_NET_BIND_SERVICE, \
             or use a port of 1024 or above"
        }
        _ => return err,
    };
    // OS errors read "Connection refused (os error 111)"; the kind alone is
    // clearer, and the same on every backend. Messages a backend wrote
    // itself are kept.
    let what = match err.get_ref() {
        Some(message) => message.to_string(),
        None => err.kind().to_string(),
    };
    io::Error::new(err.kind(), format!("{what}; {hint}"))
}

/// Whether an I/O error only means "not now".
pub fn would_block(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Reads once: `Some(0)` at end of stream, `None` when nothing is ready.
pub fn try_read<N: Network>(
    net: &mut N,
    id: SocketId,
    buf: &mut [u8],
) -> io::Result<Option<usize>> {
    match net.read(id, buf) {
        Ok(n) => Ok(Some(n)),
        Err(err) if would_block(&err) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Writes once: the bytes taken, 0 when the socket would block.
pub fn try_write<N: Network>(net: &mut N, id: SocketId, buf: &[u8]) -> io::Result<usize> {
    match net.write(id, buf) {
        Err(err) if would_block(&err) => Ok(0),
        result => result,
    }
}

/// Fails unless `ip` is an address of this host, which a client may bind
/// its sockets to: binds a UDP socket there (port 0) and closes it, so
/// that every backend answers as its own binds would.
pub fn check_local<N: Network>(net: &mut N, ip: IpAddr) -> io::Result<()> {
    match net.bind_udp(SocketAddr::new(ip, 0), Bind::default()) {
        Ok(id) => {
            net.close(id, Close::Orderly);
            Ok(())
        }
        Err(err) if err.kind() == io::ErrorKind::AddrNotAvailable => Err(io::Error::new(
            err.kind(),
            format!("{ip} is not an address of this host, so no socket can be bound to it"),
        )),
        Err(err) => Err(io::Error::new(
            err.kind(),
            format!("cannot bind a socket to {ip}: {err}"),
        )),
    }
}

/// The wildcard address of `peer`'s family, port 0: where a client's UDP
/// socket binds.
pub fn any_local(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explained(kind: io::ErrorKind, port: u16) -> String {
        explain(kind.into(), SocketAddr::from(([127, 0, 0, 1], port))).to_string()
    }

    #[test]
    fn privileged_ports_are_named_only_below_1024() {
        let denied = io::ErrorKind::PermissionDenied;
        assert!(explained(denied, 80).contains("ports below 1024 are privileged"));
        assert!(
            !explained(denied, 0).contains("privileged"),
            "port 0 picks a free port"
        );
        assert!(!explained(denied, 8080).contains("privileged"));
    }

    #[test]
    fn common_errors_say_what_to_do() {
        assert_eq!(
            explained(io::ErrorKind::ConnectionRefused, 7),
            "connection refused; is an echo server listening there?"
        );
        assert!(explained(io::ErrorKind::AddrInUse, 7878)
            .starts_with("address in use; is another server"));
        assert_eq!(explained(io::ErrorKind::TimedOut, 7), "timed out");
    }
}
