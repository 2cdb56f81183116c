//! WASI 0.2 backend: `wasi:sockets` TCP and UDP sockets, `wasi:io`
//! streams, and one `wasi:io/poll::poll` over every interesting pollable
//! as the event loop (in [`poll`]).
//!
//! WASI resources have parents: a pollable borrows the stream or socket it
//! came from, and a socket's streams are its children. Dropping a parent
//! first makes the runtime trap ("resource has children"), so the structs
//! below declare children before parents: Rust drops fields in order.

mod convert;
mod datagram;
mod poll;
mod resolve;
mod watch;

use self::convert::{family, from_wasi_addr, stream_error, to_io, to_wasi_addr};
use self::datagram::Datagram;
use self::poll::HostBudget;
pub(super) use self::resolve::resolve;
use self::watch::Watched;
use super::{
    not_a, Bind, Capabilities, Close, Interest, Network, OpenFiles, PortSharing, SocketId, Spliced,
};
use ::wasi::io::poll::Pollable;
use ::wasi::io::streams::{InputStream, OutputStream, StreamError};
use ::wasi::sockets::instance_network::instance_network;
use ::wasi::sockets::network::{ErrorCode, Network as WasiNet};
use ::wasi::sockets::tcp::{ShutdownType, TcpSocket};
use ::wasi::sockets::tcp_create_socket::create_tcp_socket;
use slab::Slab;
use std::cell::OnceCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Sockets granted to this component by its WASI runtime.
pub struct WasiNetwork {
    /// The sockets [`Network::wait`] polls, kept between waits: see
    /// [`Watched`].
    watched: Watched,
    /// The UDP sockets, whose queues each wait flushes.
    datagrams: Vec<SocketId>,
    sockets: Slab<Entry>,
    /// Closed connections whose output is not writable yet. Wasmtime (48)
    /// makes dropping an output stream wait until its last write is out and
    /// the socket is writable again, which a peer that does not read never
    /// allows: dropped then, the stream would stop the whole event loop.
    /// They wait here, polled, until their output is writable.
    lingering: Vec<Stream>,
    network: WasiNet,
    budget: HostBudget,
    /// When (monotonic nanoseconds) a wait polls the cold sockets next
    /// even if hot ones are ready: see [`watch`].
    cold_due: u64,
    /// Whether the last poll of every socket found one ready.
    busy: bool,
    /// The monotonic clock (nanoseconds) when the last wait began.
    now: u64,
    /// Whether [`Network::splice`] splices: see [`WasiNetwork::splicing`].
    splice: bool,
}

struct Entry {
    socket: Socket,
    interest: Interest,
    /// Where the socket is in [`WasiNetwork::watched`], if it is.
    watch: Option<usize>,
    /// When (monotonic nanoseconds) it was last found ready, or last
    /// changed its interest: see [`Entry::may_cool`].
    since: u64,
}

impl Entry {
    /// Whether a wait polls this socket: it waits for something, or it is
    /// a UDP socket (whose queued datagrams need the runtime's permit).
    fn watched(&self) -> bool {
        self.interest != Interest::NONE || matches!(self.socket, Socket::Datagram(_))
    }
}

enum Socket {
    Listener(Listener),
    Stream(Stream),
    Datagram(Datagram),
}

/// A listening socket; `acceptable` is ready when a connection is pending.
struct Listener {
    acceptable: Pollable,
    socket: TcpSocket,
}

/// A TCP connection: its socket and, once connected, its streams.
struct Stream {
    link: Link,
    socket: TcpSocket,
    flushing: bool,
    /// A short read emptied the stream and nothing has called it readable
    /// since: see [`Stream::still_drained`].
    drained: bool,
    /// How many bytes to ask for: see [`ReadSize`].
    read_size: ReadSize,
}

