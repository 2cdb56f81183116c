//! The UDP scenarios: datagrams sent from one or two sockets, each echo
//! matched to the datagram it repeats by its content (every datagram sent
//! differs), so that loss, change, duplication, reordering and echoes to
//! the wrong client are each told apart. (B-tree maps, not hash maps: a
//! `HashMap`'s random seed would make the component import
//! `wasi:random/insecure-seed`.)

use super::{Probe, Verdict};
use crate::clock::Clock;
use crate::net::{any_local, would_block, Bind, Close, Interest, Network, SocketId};
use crate::pattern;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// How long a datagram's echo may take before it counts as lost.
const ECHO_WAIT: Duration = Duration::from_secs(1);
/// How long a probe of the largest datagram waits for its echo.
const PROBE_WAIT: Duration = Duration::from_millis(500);
/// Room for the largest datagram, and one byte more to see a longer one.
const BUFFER: usize = 65_536;

/// The UDP questions.
#[derive(Clone, Copy, Debug)]
pub(super) enum Question {
    Hello,
    AllBytes,
    Largest,
    Burst,
    TwoClients,
    Source,
}

/// What came back of one client's datagrams.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    /// Echoed once and unchanged.
    back: usize,
    lost: usize,
    changed: usize,
    duplicated: usize,
    /// Echoes that came after the echo of a later datagram.
    reordered: usize,
    /// Echoes of another client's datagrams.
    misdelivered: usize,
    /// Where the first echo came from that was not the endpoint's address.
    foreign: Option<SocketAddr>,
}

impl Tally {
    /// Whether every datagram came back once, unchanged, to this client.
    fn clean(&self) -> bool {
        self.back == self.sent && self.changed + self.duplicated + self.misdelivered == 0
    }
}

/// One client: its socket and datagrams.
struct Client<'a> {
    socket: SocketId,
    datagrams: &'a [Vec<u8>],
    next: usize,
    /// When each datagram in flight was sent, by index.
    in_flight: BTreeMap<usize, Duration>,
    echoed: Vec<bool>,
    highest: Option<usize>,
    tally: Tally,
}

/// `count` datagrams of `len` bytes, each its own pattern.
fn datagrams(seed: u64, count: usize, len: usize) -> Vec<Vec<u8>> {
    (0..count as u64)
        .map(|i| {
            let mut datagram = vec![0; len];
            pattern::fill(pattern::seed(seed, i), 0, &mut datagram);
            datagram
        })
        .collect()
}

/// Asks `question` of the UDP echo at `addr`.
pub(super) fn ask<N: Network, C: Clock>(
    probe: &mut Probe<'_, N, C>,
    addr: SocketAddr,
    question: Question,
) -> Verdict {
    let outcome = match question {
        Question::Hello => single(probe, addr, b"hello\n".to_vec()),
        Question::AllBytes => single(probe, addr, (0..=255).collect()),
        Question::Largest => largest(probe, addr),
        Question::Burst => burst(probe, addr),
        Question::TwoClients => two_clients(probe, addr),
        Question::Source => source(probe, addr),
    };
    outcome.unwrap_or_else(|err| Verdict::Fail(format!("the client's socket failed: {err}")))
}

/// Sends each client's datagrams, at most `window` in flight per client,
/// interleaving the clients; every datagram gets `wait` for its echo.
fn exchange<N: Network, C: Clock>(
    probe: &mut Probe<'_, N, C>,
    addr: SocketAddr,
    payloads: &[Vec<Vec<u8>>],
    window: usize,
    wait: Duration,
) -> io::Result<Vec<Tally>> {
    let net = &mut *probe.net;
    let mut clients: Vec<Client> = Vec::new();
    let mut owner: BTreeMap<&[u8], (usize, usize)> = BTreeMap::new();
    for (c, datagrams) in payloads.iter().enumerate() {
        let socket = net.bind_udp(any_local(addr), Bind::default())?;
        net.set_interest(socket, Interest::READ);
        for (i, datagram) in datagrams.iter().enumerate() {
            owner.insert(datagram, (c, i));
        }
        clients.push(Client {
            socket,
            datagrams,
            next: 0,
            in_flight: BTreeMap::new(),
            echoed: vec![false; datagrams.len()],
            highest: None,
            tally: Tally::default(),
        });
    }
    let result = run_clients(probe, &mut clients, &owner, addr, window, wait);
    for client in &mut clients {
        client.tally.lost += client.in_flight.len() + (client.datagrams.len() - client.next);
        probe.net.close(client.socket, Close::Orderly);
    }
    result.map(|()| clients.into_iter().map(|c| c.tally).collect())
}

