//! One TCP benchmark connection and its traffic: pingpong (closed loop,
//! or open loop with several messages in flight), stream and connect.
//!
//! A connection's bytes are its messages back to back, each a pattern of
//! its own (`pattern::seed(slot, message)`), so the echo of any byte says
//! which message and offset it belongs to, and every byte is checked.

use super::record::Recorder;
use super::schedule::Spread;
use super::{Mode, Plan};
use crate::clock::Clock;
use crate::net::{explain, try_read, try_write, Interest, Network, SocketId};
use crate::pattern;
use crate::proxy::Outgoing;
use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

/// Reads and writes one flow may do per turn before yielding to the others.
pub(super) const STEPS_PER_TURN: usize = 16;
/// Write size in stream mode when `--size` is larger.
const STREAM_CHUNK: usize = 64 * 1024;

/// What a flow's turn produced.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// The turn ended with work left; drive the flow again soon.
    pub yielded: bool,
    /// Connect mode: the connection's one message is echoed.
    pub done: bool,
    /// The flow sent its first byte this turn: its connection is up.
    pub first_write: bool,
}

/// An echoed byte was not the one sent.
#[derive(Debug)]
pub(super) struct Corruption {
    /// Connection slot.
    pub slot: u64,
    /// Message number within the slot (the first one in stream mode).
    pub message: u64,
    /// Offset within the message or stream of the first chunk that differed.
    pub offset: u64,
}

/// Why a flow's turn ended its run.
#[derive(Debug)]
pub(super) enum FlowError {
    /// The connection failed.
    Io(io::Error),
    /// An echoed byte was wrong.
    Corrupt(Corruption),
}

impl From<io::Error> for FlowError {
    fn from(err: io::Error) -> Self {
        FlowError::Io(err)
    }
}

/// When messages are sent.
#[derive(Clone, Copy, Debug)]
pub(super) enum Pacing {
    /// The next message once the last one is echoed.
    Closed,
    /// On the schedule, whatever the echoes do.
    Open(Spread),
}

impl Pacing {
    /// When message `message` of slot `slot` is due, in open loop.
    pub(super) fn due_at(self, slot: u64, message: u64) -> Option<Duration> {
        match self {
            Pacing::Closed => None,
            Pacing::Open(spread) => Some(spread.at(slot, message)),
        }
    }
}

/// Wakes for reading, and for writing if `write`, on `id`, whose interest
/// so far is `current`.
pub(super) fn want<N: Network>(net: &mut N, id: SocketId, current: &mut Interest, write: bool) {
    let interest = Interest { read: true, write };
    if interest != *current {
        net.set_interest(id, interest);
        *current = interest;
    }
}

/// What a flow's turn needs besides the flow.
pub(super) struct Turn<'a> {
    /// The time of this turn, which says what is due.
    pub now: Duration,
    /// The clock, read for each write and echo that latencies time.
    pub clock: &'a dyn Clock,
    /// The clock's reading at the echo just completed, which times a
    /// write that follows at once.
    pub stamp: Option<Duration>,
    /// The flow wrote in this turn, so an echo may come back within it.
    pub wrote: bool,
    /// The run.
    pub plan: &'a Plan,
    /// How messages are paced.
    pub pacing: Pacing,
    /// Scratch buffers of equal length shared by all flows.
    pub incoming: &'a mut [u8],
    /// See `incoming`.
    pub expected: &'a mut [u8],
    /// Where the figures go.
    pub record: &'a mut Recorder,
}

impl Turn<'_> {
    /// The time of an echo or a write now: the clock's in open loop, where
    /// each message has a time to keep, and once the flow has written in
    /// this turn (its echo may be back before the turn ends); else the
    /// turn's, which spares closed loop a clock read per message.
    pub(super) fn time(&self) -> Duration {
        match (self.pacing, self.wrote) {
            (Pacing::Closed, false) => self.now,
            _ => self.clock.now(),
        }
    }
}

/// A connect-mode connection's start: its latency runs from the connect
/// (uncorrected) and, in open loop, from when the connect was due.
#[derive(Clone, Copy, Debug)]
pub(super) struct Origin {
    /// When the connect was made.
    pub opened: Duration,
    /// Open loop: when it was due.
    pub scheduled: Option<Duration>,
}

/// A place in a connection's messages.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    message: u64,
    offset: u64,
}

impl Cursor {
    /// Moves `n` bytes on in a message of `size` bytes: whether that ended
    /// the message (the cursor is then at the next one's start).
    fn advance(&mut self, n: u64, size: u64) -> bool {
        self.offset += n;
        let ended = self.offset == size;
        if ended {
            self.message += 1;
            self.offset = 0;
        }
        ended
    }
}

