//! io_uring backend (Linux): the host's sockets, readiness emulated over
//! completions, and an echo path that is completion-native.
//!
//! Every operation is submitted to one ring per network (one per event
//! loop, created on its thread) and [`Network::wait`] is one
//! `io_uring_enter`: it submits what the loop queued, waits, and reaps
//! every completion. A socket is reported ready when a completion (or a
//! new interest) made the interest it has satisfiable, as edge-triggered
//! epoll would report it:
//! - listeners keep a multishot accept armed while read interest is set;
//!   accepted sockets queue until [`Network::accept`] takes them;
//! - streams keep a multishot receive armed that picks buffers from a
//!   ring shared by all of them, so an idle connection holds no buffer
//!   ([`input`]). Each receive is limited to what is left to
//!   [`stream::RECV_CAP`] unread bytes, so that it stops until the caller
//!   reads, and bytes a turn left unread are moved out of the ring at the
//!   next wait, so that a slow reader cannot starve the others;
//! - [`Network::splice`] is the echo path, as in liburing's `proxy.c`: the
//!   received buffers are queued for sending on their own connection as
//!   they are and handed back to the ring when the send completes; only
//!   what the socket does not take at once is copied ([`output`]). Reads
//!   copy out of the buffers; writes copy into a per-connection buffer of
//!   at most [`output::SEND_CAP`] bytes, sent by one send at a time;
//! - UDP sockets receive by multishot `recvmsg` into a second ring and
//!   send each datagram by `sendmsg`, a bounded number in flight.
//!
//! The buffer rings are mapped, not allocated: a buffer costs resident
//! memory once a receive first wrote into it, so a server at rest holds
//! none of them.
//!
//! Closing is safe with operations in flight: the socket's slot becomes a
//! tombstone that keeps the socket open and every buffer an operation
//! points to, its operations are cancelled, and the slot (with the file
//! descriptor) is freed when the last of their completions arrived. Each
//! submission's `user_data` carries the slot's generation, too.
//!
//! `ECHOKIT_URING_SETUP`, `ECHOKIT_URING_BUFFERS` and
//! `ECHOKIT_URING_SPLICE` choose other ring flags, buffer rings and echo
//! paths than the defaults, to measure them side by side ([`setup`]).

mod bufring;
mod datagram;
mod input;
mod ops;
mod output;
mod setup;
mod stream;
mod tag;
#[cfg(test)]
mod tests;

use setup::Buffers;
pub use setup::Setup;

use super::sockets::{bound, client, host_capabilities, listening};
use super::{
    not_a, nothing_to_wait_for, Bind, Capabilities, Close, Interest, Network, SocketId, Spliced,
};
use bufring::BufRing;
use datagram::{Datagram, DATAGRAM_BUFFER};
use io_uring::IoUring;
use socket2::{SockRef, Socket, Type};
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::Duration;
use stream::{Stream, StreamMemory};

/// The ring streams receive into: what all connections of one event loop
/// can have received in one turn. Few enough that the buffers stay in the
/// processor's caches (the kernel takes them in turn, so every one of them
/// is written again and again), enough that a thousand connections in
/// one loop rarely run the ring dry: 2 MiB. Measured against 256 and 1,024
/// buffers of 16 KiB and 32 to 256 of 64 KiB: see docs/performance.md.
const STREAM_BUFFERS: Buffers = Buffers {
    count: 128,
    size: 16 * 1024,
};
/// Buffers in the ring UDP sockets receive into (set up with the first).
const DATAGRAM_BUFFERS: u16 = 32;
const STREAM_GROUP: u16 = 0;
const DATAGRAM_GROUP: u16 = 1;

