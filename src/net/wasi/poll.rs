//! The wasi backend's event loop: one `wasi:io/poll::poll` over the
//! pollables of every socket that waits for something, and the care that
//! wasmtime's scheduling needs around it.

use super::{Entry, Link, Socket, WasiNetwork};
use crate::net::{nothing_to_wait_for, Interest, SocketId};
use ::wasi::clocks::monotonic_clock;
use ::wasi::io::poll::{self, Pollable};
use std::io;
use std::time::Duration;

/// Socket operations (and ready pollables) allowed between two refills of
/// the host's budget; tokio's budget is 128.
const BUDGET: usize = 96;

/// Pollables one `poll` call looks at when many sockets wait at once.
const POLL_CHUNK: usize = 100;

/// Keeps wasmtime's tokio budget from running dry under the guest.
///
/// Wasmtime up to at least 48 runs the whole guest as one tokio task whose
/// cooperative budget (128 operations) is shared by `poll` and by every
/// socket call: once it is spent, `check-write` reports 0 and reads return
/// nothing for every socket until the task yields, which with always-ready
/// pollables is never (a livelock at a few hundred busy connections, or
/// connections served unfairly; wasmtime issue 14174, fixed upstream by
/// opting those calls out of the budget). Waiting on an already-expired
/// timer makes wasmtime yield to tokio, which refills the budget; doing it
/// every [`BUDGET`] operations keeps every call honest at the cost of one
/// host call per hundred.
#[derive(Default)]
pub(super) struct HostBudget {
    spent: usize,
}

impl HostBudget {
    /// Accounts for `units` operations about to be done (or just done, for
    /// a poll's ready pollables).
    pub(super) fn spend(&mut self, units: usize) {
        self.spent += units;
        if self.spent >= BUDGET {
            self.refill();
            self.spent = units.min(BUDGET);
        }
    }

    /// Lets wasmtime yield to tokio now, which refills the budget.
    fn refill(&mut self) {
        monotonic_clock::subscribe_duration(0).block();
        self.spent = 0;
    }
}

/// Whose pollable one entry of a poll list is.
#[derive(Clone, Copy, Debug)]
enum Owner {
    /// A socket's read (or accept, or connect) pollable.
    Read(SocketId),
    /// A socket's write pollable.
    Write(SocketId),
    /// The output of `lingering[index]`.
    Lingering(usize),
}

impl Entry {
    /// The pollables `interest` asks for on this socket: for reading, then
    /// for writing.
    fn pollables(&self) -> (Option<&Pollable>, Option<&Pollable>) {
        let Interest { read, write } = self.interest;
        match &self.socket {
            Socket::Listener(listener) => (read.then_some(&listener.acceptable), None),
            Socket::Stream(stream) => match &stream.link {
                Link::Connected(streams) => (
                    read.then_some(&streams.readable),
                    write.then_some(&streams.writable),
                ),
                // Established or failed: either way the socket can go on.
                Link::Connecting(done) => ((read || write).then_some(done), None),
            },
            // Queued datagrams need the runtime's permit whatever the
            // interest: the caller took them as sent.
            Socket::Datagram(datagram) => (
                read.then_some(&datagram.receivable),
                (write || datagram.has_unsent()).then_some(&datagram.sendable),
            ),
        }
    }
}

impl WasiNetwork {
    /// [`crate::net::Network::wait`] on WASI.
    pub(super) fn wait_ready(
        &mut self,
        timeout: Option<Duration>,
        ready: &mut Vec<SocketId>,
    ) -> io::Result<()> {
        let received = self.flush_datagrams();
        // Datagrams already received are ready now: only look for others.
        let timeout = if received.is_empty() {
            timeout
        } else {
            ready.extend(&received);
            Some(Duration::ZERO)
        };
        let mut pollables: Vec<&Pollable> = Vec::new();
        let mut owners: Vec<Owner> = Vec::new();
        for (key, entry) in &self.sockets {
            let (on_read, on_write) = entry.pollables();
            if let Some(on_read) = on_read {
                pollables.push(on_read);
                owners.push(Owner::Read(SocketId(key)));
            }
            if let Some(on_write) = on_write {
                pollables.push(on_write);
                owners.push(Owner::Write(SocketId(key)));
            }
        }
        for (index, stream) in self.lingering.iter().enumerate() {
            if let Link::Connected(streams) = &stream.link {
                pollables.push(&streams.writable);
                owners.push(Owner::Lingering(index));
            }
        }
        if pollables.len() > POLL_CHUNK {
            // Wasmtime checks a poll list in its own order and only up to
            // its budget: with hundreds of sockets ready at once the same
            // ones would win every time. Look at every chunk with a fresh
            // budget, without blocking.
            let now = monotonic_clock::subscribe_duration(0);
            let mut found = Vec::new();
            for (pollables, owners) in pollables.chunks(POLL_CHUNK).zip(owners.chunks(POLL_CHUNK)) {
                self.budget.refill();
                let mut list = pollables.to_vec();
                list.push(&now);
                let ready_indices = poll::poll(&list);
                self.budget.spend(ready_indices.len());
                found.extend(ready_indices.iter().filter_map(|&i| owners.get(i as usize)));
            }
            if !found.is_empty() {
                drop(pollables);
                self.mark_ready(&found, ready);
                return Ok(());
            }
        }
        let timer = timeout.map(|timeout| {
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            monotonic_clock::subscribe_duration(nanos)
        });
        if let Some(timer) = &timer {
            pollables.push(timer);
        }
        if pollables.is_empty() {
            return Err(nothing_to_wait_for());
        }
        let ready_indices = poll::poll(&pollables);
        // Pollables go before the streams and sockets they came from.
        drop(pollables);
        drop(timer);
        // Each ready pollable used a unit of the budget.
        self.budget.spend(ready_indices.len());
        let found: Vec<Owner> = (ready_indices.iter())
            .filter_map(|&i| owners.get(i as usize).copied())
            .collect();
        self.mark_ready(&found, ready);
        Ok(())
    }

    /// Sends what every UDP socket queued, as far as the runtime permits;
    /// returns the UDP sockets with read interest that hold received
    /// datagrams.
    fn flush_datagrams(&mut self) -> Vec<SocketId> {
        let mut received = Vec::new();
        for (key, entry) in &mut self.sockets {
            if let Socket::Datagram(datagram) = &mut entry.socket {
                datagram.flush(&mut self.budget);
                if entry.interest.read && datagram.has_received() {
                    received.push(SocketId(key));
                }
            }
        }
        received
    }

    /// Reports the sockets whose pollables `poll` found ready, once per
    /// socket in a row, forgets what it knew about drained streams, and
    /// drops the lingering streams whose output is now writable.
    fn mark_ready(&mut self, found: &[Owner], ready: &mut Vec<SocketId>) {
        let mut writable_lingering = Vec::new();
        for &owner in found {
            let id = match owner {
                Owner::Read(id) => {
                    if let Ok(stream) = self.stream(id) {
                        stream.drained = false;
                    }
                    id
                }
                Owner::Write(id) => id,
                Owner::Lingering(index) => {
                    writable_lingering.push(index);
                    continue;
                }
            };
            if ready.last() != Some(&id) {
                ready.push(id);
            }
        }
        // Highest index first, so that each removal leaves the next in place.
        writable_lingering.sort_unstable_by(|a, b| b.cmp(a));
        for index in writable_lingering {
            self.lingering.swap_remove(index);
        }
    }
}