/// One TCP connection slot: its socket and where its traffic stands.
pub(super) struct Flow {
    slot: u64,
    /// The open connection.
    pub id: SocketId,
    /// The message that byte 0 of this connection begins.
    first: u64,
    /// Bytes written, and bytes echoed and verified.
    sent: u64,
    received: u64,
    /// The message being written and how much of it is out, and the one
    /// being echoed and how much of it is back (pingpong and connect).
    writing: Cursor,
    reading: Cursor,
    /// When each message in flight (written, wholly or in part, and not
    /// echoed) began to be written, oldest first.
    writes: VecDeque<Duration>,
    /// The message (stream mode: the stream offset) whose bytes
    /// `outgoing` holds.
    filled: Option<u64>,
    outgoing: Vec<u8>,
    interest: Interest,
    /// Connect mode: the connection carries one message.
    origin: Option<Origin>,
    streaming: bool,
    /// A PROXY protocol header still to send before any message.
    header: Option<Outgoing>,
}

impl Flow {
    /// Connects slot `slot`, from `local` when given, starting at message
    /// `first`; connect mode passes the connection's `origin`.
    pub(super) fn open<N: Network>(
        net: &mut N,
        plan: &Plan,
        slot: u64,
        first: u64,
        local: Option<IpAddr>,
        origin: Option<Origin>,
    ) -> io::Result<Self> {
        let id = net
            .connect(plan.addr, local)
            .map_err(|err| explain(err, plan.addr))?;
        let streaming = plan.mode == Mode::Stream;
        let len = match streaming {
            true => plan.size.min(STREAM_CHUNK),
            false => plan.size,
        };
        Ok(Flow {
            slot,
            id,
            first,
            sent: 0,
            received: 0,
            writing: Cursor {
                message: first,
                offset: 0,
            },
            reading: Cursor {
                message: first,
                offset: 0,
            },
            writes: VecDeque::new(),
            filled: None,
            outgoing: vec![0; len],
            interest: Interest::NONE,
            origin,
            streaming,
            header: plan.proxy.map(Outgoing::new),
        })
    }

    /// Moves bytes until the socket would block or the turn is used up,
    /// checking every echoed byte.
    pub(super) fn drive<N: Network>(
        &mut self,
        net: &mut N,
        turn: &mut Turn<'_>,
    ) -> Result<Outcome, FlowError> {
        let mut outcome = Outcome::default();
        for _ in 0..STEPS_PER_TURN {
            let fresh = self.sent == 0;
            let wrote = match (self.send_header(net, turn)?, self.streaming) {
                (false, _) => false,
                (true, true) => self.write_stream(net)?,
                (true, false) => self.write_message(net, turn)?,
            };
            turn.stamp = None;
            outcome.first_write |= wrote && fresh;
            let read = self.read(net, turn, &mut outcome)?;
            if outcome.done {
                return Ok(outcome);
            }
            if !wrote && !read {
                let write = self.wants_write(turn);
                want(net, self.id, &mut self.interest, write);
                return Ok(outcome);
            }
        }
        outcome.yielded = true;
        Ok(outcome)
    }

    /// Writes what is due of the current message: `true` if bytes went.
    fn write_message<N: Network>(&mut self, net: &mut N, turn: &mut Turn<'_>) -> io::Result<bool> {
        let Cursor { message, offset } = self.writing;
        if offset == 0 {
            if !self.due(message, turn) {
                return Ok(false);
            }
            if self.filled != Some(message) {
                pattern::fill(pattern::seed(self.slot, message), 0, &mut self.outgoing);
                self.filled = Some(message);
            }
        }
        let n = try_write(net, self.id, &self.outgoing[offset as usize..])?;
        if n > 0 && offset == 0 {
            let now = turn.stamp.unwrap_or_else(|| turn.time());
            self.writes.push_back(now);
            // Connect mode counts its sends when it connects.
            if self.origin.is_none() {
                let due = turn.pacing.due_at(self.slot, message);
                turn.record.sent(due.map(|due| now.saturating_sub(due)));
            }
        }
        turn.wrote |= n > 0;
        self.sent += n as u64;
        self.writing.advance(n as u64, self.outgoing.len() as u64);
        Ok(n > 0)
    }

