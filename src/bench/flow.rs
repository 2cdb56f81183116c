//! One benchmark connection slot and its traffic.

use super::{Mode, Plan};
use crate::net::{
    any_local, explain, try_read, try_write, would_block, Bind, Interest, Network, SocketId,
};
use crate::pattern;
use std::io;
use std::time::Duration;

/// Reads and writes one flow may do per turn before yielding to the others.
const STEPS_PER_TURN: usize = 16;
/// Write size in stream mode when `--size` is larger.
const STREAM_CHUNK: usize = 64 * 1024;
/// How long a UDP flow waits for an echo before counting the datagram lost.
pub(super) const LOSS_TIMEOUT: Duration = Duration::from_millis(200);
/// How many earlier messages a stray UDP echo is compared with.
const LATE_WINDOW: u64 = 8;

/// What a flow's turn produced.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Echoes completed this turn, with their latencies.
    pub latencies: Vec<Duration>,
    /// Echoed bytes verified this turn.
    pub bytes: u64,
    /// Datagrams given up on this turn (UDP).
    pub lost: u64,
    /// The turn ended with work left; drive the flow again soon.
    pub yielded: bool,
    /// The flow closed its connection and wants a new one (connect mode).
    pub reconnect: bool,
}

/// An echoed byte was not the one sent.
#[derive(Debug)]
pub(super) struct Corruption {
    /// Connection slot.
    pub slot: u64,
    /// Message number within the slot (0 in stream mode).
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

/// One connection slot: its socket and where its traffic stands.
pub(super) struct Flow {
    slot: u64,
    /// The open connection.
    pub id: SocketId,
    message: u64,
    seed: u64,
    /// Bytes of the current message (or stream) written and echoed.
    sent: u64,
    received: u64,
    started: Duration,
    /// Bytes to send: the current message, or the stream chunk that starts
    /// at `outgoing_offset`.
    outgoing: Vec<u8>,
    outgoing_offset: u64,
    interest: Interest,
}

impl Flow {
    /// Connects slot `slot` (or binds its UDP socket) and prepares its
    /// first message.
    pub(super) fn open<N: Network>(
        net: &mut N,
        plan: &Plan,
        slot: u64,
        message: u64,
        now: Duration,
    ) -> io::Result<Self> {
        let id = match plan.udp {
            true => net.bind_udp(any_local(plan.addr), Bind::default())?,
            false => net
                .connect(plan.addr, None)
                .map_err(|err| explain(err, plan.addr))?,
        };
        let len = match plan.mode {
            Mode::Stream => plan.size.min(STREAM_CHUNK),
            Mode::Pingpong | Mode::Connect => plan.size,
        };
        let mut flow = Flow {
            slot,
            id,
            message,
            seed: 0,
            sent: 0,
            received: 0,
            started: now,
            outgoing: vec![0; len],
            outgoing_offset: 0,
            interest: Interest::NONE,
        };
        flow.start_message(now);
        Ok(flow)
    }

    fn start_message(&mut self, now: Duration) {
        self.seed = pattern::seed(self.slot, self.message);
        self.sent = 0;
        self.received = 0;
        self.outgoing_offset = 0;
        self.started = now;
        pattern::fill(self.seed, 0, &mut self.outgoing);
    }