/// Sockets of the host, driven through io_uring.
pub struct UringNetwork {
    ring: IoUring,
    setup: Setup,
    /// Whether the engine is told to splice (see [`Capabilities::splice`]).
    splice: bool,
    slots: Vec<Slot>,
    /// Free slots, reused last freed first.
    free: Vec<u32>,
    streams: StreamMemory,
    datagrams: Option<BufRing>,
    /// Slots whose readiness may have changed since the last wait.
    changed: Vec<u32>,
    /// Slots whose streams took ring buffers since the last wait.
    holding: Vec<u32>,
    /// Slots whose receive ended without being asked to: armed again at
    /// the next wait, once buffers were handed back.
    rearm: Vec<u32>,
    /// Open sockets with an interest: with none and no timeout, a wait
    /// could never end.
    interested: usize,
    /// The kernel limits what a multishot receive takes in all; where it
    /// does not, receives are single-shot.
    receive_limits: bool,
    /// Stream receives take bundles of buffers (Linux 6.10 and later).
    bundles: bool,
    /// Completions reaped, and submissions the kernel never took (with
    /// their error), to process.
    completions: Vec<(u64, i32, u32)>,
    unsubmitted: Vec<(u64, i32, u32)>,
}

/// A socket id's slot.
struct Slot {
    generation: u16,
    entry: Option<Entry>,
}

struct Entry {
    socket: Socket,
    kind: Kind,
    interest: Interest,
    /// Operations submitted whose last completion has not arrived.
    in_flight: u32,
    /// Closed by the caller: a tombstone until `in_flight` is 0.
    closed: bool,
    /// Listed in `changed`.
    changed: bool,
}

enum Kind {
    Listener(Listener),
    Stream(Stream),
    Datagram(Datagram),
}

#[derive(Default)]
struct Listener {
    /// A multishot accept is armed.
    accepting: bool,
    /// Accepted connections not yet taken.
    queue: VecDeque<Socket>,
    /// Accepting failed with this `errno`; the next accept says so.
    failed: Option<i32>,
}

impl Entry {
    /// Whether the socket's interest is satisfiable now.
    fn ready(&self) -> bool {
        let (readable, writable) = match &self.kind {
            Kind::Listener(listener) => (
                !listener.queue.is_empty() || listener.failed.is_some(),
                false,
            ),
            Kind::Stream(stream) => (stream.readable(), stream.writable()),
            Kind::Datagram(datagram) => (datagram.readable(), datagram.writable()),
        };
        !self.closed && (self.interest.read && readable || self.interest.write && writable)
    }
}

impl UringNetwork {
    /// Sets up a ring on this thread with the preferred [`Setup`] (or
    /// the one the `ECHOKIT_URING_SETUP` environment variable names:
    /// `deferred`, `cooperative` or `plain`), with fewer flags where the
    /// kernel refuses them. Fails, saying why and what to do, where
    /// io_uring is disabled, filtered out or too old. The network must be
    /// used on the thread that created it.
    pub fn new() -> io::Result<Self> {
        Self::with_setup(Setup::preferred())
    }

    /// Like [`UringNetwork::new`], trying `setup` first.
    pub fn with_setup(setup: Setup) -> io::Result<Self> {
        Self::open(setup, Buffers::preferred(STREAM_BUFFERS))
    }

