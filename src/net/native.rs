//! Native backend: the operating system's sockets, created with `socket2`
//! and driven through `mio`'s non-blocking wrappers, whose `Poll` is epoll
//! on Linux (kqueue on the BSDs).

use super::sockets::{bound, client, host_capabilities, listening};
use super::{
    no_splice, not_a, nothing_to_wait_for, Bind, Capabilities, Close, Interest, Network, OpenFiles,
    SocketId, Spliced,
};
#[cfg(target_os = "linux")]
mod timer;
/// Elsewhere, waits keep epoll's (or kqueue's) own precision.
#[cfg(not(target_os = "linux"))]
mod timer {
    use std::io;
    use std::time::Duration;

    pub(super) const TOKEN: mio::Token = mio::Token(usize::MAX);

    /// No timer: never wanted.
    pub(super) struct Timer;

    impl Timer {
        pub(super) fn new(_registry: &mio::Registry) -> io::Result<Self> {
            Ok(Timer)
        }
        pub(super) fn wanted(_timeout: Option<Duration>) -> Option<Duration> {
            None
        }
        pub(super) fn set(&mut self, _after: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
        pub(super) fn fired(&mut self) {}
    }
}

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;
use slab::Slab;
use socket2::{SockAddr, SockRef, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Sockets of the host operating system.
pub struct NativeNetwork {
    poll: Poll,
    events: Events,
    sockets: Slab<Entry>,
    /// Sockets registered with the poll: with none and no timeout, a wait
    /// could never end.
    registered: usize,
    /// Wakes waits whose timeout epoll's milliseconds would overshoot;
    /// made on the first such wait.
    timer: Option<timer::Timer>,
}

struct Entry {
    socket: Socket,
    interest: Interest,
    /// A short read emptied the socket and no readable event came since:
    /// the next read would only say "would block", so it is not made.
    /// (With edge-triggered epoll every arrival of data brings an event;
    /// tokio skips the same system call.)
    drained: bool,
    /// The peer closed its side or the socket failed: reads always go
    /// through, so that the end of the stream is seen.
    read_closed: bool,
    /// A connection this side started has not been seen established yet.
    connecting: bool,
}

enum Socket {
    Listener(TcpListener),
    Stream(TcpStream),
    Datagram(UdpSocket),
}

impl Socket {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Socket::Listener(listener) => listener,
            Socket::Stream(stream) => stream,
            Socket::Datagram(socket) => socket,
        }
    }
}

impl NativeNetwork {
    /// Creates the network and its readiness queue.
    pub fn new() -> io::Result<Self> {
        Ok(NativeNetwork {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            sockets: Slab::new(),
            registered: 0,
            timer: None,
        })
    }

    fn insert(&mut self, socket: Socket) -> SocketId {
        SocketId(self.sockets.insert(Entry {
            socket,
            interest: Interest::NONE,
            drained: false,
            read_closed: false,
            connecting: false,
        }))
    }

    fn datagram(&self, id: SocketId) -> io::Result<&UdpSocket> {
        match self.sockets.get(id.0) {
            Some(Entry {
                socket: Socket::Datagram(socket),
                ..
            }) => Ok(socket),
            _ => Err(not_a(id, "UDP socket")),
        }
    }

    fn stream(&mut self, id: SocketId) -> io::Result<&mut TcpStream> {
        match self.sockets.get_mut(id.0) {
            Some(Entry {
                socket: Socket::Stream(stream),
                ..
            }) => Ok(stream),
            _ => Err(not_a(id, "stream")),
        }
    }
}

/// Starts a non-blocking connect to `peer` from `local` (any port).
fn connecting(peer: SocketAddr, local: IpAddr) -> io::Result<std::net::TcpStream> {
    let socket = client(peer, Some(local))?;
    match socket.connect(&SockAddr::from(peer)) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(err) => return Err(err),
    }
    Ok(socket.into())
}

/// Raises this process's soft open-files limit (`RLIMIT_NOFILE`) to its
/// hard limit, as nginx's `worker_rlimit_nofile` does: each connection is
/// a descriptor.
pub fn raise_open_files() -> io::Result<Option<OpenFiles>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(Some(OpenFiles {
        before,
        now: limit.rlim_cur,
    }))
}

