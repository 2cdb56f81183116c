//! The echo engine: accepts connections and echoes them on any [`Network`].
//!
//! One event loop serves every connection; nothing here knows which host the
//! sockets belong to.

mod connection;
mod datagram;

pub use connection::{Connection, Progress};
pub use datagram::DatagramEcho;

use crate::net::{explain, would_block, Interest, Network, SocketId};
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

/// What the server reports on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Nothing at all.
    Silent,
    /// Server-level errors only.
    Errors,
    /// Also every connection's open and close.
    Connections,
}

/// Server limits and behaviour.
#[derive(Clone, Debug)]
pub struct Config {
    /// Connections served at once; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Close connections that moved no byte for this long.
    pub idle_timeout: Option<Duration>,
    /// Unsent echo bytes one connection may hold before reading pauses.
    pub max_backlog: usize,
    /// What to report on stderr.
    pub log: LogLevel,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 10_000,
            idle_timeout: None,
            max_backlog: 64 * 1024,
            log: LogLevel::Errors,
        }
    }
}

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
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.connections += other.connections;
        self.bytes += other.bytes;
        self.datagrams += other.datagrams;
        self.cut_off += other.cut_off;
    }
}

/// How often a server told to stop by a flag looks at it.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// What another event loop needs to serve the same listener: see
/// [`Server::share`].
pub struct Share<L> {
    listener: L,
    config: Config,
    open_total: Arc<AtomicUsize>,
}

/// An echo server on `N`: a TCP listener and its connections, a UDP
/// socket, or both.
pub struct Server<N: Network> {
    net: N,
    config: Config,
    listener: Option<SocketId>,
    datagrams: Option<(SocketId, DatagramEcho)>,
    connections: Vec<Option<Connection>>,
    open: usize,
    /// Connections open across every server sharing the listener, for
    /// [`Config::max_connections`].
    open_total: Arc<AtomicUsize>,
    scratch: Box<[u8]>,
    ready: Vec<SocketId>,
    /// Sockets that yielded with work left; driven next turn without waiting.
    again: Vec<SocketId>,
    accept_paused_until: Option<Duration>,
    next_idle_sweep: Option<Duration>,
    stats: Stats,
}

impl<N: Network> Server<N> {
    /// A server with no socket yet; add them with [`Server::listen_tcp`]
    /// and [`Server::listen_udp`].
    pub fn new(net: N, config: Config) -> Self {
        Self::with_counter(net, config, Arc::default())
    }

    /// A TCP echo server listening on `addr` with the given accept `backlog`.
    pub fn bind(net: N, addr: SocketAddr, backlog: u32, config: Config) -> io::Result<Self> {
        let mut server = Self::new(net, config);
        server.listen_tcp(addr, backlog)?;
        Ok(server)
    }

    fn with_counter(net: N, config: Config, open_total: Arc<AtomicUsize>) -> Self {
        let next_idle_sweep = config
            .idle_timeout
            .map(|idle| net.now() + sweep_interval(idle));
        Server {
            net,
            config,
            listener: None,
            datagrams: None,
            connections: Vec::new(),
            open: 0,
            open_total,
            scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
            ready: Vec::new(),
            again: Vec::new(),
            accept_paused_until: None,
            next_idle_sweep,
            stats: Stats::default(),
        }
    }

    /// Serves TCP echo on `addr`; returns the address bound.
    pub fn listen_tcp(&mut self, addr: SocketAddr, backlog: u32) -> io::Result<SocketAddr> {
        let listener = self
            .net
            .listen(addr, backlog)
            .map_err(|err| explain(err, addr))?;
        self.net.set_interest(listener, Interest::READ);
        self.listener = Some(listener);
        self.net.local_addr(listener)
    }

    /// Serves UDP echo on `addr`; returns the address bound.
    pub fn listen_udp(&mut self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let socket = self.net.bind_udp(addr).map_err(|err| explain(err, addr))?;
        self.net.set_interest(socket, Interest::READ);
        self.datagrams = Some((socket, DatagramEcho::default()));
        self.net.local_addr(socket)
    }

    /// A handle for another event loop, typically on another thread, to
    /// serve this server's TCP listener with [`Server::adopt`]; the
    /// connection limit counts the connections of both. Fails on hosts that
    /// run a single event loop.
    pub fn share(&self) -> io::Result<Share<N::SharedListener>> {
        let listener = self
            .listener
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no TCP listener to share"))?;
        Ok(Share {
            listener: self.net.share(listener)?,
            config: self.config.clone(),
            open_total: Arc::clone(&self.open_total),
        })
    }

    /// Serves a listener shared by another server.
    pub fn adopt(net: N, share: Share<N::SharedListener>) -> io::Result<Self> {
        let mut server = Self::with_counter(net, share.config, share.open_total);
        let listener = server.net.adopt(share.listener)?;
        server.net.set_interest(listener, Interest::READ);
        server.listener = Some(listener);
        Ok(server)
    }

