//! What a stream received and was not read yet: ring buffers as the
//! receive filled them, or bytes spilled out of the ring.

use super::bufring::BufRing;
use std::collections::VecDeque;

/// A stream's unread bytes, oldest first.
#[derive(Default)]
pub(super) struct Input {
    /// Bytes moved out of the ring by [`Input::spill`]; older than those
    /// in `buffers`. `spilled[spilled_read..]` is unread.
    spilled: Vec<u8>,
    spilled_read: usize,
    /// Ring buffers received and not read: (buffer id, length); the first
    /// `front_read` bytes of the first one are read.
    buffers: VecDeque<(u16, usize)>,
    front_read: usize,
    /// Unread bytes in all.
    unread: usize,
}

impl Input {
    /// Unread bytes in all.
    pub(super) fn unread(&self) -> usize {
        self.unread
    }

    /// Takes ring buffer `id`, filled with `len` bytes by a receive.
    /// Returns whether it is the only ring buffer the stream holds.
    pub(super) fn received(&mut self, id: u16, len: usize) -> bool {
        self.buffers.push_back((id, len));
        self.unread += len;
        self.buffers.len() == 1
    }

    /// Copies the oldest unread bytes into `buf`, handing consumed ring
    /// buffers back to `ring`; returns how many.
    pub(super) fn read(&mut self, buf: &mut [u8], ring: &mut BufRing) -> usize {
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
        read
    }

    /// Hands the oldest unread ring buffers over as they are, to `take`
    /// as (buffer id, first unread byte, length), while they fit whole in
    /// `max` bytes; returns how many bytes went. Hands nothing while
    /// spilled bytes, which come first, are unread.
    pub(super) fn take_buffers(
        &mut self,
        max: usize,
        mut take: impl FnMut(u16, usize, usize),
    ) -> usize {
        if self.spilled_read < self.spilled.len() {
            return 0;
        }
        let mut taken = 0;
        while let Some(&(id, len)) = self.buffers.front() {
            let rest = len - self.front_read;
            if taken + rest > max {
                break;
            }
            take(id, self.front_read, len);
            taken += rest;
            self.front_read = 0;
            self.buffers.pop_front();
        }
        self.unread -= taken;
        taken
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
        self.front_read = 0;
        self.spilled = Vec::new();
        self.spilled_read = 0;
        self.unread = 0;
    }

    /// Memory of its own the input holds (spilled bytes).
    pub(super) fn held_bytes(&self) -> usize {
        self.spilled.capacity()
    }
}
