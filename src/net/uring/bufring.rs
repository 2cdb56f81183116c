//! A provided-buffer ring: buffers the kernel picks from when a receive
//! completes, so that a socket holds no buffer while it waits for data.

use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// Page alignment, which the kernel requires of the ring.
const PAGE: usize = 4096;

/// The buffers one completion took: see [`BufRing::take`].
pub(super) struct Taken {
    start: u16,
    count: u16,
    left: usize,
}

/// Buffers registered with one ring under one group id.
///
/// A buffer is either in the ring (the kernel may write into it at any
/// time) or *out*: picked by a completed receive and owned by this side
/// until [`BufRing::provide`] hands it back.
pub(super) struct BufRing {
    /// `count` ring entries; the tail is stored in the first one.
    entries: NonNull<BufRingEntry>,
    /// `count` buffers of `size` bytes, one mapping.
    memory: NonNull<u8>,
    count: u16,
    size: usize,
    /// The tail as this side has written it; the kernel sees it after
    /// [`BufRing::publish`].
    tail: u16,
    /// The head as the kernel moves it: the ring entries it consumed, in
    /// order. A completion names only the first buffer of a bundle; the
    /// others are the entries after it, which `bids` remembers.
    head: u16,
    /// The buffer id provided at each ring entry.
    bids: Box<[u16]>,
    /// Buffers out of the ring.
    out: usize,
    /// Set when the memory must outlive this value (the kernel may still
    /// use it): dropping then frees nothing.
    leaked: bool,
}

