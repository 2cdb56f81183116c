//! What keeps a UDP echo from being turned into an endless loop or a
//! reflector (CERT CA-1996-01): a source address can be forged, and an echo
//! answers whoever the source says sent the datagram.
//!
//! Three guards, each decided per datagram from its source, its bytes and
//! the time the caller hands in (the guard does no I/O and reads no clock):
//! - **Service ports**: a datagram from a source port below 1024 (or port
//!   0) is dropped. Echo (7), daytime (13), qotd (17), chargen (19), time
//!   (37) and most other services there answer unsolicited datagrams, and
//!   only such services use those ports: clients send from ephemeral ports
//!   (Linux 32768–60999), so nothing legitimate is lost.
//! - **Loops**: a peer that keeps returning exactly what was just echoed
//!   to it ([`LOOP_AFTER`] times in a row, each within [`BOUNCE_WINDOW`])
//!   is another echo service in a loop; it gets nothing for [`LOOP_PAUSE`].
//! - **Rate**: each source IP address gets a token bucket of
//!   [`GuardConfig::peer_rate`] datagrams per second, with a tenth of a
//!   second's worth as its burst; the excess is dropped.

use std::collections::btree_map::{BTreeMap, Entry};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Datagrams in a row, each the bytes last echoed to its sender, that make
/// a loop. Two echokit servers handed one forged datagram stop after about
/// twice this many exchanges.
pub const LOOP_AFTER: u32 = 64;
/// How soon after the echo a returned datagram counts toward a loop. A
/// loop between echo services turns in microseconds to milliseconds; a
/// person or a client repeating the same payload on the same socket ten
/// times a second is not one, nor is a loop slower than this (it costs
/// under ten datagrams a second).
pub const BOUNCE_WINDOW: Duration = Duration::from_millis(100);
/// How long a looping peer gets no echo; one dropped datagram ends a loop.
pub const LOOP_PAUSE: Duration = Duration::from_secs(1);
/// The default [`GuardConfig::peer_rate`]: above what `echokit bench
/// --udp` reaches from one address at full speed on a 2-core machine
/// (about 250k datagrams per second), so benchmarks are never limited.
pub const DEFAULT_PEER_RATE: u32 = 1_000_000;
/// Peers (and source addresses) tracked at most, so that forged sources
/// cannot grow the guard's memory; see [`UdpGuard`].
const MAX_TRACKED: usize = 65_536;
/// Echoes remembered per peer: a loop may carry several datagrams at once.
const REMEMBERED: usize = 8;
/// Entries unseen this long are forgotten when the tables are full.
const STALE: Duration = Duration::from_secs(2);

/// The guards' settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    /// Datagrams per second echoed to one source IP address; `None` for
    /// no bound.
    pub peer_rate: Option<u32>,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            peer_rate: Some(DEFAULT_PEER_RATE),
        }
    }
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Its source port is below 1024: a service's, not a client's.
    ServicePort,
    /// Its sender is in an echo loop with this server.
    Loop,
    /// Its source address sent more than [`GuardConfig::peer_rate`].
    Rate,
}

/// Datagrams dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// From service ports.
    pub service_port: u64,
    /// From peers in a loop.
    pub looping: u64,
    /// Over a source's rate.
    pub rate: u64,
}

impl Drops {
    /// Every drop.
    pub fn total(&self) -> u64 {
        self.service_port + self.looping + self.rate
    }

    fn count(&mut self, reason: DropReason) {
        match reason {
            DropReason::ServicePort => self.service_port += 1,
            DropReason::Loop => self.looping += 1,
            DropReason::Rate => self.rate += 1,
        }
    }
}

impl std::ops::AddAssign for Drops {
    fn add_assign(&mut self, other: Drops) {
        self.service_port += other.service_port;
        self.looping += other.looping;
        self.rate += other.rate;
    }
}

/// The guard's answer for one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Echo it.
    Echo,
    /// Drop it; `first` when this starts an episode worth telling once
    /// (the first service-port drop, a loop found, a source going over its
    /// rate).
    Drop {
        /// Why.
        reason: DropReason,
        /// Whether to say so.
        first: bool,
    },
}

/// One peer's recent echoes, for loop detection.
#[derive(Debug, Default)]
struct Peer {
    /// Fingerprints of the last echoes to it, and when they were sent.
    echoes: [(u64, Duration); REMEMBERED],
    next: usize,
    bounces: u32,
    paused_until: Duration,
    last_seen: Duration,
}

/// One source address's token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Duration,
    /// Over its rate since it was last full: the episode was told.
    limited: bool,
}

/// The guards of one server's UDP sockets.
///
/// Its tables hold at most 65,536 entries each (about 10 MiB at worst);
/// when full, entries unseen for 2 s are forgotten, at most once per
/// 2 s. Sources that still find no room share one bucket and
/// are not checked for loops. The tables are ordered maps: no forged
/// address can be chosen to collide with others (and the wasm build needs
/// no random seed).
#[derive(Debug, Default)]
pub struct UdpGuard {
    config: GuardConfig,
    peers: BTreeMap<SocketAddr, Peer>,
    sources: BTreeMap<IpAddr, Bucket>,
    /// The bucket of sources the table had no room for.
    overflow: Option<Bucket>,
    last_sweep: Duration,
    told_service_port: bool,
    /// What was dropped so far.
    pub drops: Drops,
}

