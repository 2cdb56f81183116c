//! One UDP benchmark socket: pingpong with datagrams, closed loop (one in
//! flight) or open loop (as many as the schedule sends), measuring the
//! path: every echo is matched to the datagram it repeats by the sequence
//! number heading it and checked whole, and counted as a round trip, a
//! duplicate, a reordered echo, a corrupted one or a late one; a datagram
//! not echoed within the loss timeout counts as lost.
//!
//! A datagram is its message number (8 bytes, little-endian), then the
//! bytes of the pattern `pattern::seed(slot, message)` from offset 8.

use super::flow::{want, Outcome, Turn, STEPS_PER_TURN};
use super::report::CorruptEcho;
use super::Plan;
use crate::net::{any_local, would_block, Bind, Interest, Network, SocketId};
use crate::pattern;
use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The bytes of the sequence number that heads each datagram: the least
/// a datagram holds.
pub const HEADER: usize = 8;
/// The shortest loss timeout the round trips can set.
const FLOOR: Duration = Duration::from_millis(200);
/// The longest.
const CEILING: Duration = Duration::from_secs(10);
/// The loss timeout before any round trip is measured (RFC 6298's first
/// retransmission timeout).
const FIRST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a settled datagram is remembered at least, so that its
/// duplicates are told from late echoes.
const MEMORY: Duration = Duration::from_secs(2);
/// How often the run looks for datagrams past their loss timeout, at most.
pub(super) fn sweep(plan: &Plan) -> Duration {
    plan.loss_timeout.unwrap_or(FLOOR).min(FLOOR) / 4
}

/// What became of a datagram sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Its echo is awaited.
    Pending,
    /// Its echo came back (intact or not).
    Echoed,
    /// Its echo did not come back within the loss timeout.
    Lost,
}

/// A datagram sent and what became of it.
#[derive(Clone, Copy, Debug)]
struct Sent {
    at: Duration,
    fate: Fate,
}

/// The round trips measured so far: RFC 6298's smoothed round trip and
/// variation, which set the loss timeout, and RFC 3550's jitter.
#[derive(Clone, Copy, Debug, Default)]
struct RoundTrips {
    /// The last round trip, and the estimates, in nanoseconds.
    last: Option<f64>,
    smoothed: f64,
    variation: f64,
    jitter: f64,
}

impl RoundTrips {
    /// Takes in round trip `rtt`: the jitter after it.
    fn measured(&mut self, rtt: Duration) -> f64 {
        let rtt = rtt.as_nanos() as f64;
        match self.last {
            None => {
                self.smoothed = rtt;
                self.variation = rtt / 2.0;
            }
            Some(last) => {
                self.variation += ((self.smoothed - rtt).abs() - self.variation) / 4.0;
                self.smoothed += (rtt - self.smoothed) / 8.0;
                self.jitter += ((rtt - last).abs() - self.jitter) / 16.0;
            }
        }
        self.last = Some(rtt);
        self.jitter
    }

    /// How long a datagram waits for its echo: twice the smoothed round
    /// trip plus four variations, within [`FLOOR`] and [`CEILING`].
    fn loss_timeout(&self) -> Duration {
        if self.last.is_none() {
            return FIRST_TIMEOUT;
        }
        let nanos = 2.0 * self.smoothed + 4.0 * self.variation;
        Duration::from_nanos(nanos as u64).clamp(FLOOR, CEILING)
    }
}

/// What an echo was found to be.
enum Echo {
    /// The exact bytes of this message.
    Intact(u64),
    /// Bytes that differ from every datagram sent.
    Corrupt(CorruptEcho),
}

/// One UDP socket and the datagrams it has sent.
pub(super) struct Datagram {
    slot: u64,
    /// The bound socket.
    pub id: SocketId,
    /// The next message to send.
    next: u64,
    /// The fates of messages `base..next`.
    base: u64,
    sent: VecDeque<Sent>,
    /// How many of them are pending, and the first that may be.
    pending: usize,
    first_pending: u64,
    /// The latest message echoed.
    latest: Option<u64>,
    round_trips: RoundTrips,
    /// The message whose bytes `outgoing` holds.
    filled: Option<u64>,
    outgoing: Vec<u8>,
    /// The last send would have blocked.
    blocked: bool,
    /// Nothing was sent from this socket yet.
    fresh: bool,
    interest: Interest,
}