impl BufRing {
    /// Registers `count` (a power of two) buffers of `size` bytes with
    /// `ring` as group `group`, all of them provided.
    pub(super) fn new(ring: &IoUring, group: u16, count: u16, size: usize) -> io::Result<BufRing> {
        assert!(
            count.is_power_of_two(),
            "a buffer ring's size is a power of two"
        );
        let entries = allocate(entries_layout(count)?)?.cast::<BufRingEntry>();
        let memory = match map(usize::from(count) * size) {
            Ok(memory) => memory,
            Err(err) => {
                // SAFETY: allocated just above with this layout, never shared.
                unsafe { alloc::dealloc(entries.as_ptr().cast(), entries_layout(count)?) };
                return Err(err);
            }
        };
        let mut buffers = BufRing {
            entries,
            memory,
            count,
            size,
            tail: 0,
            head: 0,
            bids: vec![0; usize::from(count)].into_boxed_slice(),
            out: usize::from(count),
            leaked: false,
        };
        // SAFETY: `entries` is a page-aligned, zeroed allocation of `count`
        // entries that lives as long as `buffers`, which the network drops
        // only after the ring is gone or no operation is in flight (and
        // otherwise leaks, see `leak`).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                count,
                group,
                0,
            )?;
        }
        for id in 0..count {
            buffers.provide(id);
        }
        buffers.publish();
        Ok(buffers)
    }

    /// The length of the buffers' mapping.
    fn mapped_len(&self) -> usize {
        usize::from(self.count) * self.size
    }

    /// Bytes of buffers out of the ring, held by sockets.
    pub(super) fn held_bytes(&self) -> usize {
        self.out * self.size
    }

    /// The first `len` bytes of buffer `id`, which a completion handed
    /// out.
    ///
    /// # Safety
    ///
    /// Buffer `id` must be out of the ring (picked by a completion this
    /// side has reaped, not provided since), so the kernel does not write
    /// it, and `len` at most what that completion reported.
    pub(super) unsafe fn data(&self, id: u16, len: usize) -> &[u8] {
        debug_assert!(id < self.count && len <= self.size);
        // SAFETY: in bounds of `memory` (id < count, len <= size); the
        // caller guarantees that the kernel is done writing these bytes
        // and will not write them again before `provide`.
        unsafe {
            std::slice::from_raw_parts(self.memory.as_ptr().add(usize::from(id) * self.size), len)
        }
    }

    /// The buffers a completion took out of the ring, `first` the one it
    /// names, for `len` bytes received: each with the bytes it holds,
    /// oldest first. A bundle takes as many buffers as its bytes filled,
    /// none when it received nothing; any other receive takes one.
    pub(super) fn take(&mut self, first: u16, len: i32, bundle: bool) -> Taken {
        let len = usize::try_from(len).unwrap_or(0);
        let count = match bundle {
            true => len.div_ceil(self.size),
            false => 1,
        };
        let mask = self.count - 1;
        if count > 0 && self.bids[usize::from(self.head & mask)] != first {
            // The kernel consumed entries this side did not see consumed,
            // which it never does; follow it rather than lose buffers.
            debug_assert!(false, "buffer {first} is not at the ring's head");
            let at = (0..self.count)
                .find(|&i| self.bids[usize::from(self.head.wrapping_add(i) & mask)] == first);
            self.head = self.head.wrapping_add(at.unwrap_or(0));
        }
        let start = self.head;
        self.head = self.head.wrapping_add(count as u16);
        self.out += count;
        Taken {
            start,
            count: count as u16,
            left: len,
        }
    }

    /// The next buffer of `taken`: its id and the bytes it holds.
    pub(super) fn next(&self, taken: &mut Taken) -> Option<(u16, usize)> {
        if taken.count == 0 {
            return None;
        }
        let id = self.bids[usize::from(taken.start & (self.count - 1))];
        let len = taken.left.min(self.size);
        taken.start = taken.start.wrapping_add(1);
        taken.count -= 1;
        taken.left -= len;
        Some((id, len))
    }

    /// Hands buffer `id` back to the kernel (seen after the next
    /// [`BufRing::publish`]). The caller gives up every slice of it.
    pub(super) fn provide(&mut self, id: u16) {
        let mask = self.count - 1;
        let index = usize::from(self.tail & mask);
        // SAFETY: `index` < count, within the entries allocation; the
        // kernel reads only entries between its head and the published
        // tail, and this one is past the published tail.
        let entry = unsafe { &mut *self.entries.as_ptr().add(index) };
        entry.set_addr(self.memory.as_ptr() as u64 + (usize::from(id) * self.size) as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(id);
        self.bids[index] = id;
        self.tail = self.tail.wrapping_add(1);
        self.out -= 1;
    }

    /// Lets the kernel see the buffers provided since the last call.
    pub(super) fn publish(&self) {
        // SAFETY: the tail field of the first entry, in our allocation; the
        // kernel reads it concurrently, hence the atomic access, which has
        // the layout of a u16.
        let tail = unsafe { &*BufRingEntry::tail(self.entries.as_ptr()).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// Keeps the memory forever: the kernel may still write into it.
    pub(super) fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: mapped and allocated in `new` with these sizes; the
        // network drops its rings only once no operation that could pick
        // a buffer is in flight.
        unsafe {
            libc::munmap(self.memory.as_ptr().cast(), self.mapped_len());
            if let Ok(entries) = entries_layout(self.count) {
                alloc::dealloc(self.entries.as_ptr().cast(), entries);
            }
        }
    }
}

fn entries_layout(count: u16) -> io::Result<Layout> {
    let size = usize::from(count) * std::mem::size_of::<BufRingEntry>();
    Layout::from_size_align(size, PAGE).map_err(io::Error::other)
}

/// Zeroed memory for the ring's entries.
fn allocate(layout: Layout) -> io::Result<NonNull<u8>> {
    // SAFETY: the layout has a non-zero size (count > 0).
    let memory = unsafe { alloc::alloc_zeroed(layout) };
    NonNull::new(memory).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))
}

/// `len` bytes of fresh anonymous memory for the buffers. A page becomes
/// resident only when first written (by the kernel, receiving into it), so
/// a ring costs what its load touched, not its size; an allocator's
/// zeroed memory of this alignment is written up front instead.
fn map(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a private anonymous mapping at an address of the kernel's
    // choosing aliases nothing.
    let memory = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if memory == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(memory.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))
}
