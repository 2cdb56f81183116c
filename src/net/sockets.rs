//! Socket creation shared by the host backends (epoll and io_uring):
//! binding as [`PortSharing`] says, IPv6 only for IPv6 addresses, and
//! client sockets bound to a local IP without a port; and host names
//! resolved by the system's resolver.

use super::{Bind, Capabilities, PortSharing};
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// A socket of `kind` bound to `addr` as `sharing` says: IPv6 addresses
/// are IPv6 only whatever `net.ipv6.bindv6only` says, and a restarted
/// server can rebind at once while old connections linger in TIME_WAIT.
pub(super) fn bound(addr: SocketAddr, kind: Type, sharing: PortSharing) -> io::Result<Socket> {
    let addr = match sharing {
        // Nothing else may hold the port, and a group must not be joined
        // by accident: bind it alone first (which also picks port 0's
        // port), then let the group in.
        PortSharing::First => {
            let alone = bound(addr, kind, PortSharing::Alone)?.local_addr()?;
            alone.as_socket().unwrap_or(addr)
        }
        PortSharing::Alone | PortSharing::Join => addr,
    };
    let socket = Socket::new(Domain::for_address(addr), kind, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if kind == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    if sharing != PortSharing::Alone {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// What the host backends can do: everything but splice, named `name`.
pub(super) fn host_capabilities(name: &'static str) -> Capabilities {
    Capabilities {
        name,
        splice: false,
        reset: true,
        threads: true,
        lingering: false,
    }
}

/// A TCP socket listening on `addr` as `bind` says.
pub(super) fn listening(addr: SocketAddr, bind: Bind) -> io::Result<Socket> {
    let socket = bound(addr, Type::STREAM, bind.sharing)?;
    socket.listen(i32::try_from(bind.backlog).unwrap_or(i32::MAX))?;
    Ok(socket)
}

/// A non-blocking TCP socket for a connection to `peer`, not yet
/// connected; bound to `local` (any port) when given.
pub(super) fn client(peer: SocketAddr, local: Option<IpAddr>) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(peer), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    if let Some(local) = local {
        bind_address_no_port(&socket)?;
        socket.bind(&SocketAddr::new(local, 0).into())?;
    }
    Ok(socket)
}

/// Lets a client socket bound to an IP leave its port to `connect`, so
/// that the 4-tuple, not the local port alone, must be unique: one source
/// address then carries as many connections as there are ports on every
/// peer, not one set of ephemeral ports in all.
#[cfg(target_os = "linux")]
fn bind_address_no_port(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads an int of the size passed from a live local.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of_val(&on) as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(not(target_os = "linux"))]
fn bind_address_no_port(_socket: &Socket) -> io::Result<()> {
    Ok(())
}

/// The addresses the system's resolver (`getaddrinfo`, with
/// `/etc/hosts`) gives for host name `name`, in its order.
pub(super) fn resolve(name: &str) -> io::Result<Vec<IpAddr>> {
    Ok((name, 0).to_socket_addrs()?.map(|addr| addr.ip()).collect())
}
