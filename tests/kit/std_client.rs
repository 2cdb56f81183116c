//! The fifth client column: a plain `std::net` echo client, written here and
//! independent of echokit's own client code: TCP over `TcpStream`, UDP over
//! `UdpSocket`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};
use testkit::net::{self as support, EchoError};

/// Socket timeout of every blocking std-client operation: a hung server
/// fails the test instead of hanging it.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Connects with [`IO_TIMEOUT`] on reads and writes.
pub(crate) fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    support::connect(addr, IO_TIMEOUT, IO_TIMEOUT)
}

/// Sends `chunks` (one `write_all` each) while a second thread reads the
/// echo; half-closes after the last chunk and returns everything read up
/// to EOF.
pub(crate) fn echo_chunks<C: AsRef<[u8]> + Sync>(
    addr: SocketAddr,
    chunks: &[C],
) -> Result<Vec<u8>, String> {
    let stream = connect(addr).map_err(|err| format!("std client: connect {addr}: {err}"))?;
    stream
        .set_nodelay(true)
        .map_err(|err| format!("std client: TCP_NODELAY: {err}"))?;
    let mut reader = stream
        .try_clone()
        .map_err(|err| format!("std client: clone: {err}"))?;
    thread::scope(|scope| {
        let read = scope.spawn(move || {
            let mut echo = Vec::new();
            reader.read_to_end(&mut echo).map(|_| echo)
        });
        let mut writer = &stream;
        let mut write_result = Ok(());
        for chunk in chunks {
            if let Err(err) = writer.write_all(chunk.as_ref()) {
                write_result = Err(err);
                break;
            }
        }
        if write_result.is_ok() {
            write_result = stream.shutdown(Shutdown::Write);
        }
        let read_result = read
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("reader thread panicked")));
        match (write_result, read_result) {
            (Ok(()), Ok(echo)) => Ok(echo),
            (Err(err), _) => Err(format!("std client: write to {addr}: {err}")),
            (_, Err(err)) => Err(format!("std client: read from {addr}: {err}")),
        }
    })
}

/// Sends `payload` as one write and returns the echo read to EOF.
pub(crate) fn echo(addr: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, String> {
    echo_chunks(addr, &[payload])
}

/// Writes `bytes` and reads exactly as many back (the connection stays
/// open): proves the server is serving this connection right now.
pub(crate) fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    support::round_trip(stream, bytes).map_err(|err| match err {
        EchoError::Write(err) => format!("std client: write: {err}"),
        EchoError::Read(err) => {
            format!("std client: reading {} echoed bytes: {err}", bytes.len())
        }
        EchoError::Wrong(back) => format!("std client: sent {bytes:?}, got back {back:?}"),
    })
}

/// Whether a read error means the peer closed or reset the connection.
pub(crate) fn is_closed_by_peer(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// How long the UDP client waits for one datagram's echo before it counts
/// as lost. There are no retransmits: on loopback nothing should be lost,
/// so the wait is long enough to ride out a busy machine (a server stalled
/// for a moment is not a lost datagram), and a loss costs only this wait.
pub(crate) const UDP_ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// Room for any datagram and one byte more, so that a too-long echo shows
/// as too long rather than truncated to the expected length.
const UDP_BUFFER: usize = 65_536;

/// A UDP socket on the loopback address of `server`'s family, unconnected:
/// each echo's source is checked against the server's address by hand.
pub(crate) fn udp_socket(server: SocketAddr) -> io::Result<UdpSocket> {
    let local = match server {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
    };
    let socket = UdpSocket::bind(local)?;
    socket.set_read_timeout(Some(UDP_ECHO_TIMEOUT))?;
    socket.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(socket)
}

/// Receives the echo of `datagram` on `socket` (within
/// [`UDP_ECHO_TIMEOUT`]): it must come from `server` and be identical.
pub(crate) fn udp_expect_echo(
    socket: &UdpSocket,
    server: SocketAddr,
    datagram: &[u8],
    what: &str,
) -> Result<(), String> {
    let echo = udp_receive(socket, server, datagram.len(), what)?;
    if echo != datagram {
        return Err(format!(
            "std UDP client: the echo of {what} differs: {}",
            super::check::compare(datagram, &echo)
        ));
    }
    Ok(())
}

/// Receives one datagram (within [`UDP_ECHO_TIMEOUT`]) that must come from
/// `server`: the echo of `what`, `len` bytes long.
pub(crate) fn udp_receive(
    socket: &UdpSocket,
    server: SocketAddr,
    len: usize,
    what: &str,
) -> Result<Vec<u8>, String> {
    let mut buf = vec![0; UDP_BUFFER];
    let (got, from) = socket.recv_from(&mut buf).map_err(|err| {
        if matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            format!(
                "std UDP client: no echo of {what} ({len} bytes) within {UDP_ECHO_TIMEOUT:?}: lost"
            )
        } else {
            format!("std UDP client: receiving the echo of {what}: {err}")
        }
    })?;
    if from != server {
        return Err(format!(
            "std UDP client: the echo of {what} came from {from}, not from the server {server}"
        ));
    }
    buf.truncate(got);
    Ok(buf)
}