/// Where a connection stands.
enum Link {
    /// A connection this side started; the pollable is ready once
    /// `finish-connect` would not block.
    Connecting(Pollable),
    /// Established, with the socket's two streams.
    Connected(Streams),
}

/// A connected socket's streams and their pollables (declared first, so
/// that they drop first).
struct Streams {
    readable: Pollable,
    /// Made when first needed: most echo connections never wait to write,
    /// and every handle counts against the runtime's limit (wasmtime 48:
    /// 100,000 per store, shared by all connections).
    writable: OnceCell<Pollable>,
    input: InputStream,
    output: OutputStream,
}

impl Streams {
    fn new(input: InputStream, output: OutputStream) -> Self {
        Streams {
            readable: input.subscribe(),
            writable: OnceCell::new(),
            input,
            output,
        }
    }

    /// The output's pollable, made on first use.
    fn writable(&self) -> &Pollable {
        self.writable.get_or_init(|| self.output.subscribe())
    }
}

impl Stream {
    fn new(socket: TcpSocket, link: Link) -> Self {
        Stream {
            link,
            socket,
            flushing: false,
            drained: false,
            read_size: ReadSize::default(),
        }
    }

    /// Whether dropping the stream now would not wait: no connection yet,
    /// or an output that is writable.
    fn droppable(&self) -> bool {
        match &self.link {
            Link::Connecting(_) => true,
            Link::Connected(streams) => streams.writable().ready(),
        }
    }

    /// Whether a read now would only return nothing, so the host call can
    /// be skipped: a short read emptied the stream, and neither `poll` nor
    /// the input's pollable calls it readable since. (Asking the pollable,
    /// one cheap host call, matters where `poll` can miss an input that
    /// became readable: jco's preview2-shim does, and a stream that a
    /// client writes to without pause then never reads its echo.)
    fn still_drained(&mut self) -> bool {
        if let (true, Link::Connected(streams)) = (self.drained, &self.link) {
            self.drained = !streams.readable.ready();
        }
        self.drained
    }

    /// The streams, finishing the connection first if it is on its way
    /// (`WouldBlock` while it still is).
    fn streams(&mut self) -> io::Result<&Streams> {
        loop {
            match self.link {
                Link::Connected(ref streams) => return Ok(streams),
                Link::Connecting(_) => {
                    let (input, output) = self.socket.finish_connect().map_err(to_io)?;
                    // Replacing the link drops the socket's pollable.
                    self.link = Link::Connected(Streams::new(input, output));
                }
            }
        }
    }
}

impl WasiNetwork {
    /// Opens the component's instance network; streams are echoed by
    /// reading and writing, which every runtime supports.
    pub fn new() -> io::Result<Self> {
        Ok(WasiNetwork {
            watched: Watched::default(),
            datagrams: Vec::new(),
            sockets: Slab::new(),
            lingering: Vec::new(),
            network: instance_network(),
            budget: HostBudget::default(),
            cold_due: 0,
            busy: false,
            now: 0,
            splice: false,
        })
    }

    /// Opens the component's instance network with
    /// [`Network::splice`] on `output-stream.splice`: one host call per
    /// echo, and the bytes never enter the guest. Wasmtime 48 supports it;
    /// jco 1.35's preview2-shim traps on every splice between sockets.
    pub fn splicing() -> io::Result<Self> {
        let mut net = Self::new()?;
        net.splice = true;
        Ok(net)
    }

    fn insert(&mut self, socket: Socket) -> SocketId {
        let id = SocketId(self.sockets.insert(Entry {
            socket,
            interest: Interest::NONE,
            watch: None,
            since: self.now,
        }));
        self.watched.update(id, &mut self.sockets);
        id
    }

    fn stream(&mut self, id: SocketId) -> io::Result<&mut Stream> {
        match self.sockets.get_mut(id.0) {
            Some(Entry {
                socket: Socket::Stream(stream),
                ..
            }) => Ok(stream),
            _ => Err(not_a(id, "stream")),
        }
    }