/// CPU time this process has used, user and system
/// (`getrusage(RUSAGE_SELF)`), or `None` if the host would not say.
pub fn cpu_time() -> Option<Duration> {
    // SAFETY: rusage is plain data; getrusage fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the struct we pass.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let time = |t: libc::timeval| -> Option<Duration> {
        let micros = u32::try_from(t.tv_usec).ok()?;
        Some(Duration::new(u64::try_from(t.tv_sec).ok()?, micros * 1000))
    };
    Some(time(usage.ru_utime)? + time(usage.ru_stime)?)
}

/// Sets `stop` when SIGINT or SIGTERM arrives; a second one exits the
/// process at once with 128 + the signal's number. Returns `true`: native
/// hosts can ask a program to terminate.
pub fn watch_termination(stop: &Arc<AtomicBool>) -> io::Result<bool> {
    for signal in [SIGINT, SIGTERM] {
        // The conditional exit must come first: it sees the flag as the
        // earlier signal left it.
        flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(stop))?;
        flag::register(signal, Arc::clone(stop))?;
    }
    Ok(true)
}

impl Network for NativeNetwork {
    fn capabilities(&self) -> Capabilities {
        host_capabilities("epoll")
    }

    fn listen(&mut self, addr: SocketAddr, bind: Bind) -> io::Result<SocketId> {
        let listener = TcpListener::from_std(listening(addr, bind)?.into());
        Ok(self.insert(Socket::Listener(listener)))
    }

    fn connect(&mut self, peer: SocketAddr, local: Option<IpAddr>) -> io::Result<SocketId> {
        // Non-blocking: while the handshake runs, reads and writes report
        // "would block" and a failure comes from the next of them.
        let stream = match local {
            None => TcpStream::connect(peer)?,
            Some(local) => TcpStream::from_std(connecting(peer, local)?),
        };
        stream.set_nodelay(true)?;
        let id = self.insert(Socket::Stream(stream));
        self.sockets[id.0].connecting = true;
        Ok(id)
    }

    fn accept(&mut self, listener: SocketId) -> io::Result<(SocketId, SocketAddr)> {
        let (stream, peer) = match self.sockets.get(listener.0) {
            Some(Entry {
                socket: Socket::Listener(listener),
                ..
            }) => listener.accept()?,
            _ => return Err(not_a(listener, "listener")),
        };
        stream.set_nodelay(true)?;
        Ok((self.insert(Socket::Stream(stream)), peer))
    }

    fn local_addr(&self, id: SocketId) -> io::Result<SocketAddr> {
        match self.sockets.get(id.0).map(|entry| &entry.socket) {
            Some(Socket::Listener(listener)) => listener.local_addr(),
            Some(Socket::Stream(stream)) => stream.local_addr(),
            Some(Socket::Datagram(socket)) => socket.local_addr(),
            None => Err(not_a(id, "socket")),
        }
    }

    fn bind_udp(&mut self, addr: SocketAddr, bind: Bind) -> io::Result<SocketId> {
        let socket = bound(addr, Type::DGRAM, bind.sharing)?;
        let socket = UdpSocket::from_std(socket.into());
        Ok(self.insert(Socket::Datagram(socket)))
    }

    fn recv_from(&mut self, id: SocketId, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.datagram(id)?.recv_from(buf)
    }

    fn send_to(&mut self, id: SocketId, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        let sent = self.datagram(id)?.send_to(datagram, to)?;
        match sent == datagram.len() {
            true => Ok(()),
            false => Err(io::Error::other("datagram sent in part")),
        }
    }