/// Writes datagram `message` of slot `slot` into `out`, whose length is
/// the datagram's, at least [`HEADER`].
fn fill(slot: u64, message: u64, out: &mut [u8]) {
    let (header, pattern) = out.split_at_mut(HEADER);
    header.copy_from_slice(&message.to_le_bytes());
    pattern::fill(pattern::seed(slot, message), HEADER as u64, pattern);
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
            base: first,
            sent: VecDeque::new(),
            pending: 0,
            first_pending: first,
            latest: None,
            round_trips: RoundTrips::default(),
            filled: None,
            outgoing: vec![0; plan.size],
            blocked: false,
            fresh: true,
            interest: Interest::NONE,
        })
    }

    /// Sends what is due, takes in echoes, and gives up on datagrams past
    /// the loss timeout.
    pub(super) fn drive<N: Network>(
        &mut self,
        net: &mut N,
        turn: &mut Turn<'_>,
    ) -> io::Result<Outcome> {
        self.settle(turn);
        let mut outcome = Outcome::default();
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

    /// The loss timeout: `--loss-timeout`, or what the round trips set.
    fn loss_timeout(&self, plan: &Plan) -> Duration {
        plan.loss_timeout
            .unwrap_or_else(|| self.round_trips.loss_timeout())
    }

    /// Counts the datagrams past the loss timeout as lost, and forgets
    /// settled ones older than the memory.
    fn settle(&mut self, turn: &mut Turn<'_>) {
        let timeout = self.loss_timeout(turn.plan);
        while let Some(sent) = self.fate_mut(self.first_pending) {
            if sent.fate == Fate::Pending {
                if turn.now.saturating_sub(sent.at) < timeout {
                    break;
                }
                sent.fate = Fate::Lost;
                self.pending -= 1;
                turn.record.lost(1);
            }
            self.first_pending += 1;
        }
        let memory = MEMORY.max(2 * timeout);
        while self.base < self.first_pending
            && self
                .sent
                .front()
                .is_some_and(|sent| turn.now.saturating_sub(sent.at) > memory)
        {
            self.sent.pop_front();
            self.base += 1;
        }
    }

    fn fate_mut(&mut self, message: u64) -> Option<&mut Sent> {
        let index = usize::try_from(message.checked_sub(self.base)?).ok()?;
        self.sent.get_mut(index)
    }

    fn due(&self, turn: &Turn<'_>) -> bool {
        match turn.pacing.due_at(self.slot, self.next) {
            Some(due) => due <= turn.now && self.pending < turn.plan.pipeline,
            None => self.pending == 0,
        }
    }

    /// Sends the next datagram if it is due: `true` if it went.
    fn send<N: Network>(&mut self, net: &mut N, turn: &mut Turn<'_>) -> io::Result<bool> {
        if !self.due(turn) {
            return Ok(false);
        }
        if self.filled != Some(self.next) {
            fill(self.slot, self.next, &mut self.outgoing);
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
        self.sent.push_back(Sent {
            at: now,
            fate: Fate::Pending,
        });
        self.pending += 1;
        self.next += 1;
        Ok(true)
    }

    /// Takes one datagram in and counts what it is: `true` if one came.
    fn receive<N: Network>(&mut self, net: &mut N, turn: &mut Turn<'_>) -> io::Result<bool> {
        let (len, from) = match net.recv_from(self.id, turn.incoming) {
            Ok(received) => received,
            Err(err) if would_block(&err) => return Ok(false),
            Err(err) => return Err(err),
        };
        if from != turn.plan.addr {
            return Ok(true);
        }
        let (message, corrupt) = match self.identify(&turn.incoming[..len], turn.expected) {
            Echo::Intact(message) => (Some(message), None),
            Echo::Corrupt(corrupt) => (corrupt.message, Some(corrupt)),
        };
        if let Some(corrupt) = corrupt {
            turn.record.corrupted(corrupt);
        }
        let Some(message) = message else {
            return Ok(true);
        };
        let Some(sent) = self.fate_mut(message).copied() else {
            if corrupt.is_none() {
                turn.record.late_echo();
            }
            return Ok(true);
        };
        match (sent.fate, corrupt) {
            (Fate::Pending, _) => {}
            (_, Some(_)) => return Ok(true),
            (Fate::Echoed, None) => {
                turn.record.duplicate();
                return Ok(true);
            }
            (Fate::Lost, None) => {
                turn.record.late_echo();
                return Ok(true);
            }
        }
        // The first echo of a datagram awaited.
        if let Some(sent) = self.fate_mut(message) {
            sent.fate = Fate::Echoed;
        }
        self.pending -= 1;
        if self.latest.is_some_and(|latest| latest > message) {
            turn.record.reordered();
        }
        self.latest = self.latest.max(Some(message));
        if corrupt.is_some() {
            return Ok(true);
        }
        let now = turn.time();
        // The next send, if it follows at once, happened now too.
        turn.stamp = Some(now);
        let rtt = now.saturating_sub(sent.at);
        let corrected = (turn.pacing.due_at(self.slot, message)).map(|due| now.saturating_sub(due));
        turn.record.echo(corrected, rtt);
        turn.record.bytes(len as u64);
        let jitter = self.round_trips.measured(rtt);
        turn.record.jitter(jitter);
        Ok(true)
    }

    /// Which datagram `echo` repeats, and whether intact: the one its
    /// header names if every byte matches; else, corrupt, the one of those
    /// it may be (named, or awaited) that most of its bytes match.
    fn identify(&self, echo: &[u8], expected: &mut [u8]) -> Echo {
        let size = self.outgoing.len();
        let expected = &mut expected[..size];
        let named = echo
            .get(..HEADER)
            .and_then(|header| header.try_into().ok())
            .map(u64::from_le_bytes)
            .filter(|&message| message < self.next);
        if let Some(message) = named {
            fill(self.slot, message, expected);
            if echo == expected {
                return Echo::Intact(message);
            }
        }
        let awaited = (self.first_pending..self.next).filter(|&message| {
            self.sent
                .get((message - self.base) as usize)
                .is_some_and(|sent| sent.fate == Fate::Pending)
        });
        let mut best: Option<(u64, usize)> = None;
        for message in named.into_iter().chain(awaited) {
            fill(self.slot, message, expected);
            let agree = expected.iter().zip(echo).filter(|(a, b)| a == b).count();
            if best.is_none_or(|(_, most)| agree > most) {
                best = Some((message, agree));
            }
        }
        let message = best
            .filter(|&(_, agree)| 2 * agree > size.max(echo.len()))
            .map(|(message, _)| message);
        let offset = match message {
            Some(message) => {
                fill(self.slot, message, expected);
                pattern::matching_prefix(expected, echo)
            }
            None => 0,
        };
        Echo::Corrupt(CorruptEcho {
            connection: self.slot,
            message,
            offset: offset as u64,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn jitter_follows_rfc_3550() {
        let mut round_trips = RoundTrips::default();
        assert_eq!(round_trips.measured(ms(300)), 0.0, "no difference yet");
        // |D| = 16 ms: J = 0 + (16 - 0) / 16 = 1 ms, then + (0 - 1) / 16.
        assert_eq!(round_trips.measured(ms(316)), 1e6);
        assert_eq!(round_trips.measured(ms(316)), 1e6 - 1e6 / 16.0);
    }

    #[test]
    fn the_loss_timeout_follows_the_round_trips_within_its_bounds() {
        let mut round_trips = RoundTrips::default();
        assert_eq!(round_trips.loss_timeout(), FIRST_TIMEOUT);
        // 300 ms, variation 150 ms: 2 × 300 + 4 × 150.
        round_trips.measured(ms(300));
        assert_eq!(round_trips.loss_timeout(), ms(1200));
        for _ in 0..100 {
            round_trips.measured(ms(300));
        }
        let steady = round_trips.loss_timeout();
        assert!((ms(600)..ms(610)).contains(&steady), "{steady:?}");
        let mut fast = RoundTrips::default();
        fast.measured(Duration::from_micros(50));
        assert_eq!(fast.loss_timeout(), FLOOR);
        let mut slow = RoundTrips::default();
        slow.measured(Duration::from_secs(30));
        assert_eq!(slow.loss_timeout(), CEILING);
    }

    #[test]
    fn a_datagram_is_its_sequence_number_then_its_pattern() {
        let mut datagram = [0; 20];
        fill(3, 0x0102, &mut datagram);
        assert_eq!(datagram[..HEADER], 0x0102u64.to_le_bytes());
        let mut pattern = [0; 12];
        pattern::fill(pattern::seed(3, 0x0102), 8, &mut pattern);
        assert_eq!(datagram[HEADER..], pattern);
    }
}
