//! The echo clients: over TCP (this module) the input is sent whole, the
//! echo read until EOF and checked byte for byte; over UDP see [`datagram`].

pub mod datagram;

use crate::net::{explain, try_read, try_write, would_block, Interest, Network, SocketId};
use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;

const READ_SIZE: usize = 64 * 1024;

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

/// One connection's send-and-verify exchange, driven by readiness.
///
/// Sending and receiving overlap, so inputs far larger than the socket
/// buffers cannot deadlock.
pub struct Exchange<'a> {
    id: SocketId,
    input: &'a [u8],
    written: usize,
    received: usize,
    first_difference: Option<usize>,
    write_done: bool,
    read_done: bool,
    interest: Interest,
    buf: Box<[u8]>,
}

impl<'a> Exchange<'a> {
    /// Starts connecting to `addr`, ready to send `input`.
    pub fn connect<N: Network>(net: &mut N, addr: SocketAddr, input: &'a [u8]) -> io::Result<Self> {
        let id = net.connect(addr).map_err(|err| explain(err, addr))?;
        Ok(Exchange {
            id,
            input,
            written: 0,
            received: 0,
            first_difference: None,
            write_done: false,
            read_done: false,
            interest: Interest::NONE,
            buf: vec![0; READ_SIZE].into_boxed_slice(),
        })
    }

    /// The connection's socket.
    pub fn socket(&self) -> SocketId {
        self.id
    }

    /// Moves bytes until the socket would block; passes the echo to `out`.
    /// Returns `true` once the peer has closed its side.
    pub fn drive<N: Network>(&mut self, net: &mut N, out: &mut impl Write) -> io::Result<bool> {
        loop {
            let mut progressed = false;
            if !self.write_done {
                progressed |= self.send(net)?;
            }
            if let Some(n) = try_read(net, self.id, &mut self.buf)? {
                progressed = true;
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
            write: !self.write_done,
        };
        if interest != self.interest {
            net.set_interest(self.id, interest);
            self.interest = interest;
        }
        Ok(false)
    }

    fn send<N: Network>(&mut self, net: &mut N) -> io::Result<bool> {
        let mut progressed = false;
        if self.written < self.input.len() {
            let n = try_write(net, self.id, &self.input[self.written..])?;
            if n == 0 {
                return Ok(false);
            }
            self.written += n;
            progressed = true;
        }
        if self.written == self.input.len() {
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
    let same = expected
        .iter()
        .zip(echo)
        .take_while(|(a, b)| a == b)
        .count();
    if same < echo.len() {
        *first_difference = Some(offset + same);
    }
}

/// Sends `input` to the echo server at `addr`, writes the echo to `out`, and
/// checks it: returns the byte count, or an [`EchoMismatch`] error.
pub fn send<N: Network>(
    net: &mut N,
    addr: SocketAddr,
    input: &[u8],
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut exchange = Exchange::connect(net, addr, input)?;
    let mut ready = Vec::new();
    loop {
        match exchange.drive(net, out) {
            Ok(true) => break,
            Ok(false) => {}
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(explain(err, addr).into());
            }
            Err(err) => {
                let cause = match err.kind() {
                    io::ErrorKind::NotConnected
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                        if exchange.received == 0 =>
                    {
                        "the server closed the connection at once (is it at its --max-connections?)"
                            .into()
                    }
                    io::ErrorKind::NotConnected
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset => "the server closed the connection".into(),
                    _ => err.to_string(),
                };
                anyhow::bail!(
                    "{cause}, after {} of {} bytes came back",
                    exchange.received,
                    input.len()
                );
            }
        }
        ready.clear();
        net.wait(None, &mut ready)?;
    }
    out.flush()?;
    net.close(exchange.socket());
    Ok(exchange.verdict()?)
}
