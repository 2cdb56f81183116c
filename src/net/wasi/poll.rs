//! The wasi backend's event loop: one `wasi:io/poll::poll` over the
//! pollables of every socket that waits for something (the list of them
//! kept between waits, [`super::Watched`]), and the care that wasmtime's
//! scheduling needs around it.

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

/// The least time between two polls of the cold sockets while hot ones
/// keep the loop busy, in nanoseconds.
const COLD_PERIOD_MIN: u64 = 1_000_000;

/// The time between two polls of the cold sockets for each watched
/// socket, in nanoseconds: twice what wasmtime 48's `poll` was measured to
/// take per pollable (about 0.6 µs here), so that at most a third of a
/// busy loop's time goes to polling sockets that are not ready.
const COLD_PERIOD_PER_SOCKET: u64 = 1_200;

/// Which sockets one poll looks at.
#[derive(Clone, Copy, Debug)]
enum Tier {
    /// The hot ones only.
    Hot,
    /// All of them.
    All,
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
                    write.then(|| streams.writable()),
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

/// Polls each chunk of `pollables` without blocking, with a fresh budget
/// for each: the owners of the ready ones.
fn sweep(pollables: &[&Pollable], owners: &[Owner], budget: &mut HostBudget) -> Vec<Owner> {
    let now = monotonic_clock::subscribe_duration(0);
    let mut found = Vec::new();
    for (pollables, owners) in pollables.chunks(POLL_CHUNK).zip(owners.chunks(POLL_CHUNK)) {
        budget.refill();
        let mut list = pollables.to_vec();
        list.push(&now);
        let ready_indices = poll::poll(&list);
        budget.spend(ready_indices.len());
        found.extend(ready_indices.iter().filter_map(|&i| owners.get(i as usize)));
    }
    found
}

impl WasiNetwork {
    /// [`crate::net::Network::wait`] on WASI.
    ///
    /// The sockets to poll come from [`super::Watched`], kept between waits, not
    /// from a walk over every socket. While the loop is busy (the last
    /// poll of every socket found one ready), a wait polls the hot ones
    /// until the cold ones are due, then every socket without blocking;
    /// idle, it polls every socket with the caller's timeout.
    pub(super) fn wait_ready(
        &mut self,
        timeout: Option<Duration>,
        ready: &mut Vec<SocketId>,
    ) -> io::Result<()> {
        self.now = monotonic_clock::now();
        let received = self.flush_datagrams();
        // Datagrams already received are ready now: only look for others.
        let timeout = if received.is_empty() {
            timeout
        } else {
            ready.extend(&received);
            Some(Duration::ZERO)
        };
        let mut timeout = timeout;
        if self.busy && self.watched.has_cold() && self.now < self.cold_due {
            // Busy: wait for a hot socket, but no longer than the cold
            // ones may go unpolled.
            let until_due = Duration::from_nanos(self.cold_due - self.now);
            let (found, quiet) = self.poll(
                Tier::Hot,
                Some(timeout.map_or(until_due, |t| t.min(until_due))),
            )?;
            if !found.is_empty() {
                self.mark_ready(&found, ready);
                self.cool(&quiet);
                return Ok(());
            }
            // The cold ones are due, or the caller's timeout is up.
            timeout = Some(Duration::ZERO);
        }
        let (found, quiet) = self.poll(Tier::All, timeout)?;
        let all = self.watched.all().len() as u64;
        self.cold_due =
            monotonic_clock::now() + (COLD_PERIOD_PER_SOCKET * all).max(COLD_PERIOD_MIN);
        // Idle, the next wait blocks on every socket at once.
        self.busy = !found.is_empty() || !ready.is_empty();
        self.mark_ready(&found, ready);
        self.cool(&quiet);
        Ok(())
    }

    /// One `poll` over the pollables of `tier` and of the lingering
    /// streams, with `timeout`: the owners of the ready ones, and the hot
    /// sockets polled that may go cold if they were not ready.
    ///
    /// Only when so many come back ready that wasmtime's budget may have
    /// cut the answer short does a second, non-blocking pass look at each
    /// chunk with a fresh budget.
    fn poll(
        &mut self,
        tier: Tier,
        timeout: Option<Duration>,
    ) -> io::Result<(Vec<Owner>, Vec<SocketId>)> {
        let now = self.now;
        let ids = match tier {
            Tier::Hot => self.watched.hot(),
            Tier::All => self.watched.all(),
        };
        let mut pollables: Vec<&Pollable> = Vec::with_capacity(2 * ids.len() + 1);
        let mut owners: Vec<Owner> = Vec::with_capacity(2 * ids.len());
        let mut quiet = Vec::new();
        for (index, &id) in ids.iter().enumerate() {
            let Some(entry) = self.sockets.get(id.0) else {
                continue;
            };
            if index < self.watched.hot().len() && entry.may_cool(now) {
                quiet.push(id);
            }
            let (on_read, on_write) = entry.pollables();
            if let Some(on_read) = on_read {
                pollables.push(on_read);
                owners.push(Owner::Read(id));
            }
            if let Some(on_write) = on_write {
                pollables.push(on_write);
                owners.push(Owner::Write(id));
            }
        }
        for (index, stream) in self.lingering.iter().enumerate() {
            if let Link::Connected(streams) = &stream.link {
                pollables.push(streams.writable());
                owners.push(Owner::Lingering(index));
            }
        }
        let crowded = pollables.len() > POLL_CHUNK;
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
        if crowded {
            // A full budget for the poll: fewer ready than it allows then
            // means every ready pollable was seen.
            self.budget.refill();
        }
        let ready_indices = poll::poll(&pollables);
        // Each ready pollable used a unit of the budget.
        self.budget.spend(ready_indices.len());
        let mut found: Vec<Owner> = (ready_indices.iter())
            .filter_map(|&i| owners.get(i as usize).copied())
            .collect();
        if crowded && found.len() >= BUDGET {
            // Wasmtime checks a poll list in its own order and only up to
            // its budget: with hundreds of sockets ready at once the same
            // ones would win every time. Look at every chunk with a fresh
            // budget, without blocking.
            found = sweep(&pollables[..owners.len()], &owners, &mut self.budget);
        }
        // Pollables go before the streams and sockets they came from.
        drop(pollables);
        drop(timer);
        Ok((found, quiet))
    }

    /// Makes the sockets in `quiet` cold, unless they were just found
    /// ready (which made them recent again).
    fn cool(&mut self, quiet: &[SocketId]) {
        let now = self.now;
        let still: Vec<SocketId> = (quiet.iter().copied())
            .filter(|id| {
                self.sockets
                    .get(id.0)
                    .is_some_and(|entry| entry.may_cool(now))
            })
            .collect();
        self.watched.cool(&still, &mut self.sockets);
    }

    /// Sends what every UDP socket queued, as far as the runtime permits;
    /// returns the UDP sockets with read interest that hold received
    /// datagrams.
    fn flush_datagrams(&mut self) -> Vec<SocketId> {
        let mut received = Vec::new();
        for &id in &self.datagrams {
            if let Some(Entry {
                socket: Socket::Datagram(datagram),
                interest,
                ..
            }) = self.sockets.get_mut(id.0)
            {
                datagram.flush(&mut self.budget);
                if interest.read && datagram.has_received() {
                    received.push(id);
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
            if let Some(entry) = self.sockets.get_mut(id.0) {
                entry.since = self.now;
                if let Some(index) = entry.watch {
                    self.watched.heat(index, &mut self.sockets);
                }
            }
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
