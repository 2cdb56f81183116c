//! What a stream has to send, in order: ring buffers spliced from its own
//! input, sent as they are, or bytes the caller wrote, copied in.
//!
//! Spliced buffers go by one `send` (one buffer) or `sendmsg` (several)
//! with `MSG_DONTWAIT`, which the kernel finishes within the wait that
//! submits it. What the socket did
//! not take is then copied out and the buffers go back to the ring at
//! once, so that a peer that stops reading holds copies of its own, never
//! the buffers every connection receives into. Written bytes go by a
//! send that waits in the kernel for room. The output holds one or the
//! other, never both.

use super::bufring::BufRing;
use std::collections::VecDeque;

/// Unsent bytes a stream may hold (the engine's per-connection bound):
/// writes report `WouldBlock` and splices `OutputFull` past it.
pub(super) const SEND_CAP: usize = 64 * 1024;
/// Spliced buffers one send takes at most.
const BATCH: usize = 16;
/// Written-bytes buffers and send messages kept for reuse, at most.
const SPARE_BUFFERS: usize = 4;
const SPARE_BATCHES: usize = 256;

/// Bytes `start..end` of ring buffer `id`, to send.
#[derive(Clone, Copy, Debug)]
struct Slice {
    id: u16,
    start: u32,
    end: u32,
}

impl Slice {
    fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    /// The bytes.
    ///
    /// # Safety
    ///
    /// The buffer must be out of the ring (spliced and not provided back).
    unsafe fn data(self, ring: &BufRing) -> &[u8] {
        // SAFETY: the caller's promise; `end` is at most the length its
        // receive reported.
        let data = unsafe { ring.data(self.id, self.end as usize) };
        &data[self.start as usize..]
    }
}

/// The message of one send of spliced buffers, which the kernel reads
/// while the send is in flight.
pub(super) struct Batch {
    header: libc::msghdr,
    iovecs: [libc::iovec; BATCH],
}

impl Batch {
    fn new() -> Box<Batch> {
        // SAFETY: msghdr and iovec are plain data, for which all zeroes
        // (null pointers, zero lengths) is a valid value.
        Box::new(unsafe { std::mem::zeroed() })
    }
}

/// Memory the streams of one network reuse from send to send instead of
/// allocating it each time.
#[derive(Default)]
pub(super) struct Spares {
    buffers: Vec<Vec<u8>>,
    /// Boxed, so that a message keeps its address in flight.
    #[allow(clippy::vec_box)]
    batches: Vec<Box<Batch>>,
}

impl Spares {
    /// An empty buffer with room for [`SEND_CAP`] bytes.
    fn buffer(&mut self) -> Vec<u8> {
        (self.buffers.pop()).unwrap_or_else(|| Vec::with_capacity(SEND_CAP))
    }

    fn give_buffer(&mut self, mut buffer: Vec<u8>) {
        if self.buffers.len() < SPARE_BUFFERS && buffer.capacity() == SEND_CAP {
            buffer.clear();
            self.buffers.push(buffer);
        }
    }

    fn batch(&mut self) -> Box<Batch> {
        self.batches.pop().unwrap_or_else(Batch::new)
    }

    fn give_batch(&mut self, batch: Box<Batch>) {
        if self.batches.len() < SPARE_BATCHES {
            self.batches.push(batch);
        }
    }
}

/// What the next send of a stream is.
pub(super) enum Send {
    /// One spliced buffer's bytes, by `send` with `MSG_DONTWAIT`.
    Spliced(*const u8, u32),
    /// Several spliced buffers, by `sendmsg` with `MSG_DONTWAIT`.
    Batch(*const libc::msghdr),
    /// Written bytes, by `send`.
    Written(*const u8, u32),
}

/// A stream's unsent bytes.
#[derive(Default)]
pub(super) struct Output {
    /// Spliced buffers, oldest first.
    slices: VecDeque<Slice>,
    slice_bytes: usize,
    /// Written bytes, `bytes[start..]` unsent; allocated (with room for
    /// [`SEND_CAP`] bytes, never more) while not empty.
    bytes: Vec<u8>,
    start: usize,
    /// Bytes from the front that the send in flight reads; 0 when none.
    sending: usize,
    /// How many slices (the first) the send in flight reads, and its
    /// message when they are several.
    batched: usize,
    batch: Option<Box<Batch>>,
}

