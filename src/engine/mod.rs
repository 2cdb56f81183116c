//! The echo engine: accepts connections and echoes them, and echoes
//! datagrams, on any [`Network`].
//!
//! One [`Server`] is one event loop. It knows nothing of the host: the
//! sockets come from its network, the time from the clock its caller hands
//! it, and what happens goes to the caller's [`Observer`] as [`Event`]s.
//! Several servers (one per thread, where the host has threads) may serve
//! the same ports and share one connection limit.

mod connection;
mod datagram;
mod events;
pub mod guard;
mod header;

pub use connection::{Connection, Progress, Turn};
pub use datagram::DatagramEcho;
pub use events::{Closed, Event, Observer};

use self::guard::{Drops, GuardConfig, UdpGuard};
use crate::clock::Clock;
use crate::net::{
    explain, would_block, Bind, Capabilities, Close, Interest, Network, Protocol, SocketId,
};
use crate::proxy::{self, Accept, Command, Reason};
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Size of the read buffer shared by all connections of one server.
const SCRATCH_SIZE: usize = 64 * 1024;
/// Connections accepted per turn before other work gets a chance.
const ACCEPTS_PER_TURN: usize = 64;
/// How long accepting pauses after an accept error such as "too many open
/// files", so a full descriptor table does not turn into a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often a server told to stop by a flag looks at it.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// How long a connection may take to send its whole PROXY header, unless
/// told ([`Config::proxy_timeout`]).
pub const PROXY_TIMEOUT: Duration = Duration::from_secs(3);

/// Server limits.
#[derive(Clone, Debug)]
pub struct Config {
    /// Connections served at once, across every server sharing a
    /// [`ConnectionCount`]; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Close connections that moved no byte for this long.
    pub idle_timeout: Option<Duration>,
    /// Unsent echo bytes one connection may hold before reading pauses.
    pub max_backlog: usize,
    /// What UDP echo refuses: see [`guard`].
    pub udp_guard: GuardConfig,
    /// Every TCP connection, and every UDP datagram, must start with a
    /// PROXY protocol header of these versions, which is consumed, never
    /// echoed (datagrams: a v2 `DGRAM` or `LOCAL` header each); `None` for
    /// plain echo.
    pub proxy: Option<Accept>,
    /// How long a connection may take to send its whole PROXY header.
    pub proxy_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 10_000,
            idle_timeout: None,
            max_backlog: 64 * 1024,
            udp_guard: GuardConfig::default(),
            proxy: None,
            proxy_timeout: PROXY_TIMEOUT,
        }
    }
}

/// Connections open across the servers (event loops) that share it, for
/// [`Config::max_connections`].
#[derive(Clone, Debug, Default)]
pub struct ConnectionCount(Arc<AtomicUsize>);

/// What a server did, for the summary at shutdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// TCP connections served (accepted and not refused).
    pub connections: u64,
    /// Bytes echoed over TCP.
    pub bytes: u64,
    /// Datagrams echoed over UDP.
    pub datagrams: u64,
    /// Connections still open when the shutdown grace period ran out.
    pub cut_off: u64,
    /// Datagrams the UDP guards dropped, by reason.
    pub dropped: Drops,
    /// PROXY protocol headers accepted and refused.
    pub proxy: ProxyCounts,
}

/// PROXY protocol headers a server took and refused ([`Config::proxy`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyCounts {
    /// Headers accepted, `LOCAL` ones included.
    pub accepted: u64,
    /// Of those, headers without the client's address: v2 `LOCAL` (a
    /// balancer's health checks), v1 `UNKNOWN`, v2 `UNSPEC`.
    pub local: u64,
    /// Connections refused, by reason: indexed as [`Reason::ALL`].
    pub refused: [u64; Reason::ALL.len()],
}

impl ProxyCounts {
    /// Connections refused for any reason.
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().sum()
    }

    /// The reasons connections were refused for, with their counts,
    /// in [`Reason::ALL`]'s order.
    pub fn refusals(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        (Reason::ALL.iter().zip(&self.refused))
            .filter(|(_, &count)| count > 0)
            .map(|(&reason, &count)| (reason, count))
    }
}