/// Sends and receives until every datagram came back or counts as lost,
/// or the probe's time is up.
fn run_clients<N: Network, C: Clock>(
    probe: &mut Probe<'_, N, C>,
    clients: &mut [Client],
    owner: &BTreeMap<&[u8], (usize, usize)>,
    addr: SocketAddr,
    window: usize,
    wait: Duration,
) -> io::Result<()> {
    let deadline = probe.clock.now() + probe.options.timeout;
    let mut buf = vec![0; BUFFER];
    let mut ready = Vec::new();
    loop {
        let now = probe.clock.now();
        for client in clients.iter_mut() {
            expire(client, now, wait);
            send_more(probe.net, client, addr, window, now)?;
        }
        for c in 0..clients.len() {
            receive(probe.net, clients, c, owner, addr, &mut buf)?;
        }
        let done = (clients.iter()).all(|c| c.next == c.datagrams.len() && c.in_flight.is_empty());
        if done || now >= deadline {
            return Ok(());
        }
        ready.clear();
        probe.net.wait(Some(Duration::from_millis(5)), &mut ready)?;
    }
}

/// Counts the datagrams whose echo is overdue as lost, freeing their slot.
fn expire(client: &mut Client, now: Duration, wait: Duration) {
    let overdue: Vec<usize> = (client.in_flight.iter())
        .filter(|(_, &sent)| now.saturating_sub(sent) >= wait)
        .map(|(&i, _)| i)
        .collect();
    for i in overdue {
        client.in_flight.remove(&i);
        client.tally.lost += 1;
    }
}

/// Sends the client's next datagrams while its window has room.
fn send_more<N: Network>(
    net: &mut N,
    client: &mut Client,
    addr: SocketAddr,
    window: usize,
    now: Duration,
) -> io::Result<()> {
    while client.next < client.datagrams.len() && client.in_flight.len() < window {
        match net.send_to(client.socket, &client.datagrams[client.next], addr) {
            Ok(()) => {}
            Err(err) if would_block(&err) => return Ok(()),
            Err(err) => return Err(err),
        }
        client.in_flight.insert(client.next, now);
        client.tally.sent += 1;
        client.next += 1;
    }
    Ok(())
}

/// Takes every echo waiting on client `c`'s socket and tells what it is.
fn receive<N: Network>(
    net: &mut N,
    clients: &mut [Client],
    c: usize,
    owner: &BTreeMap<&[u8], (usize, usize)>,
    addr: SocketAddr,
    buf: &mut [u8],
) -> io::Result<()> {
    loop {
        let (len, from) = match net.recv_from(clients[c].socket, buf) {
            Ok(received) => received,
            Err(err) if would_block(&err) => return Ok(()),
            // An ICMP error from an earlier datagram: the loss shows anyway.
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(err) => return Err(err),
        };
        let client = &mut clients[c];
        if from != addr && client.tally.foreign.is_none() {
            client.tally.foreign = Some(from);
        }
        let Some(&(belongs, i)) = owner.get(&buf[..len]) else {
            client.tally.changed += 1;
            continue;
        };
        if belongs != c {
            client.tally.misdelivered += 1;
            continue;
        }
        if client.echoed[i] {
            client.tally.duplicated += 1;
            continue;
        }
        client.echoed[i] = true;
        client.in_flight.remove(&i);
        client.tally.back += 1;
        if client.highest.is_some_and(|highest| i < highest) {
            client.tally.reordered += 1;
        }
        client.highest = client.highest.max(Some(i));
    }
}

/// Why one client's tally is not clean, in words.
fn fault(tally: &Tally) -> String {
    let mut parts = Vec::new();
    if tally.back < tally.sent {
        parts.push(format!(
            "{} of {} datagrams came back",
            tally.back, tally.sent
        ));
    }
    for (count, what) in [
        (tally.changed, "changed (no datagram sent was like it)"),
        (tally.duplicated, "duplicated"),
        (tally.misdelivered, "meant for the other client"),
    ] {
        if count > 0 {
            parts.push(format!("{count} echoes {what}"));
        }
    }
    parts.join(", ")
}