    /// A UDP socket, with the budget its host calls spend.
    fn datagram(&mut self, id: SocketId) -> io::Result<(&mut Datagram, &mut HostBudget)> {
        match self.sockets.get_mut(id.0) {
            Some(Entry {
                socket: Socket::Datagram(datagram),
                ..
            }) => Ok((datagram, &mut self.budget)),
            _ => Err(not_a(id, "UDP socket")),
        }
    }
}

/// Finishes a two-phase WASI operation, waiting on `ready` as needed.
pub(super) fn finish<T>(
    ready: impl Fn() -> Pollable,
    op: impl Fn() -> Result<T, ErrorCode>,
) -> io::Result<T> {
    loop {
        match op() {
            Err(ErrorCode::WouldBlock) => ready().block(),
            result => return result.map_err(to_io),
        }
    }
}

/// How much one read asks for, adapted to what the peer sends.
///
/// Wasmtime zeroes a buffer of the requested size for every read, so asking
/// for 64 KiB to receive 512 bytes costs a 64 KiB memset (6% of the wasm
/// server's time in a 50 x 512 B pingpong profile). Reads start at 4 KiB,
/// double while they come back full and halve while they come back mostly
/// empty.
#[derive(Clone, Copy, Debug)]
struct ReadSize(usize);

impl ReadSize {
    const MIN: usize = 4 * 1024;
    const MAX: usize = 64 * 1024;

    fn get(self) -> usize {
        self.0
    }

    fn observe(&mut self, got: usize, asked: usize) {
        if got == asked && asked == self.0 {
            self.0 = (self.0 * 2).min(Self::MAX);
        } else if got < self.0 / 4 {
            self.0 = (self.0 / 2).max(Self::MIN);
        }
    }
}

impl Default for ReadSize {
    fn default() -> Self {
        ReadSize(Self::MIN)
    }
}

impl Drop for WasiNetwork {
    /// Leaves the streams that would make the drop wait (see
    /// [`WasiNetwork::lingering`]) to the runtime, which frees every
    /// resource without waiting once the component exits.
    fn drop(&mut self) {
        for (_, entry) in std::mem::take(&mut self.sockets) {
            if let Socket::Stream(stream) = entry.socket {
                if !stream.droppable() {
                    std::mem::forget(stream);
                }
            }
        }
        std::mem::forget(std::mem::take(&mut self.lingering));
    }
}

/// The error for port sharing, which needs threads this build lacks.
fn single_event_loop() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "this build has no threads and runs one event loop",
    )
}

/// A WASI 0.2 component has no open-files limit of its own to raise (its
/// runtime's is the host process's): returns `None`.
pub fn raise_open_files() -> io::Result<Option<OpenFiles>> {
    Ok(None)
}

/// WASI 0.2 has no `getrusage`, nor any other way to learn the CPU time a
/// component used: always `None`.
pub fn cpu_time() -> Option<Duration> {
    None
}

/// A WASI 0.2 component cannot be asked to terminate: there are no
/// signals. Returns `false` and never sets `stop`.
pub fn watch_termination(_stop: &Arc<AtomicBool>) -> io::Result<bool> {
    Ok(false)
}

impl WasiNetwork {
    /// A TCP socket of `addr`'s family bound to `addr`.
    fn bound_tcp(&self, addr: SocketAddr) -> io::Result<TcpSocket> {
        let socket = create_tcp_socket(family(addr)).map_err(to_io)?;
        socket
            .start_bind(&self.network, to_wasi_addr(addr))
            .map_err(to_io)?;
        finish(|| socket.subscribe(), || socket.finish_bind())?;
        Ok(socket)
    }
}

