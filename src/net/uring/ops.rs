//! The operations the network submits, and what their completions do to
//! the sockets' state.

use super::output::Send;
use super::stream::Receiving;
use super::tag::{Op, Tag};
use super::{Entry, Kind, UringNetwork, DATAGRAM_GROUP, STREAM_GROUP};
use io_uring::types::{CancelBuilder, Fd};
use io_uring::{cqueue, opcode, squeue};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// The tag `aux` of a stream receive that takes bundles of buffers.
const BUNDLE: u8 = 1;

/// How long one step of the wait for in-flight operations at drop lasts.
pub(super) const DRAIN_STEP: Duration = Duration::from_millis(10);

impl UringNetwork {
    /// Queues `sqe` as operation `op` of `slot`, counted in flight until
    /// its last completion.
    ///
    /// # Safety
    ///
    /// Whatever memory `sqe` points to must stay valid, and unchanged
    /// where the kernel reads it, until the operation's last completion
    /// has been reaped.
    unsafe fn submit(&mut self, slot: u32, op: Op, aux: u8, sqe: squeue::Entry) {
        let Some(target) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let generation = target.generation;
        let Some(entry) = target.entry.as_mut() else {
            return;
        };
        entry.in_flight += 1;
        let user_data = Tag {
            slot,
            generation,
            op,
            aux,
        }
        .encode();
        let sqe = sqe.user_data(user_data);
        // SAFETY: the caller keeps what `sqe` points to valid until its
        // completion.
        while unsafe { self.ring.submission().push(&sqe) }.is_err() {
            // The queue is full: hand it to the kernel now, or, if the
            // kernel takes nothing, complete the operation with the error.
            if let Err(err) = self.ring.submit() {
                let errno = err.raw_os_error().unwrap_or(libc::EIO);
                self.unsubmitted.push((user_data, -errno, 0));
                return;
            }
        }
    }

    /// Arms the multishot receive of a stream or UDP socket that wants
    /// one.
    pub(super) fn arm_receive(&mut self, slot: u32) {
        let (limits, bundles) = (self.receive_limits, self.bundles);
        let Some(entry) = self.live(slot) else {
            return;
        };
        let fd = Fd(entry.socket.as_raw_fd());
        let (op, aux, sqe) = match &mut entry.kind {
            Kind::Stream(stream) if stream.wants_receive() => {
                stream.receiving = Receiving::Armed;
                let (aux, sqe) = match (limits, bundles) {
                    // Each completion takes as many buffers as the bytes
                    // ready fill: one receive where a stream has more.
                    (true, true) => (
                        BUNDLE,
                        opcode::RecvMultiBundle::new(fd, STREAM_GROUP).build(),
                    ),
                    (true, false) => (0, opcode::RecvMulti::new(fd, STREAM_GROUP).build()),
                    // One buffer per receive: bounded the same way.
                    (false, _) => (
                        0,
                        (opcode::Recv::new(fd, std::ptr::null_mut(), 0))
                            .buf_group(STREAM_GROUP)
                            .build()
                            .flags(squeue::Flags::BUFFER_SELECT),
                    ),
                };
                let sqe = match limits {
                    true => limited(sqe, stream.receive_limit()),
                    false => sqe,
                };
                (Op::Recv, aux, sqe)
            }
            Kind::Datagram(datagram) if datagram.wants_receive() => {
                datagram.receiving = Receiving::Armed;
                let header: *const libc::msghdr = &*datagram.header;
                let sqe = opcode::RecvMsgMulti::new(fd, header, DATAGRAM_GROUP).build();
                (Op::RecvMsg, 0, sqe)
            }
            _ => return,
        };
        // SAFETY: a receive writes only into buffers of the ring it names,
        // which live as long as the network (and are leaked if it is
        // dropped with operations in flight). A datagram receive also
        // reads the socket's boxed header, which lives in the entry, and
        // the entry lives until the operation's last completion.
        unsafe { self.submit(slot, op, aux, sqe) }
    }

    /// Arms the multishot accept of a listener that has read interest and
    /// none armed.
    pub(super) fn arm_accept(&mut self, slot: u32) {
        let Some(entry) = self.live(slot) else {
            return;
        };
        let fd = Fd(entry.socket.as_raw_fd());
        let Kind::Listener(listener) = &mut entry.kind else {
            return;
        };
        if listener.accepting || !entry.interest.read {
            return;
        }
        listener.accepting = true;
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        let sqe = opcode::AcceptMulti::new(fd).flags(flags).build();
        // SAFETY: a multishot accept points to no memory.
        unsafe { self.submit(slot, Op::Accept, 0, sqe) }
    }