/// Sends `payload` to a UDP echo server in datagrams of `datagram_size`
/// bytes, one at a time, each waiting for its echo; returns the echoes
/// concatenated. A lost, changed or foreign echo fails at once.
pub(crate) fn udp_echo(
    server: SocketAddr,
    payload: &[u8],
    datagram_size: usize,
) -> Result<Vec<u8>, String> {
    let socket = udp_socket(server).map_err(|err| format!("std UDP client: bind: {err}"))?;
    let mut echo = Vec::with_capacity(payload.len());
    let datagrams: Vec<&[u8]> = payload.chunks(datagram_size.max(1)).collect();
    for (i, datagram) in datagrams.iter().enumerate() {
        let what = format!("datagram {i} of {}", datagrams.len());
        socket
            .send_to(datagram, server)
            .map_err(|err| format!("std UDP client: sending {what} to {server}: {err}"))?;
        udp_expect_echo(&socket, server, datagram, &what)?;
        echo.extend_from_slice(datagram);
    }
    Ok(echo)
}

/// What a windowed UDP burst saw.
#[derive(Debug, Default)]
pub(crate) struct BurstReport {
    pub datagrams: usize,
    pub window: usize,
    /// Datagrams sent (all of them unless the burst ran out of time).
    pub sent: usize,
    /// Sent datagrams whose echo never came.
    pub lost: usize,
    /// Echoes that arrived after an echo of a later datagram.
    pub out_of_order: usize,
    /// Echoes of a datagram already echoed.
    pub duplicated: usize,
    /// Echoes that match no datagram sent.
    pub changed: usize,
    /// Datagrams from an address other than the server's.
    pub foreign: usize,
    /// Echoes that came after [`UDP_ECHO_TIMEOUT`] (counted lost, then not).
    pub late: usize,
    pub elapsed: Duration,
}

impl BurstReport {
    /// Whether every datagram came back once, intact, from the server.
    pub(crate) fn clean(&self) -> bool {
        self.sent == self.datagrams
            && self.lost == 0
            && self.duplicated == 0
            && self.changed == 0
            && self.foreign == 0
    }
}

impl fmt::Display for BurstReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "{} datagrams, at most {} in flight, no other pacing: sent {}, lost {}, \
             out of order {}, duplicated {}, changed {}, foreign {}, late {}; \
             {:.0} ms ({:.0} datagrams/s)",
            self.datagrams,
            self.window,
            self.sent,
            self.lost,
            self.out_of_order,
            self.duplicated,
            self.changed,
            self.foreign,
            self.late,
            secs * 1000.0,
            self.sent as f64 / secs
        )
    }
}

/// What became of one datagram of a burst.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Unsent,
    InFlight,
    /// No echo within the timeout: lost, unless it turns up later.
    Expired,
    Echoed,
}