impl Network for WasiNetwork {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: if self.splice { "wasi (splice)" } else { "wasi" },
            splice: self.splice,
            reset: false,
            threads: false,
            lingering: true,
        }
    }

    fn listen(&mut self, addr: SocketAddr, bind: Bind) -> io::Result<SocketId> {
        if bind.sharing != PortSharing::Alone {
            return Err(single_event_loop());
        }
        let socket = self.bound_tcp(addr)?;
        socket
            .set_listen_backlog_size(bind.backlog.into())
            .map_err(to_io)?;
        socket.start_listen().map_err(to_io)?;
        finish(|| socket.subscribe(), || socket.finish_listen())?;
        let listener = Listener {
            acceptable: socket.subscribe(),
            socket,
        };
        Ok(self.insert(Socket::Listener(listener)))
    }

    fn connect(&mut self, peer: SocketAddr, local: Option<IpAddr>) -> io::Result<SocketId> {
        let socket = match local {
            Some(local) => self.bound_tcp(SocketAddr::new(local, 0))?,
            None => create_tcp_socket(family(peer)).map_err(to_io)?,
        };
        socket
            .start_connect(&self.network, to_wasi_addr(peer))
            .map_err(to_io)?;
        let link = Link::Connecting(socket.subscribe());
        Ok(self.insert(Socket::Stream(Stream::new(socket, link))))
    }

    fn accept(&mut self, listener: SocketId) -> io::Result<(SocketId, SocketAddr)> {
        self.budget.spend(1);
        let (socket, input, output) = match self.sockets.get(listener.0) {
            Some(Entry {
                socket: Socket::Listener(listener),
                ..
            }) => listener.socket.accept().map_err(to_io)?,
            _ => return Err(not_a(listener, "listener")),
        };
        let stream = Stream::new(socket, Link::Connected(Streams::new(input, output)));
        // A connection reset before it was accepted has no peer any more:
        // that concerns this connection only, not the listener.
        let peer = stream.socket.remote_address().map_err(|_| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection reset before it was accepted",
            )
        })?;
        Ok((self.insert(Socket::Stream(stream)), from_wasi_addr(peer)))
    }

    fn local_addr(&self, id: SocketId) -> io::Result<SocketAddr> {
        let socket = match self.sockets.get(id.0).map(|entry| &entry.socket) {
            Some(Socket::Listener(listener)) => &listener.socket,
            Some(Socket::Stream(stream)) => &stream.socket,
            Some(Socket::Datagram(datagram)) => {
                return datagram
                    .socket
                    .local_address()
                    .map(from_wasi_addr)
                    .map_err(to_io)
            }
            None => return Err(not_a(id, "socket")),
        };
        socket.local_address().map(from_wasi_addr).map_err(to_io)
    }

    fn bind_udp(&mut self, addr: SocketAddr, bind: Bind) -> io::Result<SocketId> {
        if bind.sharing != PortSharing::Alone {
            return Err(single_event_loop());
        }
        let datagram = Datagram::bind(&self.network, addr)?;
        let id = self.insert(Socket::Datagram(datagram));
        self.datagrams.push(id);
        Ok(id)
    }

    fn recv_from(&mut self, id: SocketId, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (datagram, budget) = self.datagram(id)?;
        datagram.recv_from(buf, budget)
    }

    fn send_to(&mut self, id: SocketId, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        let (socket, budget) = self.datagram(id)?;
        socket.send_to(datagram, to, budget)
    }

    fn read(&mut self, id: SocketId, buf: &mut [u8]) -> io::Result<usize> {
        self.budget.spend(1);
        let stream = self.stream(id)?;
        if stream.still_drained() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let wanted = stream.read_size.get().min(buf.len());
        match stream.streams()?.input.read(wanted as u64) {
            Ok(bytes) if bytes.is_empty() && wanted > 0 => {
                stream.drained = true;
                Err(io::ErrorKind::WouldBlock.into())
            }
            Ok(bytes) => {
                stream.drained = bytes.len() < wanted;
                stream.read_size.observe(bytes.len(), wanted);
                buf[..bytes.len()].copy_from_slice(&bytes);
                Ok(bytes.len())
            }
            Err(StreamError::Closed) => Ok(0),
            Err(err) => Err(stream_error(err)),
        }
    }

    fn write(&mut self, id: SocketId, buf: &[u8]) -> io::Result<usize> {
        self.budget.spend(1);
        let output = &self.stream(id)?.streams()?.output;
        let permitted = output.check_write().map_err(stream_error)?;
        let len = buf
            .len()
            .min(usize::try_from(permitted).unwrap_or(usize::MAX));
        if len == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        output.write(&buf[..len]).map_err(stream_error)?;
        Ok(len)
    }

    fn splice(&mut self, id: SocketId, max: usize) -> io::Result<Spliced> {
        if !self.splice {
            return Err(io::ErrorKind::Unsupported.into());
        }
        // The splice, and perhaps one check-write after it.
        self.budget.spend(2);
        let stream = self.stream(id)?;
        if stream.still_drained() {
            return Ok(Spliced::InputEmpty);
        }
        let wanted = stream.read_size.get().min(max);
        let streams = stream.streams()?;
        // Splice is check-write, read and write in one call: when it moves
        // nothing or meets a closed stream, a check-write tells which side
        // stopped.
        let output_full = || match streams.output.check_write() {
            Ok(permitted) => Ok(permitted == 0),
            Err(err) => Err(stream_error(err)),
        };
        let moved = match streams.output.splice(&streams.input, wanted as u64) {
            Ok(0) if output_full()? => return Ok(Spliced::OutputFull),
            Ok(moved) => usize::try_from(moved).unwrap_or(wanted),
            // The input's end, since the output still takes bytes.
            Err(StreamError::Closed) if !output_full()? => return Ok(Spliced::InputEnded),
            Err(err) => return Err(stream_error(err)),
        };
        stream.drained = moved < wanted;
        if moved == 0 {
            return Ok(Spliced::InputEmpty);
        }
        stream.read_size.observe(moved, wanted);
        Ok(Spliced::Bytes(moved))
    }

    fn shutdown_write(&mut self, id: SocketId) -> io::Result<()> {
        self.budget.spend(1);
        let stream = self.stream(id)?;
        if !stream.flushing {
            stream.streams()?.output.flush().map_err(stream_error)?;
            stream.flushing = true;
        }
        // The stream accepts no writes until the flush has completed.
        if stream
            .streams()?
            .output
            .check_write()
            .map_err(stream_error)?
            == 0
        {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        stream.socket.shutdown(ShutdownType::Send).map_err(to_io)?;
        // The next read goes to the host: a runtime that ends the whole
        // connection on a half-close (jco's preview2-shim) may never call
        // the input readable again, and only a read then sees the end.
        stream.drained = false;
        Ok(())
    }

    /// Always in order: WASI 0.2 has no `SO_LINGER`, so no reset. A UDP
    /// socket's queued datagrams go out if the runtime takes them now.
    fn close(&mut self, id: SocketId, _how: Close) {
        self.watched.remove(id, &mut self.sockets);
        self.datagrams.retain(|&other| other != id);
        match self.sockets.try_remove(id.0).map(|entry| entry.socket) {
            Some(Socket::Stream(stream)) if !stream.droppable() => self.lingering.push(stream),
            Some(Socket::Datagram(mut datagram)) => datagram.flush(&mut self.budget),
            _ => {}
        }
    }

    fn lingering(&self) -> usize {
        self.lingering.len()
    }

    fn set_interest(&mut self, id: SocketId, interest: Interest) {
        if let Some(entry) = self.sockets.get_mut(id.0) {
            if entry.interest != interest {
                entry.interest = interest;
                entry.since = self.now;
                self.watched.update(id, &mut self.sockets);
            }
        }
    }

    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<SocketId>) -> io::Result<()> {
        self.wait_ready(timeout, ready)
    }
}