    /// A network whose streams receive into `buffers`.
    fn open(setup: Setup, buffers: Buffers) -> io::Result<Self> {
        let (ring, setup) = setup.ring().map_err(setup::unavailable)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(setup::unavailable(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel has no timed waits (IORING_FEAT_EXT_ARG)",
            )));
        }
        let bundles = ring.params().is_feature_recvsend_bundle() && setup::bundling();
        let streams = StreamMemory {
            ring: BufRing::new(&ring, STREAM_GROUP, buffers.count, buffers.size)
                .map_err(setup::unavailable)?,
            spares: Default::default(),
        };
        Ok(UringNetwork {
            ring,
            setup,
            splice: setup::splicing(),
            slots: Vec::new(),
            free: Vec::new(),
            streams,
            datagrams: None,
            changed: Vec::new(),
            holding: Vec::new(),
            rearm: Vec::new(),
            interested: 0,
            receive_limits: true,
            bundles,
            completions: Vec::new(),
            unsubmitted: Vec::new(),
        })
    }

    /// The setup flags the ring was created with.
    pub fn setup(&self) -> Setup {
        self.setup
    }

    /// Bytes of buffers the network holds for its sockets' data: received
    /// and unread, or written and unsent (0 while every socket is idle).
    pub fn buffered(&self) -> usize {
        let sockets: usize = (self.slots.iter())
            .filter_map(|slot| slot.entry.as_ref())
            .map(|entry| match &entry.kind {
                Kind::Stream(stream) => stream.held_bytes(),
                Kind::Datagram(datagram) => datagram.held_bytes(),
                Kind::Listener(_) => 0,
            })
            .sum();
        self.streams.ring.held_bytes() + sockets
    }

    fn insert(&mut self, socket: Socket, kind: Kind) -> SocketId {
        let entry = Entry {
            socket,
            kind,
            interest: Interest::NONE,
            in_flight: 0,
            closed: false,
            changed: false,
        };
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.slots[index as usize].entry = Some(entry);
        SocketId(index as usize)
    }

    /// The open socket `id` names.
    fn entry(&self, id: SocketId) -> Option<&Entry> {
        let entry = self.slots.get(id.0)?.entry.as_ref()?;
        (!entry.closed).then_some(entry)
    }

    fn entry_mut(&mut self, id: SocketId) -> Option<&mut Entry> {
        let entry = self.slots.get_mut(id.0)?.entry.as_mut()?;
        (!entry.closed).then_some(entry)
    }

    /// The open stream `id` names, and the memory streams share.
    fn stream(&mut self, id: SocketId) -> io::Result<(&mut Stream, &mut StreamMemory)> {
        let entry = (self.slots.get_mut(id.0))
            .and_then(|slot| slot.entry.as_mut())
            .filter(|entry| !entry.closed);
        match entry.map(|entry| &mut entry.kind) {
            Some(Kind::Stream(stream)) => Ok((stream, &mut self.streams)),
            _ => Err(not_a(id, "stream")),
        }
    }

    fn datagram(&mut self, id: SocketId) -> io::Result<&mut Datagram> {
        match self.entry_mut(id).map(|entry| &mut entry.kind) {
            Some(Kind::Datagram(datagram)) => Ok(datagram),
            _ => Err(not_a(id, "UDP socket")),
        }
    }

    /// Lists `slot` for the readiness check at the end of the wait.
    fn mark_changed(&mut self, slot: u32) {
        if let Some(entry) = self.slots[slot as usize].entry.as_mut() {
            if !entry.changed {
                entry.changed = true;
                self.changed.push(slot);
            }
        }
    }

    /// Frees a slot whose socket is closed and has nothing in flight;
    /// dropping the entry closes its descriptor.
    fn free(&mut self, slot: u32) {
        let index = slot as usize;
        self.slots[index].entry = None;
        self.slots[index].generation = self.slots[index].generation.wrapping_add(1);
        self.free.push(slot);
    }

    /// Makes what the loop queued visible to the kernel, enters it once
    /// (submitting, and waiting up to `timeout` for a completion), and
    /// processes every completion.
    fn enter(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.streams.ring.publish();
        if let Some(datagrams) = &self.datagrams {
            datagrams.publish();
        }
        let submitter = self.ring.submitter();
        let entered = match timeout {
            None => submitter.submit_and_wait(1),
            Some(timeout) => {
                let timespec = io_uring::types::Timespec::from(timeout);
                let args = io_uring::types::SubmitArgs::new().timespec(&timespec);
                submitter.submit_with_args(1, &args)
            }
        };
        match entered {
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) => {}
            Err(err) => return Err(err),
        }
        self.reap();
        Ok(())
    }

    /// Processes the completions in the queue, and the submissions that
    /// never reached the kernel.
    fn reap(&mut self) {
        let mut completions = std::mem::take(&mut self.completions);
        loop {
            completions.clear();
            completions.append(&mut self.unsubmitted);
            completions.extend(
                (self.ring.completion()).map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())),
            );
            if completions.is_empty() {
                break;
            }
            for &(user_data, result, flags) in &completions {
                self.complete(user_data, result, flags);
            }
        }
        self.completions = completions;
    }
}

