//! The contract every backend keeps, as tests run on each: the host's own
//! backends (epoll and io_uring natively, wasi when the unit tests run
//! under a WASI runtime),
//! the loopback network, and the fault injector with no faults (which
//! must only forward).

use super::faults::{FaultRates, Faulty};
use super::loopback::Loopback;
use super::*;
use crate::clock::{Clock, MonotonicClock};
use std::net::Ipv4Addr;

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(5);

pub(super) const LOCALHOST: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Waits (in steps of 10 ms) until `done` says so; fails after [`PATIENCE`].
pub(super) fn until<N: Network, T>(
    net: &mut N,
    clock: &impl Clock,
    what: &str,
    mut done: impl FnMut(&mut N) -> io::Result<Option<T>>,
) -> T {
    let deadline = clock.now() + PATIENCE;
    let mut ready = Vec::new();
    loop {
        match done(net) {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(err) if would_block(&err) => {}
            Err(err) => panic!("{what}: {err}"),
        }
        assert!(clock.now() < deadline, "{what}: nothing after {PATIENCE:?}");
        ready.clear();
        net.wait(Some(Duration::from_millis(10)), &mut ready)
            .unwrap_or_else(|err| panic!("{what}: wait: {err}"));
    }
}

fn wait_with_nothing_to_wait_for<N: Network>(mut net: N, clock: impl Clock) {
    let mut ready = Vec::new();
    let err = net.wait(None, &mut ready).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    let before = clock.now();
    net.wait(Some(Duration::from_millis(20)), &mut ready)
        .expect("a wait with a timeout sleeps");
    assert!(clock.now() - before >= Duration::from_millis(19));
    // A listener without interest is nothing to wait for either.
    let listener = net.listen(LOCALHOST, Bind::default()).unwrap();
    let err = net.wait(None, &mut ready).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    net.close(listener, Close::Orderly);
}

/// A connection from a client socket to an accepted one, both on `net`.
pub(super) fn connected<N: Network>(
    net: &mut N,
    clock: &impl Clock,
) -> (SocketId, SocketId, SocketId) {
    let listener = net.listen(LOCALHOST, Bind::default()).unwrap();
    let addr = net.local_addr(listener).unwrap();
    assert_ne!(addr.port(), 0, "port 0 picks a port");
    net.set_interest(listener, Interest::READ);
    let client = net.connect(addr, None).unwrap();
    net.set_interest(client, Interest::BOTH);
    let (server, peer) = until(net, clock, "accept", |net| net.accept(listener).map(Some));
    assert!(peer.ip().is_loopback(), "{peer}");
    (listener, client, server)
}

pub(super) fn stream_echo_and_half_close<N: Network>(mut net: N, clock: impl Clock) {
    let (listener, client, server) = connected(&mut net, &clock);
    net.set_interest(server, Interest::READ);
    let sent = until(&mut net, &clock, "write", |net| {
        Ok(Some(net.write(client, b"hello")?).filter(|&n| n > 0))
    });
    let mut buf = [0; 16];
    let mut got = Vec::new();
    while got.len() < sent {
        let n = until(&mut net, &clock, "read", |net| {
            try_read(net, server, &mut buf)
        });
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got, &b"hello"[..sent]);
    until(&mut net, &clock, "shutdown", |net| {
        net.shutdown_write(client).map(Some)
    });
    let end = until(&mut net, &clock, "end of stream", |net| {
        try_read(net, server, &mut buf)
    });
    assert_eq!(end, 0, "a half-close reads as the end of the stream");
    for id in [client, server, listener] {
        net.close(id, Close::Orderly);
    }
}

fn datagrams_come_back_from_their_sender<N: Network>(mut net: N, clock: impl Clock) {
    let a = net.bind_udp(LOCALHOST, Bind::default()).unwrap();
    let b = net.bind_udp(LOCALHOST, Bind::default()).unwrap();
    let (a_addr, b_addr) = (net.local_addr(a).unwrap(), net.local_addr(b).unwrap());
    net.set_interest(b, Interest::READ);
    until(&mut net, &clock, "send", |net| {
        net.send_to(a, b"ping", b_addr).map(Some)
    });
    let mut buf = [0; 16];
    let (len, from) = until(&mut net, &clock, "receive", |net| {
        net.recv_from(b, &mut buf).map(Some)
    });
    assert_eq!((&buf[..len], from), (&b"ping"[..], a_addr));
    net.close(a, Close::Orderly);
    net.close(b, Close::Orderly);
}

