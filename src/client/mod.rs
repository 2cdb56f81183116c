//! The echo clients: over TCP (this module) the input is sent whole, the
//! echo read until EOF and checked byte for byte; over UDP see [`datagram`].

pub mod datagram;

use self::datagram::DatagramMismatch;
use crate::clock::Clock;
use crate::net::{explain, try_read, try_write, would_block, Close, Interest, Network, SocketId};
use crate::proxy::{ClientHeader, Outgoing};
use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

const READ_SIZE: usize = 64 * 1024;

/// How long [`HalfClose::AfterEcho`] waits for more echo, once the input
/// is all written, before it half-closes anyway.
pub const SILENCE: Duration = Duration::from_secs(1);

/// When an exchange half-closes its sending side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalfClose {
    /// As soon as the whole input is written: the server must still send
    /// the rest of the echo after the FIN.
    AfterInput,
    /// Once the whole echo is back, or when nothing came back for
    /// [`SILENCE`] after the input was written (a server that echoes only
    /// at the end of the input then gets its FIN). On runtimes whose
    /// half-close drops data still on its way (jco), no echo is lost.
    AfterEcho,
}

/// The echo differed from what was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoMismatch {
    /// Bytes sent.
    pub sent: u64,
    /// Bytes received back.
    pub received: u64,
    /// Offset of the first byte that differs or is missing.
    pub first_difference: u64,
}

impl fmt::Display for EchoMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "echo mismatch: sent {} bytes, received {}, first difference at offset {}",
            self.sent, self.received, self.first_difference
        )
    }
}

impl std::error::Error for EchoMismatch {}

/// Why a client failed.
#[derive(Debug)]
pub enum Error {
    /// The network (or the output) failed, before or outside an exchange.
    Io(io::Error),
    /// The connection ended before the whole echo came back.
    Cut(Cut),
    /// The echo came back different.
    Mismatch(EchoMismatch),
    /// Datagrams were lost or changed.
    Datagrams(DatagramMismatch),
}

impl Error {
    /// Whether the echo itself was wrong (as opposed to the way to it).
    pub fn is_mismatch(&self) -> bool {
        matches!(self, Error::Mismatch(_) | Error::Datagrams(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(err) => err.fmt(f),
            Error::Cut(cut) => cut.fmt(f),
            Error::Mismatch(mismatch) => mismatch.fmt(f),
            Error::Datagrams(mismatch) => mismatch.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Error::Io(err)
    }
}

/// One connection's send-and-verify exchange, driven by readiness.
///
/// Sending and receiving overlap, so inputs far larger than the socket
/// buffers cannot deadlock.
pub struct Exchange<'a> {
    id: SocketId,
    peer: SocketAddr,
    /// A PROXY protocol header to send before the input.
    header: Option<Outgoing>,
    input: &'a [u8],
    half_close: HalfClose,
    written: usize,
    received: usize,
    /// When a byte last moved (or the exchange was first driven).
    last_progress: Option<Duration>,
    first_difference: Option<usize>,
    write_done: bool,
    read_done: bool,
    interest: Interest,
    buf: Box<[u8]>,
}

impl<'a> Exchange<'a> {
    /// Starts connecting to `addr`, ready to send `input` and to
    /// half-close as `half_close` says.
    pub fn connect<N: Network>(
        net: &mut N,
        addr: SocketAddr,
        input: &'a [u8],
        half_close: HalfClose,
    ) -> io::Result<Self> {
        let id = net.connect(addr, None).map_err(|err| explain(err, addr))?;
        Ok(Exchange {
            id,
            peer: addr,
            header: None,
            input,
            half_close,
            written: 0,
            received: 0,
            last_progress: None,
            first_difference: None,
            write_done: false,
            read_done: false,
            interest: Interest::NONE,
            buf: vec![0; READ_SIZE].into_boxed_slice(),
        })
    }

    /// Sends `header` (a PROXY protocol header) before the input, outside
    /// the echo.
    pub fn with_proxy_header(mut self, header: ClientHeader) -> Self {
        self.header = Some(Outgoing::new(header));
        self
    }

    /// The connection's socket.
    pub fn socket(&self) -> SocketId {
        self.id
    }

    /// Moves bytes until the socket would block; passes the echo to `out`.
    /// Returns `true` once the peer has closed its side. `now` times the
    /// silence [`HalfClose::AfterEcho`] waits out.
    pub fn drive<N: Network>(
        &mut self,
        net: &mut N,
        now: Duration,
        out: &mut impl Write,
    ) -> io::Result<bool> {
        self.last_progress.get_or_insert(now);
        loop {
            let mut progressed = false;
            if !self.write_done {
                progressed |= self.send(net, now)?;
            }
            if let Some(n) = try_read(net, self.id, &mut self.buf)? {
                progressed = true;
                self.last_progress = Some(now);
                let echo = &self.buf[..n];
                if echo.is_empty() {
                    self.read_done = true;
                } else {
                    check(self.input, self.received, echo, &mut self.first_difference);
                    self.received += n;
                    out.write_all(echo)?;
                }
            }
            if self.read_done {
                return Ok(true);
            }
            if !progressed {
                break;
            }
        }
        let interest = Interest {
            read: true,
            write: !self.write_done
                && (self.header.is_some()
                    || self.written < self.input.len()
                    || self.may_half_close(now)),
        };
        if interest != self.interest {
            net.set_interest(self.id, interest);
            self.interest = interest;
        }
        Ok(false)
    }

