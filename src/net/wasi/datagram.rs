//! UDP sockets on WASI, moving many datagrams per host call.
//!
//! `wasi:sockets/udp` receives and sends lists of datagrams. A socket
//! receives up to [`RECEIVE_BATCH`] at once and hands them out one by one;
//! what the caller sends waits in an outbox that goes out in one `send` per
//! batch the runtime permits: when the outbox is full, and before every
//! wait. A send that fails after `send_to` returned is reported by the next
//! `recv_from`, the way Linux reports an ICMP error for an earlier datagram.

use super::convert::{family, from_wasi_addr, to_io, to_wasi_addr};
use super::poll::HostBudget;
use super::{finish, WasiNet};
use ::wasi::io::poll::Pollable;
use ::wasi::sockets::udp::{
    IncomingDatagram, IncomingDatagramStream, OutgoingDatagram, OutgoingDatagramStream, UdpSocket,
};
use ::wasi::sockets::udp_create_socket::create_udp_socket;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

/// Datagrams asked for per `receive` (wasmtime 48 gives at most 16).
const RECEIVE_BATCH: u64 = 32;

/// Datagrams `send_to` queues before it sends them; past it, it reports
/// `WouldBlock` unless the runtime takes some.
const OUTBOX: usize = 64;

/// A bound UDP socket, its two datagram streams, and the datagrams
/// between them and the caller. Children before parents (see the module
/// [`super`]).
pub(super) struct Datagram {
    pub(super) receivable: Pollable,
    pub(super) sendable: Pollable,
    incoming: IncomingDatagramStream,
    outgoing: OutgoingDatagramStream,
    pub(super) socket: UdpSocket,
    /// Received and not yet taken, oldest first.
    inbox: VecDeque<IncomingDatagram>,
    /// Taken by `send_to` and not yet given to the runtime, oldest first.
    outbox: Vec<OutgoingDatagram>,
    /// A send of an earlier datagram failed: the next `recv_from` says so.
    failed: Option<io::Error>,
}

impl Datagram {
    /// A UDP socket bound to `addr` on `network`.
    pub(super) fn bind(network: &WasiNet, addr: SocketAddr) -> io::Result<Self> {
        let socket = create_udp_socket(family(addr)).map_err(to_io)?;
        socket
            .start_bind(network, to_wasi_addr(addr))
            .map_err(to_io)?;
        finish(|| socket.subscribe(), || socket.finish_bind())?;
        let (incoming, outgoing) = socket.stream(None).map_err(to_io)?;
        Ok(Datagram {
            receivable: incoming.subscribe(),
            sendable: outgoing.subscribe(),
            incoming,
            outgoing,
            socket,
            inbox: VecDeque::new(),
            outbox: Vec::new(),
            failed: None,
        })
    }

    /// The oldest datagram received, cut to `buf`'s length, and its sender.
    pub(super) fn recv_from(
        &mut self,
        buf: &mut [u8],
        budget: &mut HostBudget,
    ) -> io::Result<(usize, SocketAddr)> {
        if let Some(err) = self.failed.take() {
            return Err(err);
        }
        if self.inbox.is_empty() {
            budget.spend(1);
            self.inbox
                .extend(self.incoming.receive(RECEIVE_BATCH).map_err(to_io)?);
        }
        let datagram = self.inbox.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        let n = datagram.data.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram.data[..n]);
        Ok((n, from_wasi_addr(datagram.remote_address)))
    }

    /// Queues `datagram` for `to`, sending the queue first if it is full.
    pub(super) fn send_to(
        &mut self,
        datagram: &[u8],
        to: SocketAddr,
        budget: &mut HostBudget,
    ) -> io::Result<()> {
        if self.outbox.len() == OUTBOX {
            self.flush(budget);
            if self.outbox.len() == OUTBOX {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        self.outbox.push(OutgoingDatagram {
            data: datagram.to_vec(),
            remote_address: Some(to_wasi_addr(to)),
        });
        Ok(())
    }

    /// Gives the runtime as much of the outbox as it permits now. A
    /// datagram it refuses is dropped and its error kept for `recv_from`.
    pub(super) fn flush(&mut self, budget: &mut HostBudget) {
        while !self.outbox.is_empty() {
            // Every send must follow a check-send that permits it, and may
            // send no more than that (wasmtime traps otherwise).
            budget.spend(2);
            let permitted = match self.outgoing.check_send() {
                Ok(0) => return,
                Ok(permitted) => usize::try_from(permitted).unwrap_or(usize::MAX),
                Err(err) => return self.fail(to_io(err)),
            };
            let batch = &self.outbox[..permitted.min(self.outbox.len())];
            match self.outgoing.send(batch) {
                Ok(0) => return,
                Ok(sent) => {
                    let sent = usize::try_from(sent).unwrap_or(batch.len());
                    self.outbox.drain(..sent.min(batch.len()));
                }
                // The first datagram of the batch cannot go: drop it.
                Err(err) => self.fail(to_io(err)),
            }
        }
    }

    /// Drops the oldest queued datagram, which failed with `err`.
    fn fail(&mut self, err: io::Error) {
        if !self.outbox.is_empty() {
            self.outbox.remove(0);
        }
        self.failed.get_or_insert(err);
    }

    /// Whether `recv_from` would return something without a host call.
    pub(super) fn has_received(&self) -> bool {
        !self.inbox.is_empty() || self.failed.is_some()
    }

    /// Whether datagrams wait for the runtime to permit their send.
    pub(super) fn has_unsent(&self) -> bool {
        !self.outbox.is_empty()
    }
}
