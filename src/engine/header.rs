//! A connection's PROXY protocol header phase ([`Config::proxy`]): before
//! any echo, the header is read with [`Network::read`] (never spliced),
//! parsed by [`crate::proxy`], and consumed; the bytes that came after it
//! in the same read are echoed first. A connection whose header is
//! invalid, cut short or late is refused with a [`Reason`].
//!
//! [`Config::proxy`]: super::Config::proxy

use crate::net::{try_read, Network, SocketId};
use crate::proxy::{self, Accept, Header, Parsed, Reason, Transport, MAX_HEADER};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::time::Duration;

/// How a header read went.
#[derive(Debug)]
pub(super) enum Read {
    /// More is needed; the socket has nothing now.
    Waiting,
    /// The whole header; `rest` came after it and is to be echoed first.
    Accepted {
        /// The header.
        header: Header,
        /// The client's first bytes, after the header.
        rest: Vec<u8>,
    },
    /// Not a valid header: close the connection without echoing.
    Refused(Reason),
}

/// The bytes of one connection's header so far.
#[derive(Debug)]
struct Pending {
    bytes: Vec<u8>,
    deadline: Duration,
}

/// Every connection still in its header phase, and their deadlines.
#[derive(Debug, Default)]
pub(super) struct Headers {
    /// A B-tree map: a `HashMap`'s random seed would make the component
    /// import `wasi:random/insecure-seed`.
    pending: BTreeMap<SocketId, Pending>,
    /// Deadlines in the order they fall: the timeout is the same for all,
    /// so in the order connections were accepted. Entries of connections
    /// done with their header are dropped when they come up.
    deadlines: VecDeque<(Duration, SocketId)>,
}

impl Headers {
    /// `id`, accepted now, must send its header by `deadline`.
    pub(super) fn expect(&mut self, id: SocketId, deadline: Duration) {
        let pending = Pending {
            bytes: Vec::new(),
            deadline,
        };
        self.pending.insert(id, pending);
        self.deadlines.push_back((deadline, id));
    }

    /// Whether `id` is still in its header phase.
    pub(super) fn awaits(&self, id: SocketId) -> bool {
        self.pending.contains_key(&id)
    }

    /// Forgets `id` (closed).
    pub(super) fn forget(&mut self, id: SocketId) {
        self.pending.remove(&id);
    }

    /// The earliest deadline still to come.
    pub(super) fn next_deadline(&self) -> Option<Duration> {
        self.deadlines.front().map(|&(at, _)| at)
    }

    /// The connections whose deadline has passed at `now`, forgotten.
    pub(super) fn expired(&mut self, now: Duration) -> Vec<SocketId> {
        let mut late = Vec::new();
        while let Some(&(at, id)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            // The id may since have been closed, or reused by a connection
            // with a later deadline of its own.
            if self.pending.get(&id).is_some_and(|p| p.deadline <= now) {
                self.pending.remove(&id);
                late.push(id);
            }
        }
        late
    }

    /// Reads `id`'s header as far as the socket allows, `scratch` as the
    /// buffer; what follows the header is at most `bound` bytes. Once the
    /// outcome is known, `id` is forgotten.
    pub(super) fn read<N: Network>(
        &mut self,
        net: &mut N,
        id: SocketId,
        accept: Accept,
        scratch: &mut [u8],
        bound: usize,
    ) -> io::Result<Read> {
        let Some(pending) = self.pending.get_mut(&id) else {
            return Ok(Read::Waiting);
        };
        let read: io::Result<Read> = loop {
            // Never past the longest header, nor more after it than the
            // connection may hold unsent.
            let room = (MAX_HEADER - pending.bytes.len())
                .min(bound.max(1))
                .min(scratch.len());
            let got = match try_read(net, id, &mut scratch[..room]) {
                Ok(None) => break Ok(Read::Waiting),
                Ok(Some(0)) => break Ok(Read::Refused(Reason::Closed)),
                Ok(Some(got)) => got,
                Err(err) if closed_early(&err) => break Ok(Read::Refused(Reason::Closed)),
                Err(err) => break Err(err),
            };
            pending.bytes.extend_from_slice(&scratch[..got]);
            match proxy::parse(&pending.bytes, accept) {
                Parsed::NeedMore => continue,
                Parsed::Invalid(reason) => break Ok(Read::Refused(reason)),
                // A UDP header on a TCP connection.
                Parsed::Done { header, .. } if header.transport == Transport::Datagram => {
                    break Ok(Read::Refused(Reason::Transport));
                }
                Parsed::Done { header, consumed } => {
                    let rest = pending.bytes.split_off(consumed);
                    break Ok(Read::Accepted { header, rest });
                }
            }
        };
        if !matches!(read, Ok(Read::Waiting)) {
            self.pending.remove(&id);
        }
        read
    }
}

/// Errors that mean the peer went away before its header was whole.
fn closed_early(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}
