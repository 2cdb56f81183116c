//! UDP echo: every datagram goes back, whole, to the address it came from.

use super::guard::{UdpGuard, Verdict};
use super::{Event, Observer, Progress, ProxyCounts, Turn};
use crate::net::{would_block, Interest, Network, SocketId};
use crate::proxy::{self, Accept, Command, Parsed, Reason, Transport};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

/// Datagrams received or sent per turn before other sockets get a chance.
const DATAGRAMS_PER_TURN: usize = 64;

/// Echo state of one UDP socket: datagrams the socket would not take yet.
#[derive(Debug, Default)]
pub struct DatagramEcho {
    unsent: VecDeque<(Box<[u8]>, SocketAddr)>,
    unsent_bytes: usize,
    interest: Interest,
    /// Datagrams echoed so far.
    pub echoed: u64,
    /// Every datagram must start with a PROXY v2 header of these versions
    /// (`DGRAM` or `LOCAL`), stripped before the echo; `None` for plain echo.
    pub proxy: Option<Accept>,
    /// The datagrams' PROXY headers accepted and refused.
    pub headers: ProxyCounts,
}

impl DatagramEcho {
    /// Bytes of datagrams waiting to be sent back.
    pub fn backlog(&self) -> usize {
        self.unsent_bytes
    }

    /// Echoes until the socket would block or the turn is used up, what
    /// `guard` lets through. Receiving pauses while more than `turn.bound`
    /// bytes wait to be sent back. Errors that concern a single datagram
    /// (such as an ICMP error reported on the socket) go to `observer`, as
    /// does the start of each episode of drops; they do not stop the echo.
    pub fn drive<N: Network>(
        &mut self,
        net: &mut N,
        id: SocketId,
        turn: &mut Turn<'_>,
        guard: &mut UdpGuard,
        observer: &mut impl Observer,
    ) -> Progress {
        let (bound, scratch, now) = (turn.bound, &mut *turn.scratch, turn.now);
        let mut progress = Progress::Yielded;
        for _ in 0..DATAGRAMS_PER_TURN {
            if let Some((datagram, to)) = self.unsent.front() {
                match net.send_to(id, datagram, *to) {
                    Ok(()) => {
                        self.unsent_bytes -= datagram.len();
                        self.unsent.pop_front();
                        self.echoed += 1;
                        continue;
                    }
                    Err(err) if would_block(&err) => {}
                    Err(err) => {
                        // The datagram cannot go there; drop it, keep serving.
                        self.unsent_bytes -= datagram.len();
                        self.unsent.pop_front();
                        failed(observer, err);
                        continue;
                    }
                }
                if self.unsent_bytes >= bound {
                    progress = Progress::Waiting;
                    break;
                }
            }
            let (len, from) = match net.recv_from(id, scratch) {
                Ok(received) => received,
                Err(err) if would_block(&err) => {
                    progress = Progress::Waiting;
                    break;
                }
                Err(err) => {
                    failed(observer, err);
                    continue;
                }
            };
            let datagram = match self.proxy {
                None => &scratch[..len],
                Some(accept) => match strip_header(&scratch[..len], accept, &mut self.headers) {
                    Some(payload) => payload,
                    None => continue,
                },
            };
            let len = datagram.len();
            if let Verdict::Drop { reason, first } = guard.check(from, datagram, now) {
                if first {
                    observer.observe(Event::Dropping { from, reason });
                }
                continue;
            }
            if self.unsent.is_empty() {
                match net.send_to(id, datagram, from) {
                    Ok(()) => {
                        self.echoed += 1;
                        continue;
                    }
                    Err(err) if would_block(&err) => {}
                    Err(err) => {
                        failed(observer, err);
                        continue;
                    }
                }
            }
            self.unsent_bytes += len;
            self.unsent.push_back((datagram.into(), from));
        }
        let interest = Interest {
            read: self.unsent_bytes < bound,
            write: !self.unsent.is_empty(),
        };
        if interest != self.interest {
            net.set_interest(id, interest);
            self.interest = interest;
        }
        progress
    }
}

/// The payload of `datagram` after its PROXY header, counted in `counts`;
/// `None` (counted by reason) for a datagram without a valid one. A
/// datagram is whole: a header cut short in it is refused.
fn strip_header<'a>(
    datagram: &'a [u8],
    accept: Accept,
    counts: &mut ProxyCounts,
) -> Option<&'a [u8]> {
    let refused = match proxy::parse(datagram, accept) {
        Parsed::Done { header, consumed } => {
            match (header.command, header.transport) {
                (Command::Local, _) | (_, Transport::Datagram) => {}
                _ => {
                    counts.refused[Reason::Transport.index()] += 1;
                    return None;
                }
            }
            counts.accepted += 1;
            if header.source().is_none() {
                counts.local += 1;
            }
            return datagram.get(consumed..);
        }
        Parsed::NeedMore => Reason::Short,
        Parsed::Invalid(reason) => reason,
    };
    counts.refused[refused.index()] += 1;
    None
}

/// Tells `observer` that one datagram failed with `error`.
fn failed(observer: &mut impl Observer, error: io::Error) {
    observer.observe(Event::DatagramFailed { error: &error });
}
