//! One TCP connection's state besides its socket: the connect, the
//! receive, what was received and not read ([`Input`]) and what is to be
//! sent ([`Output`]).

use super::bufring::BufRing;
use super::input::Input;
use super::output::{Output, Send, Spares};
use crate::net::Spliced;
use socket2::SockAddr;
use std::io;

/// Unread bytes a connection holds at most: its receive is armed with a
/// limit of what is left to that, so that a caller that stops reading
/// stops the peer as the kernel's window would.
pub(super) const RECV_CAP: usize = 64 * 1024;

/// What the streams of one network share: the ring they receive into,
/// and the memory their sends reuse.
pub(super) struct StreamMemory {
    /// The provided-buffer ring of every stream's receive.
    pub(super) ring: BufRing,
    /// Buffers and messages kept for the next send.
    pub(super) spares: Spares,
}

/// Where a multishot receive stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Receiving {
    /// None in flight.
    Off,
    /// In flight, posting a completion per arrival.
    Armed,
    /// Asked to stop (datagrams); its last completion is still to come.
    Cancelling,
}

/// A connection's state besides its socket.
pub(super) struct Stream {
    /// The peer's address while a connect is in flight (the kernel reads
    /// it); `None` once the connect completed, or for accepted streams.
    pub(super) connecting: Option<Box<SockAddr>>,
    /// The multishot receive.
    pub(super) receiving: Receiving,
    input: Input,
    out: Output,
    /// The peer closed its side: reads end after the unread bytes.
    pub(super) ended: bool,
    /// The connection failed with this `errno` (the connect, a receive or
    /// a send); every later operation reports it, reads after the data.
    pub(super) failed: Option<i32>,
    /// The sending side was shut down.
    pub(super) shut: bool,
}

impl Stream {
    /// An accepted connection (`connecting` `None`) or one being
    /// connected to the address given.
    pub(super) fn new(connecting: Option<Box<SockAddr>>) -> Stream {
        Stream {
            connecting,
            receiving: Receiving::Off,
            input: Input::default(),
            out: Output::default(),
            ended: false,
            failed: None,
            shut: false,
        }
    }

    /// The handshake is done (or this side accepted the connection).
    pub(super) fn up(&self) -> bool {
        self.connecting.is_none()
    }

    fn error(&self) -> Option<io::Error> {
        self.failed.map(io::Error::from_raw_os_error)
    }

    /// A read would not report `WouldBlock`.
    pub(super) fn readable(&self) -> bool {
        self.failed.is_some() || self.up() && (self.input.unread() > 0 || self.ended)
    }

    /// A write would not report `WouldBlock`.
    pub(super) fn writable(&self) -> bool {
        self.failed.is_some() || self.up() && self.out.room() > 0
    }

    /// Whether a receive should be armed now: none is, the connection is
    /// up and open, and the caller has read enough.
    pub(super) fn wants_receive(&self) -> bool {
        self.receiving == Receiving::Off
            && self.up()
            && !self.ended
            && self.failed.is_none()
            && self.input.unread() <= RECV_CAP / 2
    }

    /// The most a receive armed now may take: what is left to
    /// [`RECV_CAP`].
    pub(super) fn receive_limit(&self) -> u32 {
        (RECV_CAP - self.input.unread().min(RECV_CAP)) as u32
    }

    /// Takes ring buffer `id`, filled with `len` bytes by a receive.
    /// Returns whether it is the only ring buffer the stream holds.
    pub(super) fn received(&mut self, id: u16, len: usize) -> bool {
        self.input.received(id, len)
    }

