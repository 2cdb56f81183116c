//! A fault injector: middleware around any [`Network`] that makes it
//! misbehave the way real networks and kernels do, chosen by a seeded
//! generator so every run can be replayed.
//!
//! It shortens reads, writes and splices, reports spurious "would block",
//! resets connections, refuses splices as hosts without them do, and fails
//! accepts as a full descriptor table would. Wrapped
//! around the in-memory [`loopback`](super::loopback) network, it lets tests
//! and the fuzzer drive the real engine through faults deterministically.

use super::{Bind, Capabilities, Close, Interest, Network, SocketId, Spliced};
use crate::hash::mix;
use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How often each fault strikes, in parts per thousand of the calls that
/// can suffer it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultRates {
    /// Reads, writes and splices cut to a random shorter length.
    pub short_io: u16,
    /// Reads, writes, splices and accepts that report "would block" for
    /// no reason.
    pub spurious_would_block: u16,
    /// Reads, writes and splices that reset the connection for good.
    pub reset: u16,
    /// Accepts that fail with "too many open files".
    pub accept_failure: u16,
    /// Splices refused with `Unsupported`, so callers read and write
    /// instead for that once.
    pub unspliced: u16,
}

impl FaultRates {
    /// Whether these faults may cost an echo its bytes: refused splices
    /// alone only send the bytes another way.
    pub fn harmful(&self) -> bool {
        FaultRates {
            unspliced: 0,
            ..*self
        } != FaultRates::default()
    }
}

/// `N` with faults injected.
pub struct Faulty<N> {
    inner: N,
    rates: FaultRates,
    state: u64,
    reset: HashSet<SocketId>,
}

impl<N: Network> Faulty<N> {
    /// Wraps `inner`; `seed` fixes which calls fail.
    pub fn new(inner: N, rates: FaultRates, seed: u64) -> Self {
        Faulty {
            inner,
            rates,
            state: seed,
            reset: HashSet::new(),
        }
    }

    /// The network underneath, without faults.
    pub fn inner_mut(&mut self) -> &mut N {
        &mut self.inner
    }

    /// Changes the rates from now on.
    pub fn set_rates(&mut self, rates: FaultRates) {
        self.rates = rates;
    }

    fn roll(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    fn strikes(&mut self, per_mille: u16) -> bool {
        per_mille > 0 && self.roll() % 1000 < u64::from(per_mille)
    }

    /// A random length in `1..=len` when a short operation strikes.
    fn shorten(&mut self, len: usize) -> usize {
        if len > 1 && self.strikes(self.rates.short_io) {
            1 + (self.roll() % len as u64) as usize
        } else {
            len
        }
    }

    /// The fault, if any, for a read or write on `id`.
    fn io_fault(&mut self, id: SocketId) -> Option<io::Error> {
        if self.reset.contains(&id) || self.strikes(self.rates.reset) {
            self.reset.insert(id);
            return Some(io::ErrorKind::ConnectionReset.into());
        }
        self.strikes(self.rates.spurious_would_block)
            .then(|| io::ErrorKind::WouldBlock.into())
    }
}

impl<N: Network> Network for Faulty<N> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn listen(&mut self, addr: SocketAddr, bind: Bind) -> io::Result<SocketId> {
        self.inner.listen(addr, bind)
    }

    fn connect(&mut self, peer: SocketAddr, local: Option<IpAddr>) -> io::Result<SocketId> {
        self.inner.connect(peer, local)
    }

    fn accept(&mut self, listener: SocketId) -> io::Result<(SocketId, SocketAddr)> {
        if self.strikes(self.rates.accept_failure) {
            return Err(io::Error::other("too many open files (injected)"));
        }
        if self.strikes(self.rates.spurious_would_block) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.inner.accept(listener)
    }

    fn local_addr(&self, id: SocketId) -> io::Result<SocketAddr> {
        self.inner.local_addr(id)
    }

    fn bind_udp(&mut self, addr: SocketAddr, bind: Bind) -> io::Result<SocketId> {
        self.inner.bind_udp(addr, bind)
    }

    fn recv_from(&mut self, id: SocketId, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.recv_from(id, buf)
    }

    fn send_to(&mut self, id: SocketId, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.inner.send_to(id, datagram, to)
    }

    fn read(&mut self, id: SocketId, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(err) = self.io_fault(id) {
            return Err(err);
        }
        let len = self.shorten(buf.len());
        self.inner.read(id, &mut buf[..len])
    }

    fn write(&mut self, id: SocketId, buf: &[u8]) -> io::Result<usize> {
        if let Some(err) = self.io_fault(id) {
            return Err(err);
        }
        let len = self.shorten(buf.len());
        self.inner.write(id, &buf[..len])
    }

    fn splice(&mut self, id: SocketId, max: usize) -> io::Result<Spliced> {
        if self.strikes(self.rates.unspliced) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "splice refused (injected)",
            ));
        }
        match self.io_fault(id) {
            Some(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(Spliced::InputEmpty),
            Some(err) => Err(err),
            None => {
                let max = self.shorten(max);
                self.inner.splice(id, max)
            }
        }
    }

    fn shutdown_write(&mut self, id: SocketId) -> io::Result<()> {
        if self.reset.contains(&id) {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        self.inner.shutdown_write(id)
    }

    fn close(&mut self, id: SocketId, how: Close) {
        self.reset.remove(&id);
        self.inner.close(id, how);
    }

    fn lingering(&self) -> usize {
        self.inner.lingering()
    }

    fn set_interest(&mut self, id: SocketId, interest: Interest) {
        self.inner.set_interest(id, interest);
    }

    fn wait(&mut self, timeout: Option<Duration>, ready: &mut Vec<SocketId>) -> io::Result<()> {
        self.inner.wait(timeout, ready)
    }
}
