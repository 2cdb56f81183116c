//! The socket abstraction the engine is written against.
//!
//! [`Network`] is deliberately small and readiness-based: every operation on
//! a connection or datagram socket is non-blocking and reports
//! [`io::ErrorKind::WouldBlock`] when it cannot make progress, and
//! [`Network::wait`] sleeps until some socket may be ready. Readiness is only
//! a hint: callers retry operations after any wake-up and must tolerate
//! spurious ones. That contract fits both `mio` (edge-triggered) and
//! `wasi:io/poll` (level-triggered).
//!
//! Backends:
//! - `native`: std sockets made non-blocking, `mio` for readiness;
//! - `wasi`: WASI 0.2 sockets and pollables through the `wasi` crate;
//! - [`loopback`]: an in-memory, deterministic network for tests.

pub mod faults;
pub mod loopback;

#[cfg(not(target_os = "wasi"))]
mod native;
#[cfg(target_os = "wasi")]
mod wasi;

#[cfg(target_os = "wasi")]
pub use self::wasi::WasiNetwork as HostNetwork;
#[cfg(not(target_os = "wasi"))]
pub use native::NativeNetwork as HostNetwork;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
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
    /// This host cannot splice.
    Unsupported,
}

/// A host's TCP and UDP sockets, driven by readiness.
pub trait Network {
    /// A listener on its way to another network of the same kind, so that
    /// several event loops (threads) can accept from one port. Hosts that
    /// run a single event loop use [`std::convert::Infallible`] and keep
    /// the default [`Network::share`] and [`Network::adopt`].
    type SharedListener: Send + 'static;

    /// Whether [`Network::abort`] really resets connections.
    const ABORTS: bool = false;

    /// Binds `addr`, listens with `backlog`, and returns the listener.
    fn listen(&mut self, addr: SocketAddr, backlog: u32) -> io::Result<SocketId>;

    /// Makes a handle on `listener` for another network to [`adopt`]; fails
    /// with [`io::ErrorKind::Unsupported`] on hosts without threads.
    ///
    /// [`adopt`]: Network::adopt
    fn share(&self, listener: SocketId) -> io::Result<Self::SharedListener> {
        let _ = listener;
        Err(single_event_loop())
    }

    /// Starts accepting from a listener shared by another network.
    fn adopt(&mut self, listener: Self::SharedListener) -> io::Result<SocketId> {
        let _ = listener;
        Err(single_event_loop())
    }

    /// Starts connecting to `addr` without waiting for the peer.
    ///
    /// Until the connection is up, reads, writes and [`shutdown_write`]
    /// report `WouldBlock`; the socket reports writable once it is up or
    /// has failed, so callers wait with write interest. A failure such as
    /// [`io::ErrorKind::ConnectionRefused`] comes either from this call or
    /// from the socket's next operation.
    ///
    /// [`shutdown_write`]: Network::shutdown_write
    fn connect(&mut self, addr: SocketAddr) -> io::Result<SocketId>;

    /// Accepts one pending connection, returning it and its peer address.
    fn accept(&mut self, listener: SocketId) -> io::Result<(SocketId, SocketAddr)>;

    /// The local address a socket is bound to.
    fn local_addr(&self, id: SocketId) -> io::Result<SocketAddr>;

    /// Binds a UDP socket to `addr` (port 0 picks a free port).
    fn bind_udp(&mut self, addr: SocketAddr) -> io::Result<SocketId>;

    /// Receives one datagram into `buf` (cut to `buf`'s length): its length
    /// and sender.
    fn recv_from(&mut self, id: SocketId, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;

    /// Sends `datagram` whole to `to`.
    fn send_to(&mut self, id: SocketId, datagram: &[u8], to: SocketAddr) -> io::Result<()>;

    /// Reads into `buf`; `Ok(0)` means the peer closed its side.
    fn read(&mut self, id: SocketId, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes a prefix of `buf`, returning how much was taken.
    fn write(&mut self, id: SocketId, buf: &[u8]) -> io::Result<usize>;

    /// Moves up to `max` bytes from the socket's input straight to its own
    /// output, taking only what the output accepts now, so that no byte is
    /// ever held in between.
    ///
    /// Hosts where this saves copies and calls implement it (WASI:
    /// `output-stream.splice`, one host call instead of a read, a
    /// check-write and a write); the others keep this default, and callers
    /// read and write instead.
    fn splice(&mut self, id: SocketId, max: usize) -> io::Result<Spliced> {
        let _ = (id, max);
        Ok(Spliced::Unsupported)
    }

    /// Half-closes the socket's sending side once everything written has
    /// been handed to the host; may report `WouldBlock` until then.
    fn shutdown_write(&mut self, id: SocketId) -> io::Result<()>;

    /// Closes a socket and forgets its id.
    fn close(&mut self, id: SocketId);

    /// Connections closed with [`Network::close`] that the host still holds
    /// open (the wasi backend cannot drop a stream whose peer does not read
    /// its output); they count against a server's connection limit.
    fn lingering(&self) -> usize {
        0
    }

    /// Closes a connection with a reset instead of an orderly shutdown,
    /// dropping anything unsent, so that neither side keeps its address in
    /// TIME_WAIT. Hosts that cannot (WASI 0.2 has no `SO_LINGER`) keep this
    /// default, an ordinary [`Network::close`].
    fn abort(&mut self, id: SocketId) {
        self.close(id);
    }

    /// Sets which readiness events [`Network::wait`] reports for `id`.
    fn set_interest(&mut self, id: SocketId, interest: Interest);

    /// Waits up to `timeout` (forever if `None`) and appends to `ready` the
    /// sockets that may now make progress.
    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<SocketId>) -> io::Result<()>;

    /// Monotonic time since the network was created.
    fn now(&self) -> Duration;

    /// Sets `stop` when the host asks the program to terminate (SIGINT or
    /// SIGTERM); a second request ends the process at once. Returns whether
    /// the host can ask at all: hosts without signals keep this default.
    fn on_termination(stop: &Arc<AtomicBool>) -> io::Result<bool>
    where
        Self: Sized,
    {
        let _ = stop;
        Ok(false)
    }
}

/// The error for an id that names no socket of the kind an operation needs.
fn not_a(id: SocketId, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("socket {} is not a {what}", id.0),
    )
}

/// The error of [`Network::share`] on hosts that run a single event loop.
pub fn single_event_loop() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "this build has no threads and runs one event loop",
    )
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
