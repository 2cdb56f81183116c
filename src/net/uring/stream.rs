//! One TCP connection's buffers: what was received and not read yet (in
//! ring buffers, or spilled out of them), and the bounded buffer of what
//! was written and not sent yet.

use super::bufring::BufRing;
use socket2::SockAddr;
use std::collections::VecDeque;
use std::io;

/// Unread bytes a connection holds at most: its receive is armed with a
/// limit of what is left to that, so that a caller that stops reading
/// stops the peer as the kernel's window would.
pub(super) const RECV_CAP: usize = 64 * 1024;
/// Written bytes not yet sent that a connection may hold (the engine's
/// per-connection bound): writes report `WouldBlock` past it.
pub(super) const SEND_CAP: usize = 64 * 1024;

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
    /// Ring buffers received and not read: (buffer id, length), oldest
    /// first; the first `front_read` bytes of the first one are read.
    buffers: VecDeque<(u16, usize)>,
    front_read: usize,
    /// Unread bytes moved out of the ring by [`Stream::spill`]; older
    /// than those in `buffers`. `spilled[spilled_read..]` is unread.
    spilled: Vec<u8>,
    spilled_read: usize,
    /// Unread bytes in all.
    unread: usize,
    /// The peer closed its side: reads end after the unread bytes.
    pub(super) ended: bool,
    /// The connection failed with this `errno` (the connect, a receive or
    /// a send); every later operation reports it, reads after the data.
    pub(super) failed: Option<i32>,
    /// Written bytes, `out[out_start..]` not yet sent; allocated (with
    /// room for [`SEND_CAP`] bytes, never more) while not empty.
    out: Vec<u8>,
    out_start: usize,
    /// Bytes from `out_start` that a send in flight reads; 0 when none.
    sending: usize,
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
            buffers: VecDeque::new(),
            front_read: 0,
            spilled: Vec::new(),
            spilled_read: 0,
            unread: 0,
            ended: false,
            failed: None,
            out: Vec::new(),
            out_start: 0,
            sending: 0,
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
        self.failed.is_some() || self.up() && (self.unread > 0 || self.ended)
    }

    /// A write would not report `WouldBlock`.
    pub(super) fn writable(&self) -> bool {
        self.failed.is_some() || self.up() && self.room() > 0
    }

    /// Whether a receive should be armed now: none is, the connection is
    /// up and open, and the caller has read enough.
    pub(super) fn wants_receive(&self) -> bool {
        self.receiving == Receiving::Off
            && self.up()
            && !self.ended
            && self.failed.is_none()
            && self.unread <= RECV_CAP / 2
    }

    /// The most a receive armed now may take: what is left to
    /// [`RECV_CAP`].
    pub(super) fn receive_limit(&self) -> u32 {
        (RECV_CAP - self.unread.min(RECV_CAP)) as u32
    }

    /// Takes ring buffer `id`, filled with `len` bytes by a receive.
    /// Returns whether it is the only ring buffer the stream holds.
    pub(super) fn received(&mut self, id: u16, len: usize) -> bool {
        self.buffers.push_back((id, len));
        self.unread += len;
        self.buffers.len() == 1
    }

    /// Reads the oldest unread bytes into `buf`, handing consumed ring
    /// buffers back to `ring`; then the end of the stream or the failure.
    pub(super) fn read(&mut self, buf: &mut [u8], ring: &mut BufRing) -> io::Result<usize> {
        if !self.up() {
            return Err(self
                .error()
                .unwrap_or_else(|| io::ErrorKind::WouldBlock.into()));
        }
        let mut read = 0;
        if self.spilled_read < self.spilled.len() {
            let spilled = &self.spilled[self.spilled_read..];
            let n = spilled.len().min(buf.len());
            buf[..n].copy_from_slice(&spilled[..n]);
            self.spilled_read += n;
            read = n;
            if self.spilled_read == self.spilled.len() {
                self.spilled = Vec::new();
                self.spilled_read = 0;
            }
        }
        while read < buf.len() {
            let Some(&(id, len)) = self.buffers.front() else {
                break;
            };
            // SAFETY: buffer `id` came with a reaped completion of `len`
            // bytes and has not been provided back since: it is out of
            // the ring, so the kernel does not write it.
            let data = unsafe { ring.data(id, len) };
            let data = &data[self.front_read..];
            let n = data.len().min(buf.len() - read);
            buf[read..read + n].copy_from_slice(&data[..n]);
            read += n;
            self.front_read += n;
            if self.front_read == len {
                self.buffers.pop_front();
                self.front_read = 0;
                ring.provide(id);
            }
        }
        self.unread -= read;
        if read > 0 || buf.is_empty() {
            return Ok(read);
        }
        match (self.error(), self.ended) {
            (Some(err), _) => Err(err),
            (None, true) => Ok(0),
            (None, false) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Moves the unread bytes out of ring buffers into memory of the
    /// stream's own and hands the buffers back, so that a caller slow to
    /// read cannot starve the other connections of buffers.
    pub(super) fn spill(&mut self, ring: &mut BufRing) {
        if self.buffers.is_empty() {
            return;
        }
        self.spilled.drain(..self.spilled_read);
        self.spilled_read = 0;
        for (id, len) in self.buffers.drain(..) {
            // SAFETY: as in `read`: out of the ring until provided below.
            let data = unsafe { ring.data(id, len) };
            self.spilled.extend_from_slice(&data[self.front_read..]);
            self.front_read = 0;
            ring.provide(id);
        }
    }

    /// Hands every unread ring buffer back (the stream is closed).
    pub(super) fn release(&mut self, ring: &mut BufRing) {
        for (id, _) in self.buffers.drain(..) {
            ring.provide(id);
        }
        self.spilled = Vec::new();
        self.unread = 0;
    }

    /// Bytes a write could take now.
    fn room(&self) -> usize {
        match self.sending {
            // Nothing in flight: the pending bytes can move to the front.
            0 => SEND_CAP - (self.out.len() - self.out_start),
            // A send reads the buffer: append only.
            _ => SEND_CAP - self.out.len(),
        }
    }

    /// Takes a prefix of `data` into the output buffer.
    pub(super) fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(err) = self.error() {
            return Err(err);
        }
        if !self.up() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.shut {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        let n = data.len().min(self.room());
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.out.capacity() == 0 {
            self.out = Vec::with_capacity(SEND_CAP);
        }
        if self.sending == 0 && self.out_start > 0 {
            // No send reads the buffer: move the unsent bytes to its front.
            self.out.drain(..self.out_start);
            self.out_start = 0;
        }
        // Within the capacity, so the buffer does not move; a send in
        // flight reads only bytes before the old length.
        self.out.extend_from_slice(&data[..n]);
        Ok(n)
    }

    /// The bytes the next send should take, when none is in flight and
    /// some are unsent; they are then in flight until [`Stream::sent`].
    ///
    /// The pointer stays valid, and the bytes unchanged, until then: the
    /// buffer is not freed, moved or written there while a send is in
    /// flight, and the stream is dropped only once no operation is.
    pub(super) fn next_send(&mut self) -> Option<(*const u8, u32)> {
        if self.sending > 0 || self.out_start == self.out.len() || self.failed.is_some() {
            return None;
        }
        self.sending = self.out.len() - self.out_start;
        let len = u32::try_from(self.sending).unwrap_or(u32::MAX);
        Some((self.out[self.out_start..].as_ptr(), len))
    }

    /// The send in flight completed with `result` (bytes sent, or
    /// `-errno`).
    pub(super) fn sent(&mut self, result: i32) {
        self.sending = 0;
        match usize::try_from(result) {
            Ok(sent) => self.out_start += sent,
            Err(_) => {
                if result != -libc::ECANCELED {
                    self.failed.get_or_insert(-result);
                }
                self.out_start = self.out.len();
            }
        }
        if self.out_start == self.out.len() {
            // Idle connections hold no output buffer.
            self.out = Vec::new();
            self.out_start = 0;
        }
    }

    /// Every byte written was handed to the kernel.
    pub(super) fn drained(&self) -> bool {
        self.sending == 0 && self.out_start == self.out.len()
    }

    /// The stream's errors for [`Network::shutdown_write`]: `WouldBlock`
    /// while connecting or sending, the failure once failed.
    ///
    /// [`Network::shutdown_write`]: crate::net::Network::shutdown_write
    pub(super) fn may_shut_down(&self) -> io::Result<()> {
        match self.error() {
            Some(err) => Err(err),
            None if !self.up() || !self.drained() => Err(io::ErrorKind::WouldBlock.into()),
            None => Ok(()),
        }
    }

    /// Memory of its own the stream holds for its data (besides ring
    /// buffers): spilled bytes and the output buffer.
    pub(super) fn held_bytes(&self) -> usize {
        self.spilled.capacity() + self.out.capacity()
    }
}