impl std::ops::AddAssign for ProxyCounts {
    fn add_assign(&mut self, other: ProxyCounts) {
        self.accepted += other.accepted;
        self.local += other.local;
        for (mine, theirs) in self.refused.iter_mut().zip(other.refused) {
            *mine += theirs;
        }
    }
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.connections += other.connections;
        self.bytes += other.bytes;
        self.datagrams += other.datagrams;
        self.cut_off += other.cut_off;
        self.dropped += other.dropped;
        self.proxy += other.proxy;
    }
}

/// An echo server on `N`: TCP listeners and their connections, and UDP
/// sockets, reporting to `O`.
pub struct Server<N: Network, O: Observer = ()> {
    net: N,
    capabilities: Capabilities,
    observer: O,
    config: Config,
    listeners: Vec<SocketId>,
    datagrams: Vec<(SocketId, DatagramEcho)>,
    guard: UdpGuard,
    connections: Vec<Option<Connection>>,
    open: usize,
    open_total: ConnectionCount,
    scratch: Box<[u8]>,
    ready: Vec<SocketId>,
    /// Sockets that yielded with work left; driven next turn without waiting.
    again: Vec<SocketId>,
    accept_paused_until: Option<Duration>,
    next_idle_sweep: Option<Duration>,
    /// Connections still reading their PROXY header.
    headers: header::Headers,
    stats: Stats,
}

impl<N: Network, O: Observer> Server<N, O> {
    /// A server with no socket yet (add them with [`Server::listen`]),
    /// counting its connections in `count`.
    pub fn new(net: N, config: Config, count: ConnectionCount, observer: O) -> Self {
        Server {
            capabilities: net.capabilities(),
            net,
            observer,
            listeners: Vec::new(),
            datagrams: Vec::new(),
            guard: UdpGuard::new(config.udp_guard),
            connections: Vec::new(),
            open: 0,
            open_total: count,
            scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
            ready: Vec::new(),
            again: Vec::new(),
            accept_paused_until: None,
            next_idle_sweep: None,
            headers: header::Headers::default(),
            stats: Stats::default(),
            config,
        }
    }

    /// Serves `protocol`'s echo on `addr`; returns the address bound (with
    /// the real port when asked for port 0).
    pub fn listen(
        &mut self,
        protocol: Protocol,
        addr: SocketAddr,
        bind: Bind,
    ) -> io::Result<SocketAddr> {
        let socket = match protocol {
            Protocol::Tcp => self.net.listen(addr, bind),
            Protocol::Udp => self.net.bind_udp(addr, bind),
        }
        .map_err(|err| explain(err, addr))?;
        self.net.set_interest(socket, Interest::READ);
        match protocol {
            Protocol::Tcp => self.listeners.push(socket),
            Protocol::Udp => {
                let mut echo = DatagramEcho::default();
                echo.proxy = self.config.proxy;
                self.datagrams.push((socket, echo));
            }
        }
        self.net.local_addr(socket)
    }

    /// The network the server runs on.
    pub fn network_mut(&mut self) -> &mut N {
        &mut self.net
    }

    /// Connections this server has open now.
    pub fn open_connections(&self) -> usize {
        self.open
    }

    /// Echo bytes held in memory across all connections and datagrams.
    pub fn buffered_bytes(&self) -> usize {
        let datagrams: usize = self.datagrams.iter().map(|(_, echo)| echo.backlog()).sum();
        let streams: usize = self
            .connections
            .iter()
            .flatten()
            .map(Connection::backlog)
            .sum();
        streams + datagrams
    }

