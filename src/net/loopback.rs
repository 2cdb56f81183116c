//! An in-memory network for tests: deterministic, single-threaded, and with
//! time that moves only when somebody waits.
//!
//! [`Loopback::host`] hands out [`Network`] handles that share one world, so
//! a server and its clients can run in one thread, turn by turn. Each stream
//! direction holds at most [`Loopback::with_buffer`] bytes, which makes
//! backpressure easy to provoke.

use super::{
    no_splice, nothing_to_wait_for, Bind, Capabilities, Close, Interest, Network, SocketId, Spliced,
};
use crate::clock::Clock;
use slab::Slab;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

/// The shared world behind every [`LoopbackNetwork`] handle.
#[derive(Clone)]
pub struct Loopback {
    world: Rc<RefCell<World>>,
}

/// One host's view of a [`Loopback`] world: it sees only its own sockets.
pub struct LoopbackNetwork {
    world: Rc<RefCell<World>>,
    host: usize,
    splices: bool,
}

struct World {
    now: Duration,
    buffer: usize,
    hosts: usize,
    next_port: u16,
    sockets: Slab<Socket>,
    listeners: HashMap<SocketAddr, usize>,
    datagram_sockets: HashMap<SocketAddr, usize>,
}

enum Socket {
    Listener {
        host: usize,
        addr: SocketAddr,
        pending: VecDeque<usize>,
        backlog: usize,
        interest: Interest,
    },
    Stream(Stream),
    Datagram {
        host: usize,
        addr: SocketAddr,
        /// Datagrams received and not read yet; a full inbox drops more.
        inbox: VecDeque<(Vec<u8>, SocketAddr)>,
        interest: Interest,
    },
}

struct Stream {
    host: usize,
    local: SocketAddr,
    peer: Option<usize>,
    /// Bytes the peer wrote that this end has not read yet.
    inbox: VecDeque<u8>,
    /// The peer will write no more.
    peer_shut: bool,
    /// A server's end: taken from the listener's queue.
    accepted: bool,
    interest: Interest,
}

impl Default for Loopback {
    fn default() -> Self {
        Self::with_buffer(64 * 1024)
    }
}

impl Loopback {
    /// A world whose stream buffers hold `buffer` bytes per direction.
    pub fn with_buffer(buffer: usize) -> Self {
        Loopback {
            world: Rc::new(RefCell::new(World {
                now: Duration::ZERO,
                buffer: buffer.max(1),
                hosts: 0,
                next_port: 40_000,
                sockets: Slab::new(),
                listeners: HashMap::new(),
                datagram_sockets: HashMap::new(),
            })),
        }
    }

    /// A new handle on this world.
    pub fn host(&self) -> LoopbackNetwork {
        let host = {
            let mut world = self.world.borrow_mut();
            world.hosts += 1;
            world.hosts
        };
        LoopbackNetwork {
            world: Rc::clone(&self.world),
            host,
            splices: true,
        }
    }

    /// A new handle that cannot splice, so that callers read and write
    /// back instead, as on hosts without splice (native).
    pub fn host_without_splice(&self) -> LoopbackNetwork {
        LoopbackNetwork {
            splices: false,
            ..self.host()
        }
    }

    /// Delivers `datagram` to `to` as if `from` had sent it, whoever is
    /// bound there: what a raw socket can do on a real network.
    pub fn forge(&self, from: SocketAddr, to: SocketAddr, datagram: &[u8]) {
        let mut world = self.world.borrow_mut();
        world.deliver(from, to, datagram);
    }

    /// Moves the world's clock forward.
    pub fn advance(&self, by: Duration) {
        self.world.borrow_mut().now += by;
    }
}

/// The world's simulated time, which moves only when a host waits with
/// nothing ready, or by [`Loopback::advance`].
impl Clock for Loopback {
    fn now(&self) -> Duration {
        self.world.borrow().now
    }
}

fn error(kind: io::ErrorKind) -> io::Error {
    kind.into()
}

