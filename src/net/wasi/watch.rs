//! The sockets a wait polls, kept from one wait to the next, in two tiers.
//!
//! `wasi:io/poll::poll` takes the whole list of pollables on every call
//! (there is no registration, as with epoll), and wasmtime's `poll` costs
//! time in proportion to the pollables passed, ready or not: about half a
//! microsecond each, so 10,000 idle connections make every loop turn take
//! milliseconds. Two things keep a turn's cost in proportion to the
//! sockets that change instead:
//!
//! - the list changes only when a socket opens, closes or changes its
//!   interest; a wait reads it as it is, and walks no other socket;
//! - connections that only wait to read and have not been ready for
//!   [`QUIET`] are *cold*: a turn polls the *hot* ones, and the cold ones
//!   only when no hot one is ready or once their period is up (twice what
//!   a poll of all of them took, so at most a third of the time goes to
//!   them). A cold connection found ready turns hot again.

use super::{Entry, Link, Socket};
use crate::net::{Interest, SocketId};
use slab::Slab;

/// How long a connection waiting to read stays hot without being ready,
/// in nanoseconds of the monotonic clock.
pub(super) const QUIET: u64 = 1_000_000_000;

/// The ids of the sockets [`Entry::watched`] says a wait polls: the hot
/// ones first (`ids[..hot]`), then the cold ones. Each entry knows its
/// place ([`Entry::watch`]), so that adding, removing and moving one
/// between tiers is O(1).
#[derive(Default)]
pub(super) struct Watched {
    ids: Vec<SocketId>,
    hot: usize,
}

impl Watched {
    /// The hot sockets, polled every turn.
    pub(super) fn hot(&self) -> &[SocketId] {
        &self.ids[..self.hot]
    }

    /// Every watched socket, hot then cold.
    pub(super) fn all(&self) -> &[SocketId] {
        &self.ids
    }

    /// Whether any socket is cold.
    pub(super) fn has_cold(&self) -> bool {
        self.hot < self.ids.len()
    }

    /// Adds or removes `id` after its interest (or kind) changed; a socket
    /// added, or whose interest changed, is hot.
    pub(super) fn update(&mut self, id: SocketId, sockets: &mut Slab<Entry>) {
        let Some(entry) = sockets.get_mut(id.0) else {
            return;
        };
        match (entry.watched(), entry.watch) {
            (true, None) => {
                let index = self.ids.len();
                entry.watch = Some(index);
                self.ids.push(id);
                self.swap(index, self.hot, sockets);
                self.hot += 1;
            }
            (true, Some(index)) => self.heat(index, sockets),
            (false, Some(_)) => self.remove(id, sockets),
            (false, None) => {}
        }
    }

    /// Takes `id` off the list (before it closes).
    pub(super) fn remove(&mut self, id: SocketId, sockets: &mut Slab<Entry>) {
        let Some(mut index) = sockets.get(id.0).and_then(|entry| entry.watch) else {
            return;
        };
        if index < self.hot {
            self.swap(index, self.hot - 1, sockets);
            self.hot -= 1;
            index = self.hot;
        }
        let last = self.ids.len() - 1;
        self.swap(index, last, sockets);
        self.ids.pop();
        if let Some(entry) = sockets.get_mut(id.0) {
            entry.watch = None;
        }
    }

    /// Makes the socket at `index` hot, if it is cold.
    pub(super) fn heat(&mut self, index: usize, sockets: &mut Slab<Entry>) {
        if index >= self.hot && index < self.ids.len() {
            self.swap(index, self.hot, sockets);
            self.hot += 1;
        }
    }

    /// Makes the hot sockets in `quiet` cold.
    pub(super) fn cool(&mut self, quiet: &[SocketId], sockets: &mut Slab<Entry>) {
        for id in quiet {
            if let Some(index) = sockets.get(id.0).and_then(|entry| entry.watch) {
                if index < self.hot {
                    self.swap(index, self.hot - 1, sockets);
                    self.hot -= 1;
                }
            }
        }
    }

    /// Swaps two places, and tells both entries.
    fn swap(&mut self, a: usize, b: usize, sockets: &mut Slab<Entry>) {
        if a == b {
            return;
        }
        self.ids.swap(a, b);
        for index in [a, b] {
            if let Some(entry) = self.ids.get(index).and_then(|id| sockets.get_mut(id.0)) {
                entry.watch = Some(index);
            }
        }
    }
}

impl Entry {
    /// Whether the socket may go cold: a connection waiting only to read,
    /// not ready since `since` (monotonic nanoseconds) for [`QUIET`].
    pub(super) fn may_cool(&self, now: u64) -> bool {
        let reading = matches!(&self.socket, Socket::Stream(stream)
            if matches!(stream.link, Link::Connected(_)));
        reading && self.interest == Interest::READ && now.saturating_sub(self.since) >= QUIET
    }
}