    /// Whether it is time to half-close.
    fn may_half_close(&self, now: Duration) -> bool {
        self.written == self.input.len()
            && match self.half_close {
                HalfClose::AfterInput => true,
                HalfClose::AfterEcho => {
                    let quiet = self
                        .last_progress
                        .map_or(Duration::ZERO, |at| now.saturating_sub(at));
                    self.received >= self.input.len() || quiet >= SILENCE
                }
            }
    }

    /// When a silent server's time is up, if the exchange is waiting out
    /// one: callers wake then and drive again.
    pub fn deadline(&self) -> Option<Duration> {
        let waiting = !self.write_done
            && self.half_close == HalfClose::AfterEcho
            && self.written == self.input.len();
        waiting.then(|| self.last_progress.unwrap_or_default() + SILENCE)
    }

    fn send<N: Network>(&mut self, net: &mut N, now: Duration) -> io::Result<bool> {
        let mut progressed = false;
        if let Some(header) = &mut self.header {
            if !header.send(net, self.id, self.peer)? {
                return Ok(false);
            }
            self.header = None;
        }
        if self.written < self.input.len() {
            let n = try_write(net, self.id, &self.input[self.written..])?;
            if n == 0 {
                return Ok(false);
            }
            self.written += n;
            self.last_progress = Some(now);
            progressed = true;
        }
        if self.may_half_close(now) {
            match net.shutdown_write(self.id) {
                Ok(()) => {
                    self.write_done = true;
                    progressed = true;
                }
                Err(err) if would_block(&err) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(progressed)
    }

    /// The outcome once [`Exchange::drive`] returned `true`: the byte count
    /// echoed, or how the echo differed.
    pub fn verdict(&self) -> Result<u64, EchoMismatch> {
        let first_difference = self
            .first_difference
            .or((self.received != self.input.len()).then(|| self.received.min(self.input.len())));
        match first_difference {
            None => Ok(self.received as u64),
            Some(offset) => Err(EchoMismatch {
                sent: self.written as u64,
                received: self.received as u64,
                first_difference: offset as u64,
            }),
        }
    }
}

/// Records the first offset where `echo`, received at `offset`, differs
/// from `input`.
fn check(input: &[u8], offset: usize, echo: &[u8], first_difference: &mut Option<usize>) {
    if first_difference.is_some() {
        return;
    }
    let expected = input.get(offset..).unwrap_or_default();
    let same = crate::pattern::matching_prefix(expected, echo);
    if same < echo.len() {
        *first_difference = Some(offset + same);
    }
}

/// The connection ended, or failed, before the whole echo came back.
#[derive(Debug)]
pub struct Cut {
    /// Bytes that came back.
    pub received: u64,
    /// Bytes sent, which should have come back.
    pub expected: u64,
    /// What the connection reported.
    pub cause: io::Error,
}

impl Cut {
    /// Whether the server closed (or reset) the connection.
    pub fn closed_by_server(&self) -> bool {
        matches!(
            self.cause.kind(),
            io::ErrorKind::NotConnected
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
        )
    }

    /// Whether the server closed the connection before echoing anything,
    /// as servers at their connection limit do.
    pub fn closed_at_once(&self) -> bool {
        self.closed_by_server() && self.received == 0
    }
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.closed_at_once(), self.closed_by_server()) {
            (true, _) => f.write_str("the server closed the connection at once")?,
            (false, true) => f.write_str("the server closed the connection")?,
            (false, false) => write!(f, "{}", self.cause)?,
        }
        write!(
            f,
            ", after {} of {} bytes came back",
            self.received, self.expected
        )
    }
}

impl std::error::Error for Cut {}

/// Sends `input` to the echo server at `addr` (after a PROXY protocol
/// header, when given), writes the echo to `out`, and checks it: returns
/// the byte count. It half-closes once the echo is back
/// ([`HalfClose::AfterEcho`]).
pub fn send<N: Network>(
    net: &mut N,
    clock: &impl Clock,
    addr: SocketAddr,
    input: &[u8],
    header: Option<ClientHeader>,
    out: &mut impl Write,
) -> Result<u64, Error> {
    let mut exchange = Exchange::connect(net, addr, input, HalfClose::AfterEcho)?;
    if let Some(header) = header {
        exchange = exchange.with_proxy_header(header);
    }
    let mut ready = Vec::new();
    loop {
        match exchange.drive(net, clock.now(), out) {
            Ok(true) => break,
            Ok(false) => {}
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(Error::Io(explain(err, addr)));
            }
            Err(cause) => {
                return Err(Error::Cut(Cut {
                    received: exchange.received as u64,
                    expected: input.len() as u64,
                    cause,
                }))
            }
        }
        ready.clear();
        let timeout = (exchange.deadline()).map(|at| at.saturating_sub(clock.now()));
        net.wait(timeout, &mut ready)?;
    }
    out.flush()?;
    net.close(exchange.socket(), Close::Orderly);
    exchange.verdict().map_err(Error::Mismatch)
}