/// One datagram, sent up to three times.
fn single<N: Network, C: Clock>(
    probe: &mut Probe<'_, N, C>,
    addr: SocketAddr,
    datagram: Vec<u8>,
) -> io::Result<Verdict> {
    let len = datagram.len();
    let payloads = [vec![datagram]];
    let mut last = Tally::default();
    for attempt in 1..=3 {
        last = exchange(probe, addr, &payloads, 1, ECHO_WAIT)?.remove(0);
        if last.clean() {
            probe
                .notes
                .push(format!("{len} bytes back on attempt {attempt}"));
            return Ok(Verdict::Pass);
        }
        if last.changed > 0 {
            break;
        }
    }
    Ok(Verdict::Fail(match last.changed {
        0 => format!(
            "no echo of the {len}-byte datagram within {}s, three times",
            ECHO_WAIT.as_secs()
        ),
        _ => format!("the {len}-byte datagram came back changed"),
    }))
}

/// The largest UDP payload of the address's family; when it does not come
/// back, the largest that does, found by bisection.
fn largest<N: Network, C: Clock>(
    probe: &mut Probe<'_, N, C>,
    addr: SocketAddr,
) -> io::Result<Verdict> {
    let max = match addr {
        SocketAddr::V4(_) => 65_507,
        SocketAddr::V6(_) => 65_527,
    };
    let comes_back = |probe: &mut Probe<'_, N, C>, len: usize| -> io::Result<bool> {
        let payloads = [datagrams(65_507, 1, len)];
        Ok(exchange(probe, addr, &payloads, 1, PROBE_WAIT)?[0].clean())
    };
    if comes_back(probe, max)? || comes_back(probe, max)? {
        probe.notes.push(format!("{max} bytes came back"));
        return Ok(Verdict::Pass);
    }
    let (mut good, mut bad) = (0, max);
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        match comes_back(probe, mid)? {
            true => good = mid,
            false => bad = mid,
        }
    }
    Ok(Verdict::Fail(match good {
        0 => format!("no datagram came back, of any size up to {max} bytes"),
        _ => format!("the largest datagram that came back has {good} bytes; {max} did not"),
    }))
}

/// 1,000 datagrams of 100 bytes, 64 in flight at most.
fn burst<N: Network, C: Clock>(
    probe: &mut Probe<'_, N, C>,
    addr: SocketAddr,
) -> io::Result<Verdict> {
    let tally = exchange(probe, addr, &[datagrams(1000, 1000, 100)], 64, ECHO_WAIT)?.remove(0);
    probe.notes.push(format!(
        "{} back, {} out of order",
        tally.back, tally.reordered
    ));
    Ok(match tally.clean() {
        true => Verdict::Pass,
        false => Verdict::Fail(fault(&tally)),
    })
}

/// Two clients, 200 datagrams each, interleaved.
fn two_clients<N: Network, C: Clock>(
    probe: &mut Probe<'_, N, C>,
    addr: SocketAddr,
) -> io::Result<Verdict> {
    let payloads = [datagrams(200, 200, 100), datagrams(201, 200, 100)];
    let tallies = exchange(probe, addr, &payloads, 16, ECHO_WAIT)?;
    for (c, tally) in tallies.iter().enumerate() {
        if !tally.clean() {
            return Ok(Verdict::Fail(format!("client {c}: {}", fault(tally))));
        }
    }
    Ok(Verdict::Pass)
}

/// One datagram, whose echo must come from the address it went to.
fn source<N: Network, C: Clock>(
    probe: &mut Probe<'_, N, C>,
    addr: SocketAddr,
) -> io::Result<Verdict> {
    let tally = exchange(probe, addr, &[datagrams(7, 1, 64)], 1, ECHO_WAIT)?.remove(0);
    Ok(match (tally.foreign, tally.back) {
        (Some(from), _) => Verdict::Fail(format!(
            "the echo came from {from}, not from {addr} where the datagram was sent"
        )),
        (None, 1) => Verdict::Pass,
        (None, _) => Verdict::Fail(format!("no echo within {}s", ECHO_WAIT.as_secs())),
    })
}

/// Whether the UDP echo at `addr` answers a datagram within `limit` (from
/// any address).
pub(super) fn reach<N: Network, C: Clock>(
    probe: &mut Probe<'_, N, C>,
    addr: SocketAddr,
    limit: Duration,
) -> io::Result<bool> {
    let payloads = [vec![b"is anybody there?\n".to_vec()]];
    Ok(exchange(probe, addr, &payloads, 1, limit)?[0].back == 1)
}
