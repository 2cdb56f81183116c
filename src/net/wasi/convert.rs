//! Between WASI's types and std's: addresses, and errors as users read them.

use ::wasi::io::streams::StreamError;
use ::wasi::sockets::network::{
    ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The address family of `addr`.
pub(super) fn family(addr: SocketAddr) -> IpAddressFamily {
    match addr {
        SocketAddr::V4(_) => IpAddressFamily::Ipv4,
        SocketAddr::V6(_) => IpAddressFamily::Ipv6,
    }
}

/// A WASI socket error as an `io::Error` whose kind matches the native
/// build's, and whose message says what to do when the runtime denied it.
pub(super) fn to_io(code: ErrorCode) -> io::Error {
    use io::ErrorKind as Kind;
    let kind = match code {
        ErrorCode::AccessDenied => {
            return io::Error::new(
                Kind::PermissionDenied,
                "network access denied by the WebAssembly runtime; \
                 run it with `wasmtime run -S inherit-network` \
                 (and without -S tcp=n or -S udp=n)",
            )
        }
        ErrorCode::WouldBlock => Kind::WouldBlock,
        ErrorCode::AddressInUse => Kind::AddrInUse,
        ErrorCode::AddressNotBindable => Kind::AddrNotAvailable,
        ErrorCode::ConnectionRefused => Kind::ConnectionRefused,
        ErrorCode::ConnectionReset => Kind::ConnectionReset,
        ErrorCode::ConnectionAborted => Kind::ConnectionAborted,
        ErrorCode::InvalidArgument => Kind::InvalidInput,
        ErrorCode::NotSupported => Kind::Unsupported,
        ErrorCode::OutOfMemory => Kind::OutOfMemory,
        ErrorCode::Timeout => Kind::TimedOut,
        _ => return io::Error::other(code.message()),
    };
    kind.into()
}

/// Stream errors carry no error code in WASI 0.2.12's bindings, and their
/// debug string can hold a whole host backtrace: say what it means instead.
pub(super) fn stream_error(err: StreamError) -> io::Error {
    match err {
        StreamError::Closed => io::ErrorKind::BrokenPipe.into(),
        StreamError::LastOperationFailed(_) => io::ErrorKind::ConnectionReset.into(),
    }
}

/// `addr` in WASI's terms.
pub(super) fn to_wasi_addr(addr: SocketAddr) -> IpSocketAddress {
    match addr {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress {
                port: v4.port(),
                address: (a, b, c, d),
            })
        }
        SocketAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: v6.port(),
                flow_info: v6.flowinfo(),
                address: (a, b, c, d, e, f, g, h),
                scope_id: v6.scope_id(),
            })
        }
    }
}

/// A WASI address in std's terms.
pub(super) fn from_wasi_addr(addr: IpSocketAddress) -> SocketAddr {
    match addr {
        IpSocketAddress::Ipv4(v4) => {
            let (a, b, c, d) = v4.address;
            SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), v4.port).into()
        }
        IpSocketAddress::Ipv6(v6) => {
            let (a, b, c, d, e, f, g, h) = v6.address;
            let ip = Ipv6Addr::new(a, b, c, d, e, f, g, h);
            SocketAddrV6::new(ip, v6.port, v6.flow_info, v6.scope_id).into()
        }
    }
}