fn capabilities_say_what_splice_does<N: Network>(mut net: N, clock: impl Clock) {
    let caps = net.capabilities();
    let (listener, client, server) = connected(&mut net, &clock);
    net.set_interest(server, Interest::BOTH);
    // A runtime may not know yet that a fresh socket is writable (wasmtime's
    // check-write stays 0 until its reactor thread has seen the socket), so
    // `OutputFull` means "not yet"; then, with nothing sent, the input is empty.
    let spliced = until(&mut net, &clock, "splice", |net| {
        match net.splice(server, 1024) {
            Ok(Spliced::OutputFull) => Ok(None),
            other => Ok(Some(other)),
        }
    });
    match spliced {
        Err(err) => {
            assert!(!caps.splice, "{} splices, yet: {err}", caps.name);
            assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        }
        Ok(spliced) => {
            assert!(caps.splice, "{} cannot splice, yet: {spliced:?}", caps.name);
            assert_eq!(spliced, Spliced::InputEmpty);
        }
    }
    assert!(caps.lingering || net.lingering() == 0);
    for id in [client, server, listener] {
        net.close(id, Close::Orderly);
    }
}

fn unregistered_ids_are_errors<N: Network>(mut net: N, _clock: impl Clock) {
    let nobody = SocketId(4242);
    let mut buf = [0; 4];
    assert!(net.read(nobody, &mut buf).is_err());
    assert!(net.write(nobody, b"x").is_err());
    assert!(net.local_addr(nobody).is_err());
    // Closing or interest for an unknown id is harmless.
    net.set_interest(nobody, Interest::READ);
    net.close(nobody, Close::Reset);
}

/// One module per backend, each running every contract test on a fresh
/// network and clock from `$open`.
macro_rules! contract_tests {
    ($($(#[$attr:meta])* $backend:ident => $open:expr;)*) => {$(
        $(#[$attr])*
        mod $backend {
            use super::*;

            #[test]
            fn wait_with_nothing_to_wait_for() {
                let (net, clock) = $open;
                super::wait_with_nothing_to_wait_for(net, clock);
            }

            #[test]
            fn stream_echo_and_half_close() {
                let (net, clock) = $open;
                super::stream_echo_and_half_close(net, clock);
            }

            #[test]
            fn datagrams_come_back_from_their_sender() {
                let (net, clock) = $open;
                super::datagrams_come_back_from_their_sender(net, clock);
            }

            #[test]
            fn capabilities_say_what_splice_does() {
                let (net, clock) = $open;
                super::capabilities_say_what_splice_does(net, clock);
            }

            #[test]
            fn unregistered_ids_are_errors() {
                let (net, clock) = $open;
                super::unregistered_ids_are_errors(net, clock);
            }
        }
    )*};
}

fn loopback(splices: bool) -> (loopback::LoopbackNetwork, Loopback) {
    let world = Loopback::default();
    let net = match splices {
        true => world.host(),
        false => world.host_without_splice(),
    };
    (net, world)
}

contract_tests! {
    #[cfg(not(target_os = "wasi"))]
    epoll => (NativeNetwork::new().unwrap(), MonotonicClock::new());
    #[cfg(target_os = "linux")]
    uring => (UringNetwork::new().unwrap(), MonotonicClock::new());
    #[cfg(target_os = "wasi")]
    wasi => (WasiNetwork::new().unwrap(), MonotonicClock::new());
    #[cfg(target_os = "wasi")]
    wasi_spliced => (WasiNetwork::splicing().unwrap(), MonotonicClock::new());
    loopback_spliced => loopback(true);
    loopback_copied => loopback(false);
    faults_off => {
        let (net, world) = loopback(true);
        (Faulty::new(net, FaultRates::default(), 7), world)
    };
}
