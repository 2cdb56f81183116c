//! One UDP benchmark socket: pingpong with datagrams, closed loop (one in
//! flight) or open loop (as many as the schedule sends), each echo
//! matched to the datagram it repeats and checked whole.

use super::flow::{want, Corruption, FlowError, Outcome, Pacing, Turn, STEPS_PER_TURN};
use super::Plan;
use crate::net::{any_local, would_block, Bind, Interest, Network, SocketId};
use crate::pattern;
use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How long a datagram waits for its echo before it counts as lost.
pub(super) const LOSS_TIMEOUT: Duration = Duration::from_millis(200);
/// How many earlier datagrams a stray echo is compared with in closed
/// loop; open loop adds those sent in [`LATE_HORIZON`].
const LATE_WINDOW: u64 = 8;
/// Open loop: how old a datagram may be and still have its late echo
/// recognised (rather than called corrupt).
const LATE_HORIZON: Duration = Duration::from_secs(2);

/// A datagram sent and not yet echoed nor given up on.
#[derive(Clone, Copy, Debug)]
struct Pending {
    message: u64,
    sent: Duration,
}

/// One UDP socket and the datagrams it has in flight.
pub(super) struct Datagram {
    slot: u64,
    /// The bound socket.
    pub id: SocketId,
    /// The next message to send.
    next: u64,
    pending: VecDeque<Pending>,
    /// The message whose bytes `outgoing` holds.
    filled: Option<u64>,
    outgoing: Vec<u8>,
    /// The last send would have blocked.
    blocked: bool,
    /// Nothing was sent from this socket yet.
    fresh: bool,
    interest: Interest,
}

impl Datagram {
    /// Binds slot `slot`'s socket to `local` (any address when `None`),
    /// its first datagram message `first`.
    pub(super) fn open<N: Network>(
        net: &mut N,
        plan: &Plan,
        slot: u64,
        first: u64,
        local: Option<IpAddr>,
    ) -> io::Result<Self> {
        let addr = match local {
            Some(ip) => SocketAddr::new(ip, 0),
            None => any_local(plan.addr),
        };
        Ok(Datagram {
            slot,
            id: net.bind_udp(addr, Bind::default())?,
            next: first,
            pending: VecDeque::new(),
            filled: None,
            outgoing: vec![0; plan.size],
            blocked: false,
            fresh: true,
            interest: Interest::NONE,
        })
    }

    /// Sends what is due, takes in echoes and gives up on datagrams older
    /// than [`LOSS_TIMEOUT`].
    pub(super) fn drive<N: Network>(
        &mut self,
        net: &mut N,
        turn: &mut Turn<'_>,
    ) -> Result<Outcome, FlowError> {
        let mut outcome = Outcome::default();
        while let Some(oldest) = self.pending.front() {
            if turn.now.saturating_sub(oldest.sent) < LOSS_TIMEOUT {
                break;
            }
            self.pending.pop_front();
            turn.record.lost(1);
        }
        for _ in 0..STEPS_PER_TURN {
            let sent = self.send(net, turn)?;
            turn.stamp = None;
            outcome.first_write |= sent && mem::take(&mut self.fresh);
            let received = self.receive(net, turn)?;
            if !sent && !received {
                let write = self.blocked && self.due(turn);
                want(net, self.id, &mut self.interest, write);
                return Ok(outcome);
            }
        }
        outcome.yielded = true;
        Ok(outcome)
    }

    fn due(&self, turn: &Turn<'_>) -> bool {
        match turn.pacing.due_at(self.slot, self.next) {
            Some(due) => due <= turn.now && self.pending.len() < turn.plan.pipeline,
            None => self.pending.is_empty(),
        }
    }

    /// Sends the next datagram if it is due: `true` if it went.
    fn send<N: Network>(&mut self, net: &mut N, turn: &mut Turn<'_>) -> io::Result<bool> {
        if !self.due(turn) {
            return Ok(false);
        }
        if self.filled != Some(self.next) {
            pattern::fill(pattern::seed(self.slot, self.next), 0, &mut self.outgoing);
            self.filled = Some(self.next);
        }
        match net.send_to(self.id, &self.outgoing, turn.plan.addr) {
            Ok(()) => {}
            Err(err) if would_block(&err) => {
                self.blocked = true;
                return Ok(false);
            }
            Err(err) => return Err(err),
        }
        self.blocked = false;
        let now = turn.stamp.unwrap_or_else(|| turn.time());
        turn.wrote = true;
        let due = turn.pacing.due_at(self.slot, self.next);
        turn.record.sent(due.map(|due| now.saturating_sub(due)));
        self.pending.push_back(Pending {
            message: self.next,
            sent: now,
        });
        self.next += 1;
        Ok(true)
    }

    /// Takes one datagram in: `true` if one came.
    fn receive<N: Network>(&mut self, net: &mut N, turn: &mut Turn<'_>) -> Result<bool, FlowError> {
        let (len, from) = match net.recv_from(self.id, turn.incoming) {
            Ok(received) => received,
            Err(err) if would_block(&err) => return Ok(false),
            Err(err) => return Err(err.into()),
        };
        if from != turn.plan.addr {
            return Ok(true);
        }
        let echo = &turn.incoming[..len];
        let (slot, size) = (self.slot, self.outgoing.len());
        let expected = &mut *turn.expected;
        let mut is = |message: u64| {
            len == size && pattern::matches(pattern::seed(slot, message), 0, echo, expected)
        };
        if let Some(index) = self.pending.iter().position(|p| is(p.message)) {
            let Some(Pending { message, sent }) = self.pending.remove(index) else {
                return Ok(true);
            };
            let now = turn.time();
            // The next send, if it follows at once, happened now too.
            turn.stamp = Some(now);
            let corrected =
                (turn.pacing.due_at(self.slot, message)).map(|due| now.saturating_sub(due));
            turn.record.echo(corrected, now.saturating_sub(sent));
            turn.record.bytes(len as u64);
            return Ok(true);
        }
        // The late echo of a datagram given up on is no error; anything
        // else is.
        let late = self.next.saturating_sub(self.late_window(turn.pacing))..self.next;
        if late.rev().any(is) {
            return Ok(true);
        }
        Err(FlowError::Corrupt(Corruption {
            slot: self.slot,
            message: self.pending.front().map_or(self.next, |p| p.message),
            offset: 0,
        }))
    }

    /// How many of the latest datagrams a stray echo may repeat.
    fn late_window(&self, pacing: Pacing) -> u64 {
        match pacing {
            Pacing::Closed => LATE_WINDOW,
            Pacing::Open(spread) => LATE_WINDOW + spread.per_slot_within(LATE_HORIZON),
        }
    }

    /// The connection slot this socket fills.
    pub(super) fn slot(&self) -> u64 {
        self.slot
    }

    /// Where a new socket for this slot starts: the next message.
    pub(super) fn resume_at(&self) -> u64 {
        self.next
    }
}
