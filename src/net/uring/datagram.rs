//! One UDP socket's state: datagrams received and not yet taken, and the
//! datagrams whose sends are in flight.

use super::stream::Receiving;
use socket2::SockAddr;
use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// Datagram ring buffers: a header, the sender's address, and the
/// largest UDP payload.
pub(super) const DATAGRAM_BUFFER: usize = 64 * 1024 + 128;
/// Datagrams received and not taken past which the receive is cancelled.
const INBOX_CAP: usize = 64;
/// Datagram sends in flight at most; `send_to` reports `WouldBlock` then.
const SENDS: usize = 64;
/// Room for the sender's address: the larger of IPv4's and IPv6's.
const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();

/// A UDP socket's state besides its socket.
pub(super) struct Datagram {
    /// What the multishot receive is told of the message layout (the
    /// name's length only); boxed, as the kernel reads it.
    pub(super) header: Box<libc::msghdr>,
    /// The multishot receive.
    pub(super) receiving: Receiving,
    /// Datagrams received and not taken, with their senders.
    inbox: VecDeque<(Box<[u8]>, SocketAddr)>,
    inbox_bytes: usize,
    /// A receive failed with this `errno`; the next `recv_from` says so.
    pub(super) recv_failed: Option<i32>,
    /// Datagrams in flight, by send slot (a tag's `aux`).
    sends: Vec<Option<Box<Outgoing>>>,
    in_flight: usize,
    /// A send failed with this `errno`; the next `recv_from` says so, as
    /// Linux reports an ICMP error for an earlier datagram.
    send_failed: Option<i32>,
}

/// One datagram being sent: the message the kernel reads, and what it
/// points to.
pub(super) struct Outgoing {
    header: libc::msghdr,
    iov: libc::iovec,
    to: SockAddr,
    data: Box<[u8]>,
}

impl Datagram {
    pub(super) fn new() -> Datagram {
        // SAFETY: msghdr is plain data, for which all zeroes (null
        // pointers, zero lengths) is a valid value.
        let mut header: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        header.msg_namelen = NAME_LEN as libc::socklen_t;
        Datagram {
            header,
            receiving: Receiving::Off,
            inbox: VecDeque::new(),
            inbox_bytes: 0,
            recv_failed: None,
            sends: Vec::new(),
            in_flight: 0,
            send_failed: None,
        }
    }

    /// A `recv_from` would not report `WouldBlock`.
    pub(super) fn readable(&self) -> bool {
        !self.inbox.is_empty() || self.recv_failed.is_some() || self.send_failed.is_some()
    }

    /// A `send_to` would not report `WouldBlock`.
    pub(super) fn writable(&self) -> bool {
        self.in_flight < SENDS
    }

    /// Whether a receive should be armed now.
    pub(super) fn wants_receive(&self) -> bool {
        self.receiving == Receiving::Off && self.inbox.len() <= INBOX_CAP / 2
    }

    /// Whether the armed receive should be cancelled: the caller left
    /// [`INBOX_CAP`] datagrams untaken.
    pub(super) fn over_cap(&self) -> bool {
        self.receiving == Receiving::Armed && self.inbox.len() >= INBOX_CAP
    }

    /// Keeps a copy of the datagram a receive put in `buffer` (its
    /// ring buffer, as long as the completion said).
    pub(super) fn received(&mut self, buffer: &[u8]) {
        let Ok(message) = io_uring::types::RecvMsgOut::parse(buffer, &self.header) else {
            return;
        };
        let Some(from) = sender(message.name_data()) else {
            return;
        };
        let payload: Box<[u8]> = message.payload_data().into();
        self.inbox_bytes += payload.len();
        self.inbox.push_back((payload, from));
    }

    /// Takes the oldest datagram, cut to `buf`'s length.
    pub(super) fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        if let Some(errno) = self.send_failed.take() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let Some((datagram, from)) = self.inbox.pop_front() else {
            return Err(match self.recv_failed.take() {
                Some(errno) => io::Error::from_raw_os_error(errno),
                None => io::ErrorKind::WouldBlock.into(),
            });
        };
        self.inbox_bytes -= datagram.len();
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok((n, from))
    }

    /// Keeps a copy of `datagram` for a send to `to`: its send slot and
    /// the message to submit.
    ///
    /// The message and what it points to stay valid and unchanged until
    /// [`Datagram::sent`] for that slot: they are boxed, and the box is
    /// dropped only then (or with the socket, once no operation is in
    /// flight).
    pub(super) fn send_to(
        &mut self,
        datagram: &[u8],
        to: SocketAddr,
    ) -> io::Result<(u8, *const libc::msghdr)> {
        if self.in_flight == SENDS {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let slot = match self.sends.iter().position(Option::is_none) {
            Some(slot) => slot,
            None => {
                self.sends.push(None);
                self.sends.len() - 1
            }
        };
        let mut out = Box::new(Outgoing {
            // SAFETY: plain data, as in `new`.
            header: unsafe { std::mem::zeroed() },
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            to: SockAddr::from(to),
            data: datagram.into(),
        });
        out.iov.iov_base = out.data.as_ptr().cast_mut().cast();
        out.iov.iov_len = out.data.len();
        out.header.msg_name = out.to.as_ptr().cast_mut().cast();
        out.header.msg_namelen = out.to.len();
        out.header.msg_iov = &mut out.iov;
        out.header.msg_iovlen = 1;
        let header: *const libc::msghdr = &out.header;
        self.sends[slot] = Some(out);
        self.in_flight += 1;
        Ok((slot as u8, header))
    }

    /// The send in send slot `slot` completed with `result`.
    pub(super) fn sent(&mut self, slot: u8, result: i32) {
        if let Some(done) = self.sends.get_mut(usize::from(slot)) {
            if done.take().is_some() {
                self.in_flight -= 1;
            }
        }
        if result < 0 && result != -libc::ECANCELED {
            self.send_failed = Some(-result);
        }
    }

    /// Memory the socket holds for datagrams.
    pub(super) fn held_bytes(&self) -> usize {
        let sending: usize = (self.sends.iter().flatten())
            .map(|out| out.data.len())
            .sum();
        self.inbox_bytes + sending
    }
}

/// The address in a `sockaddr_in` or `sockaddr_in6` as received.
fn sender(name: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([*name.first()?, *name.get(1)?]));
    let port = u16::from_be_bytes([*name.get(2)?, *name.get(3)?]);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::from((Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 => {
            let flow = u32::from_be_bytes(name.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            let addr = SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope);
            Some(SocketAddr::V6(addr))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_parse_from_their_socket_addresses() {
        for addr in ["127.0.0.1:7", "[::1]:65535", "[fe80::1%2]:9"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let raw = SockAddr::from(addr);
            // SAFETY: `raw` holds `raw.len()` initialised bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(raw.as_ptr().cast::<u8>(), raw.len() as usize)
            };
            assert_eq!(sender(bytes), Some(addr));
        }
        assert_eq!(sender(&[0; 3]), None);
    }
}