    /// Serves until `stop` is set (forever without one), then shuts down
    /// gracefully: stops accepting and receiving datagrams, lets open
    /// connections finish their echo for up to `grace`, closes the rest.
    pub fn serve_until(
        &mut self,
        clock: &impl Clock,
        stop: Option<&AtomicBool>,
        grace: Duration,
    ) -> io::Result<Stats> {
        let Some(stop) = stop else {
            loop {
                self.turn(clock, None)?;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            self.turn(clock, Some(STOP_CHECK))?;
        }
        self.stop_listening();
        let deadline = clock.now() + grace;
        while self.open > 0 {
            let left = deadline.saturating_sub(clock.now());
            if left.is_zero() {
                break;
            }
            self.turn(clock, Some(left))?;
        }
        let now = clock.now();
        let open: Vec<SocketId> = (self.connections.iter().enumerate())
            .filter_map(|(key, conn)| conn.as_ref().map(|_| SocketId(key)))
            .collect();
        self.stats.cut_off += open.len() as u64;
        for id in open {
            self.close(id, now, Closed::ShutdownTimeout);
        }
        Ok(self.stats())
    }

    /// What the server did so far.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        for (_, echo) in &self.datagrams {
            stats.datagrams += echo.echoed;
            stats.proxy += echo.headers;
        }
        stats.dropped = self.guard.drops;
        stats
    }

    /// Closes the listeners and the UDP sockets; open connections go on.
    fn stop_listening(&mut self) {
        for listener in mem::take(&mut self.listeners) {
            self.net.close(listener, Close::Orderly);
        }
        for (socket, echo) in mem::take(&mut self.datagrams) {
            self.stats.datagrams += echo.echoed;
            self.stats.proxy += echo.headers;
            self.net.close(socket, Close::Orderly);
        }
        self.accept_paused_until = None;
    }

    /// One turn of the event loop: waits for readiness (at most
    /// `max_wait`, if given, and never past the server's own deadlines)
    /// and does every bit of work that is ready.
    pub fn turn(&mut self, clock: &impl Clock, max_wait: Option<Duration>) -> io::Result<()> {
        let timeout = match self.again.is_empty() {
            true => (self.next_deadline())
                .map(|deadline| deadline.saturating_sub(clock.now()))
                .into_iter()
                .chain(max_wait)
                .min(),
            false => Some(Duration::ZERO),
        };
        let mut ready = mem::take(&mut self.ready);
        ready.clear();
        self.net.wait(timeout, &mut ready)?;
        ready.append(&mut self.again);
        let now = clock.now();
        for &id in &ready {
            if self.listeners.contains(&id) {
                self.accept(id, now);
            } else if let Some(index) = self.datagrams.iter().position(|(s, _)| *s == id) {
                self.echo_datagrams(index, now);
            } else {
                self.drive(id, now);
            }
        }
        self.ready = ready;
        self.maintain(now);
        Ok(())
    }

    fn next_deadline(&self) -> Option<Duration> {
        self.accept_paused_until
            .into_iter()
            .chain(self.next_idle_sweep)
            .chain(self.headers.next_deadline())
            .min()
    }

    fn accept(&mut self, listener: SocketId, now: Duration) {
        if self.accept_paused_until.is_some() {
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            match self.net.accept(listener) {
                Ok((id, peer)) => self.admit(id, peer, now),
                Err(err) if would_block(&err) => return,
                Err(err) if transient_accept_error(&err) => continue,
                Err(err) => {
                    self.observer.observe(Event::AcceptFailed {
                        error: &err,
                        pause: ACCEPT_BACKOFF,
                    });
                    for &listener in &self.listeners {
                        self.net.set_interest(listener, Interest::NONE);
                    }
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
        self.again.push(listener);
    }

    fn echo_datagrams(&mut self, index: usize, now: Duration) {
        let (socket, echo) = &mut self.datagrams[index];
        let mut turn = Turn {
            scratch: &mut self.scratch,
            bound: self.config.max_backlog,
            now,
        };
        let progress = echo.drive(
            &mut self.net,
            *socket,
            &mut turn,
            &mut self.guard,
            &mut self.observer,
        );
        if progress == Progress::Yielded {
            self.again.push(*socket);
        }
    }

    fn admit(&mut self, id: SocketId, peer: SocketAddr, now: Duration) {
        let count = &self.open_total.0;
        let open = count.fetch_add(1, Ordering::Relaxed) + self.net.lingering();
        if open >= self.config.max_connections {
            count.fetch_sub(1, Ordering::Relaxed);
            self.net.close(id, Close::Orderly);
            self.observer.observe(Event::Refused {
                peer,
                limit: self.config.max_connections,
            });
            return;
        }
        if self.connections.len() <= id.0 {
            self.connections.resize_with(id.0 + 1, || None);
        }
        self.connections[id.0] = Some(Connection::new(peer, now, self.capabilities.splice));
        self.open += 1;
        self.stats.connections += 1;
        self.observer.observe(Event::Opened { peer });
        if self.config.proxy.is_some() {
            self.headers.expect(id, now + self.config.proxy_timeout);
            self.net.set_interest(id, Interest::READ);
        }
        self.drive(id, now);
    }

    fn drive(&mut self, id: SocketId, now: Duration) {
        if let Some(accept) = self.config.proxy {
            if self.headers.awaits(id) && !self.read_header(id, accept, now) {
                return;
            }
        }
        let Some(Some(conn)) = self.connections.get_mut(id.0) else {
            return;
        };
        let mut turn = Turn {
            scratch: &mut self.scratch,
            bound: self.config.max_backlog,
            now,
        };
        match conn.drive(&mut self.net, id, &mut turn) {
            Ok(Progress::Waiting) => {}
            Ok(Progress::Yielded) => self.again.push(id),
            Ok(Progress::Finished) => self.close(id, now, Closed::Finished),
            Err(err) => self.close(id, now, Closed::Failed(&err)),
        }
    }

    /// Reads `id`'s PROXY header as far as it came; whether the
    /// connection goes on to echo (its header is whole and valid).
    fn read_header(&mut self, id: SocketId, accept: Accept, now: Duration) -> bool {
        let Some(Some(conn)) = self.connections.get_mut(id.0) else {
            return false;
        };
        let bound = self.config.max_backlog;
        let read = self
            .headers
            .read(&mut self.net, id, accept, &mut self.scratch, bound);
        match read {
            Ok(header::Read::Waiting) => false,
            Ok(header::Read::Accepted { header, rest }) => {
                conn.echo_first(&rest, now);
                self.stats.proxy.accepted += 1;
                if header.command == Command::Local || header.addresses == proxy::Addresses::Unknown
                {
                    self.stats.proxy.local += 1;
                }
                self.observer.observe(Event::Proxied {
                    peer: conn.peer,
                    header: &header,
                });
                true
            }
            Ok(header::Read::Refused(reason)) => {
                self.refuse_header(id, now, reason);
                false
            }
            Err(err) => {
                self.close(id, now, Closed::Failed(&err));
                false
            }
        }
    }

    /// Closes `id` for its PROXY header, counted by `reason`.
    fn refuse_header(&mut self, id: SocketId, now: Duration, reason: Reason) {
        self.stats.proxy.refused[reason.index()] += 1;
        self.close(id, now, Closed::HeaderRefused(reason));
    }

    fn close(&mut self, id: SocketId, now: Duration, why: Closed<'_>) {
        self.headers.forget(id);
        let Some(conn) = self.connections.get_mut(id.0).and_then(Option::take) else {
            return;
        };
        self.net.close(id, Close::Orderly);
        self.open -= 1;
        self.open_total.0.fetch_sub(1, Ordering::Relaxed);
        self.stats.bytes += conn.echoed;
        self.observer.observe(Event::Closed {
            peer: conn.peer,
            echoed: conn.echoed,
            lasted: now.saturating_sub(conn.opened),
            why,
        });
    }

    fn maintain(&mut self, now: Duration) {
        if let Some(until) = self.accept_paused_until {
            if now >= until {
                self.accept_paused_until = None;
                for &listener in &self.listeners {
                    self.net.set_interest(listener, Interest::READ);
                    self.again.push(listener);
                }
            }
        }
        for id in self.headers.expired(now) {
            self.refuse_header(id, now, Reason::Timeout);
        }
        let Some(idle) = self.config.idle_timeout else {
            return;
        };
        let sweep = *self
            .next_idle_sweep
            .get_or_insert(now + sweep_interval(idle));
        if now < sweep {
            return;
        }
        let idle_ids: Vec<SocketId> = (self.connections.iter().enumerate())
            .filter_map(|(key, conn)| {
                let conn = conn.as_ref()?;
                (now.saturating_sub(conn.last_active) >= idle).then_some(SocketId(key))
            })
            .collect();
        for id in idle_ids {
            self.close(id, now, Closed::IdleTimeout);
        }
        self.next_idle_sweep = Some(now + sweep_interval(idle));
    }
}

/// How often idle connections are looked for: a quarter of the timeout
/// (at least 10 ms), so a connection closes at most one interval after its
/// timeout: between 1 and 1.25 timeouts after its last byte for timeouts of
/// 40 ms and more.
pub fn sweep_interval(idle: Duration) -> Duration {
    (idle / 4).max(Duration::from_millis(10))
}

/// Accept errors that concern one connection, not the listener.
fn transient_accept_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests;