    /// Moves bytes until the socket would block or the turn is used up,
    /// checking every echoed byte. `incoming` and `expected` are scratch
    /// buffers of equal length.
    pub(super) fn drive<N: Network>(
        &mut self,
        net: &mut N,
        plan: &Plan,
        now: Duration,
        incoming: &mut [u8],
        expected: &mut [u8],
    ) -> Result<Outcome, FlowError> {
        if plan.udp {
            return self.drive_datagrams(net, plan, now, incoming, expected);
        }
        let mut outcome = Outcome::default();
        let message_len = self.outgoing.len() as u64;
        let streaming = plan.mode == Mode::Stream;
        for _ in 0..STEPS_PER_TURN {
            let mut progressed = false;
            if streaming && self.sent == self.outgoing_offset + message_len {
                self.outgoing_offset = self.sent;
                pattern::fill(self.seed, self.sent, &mut self.outgoing);
            }
            let unsent = (self.sent - self.outgoing_offset) as usize;
            if unsent < self.outgoing.len() {
                let n = try_write(net, self.id, &self.outgoing[unsent..])?;
                self.sent += n as u64;
                progressed |= n > 0;
            }
            let wanted = match streaming {
                true => incoming.len(),
                false => incoming.len().min((message_len - self.received) as usize),
            };
            if let Some(n) = try_read(net, self.id, &mut incoming[..wanted])? {
                if n == 0 {
                    return Err(FlowError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    )));
                }
                if !pattern::matches(self.seed, self.received, &incoming[..n], expected) {
                    return Err(FlowError::Corrupt(Corruption {
                        slot: self.slot,
                        message: self.message,
                        offset: self.received,
                    }));
                }
                self.received += n as u64;
                outcome.bytes += n as u64;
                progressed = true;
            }
            if !streaming && self.received == message_len {
                outcome.latencies.push(now.saturating_sub(self.started));
                self.message += 1;
                if plan.mode == Mode::Connect {
                    outcome.reconnect = true;
                    return Ok(outcome);
                }
                self.start_message(now);
                continue;
            }
            if !progressed {
                self.want(net, streaming || self.sent < message_len);
                return Ok(outcome);
            }
        }
        outcome.yielded = true;
        Ok(outcome)
    }

    /// UDP pingpong: one datagram in flight, given up after
    /// [`LOSS_TIMEOUT`]; late echoes of earlier datagrams are ignored.
    fn drive_datagrams<N: Network>(
        &mut self,
        net: &mut N,
        plan: &Plan,
        now: Duration,
        incoming: &mut [u8],
        expected: &mut [u8],
    ) -> Result<Outcome, FlowError> {
        let mut outcome = Outcome::default();
        for _ in 0..STEPS_PER_TURN {
            if self.sent == 0 {
                match net.send_to(self.id, &self.outgoing, plan.addr) {
                    Ok(()) => self.sent = self.outgoing.len() as u64,
                    Err(err) if would_block(&err) => {
                        self.want(net, true);
                        return Ok(outcome);
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            let (len, from) = match net.recv_from(self.id, incoming) {
                Ok(received) => received,
                Err(err) if would_block(&err) => {
                    if now.saturating_sub(self.started) >= LOSS_TIMEOUT {
                        outcome.lost += 1;
                        self.message += 1;
                        self.start_message(now);
                        continue;
                    }
                    self.want(net, false);
                    return Ok(outcome);
                }
                Err(err) => return Err(err.into()),
            };
            let echo = &incoming[..len];
            if from != plan.addr {
                continue;
            }
            if echo == &self.outgoing[..] {
                outcome.latencies.push(now.saturating_sub(self.started));
                outcome.bytes += len as u64;
                self.message += 1;
                self.start_message(now);
                continue;
            }
            let late = (self.message.saturating_sub(LATE_WINDOW)..self.message).any(|earlier| {
                len == self.outgoing.len()
                    && pattern::matches(pattern::seed(self.slot, earlier), 0, echo, expected)
            });
            if !late {
                return Err(FlowError::Corrupt(Corruption {
                    slot: self.slot,
                    message: self.message,
                    offset: 0,
                }));
            }
        }
        outcome.yielded = true;
        Ok(outcome)
    }

    fn want<N: Network>(&mut self, net: &mut N, write: bool) {
        let interest = Interest { read: true, write };
        if interest != self.interest {
            net.set_interest(self.id, interest);
            self.interest = interest;
        }
    }

    /// The connection slot this flow fills.
    pub(super) fn slot(&self) -> u64 {
        self.slot
    }

    /// The next message number of this slot.
    pub(super) fn next_message(&self) -> u64 {
        self.message
    }
}