impl Output {
    /// Unsent bytes.
    pub(super) fn queued(&self) -> usize {
        self.slice_bytes + self.bytes.len() - self.start
    }

    /// No send in flight and nothing unsent.
    pub(super) fn drained(&self) -> bool {
        self.sending == 0 && self.queued() == 0
    }

    /// Bytes a write or a splice could take now.
    pub(super) fn room(&self) -> usize {
        let used = match self.batched {
            // A send reads the written bytes: append only.
            0 if self.sending > 0 => self.bytes.len(),
            _ => self.queued(),
        };
        SEND_CAP.saturating_sub(used)
    }

    /// Whether spliced buffers may be queued as they are: no written
    /// bytes are, which must go first.
    pub(super) fn takes_buffers(&self) -> bool {
        self.bytes.len() == self.start
    }

    /// Queues bytes `start..end` of ring buffer `id`, which is now the
    /// output's to hand back.
    pub(super) fn push_buffer(&mut self, id: u16, start: usize, end: usize) {
        let slice = Slice {
            id,
            start: start as u32,
            end: end as u32,
        };
        self.slice_bytes += slice.len();
        self.slices.push_back(slice);
    }

    /// Whether spliced buffers are queued.
    pub(super) fn holds_buffers(&self) -> bool {
        !self.slices.is_empty()
    }

    /// Copies up to `n` bytes in, which `fill` writes into the slice it
    /// is given, while no spliced buffer is queued; returns how many.
    pub(super) fn write_with(
        &mut self,
        n: usize,
        fill: impl FnOnce(&mut [u8]),
        spares: &mut Spares,
    ) -> usize {
        debug_assert!(self.slices.is_empty());
        let n = n.min(self.room());
        if n == 0 {
            return 0;
        }
        self.make_room_for_bytes(spares);
        let old = self.bytes.len();
        self.bytes.resize(old + n, 0);
        fill(&mut self.bytes[old..]);
        n
    }

    /// Copies a prefix of `data` in, after any spliced buffers (copied
    /// too); returns how much (0 while spliced buffers are in flight:
    /// their send ends at the next wait).
    pub(super) fn write(&mut self, data: &[u8], ring: &mut BufRing, spares: &mut Spares) -> usize {
        if !self.slices.is_empty() {
            if self.sending > 0 {
                return 0;
            }
            self.copy_slices(ring, spares);
        }
        let n = data.len().min(self.room());
        if n == 0 {
            return 0;
        }
        self.make_room_for_bytes(spares);
        // Within the capacity, so the buffer does not move; a send in
        // flight reads only bytes before the old length.
        self.bytes.extend_from_slice(&data[..n]);
        n
    }

    /// Readies the written bytes' buffer to be appended to: allocated,
    /// and the unsent bytes moved to its front when no send reads them.
    fn make_room_for_bytes(&mut self, spares: &mut Spares) {
        if self.bytes.capacity() == 0 {
            self.bytes = spares.buffer();
        }
        if self.sending == 0 && self.start > 0 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
    }

    /// Copies the queued slices into the written bytes (there are none)
    /// and hands their buffers back: no send reads them.
    fn copy_slices(&mut self, ring: &mut BufRing, spares: &mut Spares) {
        debug_assert!(self.sending == 0 && self.bytes.len() == self.start);
        let mut bytes = std::mem::take(&mut self.bytes);
        if bytes.capacity() == 0 {
            bytes = spares.buffer();
        }
        bytes.clear();
        for slice in self.slices.drain(..) {
            // SAFETY: a queued slice's buffer is out of the ring until
            // provided here.
            bytes.extend_from_slice(unsafe { slice.data(ring) });
            ring.provide(slice.id);
        }
        self.slice_bytes = 0;
        self.bytes = bytes;
        self.start = 0;
    }