impl World {
    /// Queues `datagram` from `from` at the socket bound to `to`, if any,
    /// unless its inbox holds a buffer's worth.
    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, datagram: &[u8]) {
        let target = self.datagram_sockets.get(&to).copied();
        if let Some(Socket::Datagram { inbox, .. }) =
            target.and_then(|key| self.sockets.get_mut(key))
        {
            let queued: usize = inbox.iter().map(|(data, _)| data.len()).sum();
            if queued + datagram.len() <= self.buffer {
                inbox.push_back((datagram.to_vec(), from));
            }
        }
    }

    fn stream(&mut self, id: SocketId) -> io::Result<&mut Stream> {
        match self.sockets.get_mut(id.0) {
            Some(Socket::Stream(stream)) => Ok(stream),
            _ => Err(error(io::ErrorKind::NotConnected)),
        }
    }

    /// A fresh port on `ip`.
    fn ephemeral_addr(&mut self, ip: IpAddr) -> SocketAddr {
        self.next_port = self.next_port.checked_add(1).unwrap_or(40_000);
        SocketAddr::new(ip, self.next_port)
    }

    /// Binds a new socket to `addr` (port 0: a fresh port) in the address
    /// table `table` picks, unless something is bound there already.
    fn bind(
        &mut self,
        addr: SocketAddr,
        table: fn(&mut World) -> &mut HashMap<SocketAddr, usize>,
        socket: impl FnOnce(SocketAddr) -> Socket,
    ) -> io::Result<SocketId> {
        let addr = match addr.port() {
            0 => self.ephemeral_addr(addr.ip()),
            _ => addr,
        };
        if table(self).contains_key(&addr) {
            return Err(error(io::ErrorKind::AddrInUse));
        }
        let key = self.sockets.insert(socket(addr));
        table(self).insert(addr, key);
        Ok(SocketId(key))
    }

    /// Whether any socket of `host` asks to be woken for anything.
    fn has_interest(&self, host: usize) -> bool {
        self.sockets.iter().any(|(_, socket)| {
            let (owner, interest) = match socket {
                Socket::Listener { host, interest, .. } => (*host, *interest),
                Socket::Datagram { host, interest, .. } => (*host, *interest),
                Socket::Stream(stream) => (stream.host, stream.interest),
            };
            owner == host && interest != Interest::NONE
        })
    }

    fn is_ready(&self, key: usize, host: usize) -> bool {
        match &self.sockets[key] {
            Socket::Listener {
                host: owner,
                pending,
                interest,
                ..
            } => *owner == host && interest.read && !pending.is_empty(),
            Socket::Datagram {
                host: owner,
                inbox,
                interest,
                ..
            } => *owner == host && (interest.write || (interest.read && !inbox.is_empty())),
            Socket::Stream(stream) if stream.host != host => false,
            Socket::Stream(stream) => {
                let readable = !stream.inbox.is_empty() || stream.peer_shut;
                let writable = match stream.peer.and_then(|peer| self.sockets.get(peer)) {
                    Some(Socket::Stream(peer)) => peer.inbox.len() < self.buffer,
                    _ => true,
                };
                (stream.interest.read && readable) || (stream.interest.write && writable)
            }
        }
    }
}

impl LoopbackNetwork {
    /// Whether the server has accepted the connection whose client end is
    /// `id`.
    pub fn is_accepted(&self, id: SocketId) -> bool {
        let mut world = self.world.borrow_mut();
        let Some(peer) = world.stream(id).ok().and_then(|stream| stream.peer) else {
            return false;
        };
        world.stream(SocketId(peer)).is_ok_and(|peer| peer.accepted)
    }
}

