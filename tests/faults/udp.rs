//! UDP abuse on real sockets: a forged datagram between two echo servers
//! (the loop of CERT CA-1996-01), datagrams from service ports, and a
//! flood from one source. The forging and the counting use raw sockets,
//! which need root (CAP_NET_RAW); without it these tests fail and say so.

use super::*;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{Ipv4Addr, UdpSocket};

/// The most datagrams two servers may exchange after one forged datagram:
/// the loop guard stops a peer after 64 returns, and each return is two
/// datagrams on the wire; the rest is slack for what is in flight.
const LOOP_BOUND: usize = 300;

/// Starts `build`'s UDP server on 127.0.0.1 with `-v` and `extra`.
fn udp_server(build: Build, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--udp", "-v"];
    args.extend_from_slice(extra);
    start_server(build, &args, None)
}

/// A raw IPv4 socket for UDP: it sends datagrams with any source port and
/// receives a copy of every UDP datagram the host receives.
fn raw_udp_socket() -> UdpSocket {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).unwrap_or_else(|err| {
        panic!(
            "cannot open a raw socket ({err}): the UDP abuse tests forge datagrams and need \
             root or CAP_NET_RAW; run them as root (CI does)"
        )
    });
    UdpSocket::from(socket)
}

/// Sends `payload` to `to` from `from_port` on 127.0.0.1 through `raw`
/// (the kernel adds the IP header; a zero UDP checksum means none).
fn forge(raw: &UdpSocket, from_port: u16, to: SocketAddr, payload: &[u8]) {
    let len = u16::try_from(8 + payload.len()).expect("small payload");
    let mut datagram = Vec::with_capacity(usize::from(len));
    for field in [from_port, to.port(), len, 0] {
        datagram.extend_from_slice(&field.to_be_bytes());
    }
    datagram.extend_from_slice(payload);
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    raw.send_to(&datagram, to)
        .unwrap_or_else(|err| panic!("sending the forged datagram: {err}"));
}

/// When each UDP datagram between ports `a` and `b` (either way) was seen
/// by `raw` within `window`, from now.
fn datagrams_between(raw: &UdpSocket, a: u16, b: u16, window: Duration) -> Vec<Duration> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut packet = [0u8; 2048];
    while let Some(left) = window.checked_sub(start.elapsed()).filter(|d| !d.is_zero()) {
        raw.set_read_timeout(Some(left)).expect("read timeout");
        let Ok(len) = raw.recv(&mut packet) else {
            continue;
        };
        let header = usize::from(packet[0] & 0x0f) * 4;
        if len < header + 8 {
            continue;
        }
        let port = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
        let ports = (port(header), port(header + 2));
        if ports == (a, b) || ports == (b, a) {
            seen.push(start.elapsed());
        }
    }
    seen
}