    /// Reads the oldest unread bytes into `buf`, handing consumed ring
    /// buffers back to `ring`; then the end of the stream or the failure.
    pub(super) fn read(&mut self, buf: &mut [u8], ring: &mut BufRing) -> io::Result<usize> {
        if !self.up() {
            return Err(self
                .error()
                .unwrap_or_else(|| io::ErrorKind::WouldBlock.into()));
        }
        let read = self.input.read(buf, ring);
        if read > 0 || buf.is_empty() {
            return Ok(read);
        }
        match self.at_end()? {
            true => Ok(0),
            false => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Once every unread byte is taken: whether the input has ended (or
    /// more may come), or the failure.
    fn at_end(&self) -> io::Result<bool> {
        match self.error() {
            Some(err) => Err(err),
            None => Ok(self.ended),
        }
    }

    /// Fails unless the stream may send: it failed, is connecting
    /// (`WouldBlock`), or was shut down (`EPIPE`).
    fn may_send(&self) -> io::Result<()> {
        match self.error() {
            Some(err) => Err(err),
            None if !self.up() => Err(io::ErrorKind::WouldBlock.into()),
            None if self.shut => Err(io::Error::from_raw_os_error(libc::EPIPE)),
            None => Ok(()),
        }
    }

    /// Takes a prefix of `data` into the output.
    pub(super) fn write(&mut self, data: &[u8], memory: &mut StreamMemory) -> io::Result<usize> {
        self.may_send()?;
        match self.out.write(data, &mut memory.ring, &mut memory.spares) {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    /// Moves up to `max` unread bytes to the output: whole ring buffers
    /// as they are where they fit, else a copy.
    pub(super) fn splice(&mut self, max: usize, memory: &mut StreamMemory) -> io::Result<Spliced> {
        self.may_send()?;
        if self.input.unread() == 0 {
            return match self.at_end()? {
                true => Ok(Spliced::InputEnded),
                false => Ok(Spliced::InputEmpty),
            };
        }
        let room = max.min(self.out.room());
        let (input, out) = (&mut self.input, &mut self.out);
        let mut moved = 0;
        if out.takes_buffers() {
            moved = input.take_buffers(room, |id, start, end| out.push_buffer(id, start, end));
        }
        if moved == 0 && !out.holds_buffers() {
            // Written or spilled bytes come first, or the oldest buffer
            // does not fit whole: copy what fits.
            let n = room.min(input.unread());
            let StreamMemory { ring, spares } = memory;
            moved = out.write_with(
                n,
                |buf| {
                    input.read(buf, ring);
                },
                spares,
            );
        }
        Ok(match moved {
            0 => Spliced::OutputFull,
            moved => Spliced::Bytes(moved),
        })
    }

    /// What the next send should take: see [`Output::next_send`].
    pub(super) fn next_send(&mut self, memory: &mut StreamMemory) -> Option<Send> {
        if self.failed.is_some() {
            return None;
        }
        self.out.next_send(&memory.ring, &mut memory.spares)
    }

    /// The send in flight completed with `result` (bytes sent, or
    /// `-errno`).
    pub(super) fn sent(&mut self, result: i32, memory: &mut StreamMemory) {
        if let Some(errno) = self.out.sent(result, &mut memory.ring, &mut memory.spares) {
            self.failed.get_or_insert(errno);
        }
    }

    /// Moves unread bytes out of the ring: see [`Input::spill`].
    pub(super) fn spill(&mut self, ring: &mut BufRing) {
        self.input.spill(ring);
    }

    /// Hands back every ring buffer that no operation reads (the stream
    /// is closed).
    pub(super) fn release(&mut self, memory: &mut StreamMemory) {
        self.input.release(&mut memory.ring);
        self.out.release(&mut memory.ring, &mut memory.spares);
    }

    /// The stream's errors for [`Network::shutdown_write`]: `WouldBlock`
    /// while connecting or sending, the failure once failed.
    ///
    /// [`Network::shutdown_write`]: crate::net::Network::shutdown_write
    pub(super) fn may_shut_down(&self) -> io::Result<()> {
        match self.error() {
            Some(err) => Err(err),
            None if !self.up() || !self.out.drained() => Err(io::ErrorKind::WouldBlock.into()),
            None => Ok(()),
        }
    }

    /// Memory of its own the stream holds for its data (besides ring
    /// buffers): spilled bytes and the written bytes' buffer.
    pub(super) fn held_bytes(&self) -> usize {
        self.input.held_bytes() + self.out.held_bytes()
    }
}
