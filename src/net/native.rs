//! Native backend: std sockets in non-blocking mode, `mio` for readiness.

use super::{not_a, Interest, Network, SocketId};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;
use slab::Slab;
use socket2::{Domain, SockRef, Socket as RawSocket, Type};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sockets of the host operating system.
pub struct NativeNetwork {
    poll: Poll,
    events: Events,
    sockets: Slab<Entry>,
    epoch: Instant,
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
            epoch: Instant::now(),
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

fn bind_listener(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = RawSocket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // Like the classic threaded echo server: a restarted server can rebind
    // at once while old connections linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

impl Network for NativeNetwork {
    type SharedListener = std::net::TcpListener;

    const ABORTS: bool = true;

    fn share(&self, listener: SocketId) -> io::Result<Self::SharedListener> {
        match self.sockets.get(listener.0).map(|entry| &entry.socket) {
            Some(Socket::Listener(listener)) => Ok(listener.as_fd().try_clone_to_owned()?.into()),
            _ => Err(not_a(listener, "listener")),
        }
    }

    fn adopt(&mut self, listener: Self::SharedListener) -> io::Result<SocketId> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener);
        Ok(self.insert(Socket::Listener(listener)))
    }

    fn listen(&mut self, addr: SocketAddr, backlog: u32) -> io::Result<SocketId> {
        let listener = TcpListener::from_std(bind_listener(addr, backlog)?);
        Ok(self.insert(Socket::Listener(listener)))
    }

    fn connect(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        // Non-blocking: while the handshake runs, reads and writes report
        // "would block" and a failure comes from the next of them.
        let stream = TcpStream::connect(addr)?;
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

    fn bind_udp(&mut self, addr: SocketAddr) -> io::Result<SocketId> {
        let socket = UdpSocket::bind(addr)?;
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

    fn close(&mut self, id: SocketId) {
        if let Some(mut entry) = self.sockets.try_remove(id.0) {
            if entry.interest != Interest::NONE {
                // Dropping the socket would unregister it too; this keeps the
                // poll's bookkeeping exact.
                let _ = self.poll.registry().deregister(entry.socket.source());
            }
        }
    }

    fn abort(&mut self, id: SocketId) {
        if let Ok(stream) = self.stream(id) {
            // A zero linger makes close send a reset. If it cannot be set,
            // the close below is an ordinary one, which is what abort
            // promises on hosts without resets.
            let _ = SockRef::from(&*stream).set_linger(Some(Duration::ZERO));
        }
        self.close(id);
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
        let result = match (entry.interest == Interest::NONE, wanted) {
            (true, Some(wanted)) => registry.register(source, token, wanted),
            (false, Some(wanted)) => registry.reregister(source, token, wanted),
            (false, None) => registry.deregister(source),
            (true, None) => Ok(()),
        };
        // Registration only fails for invalid descriptors; the next
        // operation on the socket reports that error to the caller.
        if result.is_ok() {
            entry.interest = interest;
        }
    }

    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<SocketId>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(()),
            result => result?,
        }
        for event in &self.events {
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

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn on_termination(stop: &Arc<AtomicBool>) -> io::Result<bool> {
        for signal in [SIGINT, SIGTERM] {
            // The conditional exit must come first: it sees the flag as the
            // earlier signal left it.
            flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(stop))?;
            flag::register(signal, Arc::clone(stop))?;
        }
        Ok(true)
    }
}