    /// Starts the connect of a new stream to the address it holds.
    pub(super) fn start_connect(&mut self, slot: u32) {
        let Some(entry) = self.live(slot) else {
            return;
        };
        let fd = Fd(entry.socket.as_raw_fd());
        let Kind::Stream(stream) = &entry.kind else {
            return;
        };
        let Some(peer) = &stream.connecting else {
            return;
        };
        let sqe = opcode::Connect::new(fd, peer.as_ptr().cast(), peer.len()).build();
        // SAFETY: the address is boxed in the stream's `connecting`, which
        // is cleared only by the connect's completion, and the stream
        // lives until then.
        unsafe { self.submit(slot, Op::Connect, 0, sqe) }
    }

    /// Sends what a stream has unsent, unless a send is in flight.
    pub(super) fn send_more(&mut self, slot: u32) {
        let Some(Some(entry)) = (self.slots.get_mut(slot as usize))
            .map(|slot| slot.entry.as_mut().filter(|entry| !entry.closed))
        else {
            return;
        };
        let fd = Fd(entry.socket.as_raw_fd());
        let Kind::Stream(stream) = &mut entry.kind else {
            return;
        };
        let sqe = match stream.next_send(&mut self.streams) {
            None => return,
            // Done within the wait that submits it: what the socket does
            // not take now is copied out, and the buffers handed back.
            Some(Send::Spliced(bytes, len)) => (opcode::Send::new(fd, bytes, len))
                .flags(libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
                .build(),
            Some(Send::Batch(message)) => (opcode::SendMsg::new(fd, message))
                .flags((libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) as u32)
                .build(),
            Some(Send::Written(bytes, len)) => (opcode::Send::new(fd, bytes, len))
                .flags(libc::MSG_NOSIGNAL)
                .build(),
        };
        // SAFETY: `next_send` promises that what the send points to stays
        // valid and unchanged until `Stream::sent`, which only this send's
        // completion calls.
        unsafe { self.submit(slot, Op::Send, 0, sqe) }
    }

    /// Sends the datagram of send slot `send`, whose message is
    /// `message`.
    pub(super) fn send_datagram(&mut self, slot: u32, send: u8, message: *const libc::msghdr) {
        let Some(entry) = self.live(slot) else {
            return;
        };
        let fd = Fd(entry.socket.as_raw_fd());
        let sqe = (opcode::SendMsg::new(fd, message))
            .flags(libc::MSG_NOSIGNAL as u32)
            .build();
        // SAFETY: `Datagram::send_to` promises that the message and what
        // it points to stay valid until `Datagram::sent` for this send
        // slot, which only this send's completion calls.
        unsafe { self.submit(slot, Op::SendMsg, send, sqe) }
    }

    /// Cancels every operation of a closed socket.
    pub(super) fn cancel_all(&mut self, slot: u32) {
        let Some(Some(entry)) = self
            .slots
            .get(slot as usize)
            .map(|slot| slot.entry.as_ref())
        else {
            return;
        };
        // The descriptor stays open until the slot is freed, after this
        // cancel completed: it cannot name another file meanwhile.
        let builder = CancelBuilder::fd(Fd(entry.socket.as_raw_fd())).all();
        let sqe = opcode::AsyncCancel2::new(builder).build();
        // SAFETY: a cancel points to no memory.
        unsafe { self.submit(slot, Op::Cancel, 0, sqe) }
    }

    /// Cancels the armed receive `op` of `slot`: its caller left too many
    /// datagrams untaken.
    fn cancel_receive(&mut self, slot: u32, op: Op) {
        let generation = self.slots[slot as usize].generation;
        let target = Tag {
            slot,
            generation,
            op,
            aux: 0,
        };
        let sqe = opcode::AsyncCancel::new(target.encode()).build();
        // SAFETY: a cancel points to no memory.
        unsafe { self.submit(slot, Op::Cancel, 0, sqe) }
    }

    /// The open (not closed) entry of `slot`.
    fn live(&mut self, slot: u32) -> Option<&mut Entry> {
        let entry = self.slots.get_mut(slot as usize)?.entry.as_mut()?;
        (!entry.closed).then_some(entry)
    }

    /// Applies one completion to its socket's state.
    pub(super) fn complete(&mut self, user_data: u64, result: i32, flags: u32) {
        let Some(tag) = Tag::decode(user_data) else {
            return;
        };
        let slot = tag.slot;
        let Some(Some(entry)) = (self.slots.get_mut(slot as usize))
            .filter(|s| s.generation == tag.generation)
            .map(|s| s.entry.as_mut())
        else {
            // Tombstones outlive their operations, so no completion can
            // come for a freed slot or a later generation of it; if one
            // did, it is not this socket's.
            return;
        };
        let more = cqueue::more(flags);
        if !more {
            entry.in_flight -= 1;
        }
        let closed = entry.closed;
        let errno = (result < 0).then_some(-result);
        let mut rearm = false;
        let mut cancel = None;
        let mut send = false;
        let mut receive = false;
        match (&mut entry.kind, tag.op) {
            (Kind::Listener(listener), Op::Accept) => {
                listener.accepting &= more;
                if let Ok(fd) = u32::try_from(result) {
                    // SAFETY: a successful accept's result is a new
                    // descriptor that nothing else owns.
                    let socket = unsafe { OwnedFd::from_raw_fd(fd as i32) };
                    if !closed {
                        listener.queue.push_back(socket.into());
                    }
                } else if errno != Some(libc::ECANCELED) {
                    listener.failed = errno;
                }
            }
            (Kind::Stream(stream), Op::Recv) => {
                if let Some(first) = cqueue::buffer_select(flags) {
                    let ring = &mut self.streams.ring;
                    let mut taken = ring.take(first, result, tag.aux == BUNDLE);
                    while let Some((id, len)) = ring.next(&mut taken) {
                        match len > 0 && !closed {
                            true if stream.received(id, len) => self.holding.push(slot),
                            true => {}
                            false => ring.provide(id),
                        }
                    }
                }
                match errno {
                    _ if closed => {}
                    None if result == 0 => stream.ended = true,
                    // A kernel before 6.17, which limits no receive: from
                    // now on, each takes one buffer.
                    Some(libc::EINVAL) if self.receive_limits => self.receive_limits = false,
                    Some(libc::ENOBUFS) | Some(libc::ECANCELED) | None => {}
                    Some(errno) => stream.failed = Some(errno),
                }
                if !more {
                    stream.receiving = Receiving::Off;
                    rearm = true;
                }
            }
            (Kind::Stream(stream), Op::Send) => {
                stream.sent(result, &mut self.streams);
                if closed {
                    stream.release(&mut self.streams);
                }
                send = true;
            }
            (Kind::Stream(stream), Op::Connect) => {
                stream.connecting = None;
                match errno {
                    Some(errno) if !closed => stream.failed = Some(errno),
                    _ => receive = true,
                }
            }
            (Kind::Datagram(datagram), Op::RecvMsg) => {
                if let (Some(first), Some(ring)) =
                    (cqueue::buffer_select(flags), &mut self.datagrams)
                {
                    let mut taken = ring.take(first, result, false);
                    if let Some((id, len)) = ring.next(&mut taken) {
                        if result >= 0 && !closed {
                            // SAFETY: the completion handed buffer `id`
                            // out with `len` bytes; it is provided back
                            // below.
                            datagram.received(unsafe { ring.data(id, len) });
                        }
                        ring.provide(id);
                    }
                }
                match errno {
                    Some(libc::ENOBUFS) | Some(libc::ECANCELED) | None => {}
                    Some(errno) => datagram.recv_failed = Some(errno),
                }
                if !more {
                    datagram.receiving = Receiving::Off;
                    rearm = true;
                }
                if datagram.over_cap() {
                    datagram.receiving = Receiving::Cancelling;
                    cancel = Some(Op::RecvMsg);
                }
            }
            (Kind::Datagram(datagram), Op::SendMsg) => datagram.sent(tag.aux, result),
            // A cancel's own completion, or one that does not fit the
            // socket (which cannot happen): nothing to update.
            _ => {}
        }
        if closed {
            if entry.in_flight == 0 {
                self.free(slot);
            }
            return;
        }
        self.mark_changed(slot);
        if rearm {
            // After the wait hands unread buffers back: a receive that
            // ran out of buffers would run out again at once.
            self.rearm.push(slot);
        }
        if let Some(op) = cancel {
            self.cancel_receive(slot, op);
        }
        if send {
            self.send_more(slot);
        }
        if receive {
            self.arm_receive(slot);
        }
    }
}

/// `sqe` with its `optlen` set, which the crate has no setter for: for a
/// multishot receive (Linux 6.17 and later), the bytes after which it
/// ends; older kernels refuse it with `EINVAL`.
fn limited(sqe: squeue::Entry, limit: u32) -> squeue::Entry {
    /// The offset of `optlen` in `struct io_uring_sqe`.
    const OPTLEN: usize = 44;
    // SAFETY: `squeue::Entry` is `repr(C)` around the 64-byte
    // `io_uring_sqe`, whose fields are all integers (or unions of
    // integers): any 64 bytes are a valid value of either type.
    let mut bytes = unsafe { std::mem::transmute::<squeue::Entry, [u8; 64]>(sqe) };
    bytes[OPTLEN..OPTLEN + 4].copy_from_slice(&limit.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(bytes) }
}