impl Network for LoopbackNetwork {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "loopback",
            splice: self.splices,
            reset: false,
            threads: false,
            lingering: false,
        }
    }

    fn listen(&mut self, addr: SocketAddr, bind: Bind) -> io::Result<SocketId> {
        let host = self.host;
        self.world.borrow_mut().bind(
            addr,
            |world| &mut world.listeners,
            |addr| Socket::Listener {
                host,
                addr,
                pending: VecDeque::new(),
                backlog: bind.backlog as usize,
                interest: Interest::NONE,
            },
        )
    }

    fn connect(&mut self, addr: SocketAddr, local: Option<IpAddr>) -> io::Result<SocketId> {
        let mut world = self.world.borrow_mut();
        let world = &mut *world;
        let listener = *world
            .listeners
            .get(&addr)
            .ok_or_else(|| error(io::ErrorKind::ConnectionRefused))?;
        let server_host = match &world.sockets[listener] {
            Socket::Listener {
                pending, backlog, ..
            } if pending.len() >= *backlog => {
                return Err(error(io::ErrorKind::ConnectionRefused));
            }
            Socket::Listener { host, .. } => *host,
            _ => return Err(error(io::ErrorKind::ConnectionRefused)),
        };
        let local = world.ephemeral_addr(local.unwrap_or(Ipv4Addr::LOCALHOST.into()));
        let new_stream = |host, local| {
            Socket::Stream(Stream {
                host,
                local,
                peer: None,
                inbox: VecDeque::new(),
                peer_shut: false,
                accepted: false,
                interest: Interest::NONE,
            })
        };
        let client = world.sockets.insert(new_stream(self.host, local));
        let server = world.sockets.insert(new_stream(server_host, addr));
        for (end, peer) in [(client, server), (server, client)] {
            if let Socket::Stream(stream) = &mut world.sockets[end] {
                stream.peer = Some(peer);
            }
        }
        if let Socket::Listener { pending, .. } = &mut world.sockets[listener] {
            pending.push_back(server);
        }
        Ok(SocketId(client))
    }

    fn accept(&mut self, listener: SocketId) -> io::Result<(SocketId, SocketAddr)> {
        let mut world = self.world.borrow_mut();
        let key = match world.sockets.get_mut(listener.0) {
            Some(Socket::Listener { pending, .. }) => pending.pop_front(),
            _ => return Err(error(io::ErrorKind::InvalidInput)),
        }
        .ok_or_else(|| error(io::ErrorKind::WouldBlock))?;
        world.stream(SocketId(key))?.accepted = true;
        let peer = match world.stream(SocketId(key))?.peer {
            Some(peer) => world.stream(SocketId(peer))?.local,
            None => return Err(error(io::ErrorKind::ConnectionAborted)),
        };
        Ok((SocketId(key), peer))
    }

    fn local_addr(&self, id: SocketId) -> io::Result<SocketAddr> {
        match self.world.borrow().sockets.get(id.0) {
            Some(Socket::Listener { addr, .. }) => Ok(*addr),
            Some(Socket::Stream(stream)) => Ok(stream.local),
            Some(Socket::Datagram { addr, .. }) => Ok(*addr),
            None => Err(error(io::ErrorKind::NotConnected)),
        }
    }

    fn bind_udp(&mut self, addr: SocketAddr, _bind: Bind) -> io::Result<SocketId> {
        let host = self.host;
        self.world.borrow_mut().bind(
            addr,
            |world| &mut world.datagram_sockets,
            |addr| Socket::Datagram {
                host,
                addr,
                inbox: VecDeque::new(),
                interest: Interest::NONE,
            },
        )
    }

    fn recv_from(&mut self, id: SocketId, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self.world.borrow_mut().sockets.get_mut(id.0) {
            Some(Socket::Datagram { inbox, .. }) => {
                let (datagram, from) = inbox
                    .pop_front()
                    .ok_or_else(|| error(io::ErrorKind::WouldBlock))?;
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                Ok((n, from))
            }
            _ => Err(error(io::ErrorKind::InvalidInput)),
        }
    }

    /// Delivers at once, or drops the datagram when the receiver's inbox
    /// holds its buffer's worth of bytes, as UDP may.
    fn send_to(&mut self, id: SocketId, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        let mut world = self.world.borrow_mut();
        let world = &mut *world;
        let from = match world.sockets.get(id.0) {
            Some(Socket::Datagram { addr, .. }) => *addr,
            _ => return Err(error(io::ErrorKind::InvalidInput)),
        };
        world.deliver(from, to, datagram);
        Ok(())
    }

    fn read(&mut self, id: SocketId, buf: &mut [u8]) -> io::Result<usize> {
        let mut world = self.world.borrow_mut();
        let stream = world.stream(id)?;
        if stream.inbox.is_empty() {
            return match stream.peer_shut {
                true => Ok(0),
                false => Err(error(io::ErrorKind::WouldBlock)),
            };
        }
        let n = buf.len().min(stream.inbox.len());
        let (front, back) = stream.inbox.as_slices();
        let from_front = front.len().min(n);
        buf[..from_front].copy_from_slice(&front[..from_front]);
        buf[from_front..n].copy_from_slice(&back[..n - from_front]);
        stream.inbox.drain(..n);
        Ok(n)
    }

    fn write(&mut self, id: SocketId, buf: &[u8]) -> io::Result<usize> {
        let mut world = self.world.borrow_mut();
        let capacity = world.buffer;
        let peer = world
            .stream(id)?
            .peer
            .ok_or_else(|| error(io::ErrorKind::BrokenPipe))?;
        let peer = world
            .stream(SocketId(peer))
            .map_err(|_| error(io::ErrorKind::BrokenPipe))?;
        let n = buf.len().min(capacity - peer.inbox.len());
        if n == 0 && !buf.is_empty() {
            return Err(error(io::ErrorKind::WouldBlock));
        }
        peer.inbox.extend(&buf[..n]);
        Ok(n)
    }

    fn splice(&mut self, id: SocketId, max: usize) -> io::Result<Spliced> {
        if !self.splices {
            return Err(no_splice());
        }
        let mut world = self.world.borrow_mut();
        let capacity = world.buffer;
        let stream = world.stream(id)?;
        if stream.inbox.is_empty() {
            return Ok(match stream.peer_shut {
                true => Spliced::InputEnded,
                false => Spliced::InputEmpty,
            });
        }
        let peer = stream
            .peer
            .ok_or_else(|| error(io::ErrorKind::BrokenPipe))?;
        let Some((Socket::Stream(from), Socket::Stream(to))) = world.sockets.get2_mut(id.0, peer)
        else {
            return Err(error(io::ErrorKind::BrokenPipe));
        };
        let n = max.min(from.inbox.len()).min(capacity - to.inbox.len());
        if n == 0 {
            return Ok(Spliced::OutputFull);
        }
        let (front, back) = from.inbox.as_slices();
        let from_front = front.len().min(n);
        to.inbox.extend(&front[..from_front]);
        to.inbox.extend(&back[..n - from_front]);
        from.inbox.drain(..n);
        Ok(Spliced::Bytes(n))
    }

    fn shutdown_write(&mut self, id: SocketId) -> io::Result<()> {
        let mut world = self.world.borrow_mut();
        if let Some(peer) = world.stream(id)?.peer {
            if let Ok(peer) = world.stream(SocketId(peer)) {
                peer.peer_shut = true;
            }
        }
        Ok(())
    }

    /// Always in order: the loopback world has no resets.
    fn close(&mut self, id: SocketId, _how: Close) {
        let mut world = self.world.borrow_mut();
        match world.sockets.try_remove(id.0) {
            Some(Socket::Listener { addr, pending, .. }) => {
                world.listeners.remove(&addr);
                for key in pending {
                    world.sockets.try_remove(key);
                }
            }
            Some(Socket::Datagram { addr, .. }) => {
                world.datagram_sockets.remove(&addr);
            }
            Some(Socket::Stream(Stream {
                peer: Some(peer), ..
            })) => {
                if let Ok(peer) = world.stream(SocketId(peer)) {
                    peer.peer_shut = true;
                    peer.peer = None;
                }
            }
            _ => {}
        }
    }

    fn lingering(&self) -> usize {
        0
    }

    fn set_interest(&mut self, id: SocketId, new: Interest) {
        match self.world.borrow_mut().sockets.get_mut(id.0) {
            Some(Socket::Listener { interest, .. } | Socket::Datagram { interest, .. }) => {
                *interest = new
            }
            Some(Socket::Stream(stream)) => stream.interest = new,
            None => {}
        }
    }

    /// Reports every socket that is ready now, level-triggered. With nothing
    /// ready, time jumps ahead by `timeout`; with no timeout either, nothing
    /// in this single-threaded world could change: that is a deadlock, an
    /// error (`TimedOut`; `InvalidInput` as on every backend when no socket
    /// is of interest at all).
    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<SocketId>) -> io::Result<()> {
        let mut world = self.world.borrow_mut();
        let before = ready.len();
        let keys: Vec<usize> = world.sockets.iter().map(|(key, _)| key).collect();
        ready.extend(
            keys.into_iter()
                .filter(|&key| world.is_ready(key, self.host))
                .map(SocketId),
        );
        if ready.len() > before {
            return Ok(());
        }
        match timeout {
            Some(timeout) => {
                world.now += timeout;
                Ok(())
            }
            None if !world.has_interest(self.host) => Err(nothing_to_wait_for()),
            None => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "loopback deadlock: nothing is ready and nothing can change",
            )),
        }
    }
}
