//! One echo connection: read, send back, and hold back reading while the
//! peer is slow to take its echo.

use crate::net::{try_read, try_write, would_block, Interest, Network, SocketId, Spliced};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Reads and writes one connection may do per turn before yielding to the
/// others, so a fast stream cannot starve its neighbours.
const OPERATIONS_PER_TURN: usize = 32;

/// What one turn of a connection (or a datagram socket) is given.
pub struct Turn<'a> {
    /// The read buffer every connection of the server shares.
    pub scratch: &'a mut [u8],
    /// Unsent echo bytes one connection may hold; reading pauses there.
    pub bound: usize,
    /// The time of the turn, which stamps activity.
    pub now: Duration,
}

/// Where a connection stands after being driven.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Waiting for readiness.
    Waiting,
    /// Used up its turn while it could still make progress; drive it again soon.
    Yielded,
    /// The peer closed its side and got every byte back; close the socket.
    Finished,
}

/// Echo state of one accepted connection.
#[derive(Debug)]
pub struct Connection {
    /// The peer's address.
    pub peer: SocketAddr,
    /// When the connection was accepted.
    pub opened: Duration,
    /// Last time any byte moved.
    pub last_active: Duration,
    /// Bytes echoed back so far.
    pub echoed: u64,
    /// Echo bytes read but not yet sent: `unsent[sent..]`. Empty and
    /// unallocated while the peer keeps up.
    unsent: Vec<u8>,
    sent: usize,
    peer_done: bool,
    /// The last splice found the socket's output full.
    output_full: bool,
    /// Whether to echo by [`Network::splice`] (on hosts that can).
    splice: bool,
    interest: Interest,
}

impl Connection {
    /// A fresh connection accepted at `now`, echoed by splicing when
    /// `splice` (the host's [`Capabilities::splice`]).
    ///
    /// [`Capabilities::splice`]: crate::net::Capabilities::splice
    pub fn new(peer: SocketAddr, now: Duration, splice: bool) -> Self {
        Connection {
            peer,
            opened: now,
            last_active: now,
            echoed: 0,
            unsent: Vec::new(),
            sent: 0,
            peer_done: false,
            output_full: false,
            splice,
            interest: Interest::NONE,
        }
    }

    /// Bytes waiting to be echoed.
    pub fn backlog(&self) -> usize {
        self.unsent.len() - self.sent
    }

    /// Moves bytes until the socket would block, the turn is used up, or the
    /// echo is complete; [`Connection::backlog`] stays within `turn.bound`.
    pub fn drive<N: Network>(
        &mut self,
        net: &mut N,
        id: SocketId,
        turn: &mut Turn<'_>,
    ) -> io::Result<Progress> {
        let progress = self.pump(net, id, turn)?;
        let bound = turn.bound;
        if progress != Progress::Finished {
            let interest = Interest {
                read: !self.peer_done && self.backlog() < bound && !self.output_full,
                write: self.backlog() > 0 || self.peer_done || self.output_full,
            };
            if interest != self.interest {
                net.set_interest(id, interest);
                self.interest = interest;
            }
        }
        Ok(progress)
    }

    fn pump<N: Network>(
        &mut self,
        net: &mut N,
        id: SocketId,
        turn: &mut Turn<'_>,
    ) -> io::Result<Progress> {
        let (bound, now) = (turn.bound, turn.now);
        let scratch = &mut *turn.scratch;
        self.output_full = false;
        for _ in 0..OPERATIONS_PER_TURN {
            if self.backlog() > 0 {
                let sent = try_write(net, id, &self.unsent[self.sent..])?;
                self.record_sent(sent, now);
                if self.backlog() > 0 && sent == 0 && (self.peer_done || self.backlog() >= bound) {
                    return Ok(Progress::Waiting);
                }
            }
            if self.peer_done {
                if self.backlog() > 0 {
                    continue;
                }
                return match net.shutdown_write(id) {
                    Ok(()) => Ok(Progress::Finished),
                    Err(err) if would_block(&err) => Ok(Progress::Waiting),
                    Err(err) => Err(err),
                };
            }
            let room = (bound - self.backlog()).min(scratch.len());
            if room == 0 {
                continue;
            }
            if self.splice && self.backlog() == 0 {
                // Where the host can, echo without the bytes passing
                // through here; otherwise read them and write them back.
                match net.splice(id, room) {
                    Ok(Spliced::Bytes(moved)) => {
                        self.record_sent(moved, now);
                        continue;
                    }
                    Ok(Spliced::InputEnded) => {
                        self.peer_done = true;
                        continue;
                    }
                    Ok(Spliced::InputEmpty) => return Ok(Progress::Waiting),
                    Ok(Spliced::OutputFull) => {
                        self.output_full = true;
                        return Ok(Progress::Waiting);
                    }
                    // Refused this once: copy instead.
                    Err(err) if err.kind() == io::ErrorKind::Unsupported => {}
                    Err(err) => return Err(err),
                }
            }
            let read = match try_read(net, id, &mut scratch[..room])? {
                None => return Ok(Progress::Waiting),
                Some(0) => {
                    self.peer_done = true;
                    continue;
                }
                Some(read) => read,
            };
            self.last_active = now;
            let data = &scratch[..read];
            if self.backlog() > 0 {
                self.queue(data);
            } else {
                // The common case: echo straight from the shared buffer and
                // keep only what the socket would not take.
                let sent = try_write(net, id, data)?;
                self.record_sent(sent, now);
                self.queue(&data[sent..]);
            }
        }
        Ok(Progress::Yielded)
    }

    /// Queues `data` to be echoed before anything read later: the bytes
    /// that came after a PROXY header, received at `now`.
    pub(super) fn echo_first(&mut self, data: &[u8], now: Duration) {
        self.last_active = now;
        self.queue(data);
    }

    fn record_sent(&mut self, sent: usize, now: Duration) {
        if sent == 0 {
            return;
        }
        self.echoed += sent as u64;
        self.last_active = now;
        if self.unsent.is_empty() {
            return;
        }
        self.sent += sent;
        if self.sent == self.unsent.len() {
            // Release the memory: idle connections cost no buffer.
            self.unsent = Vec::new();
            self.sent = 0;
        }
    }

    fn queue(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.sent > 0 {
            self.unsent.drain(..self.sent);
            self.sent = 0;
        }
        self.unsent.extend_from_slice(data);
    }
}
