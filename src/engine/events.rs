//! What a server reports as it runs: events for an [`Observer`] its caller
//! gives it. The engine says what happened; the caller decides whether and
//! how to tell anyone.

use super::guard::DropReason;
use crate::proxy::{Header, Reason};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Something that happened in a server.
#[derive(Debug)]
pub enum Event<'a> {
    /// A connection was accepted and is being served.
    Opened {
        /// The peer's address.
        peer: SocketAddr,
    },
    /// A connection's PROXY protocol header was accepted and consumed: the
    /// echo starts ([`Config::proxy`](super::Config)).
    Proxied {
        /// The peer's address: the balancer's.
        peer: SocketAddr,
        /// The header: the real client's addresses, when it gives them.
        header: &'a Header,
    },
    /// A served connection was closed.
    Closed {
        /// The peer's address.
        peer: SocketAddr,
        /// Bytes echoed on it.
        echoed: u64,
        /// How long it was open.
        lasted: Duration,
        /// Why it was closed.
        why: Closed<'a>,
    },
    /// A connection was accepted and closed at once: the server already
    /// serves its limit.
    Refused {
        /// The peer's address.
        peer: SocketAddr,
        /// The limit, [`Config::max_connections`](super::Config).
        limit: usize,
    },
    /// Accepting failed (say, the descriptor table is full): the listener
    /// rests for `pause`.
    AcceptFailed {
        /// What accept reported.
        error: &'a io::Error,
        /// How long accepting pauses.
        pause: Duration,
    },
    /// Datagrams from `from` start being dropped, not echoed, for
    /// `reason`; the drops that follow are only counted
    /// ([`Stats::dropped`](super::Stats)).
    Dropping {
        /// The datagram's source.
        from: SocketAddr,
        /// Why.
        reason: DropReason,
    },
    /// One datagram could not be received or echoed; the others go on.
    DatagramFailed {
        /// What the socket reported.
        error: &'a io::Error,
    },
}

/// Why a connection was closed.
#[derive(Debug)]
pub enum Closed<'a> {
    /// The peer closed its side and got its whole echo.
    Finished,
    /// The connection failed.
    Failed(&'a io::Error),
    /// No byte moved for [`Config::idle_timeout`](super::Config).
    IdleTimeout,
    /// It was still open when the shutdown's grace period ran out.
    ShutdownTimeout,
    /// Its PROXY protocol header was invalid, cut short or late; nothing
    /// was echoed.
    HeaderRefused(Reason),
}

/// Receives a server's [`Event`]s, on the server's own thread.
pub trait Observer {
    /// Called for each event as it happens.
    fn observe(&mut self, event: Event<'_>);
}

/// Ignores every event.
impl Observer for () {
    fn observe(&mut self, _event: Event<'_>) {}
}