    /// What the next send should take, when none is in flight and some
    /// bytes are unsent; they are in flight until [`Output::sent`].
    ///
    /// What the send points to stays valid and unchanged until then: the
    /// message is boxed and held here, spliced buffers stay out of the
    /// ring, the written bytes' buffer is not freed, moved or written
    /// there, and the stream is dropped only once no operation is in
    /// flight.
    pub(super) fn next_send(&mut self, ring: &BufRing, spares: &mut Spares) -> Option<Send> {
        if self.sending > 0 {
            return None;
        }
        if let (1, Some(slice)) = (self.slices.len(), self.slices.front()) {
            // One buffer: a plain send, with no message to copy in.
            // SAFETY: queued, so out of the ring.
            let data = unsafe { slice.data(ring) };
            (self.sending, self.batched) = (data.len(), 1);
            return Some(Send::Spliced(data.as_ptr(), data.len() as u32));
        }
        if !self.slices.is_empty() {
            let mut batch = spares.batch();
            let mut count = 0;
            for (iovec, &slice) in batch.iovecs.iter_mut().zip(&self.slices) {
                // SAFETY: queued, so out of the ring.
                let data = unsafe { slice.data(ring) };
                iovec.iov_base = data.as_ptr().cast_mut().cast();
                iovec.iov_len = data.len();
                self.sending += data.len();
                count += 1;
            }
            batch.header.msg_iov = batch.iovecs.as_mut_ptr();
            batch.header.msg_iovlen = count;
            self.batched = count;
            let header: *const libc::msghdr = &batch.header;
            self.batch = Some(batch);
            return Some(Send::Batch(header));
        }
        if self.start == self.bytes.len() {
            return None;
        }
        self.sending = self.bytes.len() - self.start;
        let len = u32::try_from(self.sending).unwrap_or(u32::MAX);
        Some(Send::Written(self.bytes[self.start..].as_ptr(), len))
    }

    /// The send in flight completed with `result` (bytes sent, or
    /// `-errno`); returns the `errno` of a failure.
    pub(super) fn sent(
        &mut self,
        result: i32,
        ring: &mut BufRing,
        spares: &mut Spares,
    ) -> Option<i32> {
        let sending = std::mem::take(&mut self.sending);
        if std::mem::take(&mut self.batched) == 0 {
            return self.sent_bytes(result, spares);
        }
        if let Some(batch) = self.batch.take() {
            spares.give_batch(batch);
        }
        match usize::try_from(result) {
            Ok(sent) => {
                self.advance_slices(sent, ring);
                if sent < sending {
                    // The socket is full: the peer is slow to read.
                    self.copy_slices(ring, spares);
                }
                None
            }
            Err(_) if result == -libc::EAGAIN => {
                self.copy_slices(ring, spares);
                None
            }
            Err(_) => {
                self.release(ring, spares);
                (result != -libc::ECANCELED).then_some(-result)
            }
        }
    }

    fn sent_bytes(&mut self, result: i32, spares: &mut Spares) -> Option<i32> {
        let failed = match usize::try_from(result) {
            Ok(sent) => {
                self.start += sent;
                None
            }
            Err(_) => {
                self.start = self.bytes.len();
                (result != -libc::ECANCELED).then_some(-result)
            }
        };
        if self.start == self.bytes.len() {
            // Idle connections hold no output buffer.
            spares.give_buffer(std::mem::take(&mut self.bytes));
            self.start = 0;
        }
        failed
    }

    /// Drops the first `sent` bytes of the slices, handing buffers sent
    /// whole back.
    fn advance_slices(&mut self, mut sent: usize, ring: &mut BufRing) {
        self.slice_bytes -= sent;
        while let Some(front) = self.slices.front_mut() {
            let len = front.len();
            if sent < len {
                front.start += sent as u32;
                return;
            }
            sent -= len;
            ring.provide(front.id);
            self.slices.pop_front();
        }
    }

    /// Hands back every spliced buffer that no send reads and frees the
    /// written bytes (the stream is closed, or its send failed).
    pub(super) fn release(&mut self, ring: &mut BufRing, spares: &mut Spares) {
        for slice in self.slices.drain(self.batched..) {
            self.slice_bytes -= slice.len();
            ring.provide(slice.id);
        }
        if self.sending == 0 {
            spares.give_buffer(std::mem::take(&mut self.bytes));
            self.start = 0;
        }
    }

    /// Memory of its own the output holds (the written bytes' buffer).
    pub(super) fn held_bytes(&self) -> usize {
        self.bytes.capacity()
    }
}