    /// Writes what the socket takes of the PROXY header, if there is one
    /// to send: whether messages may follow.
    fn send_header<N: Network>(&mut self, net: &mut N, turn: &Turn<'_>) -> io::Result<bool> {
        let Some(header) = &mut self.header else {
            return Ok(true);
        };
        if !header.send(net, self.id, turn.plan.addr)? {
            return Ok(false);
        }
        self.header = None;
        Ok(true)
    }

    /// Whether message `message`, not yet begun, may be written now.
    fn due(&self, message: u64, turn: &Turn<'_>) -> bool {
        if self.origin.is_some() {
            return self.sent == 0;
        }
        match turn.pacing.due_at(self.slot, message) {
            Some(due) => due <= turn.now && self.writes.len() < turn.plan.pipeline,
            None => self.received == self.sent,
        }
    }

    /// Stream mode: writes the stream on, a chunk at a time.
    fn write_stream<N: Network>(&mut self, net: &mut N) -> io::Result<bool> {
        let len = self.outgoing.len() as u64;
        let chunk = self.sent - self.sent % len;
        if self.filled != Some(chunk) {
            let seed = pattern::seed(self.slot, self.first);
            pattern::fill(seed, chunk, &mut self.outgoing);
            self.filled = Some(chunk);
        }
        let n = try_write(net, self.id, &self.outgoing[(self.sent - chunk) as usize..])?;
        self.sent += n as u64;
        Ok(n > 0)
    }

    /// Reads what the server echoed, at most what was written, and checks
    /// it: `true` if bytes came.
    fn read<N: Network>(
        &mut self,
        net: &mut N,
        turn: &mut Turn<'_>,
        outcome: &mut Outcome,
    ) -> Result<bool, FlowError> {
        let outstanding = self.sent - self.received;
        if outstanding == 0 {
            return Ok(false);
        }
        let wanted = turn.incoming.len().min(outstanding as usize);
        let Some(n) = try_read(net, self.id, &mut turn.incoming[..wanted])? else {
            return Ok(false);
        };
        if n == 0 {
            return Err(FlowError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        turn.record.bytes(n as u64);
        if self.streaming {
            let seed = pattern::seed(self.slot, self.first);
            self.check_at(seed, self.first, self.received, 0..n, turn)?;
            self.received += n as u64;
            return Ok(true);
        }
        let size = self.outgoing.len() as u64;
        let mut pos = 0;
        while pos < n {
            let Cursor { message, offset } = self.reading;
            let take = (n - pos).min((size - offset) as usize);
            let seed = pattern::seed(self.slot, message);
            self.check_at(seed, message, offset, pos..pos + take, turn)?;
            pos += take;
            if self.reading.advance(take as u64, size) {
                self.echoed(message, turn);
                outcome.done = self.origin.is_some();
            }
        }
        self.received += n as u64;
        Ok(true)
    }

    /// Checks `incoming[range]` against the pattern `seed` at `offset`.
    fn check_at(
        &self,
        seed: u64,
        message: u64,
        offset: u64,
        range: std::ops::Range<usize>,
        turn: &mut Turn<'_>,
    ) -> Result<(), FlowError> {
        match pattern::matches(seed, offset, &turn.incoming[range], turn.expected) {
            true => Ok(()),
            false => Err(FlowError::Corrupt(Corruption {
                slot: self.slot,
                message,
                offset,
            })),
        }
    }

    /// Message `message` is echoed whole: its latencies.
    fn echoed(&mut self, message: u64, turn: &mut Turn<'_>) {
        let now = turn.time();
        // The next write, if it follows at once, happened now too.
        turn.stamp = Some(now);
        let written = self.writes.pop_front().unwrap_or(now);
        let (uncorrected, due) = match self.origin {
            Some(origin) => (now.saturating_sub(origin.opened), origin.scheduled),
            None => (
                now.saturating_sub(written),
                turn.pacing.due_at(self.slot, message),
            ),
        };
        let corrected = due.map(|due| now.saturating_sub(due));
        turn.record.echo(corrected, uncorrected);
    }

    /// Whether the flow has bytes to write that the socket did not take.
    fn wants_write(&self, turn: &Turn<'_>) -> bool {
        if self.streaming || self.header.is_some() {
            return true;
        }
        self.writing.offset != 0 || self.due(self.writing.message, turn)
    }

    /// The connection slot this flow fills.
    pub(super) fn slot(&self) -> u64 {
        self.slot
    }

    /// Where a new connection for this slot starts: the first message not
    /// yet echoed whole (the same stream, in stream mode).
    pub(super) fn resume_at(&self) -> u64 {
        self.reading.message
    }
}