/// One datagram to `to` from an ordinary socket bound to `from`; whether
/// its echo came back within `limit`.
fn echoed_within(socket: &UdpSocket, to: SocketAddr, payload: &[u8], limit: Duration) -> bool {
    socket.send_to(payload, to).expect("send");
    socket.set_read_timeout(Some(limit)).expect("read timeout");
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    while start.elapsed() < limit {
        match socket.recv_from(&mut buf) {
            Ok((len, from)) if from == to && buf[..len] == *payload => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// An ordinary UDP client on `ip`.
fn client(ip: [u8; 4]) -> UdpSocket {
    UdpSocket::bind(SocketAddr::from((ip, 0))).expect("bind a UDP client")
}

/// Asserts that `server` still echoes an ordinary client.
fn still_serves(server: &mut ServerProcess, what: &str) {
    alive(server);
    let client = client([127, 0, 0, 1]);
    assert!(
        echoed_within(&client, server.addr, b"ordinary", Duration::from_secs(2)),
        "{what}: the server no longer echoes an ordinary client; stderr: {}",
        server.stderr()
    );
}

/// How many datagrams `stderr`'s native shutdown summary says were dropped
/// for `reason` (`from service ports`, `in echo loops`, `over --udp-peer-rate`).
fn dropped(stderr: &str, reason: &str) -> u64 {
    let line = (stderr.lines())
        .find(|line| line.starts_with("echokit: stopped:"))
        .unwrap_or_else(|| panic!("no shutdown summary in {stderr:?}"));
    let (before, _) = line
        .split_once(&format!(" {reason}"))
        .unwrap_or_else(|| panic!("the summary {line:?} does not count drops {reason}"));
    let count = before.rsplit(|c: char| !c.is_ascii_digit()).next();
    count
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count before {reason:?} in {line:?}"))
}

/// Asserts what `server` says about its drops: natively the shutdown
/// summary after SIGTERM counts at least `at_least` for `reason`; both
/// builds tell the first drop under `-v` with `told`.
fn drops_reported(
    mut server: ServerProcess,
    build: Build,
    reason: &str,
    at_least: u64,
    told: &str,
) {
    if build == Build::Native {
        server.signal(libc::SIGTERM).expect("SIGTERM");
        server.wait_exit(Duration::from_secs(10));
        let stderr = server.stderr();
        let count = dropped(&stderr, reason);
        assert!(
            count >= at_least,
            "{count} datagrams dropped {reason}, expected at least {at_least}; stderr: {stderr}"
        );
    }
    let stderr = server.stderr();
    assert!(
        stderr.contains(told),
        "the server did not say {told:?} under -v; stderr: {stderr}"
    );
}

/// One datagram forged from server B to server A: the two bounce it at
/// most [`LOOP_BOUND`] times, stop within a second, and both still echo
/// an ordinary client.
pub(crate) fn forged_loop(build: Build) {
    let _heavy = heavy();
    let raw = raw_udp_socket();
    let a = udp_server(build, &[]);
    let mut b = udp_server(build, &[]);
    let (a_port, b_port) = (a.addr.port(), b.addr.port());
    forge(&raw, b_port, a.addr, b"one forged datagram");
    let seen = datagrams_between(&raw, a_port, b_port, Duration::from_secs(3));
    let last = seen.last().copied().unwrap_or_default();
    println!(
        "forged loop [{}]: {} datagrams between the servers, the last {last:.2?} after forging",
        build.name(),
        seen.len()
    );
    assert!(
        seen.len() > 1,
        "the forged datagram was not echoed at all ({} seen): the test proves nothing",
        seen.len()
    );
    assert!(
        seen.len() <= LOOP_BOUND,
        "{} datagrams bounced between two echo servers (bound {LOOP_BOUND})",
        seen.len()
    );
    assert!(
        last < Duration::from_secs(1),
        "the loop went on for {last:?}"
    );
    let mut a = a;
    still_serves(&mut a, "after the loop");
    still_serves(&mut b, "after the loop");
    drops_reported(a, build, "in echo loops", 1, "an echo loop");
}

/// Datagrams from ports 7 (echo) and 19 (chargen) are never echoed and
/// are counted; an ordinary client is served.
pub(crate) fn service_ports(build: Build) {
    let mut server = udp_server(build, &[]);
    for port in [7, 19] {
        // 127.0.0.5: no other test binds service ports there.
        let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 5], port)))
            .unwrap_or_else(|err| panic!("binding port {port} ({err}): this test needs root"));
        assert!(
            !echoed_within(
                &socket,
                server.addr,
                b"from a service",
                Duration::from_millis(500)
            ),
            "a datagram from source port {port} was echoed"
        );
    }
    still_serves(&mut server, "after service-port datagrams");
    drops_reported(server, build, "from service ports", 2, "below 1024");
}

/// With `--udp-peer-rate 100`, a flood from 127.0.0.1 gets at most the
/// bound (its burst plus 100 a second) while 127.0.0.2 is served fully.
pub(crate) fn rate_bound(build: Build) {
    let _heavy = heavy();
    let server = udp_server(build, &["--udp-peer-rate", "100"]);
    let to = server.addr;
    let flooder = client([127, 0, 0, 1]);
    flooder.set_nonblocking(true).expect("non-blocking");
    let start = Instant::now();
    let polite = thread::spawn(move || {
        let polite = client([127, 0, 0, 2]);
        (0..20u8)
            .filter(|&i| {
                thread::sleep(Duration::from_millis(50));
                echoed_within(&polite, to, &[b'p', i], Duration::from_secs(1))
            })
            .count()
    });
    let (mut sent, mut echoed) = (0u32, 0u32);
    let mut buf = [0u8; 64];
    while start.elapsed() < Duration::from_millis(1500) {
        // About 2,000 a second: far over the bound, far under what the
        // server can receive, so that the kernel drops none.
        flooder.send_to(&sent.to_le_bytes(), to).expect("send");
        sent += 1;
        while flooder.recv_from(&mut buf).is_ok() {
            echoed += 1;
        }
        thread::sleep(Duration::from_micros(500));
    }
    let elapsed = start.elapsed();
    thread::sleep(Duration::from_millis(200));
    while flooder.recv_from(&mut buf).is_ok() {
        echoed += 1;
    }
    // A late server may still spend tokens while the last ones arrive.
    let bounded_for = start.elapsed();
    let polite = polite.join().expect("polite client");
    let allowed = (bounded_for.as_secs_f64() * 100.0 + 10.0).ceil() as u32;
    println!(
        "rate bound [{}]: flood of {sent} in {elapsed:.2?}, {echoed} echoed (bound {allowed}); \
         polite client {polite}/20",
        build.name()
    );
    assert!(sent > 1000, "only {sent} datagrams sent: no flood");
    assert!(
        echoed <= allowed,
        "{echoed} of {sent} flooded datagrams echoed, bound {allowed}"
    );
    assert!(
        echoed >= 100,
        "only {echoed} echoed: the bound is far too strict"
    );
    assert_eq!(polite, 20, "the second source lost echoes");
    drops_reported(
        server,
        build,
        "over --udp-peer-rate",
        u64::from(sent - echoed),
        "--udp-peer-rate",
    );
}
