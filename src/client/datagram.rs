//! The UDP echo client: sends its input as datagrams, one at a time, and
//! waits for each echo, retrying on timeout.

use super::Error;
use crate::clock::Clock;
use crate::net::{any_local, explain, would_block, Bind, Close, Interest, Network, SocketId};
use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// How many earlier datagrams a stray echo is compared with to call it late.
const LATE_WINDOW: usize = 16;

/// How `send --udp` paces and retries.
#[derive(Clone, Copy, Debug)]
pub struct DatagramOptions {
    /// Bytes per datagram (the last one may be shorter).
    pub size: usize,
    /// How long to wait for each echo before sending again.
    pub timeout: Duration,
    /// How many times a datagram is sent again before it counts as lost.
    pub retries: u32,
}

/// What happened on the way, when everything came back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatagramReport {
    /// Datagrams sent and echoed.
    pub datagrams: u64,
    /// Datagrams sent again after a timeout.
    pub retransmits: u64,
    /// Echoes of earlier datagrams that arrived late: reordered or
    /// duplicated.
    pub late: u64,
}

/// Some datagrams never came back, or came back changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatagramMismatch {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams that never came back despite the retries.
    pub lost: u64,
    /// Echoes that matched no datagram sent.
    pub corrupt: u64,
    /// Late (reordered or duplicated) echoes seen.
    pub late: u64,
}

impl fmt::Display for DatagramMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "echo mismatch: sent {} datagrams, {} lost, {} changed, {} late (reordered or duplicated)",
            self.sent, self.lost, self.corrupt, self.late
        )
    }
}

impl std::error::Error for DatagramMismatch {}

/// Sends `input` to the UDP echo server at `server` and writes the echoes
/// to `out` in order; `clock` times the retries.
pub fn send_datagrams<N: Network>(
    net: &mut N,
    clock: &impl Clock,
    server: SocketAddr,
    input: &[u8],
    options: DatagramOptions,
    out: &mut impl Write,
) -> Result<DatagramReport, Error> {
    let local = any_local(server);
    let socket = net
        .bind_udp(local, Bind::default())
        .map_err(|err| explain(err, local))?;
    net.set_interest(socket, Interest::READ);
    let mut peer = Peer {
        socket,
        server,
        buf: vec![0; MAX_DATAGRAM + 1],
        ready: Vec::new(),
    };
    let mut report = DatagramReport::default();
    let mut failure = DatagramMismatch {
        sent: 0,
        lost: 0,
        corrupt: 0,
        late: 0,
    };
    let chunks: Vec<&[u8]> = input.chunks(options.size.max(1)).collect();
    for (index, chunk) in chunks.iter().enumerate() {
        let earlier = &chunks[index.saturating_sub(LATE_WINDOW)..index];
        failure.sent += 1;
        match peer.echo(net, clock, chunk, earlier, options, &mut report)? {
            Echo::Intact => out.write_all(chunk)?,
            Echo::Lost => failure.lost += 1,
            Echo::Changed => failure.corrupt += 1,
        }
    }
    net.close(socket, Close::Orderly);
    failure.late = report.late;
    if failure.lost + failure.corrupt > 0 {
        return Err(Error::Datagrams(failure));
    }
    report.datagrams = failure.sent;
    Ok(report)
}

enum Echo {
    Intact,
    Lost,
    Changed,
}

struct Peer {
    socket: SocketId,
    server: SocketAddr,
    buf: Vec<u8>,
    ready: Vec<SocketId>,
}

impl Peer {
    /// Sends `datagram` and waits for its echo, retrying on timeout.
    fn echo<N: Network>(
        &mut self,
        net: &mut N,
        clock: &impl Clock,
        datagram: &[u8],
        earlier: &[&[u8]],
        options: DatagramOptions,
        report: &mut DatagramReport,
    ) -> io::Result<Echo> {
        for attempt in 0..=options.retries {
            if attempt > 0 {
                report.retransmits += 1;
            }
            self.send(net, datagram)?;
            let deadline = clock.now() + options.timeout;
            loop {
                match net.recv_from(self.socket, &mut self.buf) {
                    Ok((_, from)) if from != self.server => continue,
                    Ok((len, _)) => {
                        let echo = &self.buf[..len];
                        if echo == datagram {
                            return Ok(Echo::Intact);
                        }
                        if earlier.contains(&echo) {
                            report.late += 1;
                            continue;
                        }
                        return Ok(Echo::Changed);
                    }
                    Err(err) if would_block(&err) => {}
                    Err(err) => return Err(err),
                }
                let now = clock.now();
                if now >= deadline {
                    break;
                }
                self.ready.clear();
                net.wait(Some(deadline - now), &mut self.ready)?;
            }
        }
        Ok(Echo::Lost)
    }

    fn send<N: Network>(&mut self, net: &mut N, datagram: &[u8]) -> io::Result<()> {
        loop {
            match net.send_to(self.socket, datagram, self.server) {
                Err(err) if would_block(&err) => {
                    net.set_interest(self.socket, Interest::BOTH);
                    self.ready.clear();
                    net.wait(None, &mut self.ready)?;
                    net.set_interest(self.socket, Interest::READ);
                }
                result => return result,
            }
        }
    }
}