impl Network for UringNetwork {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Echoing spliced ring buffers copies nothing.
            splice: self.splice,
            ..host_capabilities("io_uring")
        }
    }

    fn listen(&mut self, addr: SocketAddr, bind: Bind) -> io::Result<SocketId> {
        let socket = listening(addr, bind)?;
        Ok(self.insert(socket, Kind::Listener(Listener::default())))
    }

    fn connect(&mut self, peer: SocketAddr, local: Option<IpAddr>) -> io::Result<SocketId> {
        let socket = client(peer, local)?;
        socket.set_tcp_nodelay(true)?;
        let id = self.insert(
            socket,
            Kind::Stream(Stream::new(Some(Box::new(peer.into())))),
        );
        self.start_connect(id.0 as u32);
        Ok(id)
    }

    fn accept(&mut self, listener: SocketId) -> io::Result<(SocketId, SocketAddr)> {
        let Some(Entry {
            kind: Kind::Listener(accepted),
            ..
        }) = self.entry_mut(listener)
        else {
            return Err(not_a(listener, "listener"));
        };
        while let Some(socket) = accepted.queue.pop_front() {
            // A connection reset before it was taken has no peer: skip it.
            let Some(peer) = socket.peer_addr().ok().and_then(|peer| peer.as_socket()) else {
                continue;
            };
            socket.set_tcp_nodelay(true)?;
            let id = self.insert(socket, Kind::Stream(Stream::new(None)));
            self.arm_receive(id.0 as u32);
            return Ok((id, peer));
        }
        if let Some(errno) = accepted.failed.take() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.arm_accept(listener.0 as u32);
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn local_addr(&self, id: SocketId) -> io::Result<SocketAddr> {
        let entry = self.entry(id).ok_or_else(|| not_a(id, "socket"))?;
        (entry.socket.local_addr()?.as_socket()).ok_or_else(|| io::Error::other("not an IP socket"))
    }

    fn bind_udp(&mut self, addr: SocketAddr, bind: Bind) -> io::Result<SocketId> {
        if self.datagrams.is_none() {
            let ring = BufRing::new(
                &self.ring,
                DATAGRAM_GROUP,
                DATAGRAM_BUFFERS,
                DATAGRAM_BUFFER,
            )?;
            self.datagrams = Some(ring);
        }
        let socket = bound(addr, Type::DGRAM, bind.sharing)?;
        let id = self.insert(socket, Kind::Datagram(Datagram::new()));
        self.arm_receive(id.0 as u32);
        Ok(id)
    }

    fn recv_from(&mut self, id: SocketId, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let datagram = self.datagram(id)?;
        let received = datagram.recv_from(buf);
        if datagram.wants_receive() {
            self.arm_receive(id.0 as u32);
        }
        received
    }

    fn send_to(&mut self, id: SocketId, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        let (send, message) = self.datagram(id)?.send_to(datagram, to)?;
        self.send_datagram(id.0 as u32, send, message);
        Ok(())
    }

    fn read(&mut self, id: SocketId, buf: &mut [u8]) -> io::Result<usize> {
        let (stream, memory) = self.stream(id)?;
        let read = stream.read(buf, &mut memory.ring);
        if stream.wants_receive() {
            self.arm_receive(id.0 as u32);
        }
        read
    }

    fn write(&mut self, id: SocketId, buf: &[u8]) -> io::Result<usize> {
        let (stream, memory) = self.stream(id)?;
        let written = stream.write(buf, memory)?;
        self.send_more(id.0 as u32);
        Ok(written)
    }

    fn splice(&mut self, id: SocketId, max: usize) -> io::Result<Spliced> {
        let (stream, memory) = self.stream(id)?;
        let spliced = stream.splice(max, memory)?;
        if stream.wants_receive() {
            self.arm_receive(id.0 as u32);
        }
        if let Spliced::Bytes(_) = spliced {
            self.send_more(id.0 as u32);
        }
        Ok(spliced)
    }

    fn shutdown_write(&mut self, id: SocketId) -> io::Result<()> {
        let Some(Entry {
            socket,
            kind: Kind::Stream(stream),
            ..
        }) = self.entry_mut(id)
        else {
            return Err(not_a(id, "stream"));
        };
        stream.may_shut_down()?;
        if !stream.shut {
            socket.shutdown(Shutdown::Write)?;
            stream.shut = true;
        }
        Ok(())
    }

    fn close(&mut self, id: SocketId, how: Close) {
        let memory = &mut self.streams;
        let Some(entry) = (self.slots.get_mut(id.0))
            .and_then(|slot| slot.entry.as_mut())
            .filter(|entry| !entry.closed)
        else {
            return;
        };
        if entry.interest != Interest::NONE {
            self.interested -= 1;
            entry.interest = Interest::NONE;
        }
        if let Kind::Listener(_) = entry.kind {
            // The socket stays open until its accept's cancellation
            // completes; shut down, it refuses connections from now on.
            let _ = entry.socket.shutdown(Shutdown::Both);
        }
        if let Kind::Stream(stream) = &mut entry.kind {
            if how == Close::Reset {
                // A zero linger makes the close send a reset. If it cannot
                // be set, the close is an orderly one.
                let _ = SockRef::from(&entry.socket).set_linger(Some(Duration::ZERO));
            }
            stream.release(memory);
        }
        entry.closed = true;
        match entry.in_flight {
            0 => self.free(id.0 as u32),
            _ => self.cancel_all(id.0 as u32),
        }
    }

    fn lingering(&self) -> usize {
        0
    }

    fn set_interest(&mut self, id: SocketId, interest: Interest) {
        let Some(entry) = self.entry_mut(id) else {
            return;
        };
        if entry.interest == interest {
            return;
        }
        let was = std::mem::replace(&mut entry.interest, interest);
        let listener = matches!(entry.kind, Kind::Listener(_));
        match (was == Interest::NONE, interest == Interest::NONE) {
            (true, false) => self.interested += 1,
            (false, true) => self.interested -= 1,
            _ => {}
        }
        if interest != Interest::NONE {
            // As epoll does on a changed registration: report it at the
            // next wait if it is satisfiable already.
            self.mark_changed(id.0 as u32);
        }
        if listener && interest.read {
            self.arm_accept(id.0 as u32);
        }
    }

    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<SocketId>) -> io::Result<()> {
        if self.interested == 0 && timeout.is_none() {
            return Err(nothing_to_wait_for());
        }
        for slot in std::mem::take(&mut self.holding) {
            if let Some(Entry {
                kind: Kind::Stream(stream),
                ..
            }) = self.slots[slot as usize].entry.as_mut()
            {
                stream.spill(&mut self.streams.ring);
            }
        }
        for slot in std::mem::take(&mut self.rearm) {
            self.arm_receive(slot);
        }
        let slots = &self.slots;
        let ready_now = (self.changed.iter()).any(|&slot| {
            slots[slot as usize]
                .entry
                .as_ref()
                .is_some_and(Entry::ready)
        });
        self.enter(if ready_now {
            Some(Duration::ZERO)
        } else {
            timeout
        })?;
        for slot in std::mem::take(&mut self.changed) {
            if let Some(entry) = self.slots[slot as usize].entry.as_mut() {
                entry.changed = false;
                if entry.ready() {
                    ready.push(SocketId(slot as usize));
                }
            }
        }
        Ok(())
    }
}

impl Drop for UringNetwork {
    /// Cancels what is in flight and waits (a while) for it to end, so
    /// that no buffer an operation points to is freed before; what the
    /// kernel did not give back in time is leaked rather than freed.
    fn drop(&mut self) {
        let open: Vec<SocketId> = (0..self.slots.len()).map(SocketId).collect();
        for id in open {
            self.close(id, Close::Orderly);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while self.slots.iter().any(|slot| slot.entry.is_some()) {
            if std::time::Instant::now() >= deadline || self.enter(Some(ops::DRAIN_STEP)).is_err() {
                self.streams.ring.leak();
                if let Some(datagrams) = &mut self.datagrams {
                    datagrams.leak();
                }
                std::mem::forget(std::mem::take(&mut self.slots));
                return;
            }
        }
    }
}