impl UdpGuard {
    /// A guard with `config`.
    pub fn new(config: GuardConfig) -> Self {
        UdpGuard {
            config,
            ..UdpGuard::default()
        }
    }

    /// Whether to echo `datagram`, received from `from` at `now`; an echo
    /// is taken as sent at `now`. Counts what it drops.
    pub fn check(&mut self, from: SocketAddr, datagram: &[u8], now: Duration) -> Verdict {
        let verdict = self.judge(from, datagram, now);
        if let Verdict::Drop { reason, .. } = verdict {
            self.drops.count(reason);
        }
        verdict
    }

    fn judge(&mut self, from: SocketAddr, datagram: &[u8], now: Duration) -> Verdict {
        if from.port() < 1024 {
            let first = !self.told_service_port;
            self.told_service_port = true;
            return Verdict::Drop {
                reason: DropReason::ServicePort,
                first,
            };
        }
        self.sweep_if_full(now);
        let print = fingerprint(datagram);
        let tracked = self.peers.len() < MAX_TRACKED || self.peers.contains_key(&from);
        if tracked {
            let peer = self.peers.entry(from).or_default();
            peer.last_seen = now;
            if now < peer.paused_until {
                return drop(DropReason::Loop, false);
            }
            if peer.returns(print, now) {
                peer.bounces += 1;
                if peer.bounces >= LOOP_AFTER {
                    *peer = Peer {
                        paused_until: now + LOOP_PAUSE,
                        last_seen: now,
                        ..Peer::default()
                    };
                    return drop(DropReason::Loop, true);
                }
            } else {
                peer.bounces = 0;
            }
        }
        if let Some(rate) = self.config.peer_rate {
            let room = self.sources.len() < MAX_TRACKED;
            let bucket = match self.sources.entry(from.ip()) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) if room => entry.insert(Bucket::full(rate, now)),
                Entry::Vacant(_) => self.overflow.get_or_insert_with(|| Bucket::full(rate, now)),
            };
            if let Some(first) = bucket.spend(rate, now) {
                return drop(DropReason::Rate, first);
            }
        }
        if tracked {
            if let Some(peer) = self.peers.get_mut(&from) {
                peer.echoed(print, now);
            }
        }
        Verdict::Echo
    }

    /// Forgets stale entries when a table is full, at most once per
    /// [`STALE`].
    fn sweep_if_full(&mut self, now: Duration) {
        let full = self.peers.len() >= MAX_TRACKED || self.sources.len() >= MAX_TRACKED;
        if !full || now.saturating_sub(self.last_sweep) < STALE {
            return;
        }
        self.last_sweep = now;
        self.peers.retain(|_, peer| {
            now.saturating_sub(peer.last_seen) < STALE || now < peer.paused_until
        });
        self.sources
            .retain(|_, bucket| now.saturating_sub(bucket.refilled) < STALE);
    }
}

fn drop(reason: DropReason, first: bool) -> Verdict {
    Verdict::Drop { reason, first }
}

impl Peer {
    /// Whether a datagram with fingerprint `print`, received at `now`, is
    /// one of the recent echoes to this peer coming back.
    fn returns(&self, print: u64, now: Duration) -> bool {
        (self.echoes.iter()).any(|&(echoed, at)| {
            echoed == print && at != Duration::ZERO && now.saturating_sub(at) <= BOUNCE_WINDOW
        })
    }

    fn echoed(&mut self, print: u64, now: Duration) {
        // A zero time marks an empty slot: nudge an echo at time zero.
        self.echoes[self.next] = (print, now.max(Duration::from_nanos(1)));
        self.next = (self.next + 1) % REMEMBERED;
    }
}

impl Bucket {
    /// A full bucket for `rate` datagrams per second.
    fn full(rate: u32, now: Duration) -> Bucket {
        Bucket {
            tokens: burst(rate),
            refilled: now,
            limited: false,
        }
    }

    /// Takes a token; `None` if there was one, else `Some(first)`, `first`
    /// when the source was within its rate until now.
    fn spend(&mut self, rate: u32, now: Duration) -> Option<bool> {
        let elapsed = now.saturating_sub(self.refilled).as_secs_f64();
        self.refilled = self.refilled.max(now);
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(burst(rate));
        if self.tokens >= burst(rate) {
            self.limited = false;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return None;
        }
        let first = !self.limited;
        self.limited = true;
        Some(first)
    }
}

/// A bucket's size: a tenth of a second at `rate`, and at least one.
fn burst(rate: u32) -> f64 {
    (f64::from(rate) / 10.0).max(1.0)
}

/// A fingerprint of a datagram that costs the same for any size: FNV-1a
/// over its length and its first and last 32 bytes. Echoes of one datagram
/// share it; a client's successive datagrams that differ in their first or
/// last bytes (every load generator's do) do not.
fn fingerprint(datagram: &[u8]) -> u64 {
    let head = &datagram[..datagram.len().min(32)];
    let tail = &datagram[datagram.len().saturating_sub(32)..];
    let len = (datagram.len() as u64).to_le_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in len.iter().chain(head).chain(tail) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests;