    fn read(&mut self, id: SocketId, buf: &mut [u8]) -> io::Result<usize> {
        let Some(Entry {
            socket: Socket::Stream(stream),
            drained,
            read_closed,
            ..
        }) = self.sockets.get_mut(id.0)
        else {
            return Err(not_a(id, "stream"));
        };
        if *drained && !*read_closed {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let result = stream.read(buf);
        *drained = match &result {
            Ok(n) => *n < buf.len(),
            Err(err) => err.kind() == io::ErrorKind::WouldBlock,
        };
        result
    }

    fn write(&mut self, id: SocketId, buf: &[u8]) -> io::Result<usize> {
        self.stream(id)?.write(buf)
    }

    fn splice(&mut self, _id: SocketId, _max: usize) -> io::Result<Spliced> {
        Err(no_splice())
    }

    fn shutdown_write(&mut self, id: SocketId) -> io::Result<()> {
        let Some(Entry {
            socket: Socket::Stream(stream),
            connecting,
            ..
        }) = self.sockets.get_mut(id.0)
        else {
            return Err(not_a(id, "stream"));
        };
        // Shutting down a socket still connecting would abort the handshake.
        if *connecting {
            match stream.peer_addr() {
                Ok(_) => *connecting = false,
                Err(err) if err.kind() == io::ErrorKind::NotConnected => {
                    let failed = stream.take_error()?;
                    return Err(failed.unwrap_or_else(|| io::ErrorKind::WouldBlock.into()));
                }
                Err(err) => return Err(err),
            }
        }
        match stream.shutdown(Shutdown::Write) {
            // A failed connect whose error no operation has taken yet.
            Err(err) if err.kind() == io::ErrorKind::NotConnected => {
                Err(stream.take_error()?.unwrap_or(err))
            }
            result => result,
        }
    }

    fn close(&mut self, id: SocketId, how: Close) {
        let Some(mut entry) = self.sockets.try_remove(id.0) else {
            return;
        };
        if let (Close::Reset, Socket::Stream(stream)) = (how, &entry.socket) {
            // A zero linger makes the close send a reset. If it cannot be
            // set, the close is an orderly one, as on hosts without resets.
            let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
        }
        if entry.interest != Interest::NONE {
            // Dropping the socket would unregister it too; this keeps the
            // poll's bookkeeping exact.
            let _ = self.poll.registry().deregister(entry.socket.source());
            self.registered -= 1;
        }
    }

    fn lingering(&self) -> usize {
        0
    }

    fn set_interest(&mut self, id: SocketId, interest: Interest) {
        let Some(entry) = self.sockets.get_mut(id.0) else {
            return;
        };
        if entry.interest == interest {
            return;
        }
        let registry = self.poll.registry();
        let token = Token(id.0);
        let wanted = match (interest.read, interest.write) {
            (true, true) => Some(mio::Interest::READABLE | mio::Interest::WRITABLE),
            (true, false) => Some(mio::Interest::READABLE),
            (false, true) => Some(mio::Interest::WRITABLE),
            (false, false) => None,
        };
        let source = entry.socket.source();
        let was_registered = entry.interest != Interest::NONE;
        let result = match (was_registered, wanted) {
            (false, Some(wanted)) => registry.register(source, token, wanted),
            (true, Some(wanted)) => registry.reregister(source, token, wanted),
            (true, None) => registry.deregister(source),
            (false, None) => Ok(()),
        };
        // Registration only fails for invalid descriptors; the next
        // operation on the socket reports that error to the caller.
        if result.is_ok() {
            entry.interest = interest;
            match (was_registered, wanted.is_some()) {
                (false, true) => self.registered += 1,
                (true, false) => self.registered -= 1,
                _ => {}
            }
        }
    }

    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<SocketId>) -> io::Result<()> {
        if self.registered == 0 && timeout.is_none() {
            return Err(nothing_to_wait_for());
        }
        let precise = timer::Timer::wanted(timeout);
        if precise.is_some() && self.timer.is_none() {
            self.timer = Some(timer::Timer::new(self.poll.registry())?);
        }
        if let Some(timer) = &mut self.timer {
            timer.set(precise)?;
        }
        match self.poll.poll(&mut self.events, timeout) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(()),
            result => result?,
        }
        for event in &self.events {
            if event.token() == timer::TOKEN {
                if let Some(timer) = &mut self.timer {
                    timer.fired();
                }
                continue;
            }
            let key = event.token().0;
            if let Some(entry) = self.sockets.get_mut(key) {
                entry.drained = false;
                entry.read_closed |= event.is_read_closed() || event.is_error();
                // A connect ends, up or failed, with the socket writable.
                entry.connecting &= !(event.is_writable() || event.is_error());
            }
            ready.push(SocketId(key));
        }
        Ok(())
    }
}