/// Sends `datagrams` to a UDP echo server as fast as a window of `window`
/// datagrams in flight allows, and counts what comes back. A datagram
/// whose echo takes over [`UDP_ECHO_TIMEOUT`] frees its slot in the window
/// and counts as lost. The whole burst stops after `limit`; the datagrams
/// not sent by then are reported (`sent` < `datagrams`). Datagrams must be
/// distinct, since echoes are matched by content.
pub(crate) fn udp_burst(
    server: SocketAddr,
    datagrams: &[&[u8]],
    window: usize,
    limit: Duration,
) -> Result<BurstReport, String> {
    let mut index = HashMap::with_capacity(datagrams.len());
    for (i, d) in datagrams.iter().enumerate() {
        if let Some(j) = index.insert(*d, i) {
            return Err(format!(
                "udp_burst: datagrams {j} and {i} are identical; echoes could not be told apart"
            ));
        }
    }
    let window = window.max(1);
    let socket = udp_socket(server).map_err(|err| format!("std UDP client: bind: {err}"))?;
    // Short receive waits, so that expired datagrams free their slots.
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(|err| format!("std UDP client: SO_RCVTIMEO: {err}"))?;
    let mut state = vec![Fate::Unsent; datagrams.len()];
    let mut in_flight: VecDeque<(usize, Instant)> = VecDeque::with_capacity(window);
    let mut report = BurstReport {
        datagrams: datagrams.len(),
        window,
        ..BurstReport::default()
    };
    let mut highest_echoed = None;
    let mut buf = vec![0; UDP_BUFFER];
    let start = Instant::now();
    let deadline = start + limit;
    loop {
        let now = Instant::now();
        // Forget the datagrams echoed or out of time at the window's front.
        while let Some(&(i, sent_at)) = in_flight.front() {
            if state[i] == Fate::Echoed {
                in_flight.pop_front();
            } else if now.duration_since(sent_at) >= UDP_ECHO_TIMEOUT {
                state[i] = Fate::Expired;
                in_flight.pop_front();
            } else {
                break;
            }
        }
        let outstanding = in_flight
            .iter()
            .filter(|&&(i, _)| state[i] == Fate::InFlight)
            .count();
        if now >= deadline || (report.sent == datagrams.len() && outstanding == 0) {
            break;
        }
        // Fill the window.
        let mut room = window.saturating_sub(outstanding);
        while room > 0 && report.sent < datagrams.len() {
            let i = report.sent;
            socket
                .send_to(datagrams[i], server)
                .map_err(|err| format!("std UDP client: sending datagram {i}: {err}"))?;
            state[i] = Fate::InFlight;
            in_flight.push_back((i, Instant::now()));
            report.sent += 1;
            room -= 1;
        }
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(err) => return Err(format!("std UDP client: receive: {err}")),
        };
        if from != server {
            report.foreign += 1;
            continue;
        }
        let Some(&i) = index.get(&buf[..len]) else {
            report.changed += 1;
            continue;
        };
        match state[i] {
            Fate::Echoed => report.duplicated += 1,
            Fate::Unsent => report.changed += 1,
            Fate::InFlight | Fate::Expired => {
                if state[i] == Fate::Expired {
                    report.late += 1;
                }
                state[i] = Fate::Echoed;
                if highest_echoed.is_some_and(|h| i < h) {
                    report.out_of_order += 1;
                }
                highest_echoed = highest_echoed.max(Some(i));
            }
        }
    }
    report.elapsed = start.elapsed();
    report.lost = state
        .iter()
        .filter(|s| matches!(s, Fate::InFlight | Fate::Expired))
        .count();
    Ok(report)
}

/// Sends one datagram to `closed` over a connected UDP socket and returns
/// the error its receive meets (Linux reports the ICMP port-unreachable as
/// `ConnectionRefused` on a connected socket).
pub(crate) fn udp_refused(closed: SocketAddr) -> Result<io::Error, String> {
    let socket = udp_socket(closed).map_err(|err| format!("std UDP client: bind: {err}"))?;
    socket
        .connect(closed)
        .map_err(|err| format!("std UDP client: connect {closed}: {err}"))?;
    if let Err(err) = socket.send(b"anyone there?\n") {
        return Ok(err);
    }
    let mut buf = [0u8; 64];
    match socket.recv(&mut buf) {
        Ok(n) => Err(format!(
            "std UDP client: {closed} answered with {n} bytes, though nobody listens there"
        )),
        Err(err) => Ok(err),
    }
}
