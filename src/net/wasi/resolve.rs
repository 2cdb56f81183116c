//! Host names through `wasi:sockets/ip-name-lookup`, which the runtime
//! grants separately from the network (`wasmtime run -S
//! allow-ip-name-lookup`).

use ::wasi::sockets::instance_network::instance_network;
use ::wasi::sockets::ip_name_lookup::resolve_addresses;
use ::wasi::sockets::network::{ErrorCode, IpAddress};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The addresses the runtime's resolver gives for host name `name`, in
/// its order; waits for them (a lookup is done once, at a command's start).
pub(in crate::net) fn resolve(name: &str) -> io::Result<Vec<IpAddr>> {
    let network = instance_network();
    let stream = resolve_addresses(&network, name).map_err(lookup_error)?;
    // Declared after the stream, so dropped before it: a pollable is its
    // stream's child.
    let ready = stream.subscribe();
    let mut found = Vec::new();
    loop {
        match stream.resolve_next_address() {
            Ok(Some(ip)) => found.push(from_wasi_ip(ip)),
            Ok(None) => return Ok(found),
            Err(ErrorCode::WouldBlock) => ready.block(),
            Err(code) => return Err(lookup_error(code)),
        }
    }
}

fn from_wasi_ip(ip: IpAddress) -> IpAddr {
    match ip {
        IpAddress::Ipv4((a, b, c, d)) => Ipv4Addr::new(a, b, c, d).into(),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => Ipv6Addr::new(a, b, c, d, e, f, g, h).into(),
    }
}

/// A lookup's error as users read it; a denied lookup names the
/// permission that grants it.
fn lookup_error(code: ErrorCode) -> io::Error {
    use io::ErrorKind as Kind;
    let (kind, message) = match code {
        // wasmtime 48 answers a lookup it does not grant with
        // permanent-resolver-failure; its resolver's own failures are
        // name-unresolvable.
        ErrorCode::AccessDenied | ErrorCode::PermanentResolverFailure => (
            Kind::PermissionDenied,
            "name lookup denied by the WebAssembly runtime; run it with \
             `wasmtime run -S allow-ip-name-lookup` (or give an IP address)",
        ),
        ErrorCode::NameUnresolvable => (Kind::NotFound, "no such host"),
        ErrorCode::TemporaryResolverFailure => {
            (Kind::Other, "temporary failure in name resolution")
        }
        ErrorCode::InvalidArgument => (Kind::InvalidInput, "not a host name"),
        _ => return io::Error::other(code.message()),
    };
    io::Error::new(kind, message)
}