    /// The address served (with the real port when asked for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        let socket = self.listener.or(self.datagrams.as_ref().map(|(id, _)| *id));
        match socket {
            Some(socket) => self.net.local_addr(socket),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no socket bound")),
        }
    }

    /// The network the server runs on.
    pub fn network_mut(&mut self) -> &mut N {
        &mut self.net
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.open
    }

    /// Echo bytes held in memory across all connections and datagrams.
    pub fn buffered_bytes(&self) -> usize {
        let datagrams = self
            .datagrams
            .as_ref()
            .map_or(0, |(_, echo)| echo.backlog());
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
    pub fn serve_until(&mut self, stop: Option<&AtomicBool>, grace: Duration) -> io::Result<Stats> {
        let Some(stop) = stop else {
            loop {
                self.turn(None)?;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            self.turn(Some(STOP_CHECK))?;
        }
        self.stop_listening();
        let deadline = self.net.now() + grace;
        while self.open > 0 {
            let left = deadline.saturating_sub(self.net.now());
            if left.is_zero() {
                break;
            }
            self.turn(Some(left))?;
        }
        let now = self.net.now();
        let open: Vec<SocketId> = (self.connections.iter().enumerate())
            .filter_map(|(key, conn)| conn.as_ref().map(|_| SocketId(key)))
            .collect();
        self.stats.cut_off += open.len() as u64;
        for id in open {
            self.close(id, now, "shutdown timeout");
        }
        Ok(self.stats)
    }

    /// Closes the listener and the UDP socket; open connections go on.
    fn stop_listening(&mut self) {
        if let Some(listener) = self.listener.take() {
            self.net.close(listener);
        }
        if let Some((socket, echo)) = self.datagrams.take() {
            self.stats.datagrams += echo.echoed;
            self.net.close(socket);
        }
        self.accept_paused_until = None;
    }

    /// Waits for readiness (at most `max_wait`, if given) and does every bit
    /// of work that is ready.
    pub fn turn(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        let timeout = if self.again.is_empty() {
            self.next_deadline()
                .map(|deadline| deadline.saturating_sub(self.net.now()))
                .into_iter()
                .chain(max_wait)
                .min()
        } else {
            Some(Duration::ZERO)
        };
        let mut ready = mem::take(&mut self.ready);
        ready.clear();
        self.net.wait(timeout, &mut ready)?;
        ready.append(&mut self.again);
        let now = self.net.now();
        for &id in &ready {
            if Some(id) == self.listener {
                self.accept(now);
            } else if self
                .datagrams
                .as_ref()
                .is_some_and(|(socket, _)| *socket == id)
            {
                self.echo_datagrams();
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
            .min()
    }

    fn accept(&mut self, now: Duration) {
        let Some(listener) = self.listener else {
            return;
        };
        if self.accept_paused_until.is_some() {
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            match self.net.accept(listener) {
                Ok((id, peer)) => self.admit(id, peer, now),
                Err(err) if would_block(&err) => return,
                Err(err) if transient_accept_error(&err) => continue,
                Err(err) => {
                    self.log(
                        LogLevel::Errors,
                        format_args!("accept failed: {err}; pausing"),
                    );
                    self.net.set_interest(listener, Interest::NONE);
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
        self.again.push(listener);
    }

    fn echo_datagrams(&mut self) {
        let Some((socket, echo)) = &mut self.datagrams else {
            return;
        };
        let bound = self.config.max_backlog;
        let (yielded, error) = echo.drive(&mut self.net, *socket, &mut self.scratch, bound);
        if yielded {
            self.again.push(*socket);
        }
        if let Some(err) = error {
            self.log(LogLevel::Connections, format_args!("udp: {err}"));
        }
    }

    fn admit(&mut self, id: SocketId, peer: SocketAddr, now: Duration) {
        let open = self.open_total.fetch_add(1, Ordering::Relaxed) + self.net.lingering();
        if open >= self.config.max_connections {
            self.open_total.fetch_sub(1, Ordering::Relaxed);
            self.net.close(id);
            self.log(
                LogLevel::Connections,
                format_args!("refused {peer}: --max-connections reached"),
            );
            return;
        }
        if self.connections.len() <= id.0 {
            self.connections.resize_with(id.0 + 1, || None);
        }
        self.connections[id.0] = Some(Connection::new(peer, now));
        self.open += 1;
        self.stats.connections += 1;
        self.log(LogLevel::Connections, format_args!("open {peer}"));
        self.drive(id, now);
    }

    fn drive(&mut self, id: SocketId, now: Duration) {
        let Some(Some(conn)) = self.connections.get_mut(id.0) else {
            return;
        };
        let bound = self.config.max_backlog;
        match conn.drive(&mut self.net, id, &mut self.scratch, bound, now) {
            Ok(Progress::Waiting) => {}
            Ok(Progress::Yielded) => self.again.push(id),
            Ok(Progress::Finished) => self.close(id, now, "closed by peer"),
            Err(err) => self.close(id, now, &err.to_string()),
        }
    }

    fn close(&mut self, id: SocketId, now: Duration, reason: &str) {
        let Some(conn) = self.connections.get_mut(id.0).and_then(Option::take) else {
            return;
        };
        self.net.close(id);
        self.open -= 1;
        self.open_total.fetch_sub(1, Ordering::Relaxed);
        self.stats.bytes += conn.echoed;
        let seconds = now.saturating_sub(conn.opened).as_secs_f64();
        self.log(
            LogLevel::Connections,
            format_args!(
                "close {}: echoed {} bytes in {seconds:.3}s ({reason})",
                conn.peer, conn.echoed
            ),
        );
    }

    fn maintain(&mut self, now: Duration) {
        if let (Some(until), Some(listener)) = (self.accept_paused_until, self.listener) {
            if now >= until {
                self.accept_paused_until = None;
                self.net.set_interest(listener, Interest::READ);
                self.again.push(listener);
            }
        }
        let (Some(idle), Some(sweep)) = (self.config.idle_timeout, self.next_idle_sweep) else {
            return;
        };
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
            self.close(id, now, "idle timeout");
        }
        self.next_idle_sweep = Some(now + sweep_interval(idle));
    }

    fn log(&self, level: LogLevel, message: std::fmt::Arguments) {
        if self.config.log >= level {
            eprintln!("echokit: {message}");
        }
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
