//! Scripted TCP connections, many at once on one event loop: each writes
//! its payload in writes of a given size, checks every byte that comes
//! back, and half-closes, pauses, waits for its group or resets as its
//! script says.

use crate::clock::Clock;
use crate::net::{try_read, try_write, would_block, Close, Interest, Network, SocketId};
use crate::proxy::{ClientHeader, Outgoing};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Bytes read per call.
const READ_SIZE: usize = 64 * 1024;
/// Reads and writes one connection does per turn before the others.
const STEPS_PER_TURN: usize = 16;
/// Longest sleep between looks at paused and waiting connections.
const TICK: Duration = Duration::from_millis(10);

/// When a connection half-closes its sending side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shut {
    /// Once its whole echo came back: the endpoint's close then ends it.
    AfterEcho,
    /// As soon as everything is written, echo or not: the endpoint must
    /// send the rest after the FIN.
    AfterWrites,
}

/// What one connection does.
#[derive(Clone, Debug)]
pub(crate) struct Script {
    /// The bytes it sends, which must all come back.
    pub(crate) payload: Vec<u8>,
    /// The most it hands the socket per write (many small writes when
    /// small).
    pub(crate) write_size: usize,
    /// When it half-closes.
    pub(crate) shut: Shut,
    /// Stops reading once this many bytes came back, for this long.
    pub(crate) pause: Option<(u64, Duration)>,
    /// Writes this many bytes, then waits until they all came back and
    /// every other connection of the run is as far (or has ended) before
    /// it writes the rest: they were all open at once.
    pub(crate) hold: Option<u64>,
    /// Resets the connection once this many bytes came back.
    pub(crate) reset_at: Option<u64>,
    /// Connects this long after the run starts.
    pub(crate) start_after: Duration,
    /// What it sends before the payload, which does not come back.
    pub(crate) preamble: Preamble,
}

/// What a connection sends before its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Preamble {
    /// The run's PROXY protocol header, if it has one.
    RunsHeader,
    /// Nothing, whatever the run's header.
    Nothing,
    /// These bytes, `piece` at a time, `gap` apart.
    Bytes {
        bytes: Vec<u8>,
        piece: usize,
        gap: Duration,
    },
}

/// A preamble on its way out.
enum Before {
    Done,
    Header(Outgoing),
    Bytes {
        bytes: Vec<u8>,
        sent: usize,
        piece: usize,
        gap: Duration,
        next: Duration,
    },
}

impl Script {
    /// `payload` in one write, half-closed once its echo is back.
    pub(crate) fn echo(payload: Vec<u8>) -> Script {
        Script {
            write_size: payload.len().max(1),
            payload,
            shut: Shut::AfterEcho,
            pause: None,
            hold: None,
            reset_at: None,
            start_after: Duration::ZERO,
            preamble: Preamble::RunsHeader,
        }
    }
}

/// The first byte that came back wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wrong {
    /// Its offset in the stream.
    pub(crate) offset: u64,
    /// The byte sent there; `None` when the endpoint sent more than it got.
    pub(crate) sent: Option<u8>,
    /// The byte that came back.
    pub(crate) got: u8,
}

/// How a connection ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The endpoint closed its side (end of stream).
    Closed,
    /// The script reset the connection.
    Reset,
    /// The connection failed (refused, reset by the endpoint, ...).
    Failed(io::Error),
    /// The run's time ran out first.
    TimedOut,
}

/// What happened on one connection.
#[derive(Debug)]
pub(crate) struct Echoed {
    /// Bytes that came back.
    pub(crate) received: u64,
    /// Bytes written.
    pub(crate) written: u64,
    /// The first wrong byte, if any.
    pub(crate) wrong: Option<Wrong>,
    /// How it ended.
    pub(crate) end: End,
    /// Whether it had half-closed when it ended.
    pub(crate) shut: bool,
    /// Whether the connection was ever up (a write, read or half-close
    /// went through).
    pub(crate) connected: bool,
    /// From its connect to its end.
    pub(crate) took: Duration,
}

/// One connection's state.
struct Conn<'a> {
    script: &'a Script,
    id: Option<SocketId>,
    written: u64,
    received: u64,
    wrong: Option<Wrong>,
    shut: bool,
    connected: bool,
    started: Duration,
    paused_until: Option<Duration>,
    /// Past its hold: the whole run got that far.
    released: bool,
    ended: Option<(End, Duration)>,
    interest: Interest,
    before: Before,
}

impl Conn<'_> {
    /// How far it may write now.
    fn write_limit(&self) -> u64 {
        let len = self.script.payload.len() as u64;
        match self.script.hold {
            Some(at) if !self.released => at.min(len),
            _ => len,
        }
    }

    /// Whether it waits at its hold for the others.
    fn holding(&self) -> bool {
        (self.script.hold).is_some_and(|at| !self.released && self.received >= at)
    }

    /// Whether the script says to half-close now.
    fn wants_shut(&self) -> bool {
        let len = self.script.payload.len() as u64;
        !self.shut
            && self.written == len
            && match self.script.shut {
                Shut::AfterWrites => true,
                Shut::AfterEcho => self.received >= len,
            }
    }
}

/// How a connection's turn ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turn {
    /// Waiting for the socket, a timer or the group.
    Waiting,
    /// Used up its turn with work left.
    Yielded,
}

/// Runs `scripts` against `peer` at once until every connection ended or
/// `limit` passed, each sending `header` first where its script says;
/// what happened on each, in order.
pub(crate) fn run<N: Network>(
    net: &mut N,
    clock: &impl Clock,
    peer: SocketAddr,
    (scripts, header): (&[Script], Option<ClientHeader>),
    limit: Duration,
) -> Vec<Echoed> {
    let start = clock.now();
    let deadline = start + limit;
    let mut conns: Vec<Conn> = (scripts.iter())
        .map(|script| Conn {
            script,
            id: None,
            written: 0,
            received: 0,
            wrong: None,
            shut: false,
            connected: false,
            started: start + script.start_after,
            paused_until: None,
            released: false,
            ended: None,
            interest: Interest::NONE,
            before: match (&script.preamble, header) {
                (Preamble::RunsHeader, Some(header)) => Before::Header(Outgoing::new(header)),
                (Preamble::RunsHeader | Preamble::Nothing, _) => Before::Done,
                (Preamble::Bytes { bytes, piece, gap }, _) => Before::Bytes {
                    bytes: bytes.clone(),
                    sent: 0,
                    piece: (*piece).max(1),
                    gap: *gap,
                    next: start,
                },
            },
        })
        .collect();
    let mut buf = vec![0; READ_SIZE];
    // Which connection a socket is; then what to drive this turn.
    let mut owner: Vec<Option<usize>> = Vec::new();
    let mut ready = Vec::new();
    let mut due: Vec<usize> = (0..conns.len()).collect();
    loop {
        let now = clock.now();
        if now >= deadline || conns.iter().all(|c| c.ended.is_some()) {
            break;
        }
        due.extend(
            ready
                .drain(..)
                .filter_map(|id: SocketId| owner.get(id.0).copied().flatten()),
        );
        let release = conns.iter().all(|c| c.ended.is_some() || c.holding());
        for (index, conn) in conns.iter_mut().enumerate() {
            let released = release && conn.holding();
            let preamble_due = match conn.before {
                Before::Bytes { next, .. } => conn.id.is_some() && now >= next,
                _ => false,
            };
            let timer = conn.id.is_none() && now >= conn.started
                || conn.paused_until.is_some_and(|until| now >= until)
                || released
                || preamble_due;
            if released {
                conn.released = true;
            }
            if timer {
                due.push(index);
            }
        }
        due.sort_unstable();
        due.dedup();
        let mut again = Vec::new();
        for index in due.drain(..) {
            let conn = &mut conns[index];
            if conn.ended.is_some() || now < conn.started {
                continue;
            }
            if step(net, conn, &mut buf, now, peer) == Turn::Yielded {
                again.push(index);
            }
            if let Some(id) = conn.id {
                if owner.len() <= id.0 {
                    owner.resize(id.0 + 1, None);
                }
                owner[id.0] = Some(index);
            }
        }
        let wake = next_timer(&conns).map_or(TICK, |at| at.saturating_sub(clock.now()));
        let wait = match again.is_empty() {
            true => wake.min(TICK).min(deadline.saturating_sub(clock.now())),
            false => Duration::ZERO,
        };
        due = again;
        if let Err(err) = net.wait(Some(wait), &mut ready) {
            for conn in conns.iter_mut().filter(|c| c.ended.is_none()) {
                let err = io::Error::new(err.kind(), err.to_string());
                conn.ended = Some((End::Failed(err), now));
            }
        }
    }
    let now = clock.now();
    (conns.into_iter())
        .map(|mut conn| {
            if let Some(id) = conn.id.take() {
                net.close(id, Close::Orderly);
            }
            let (end, at) = conn.ended.take().unwrap_or((End::TimedOut, now));
            Echoed {
                received: conn.received,
                written: conn.written,
                wrong: conn.wrong,
                end,
                shut: conn.shut,
                connected: conn.connected,
                took: at.saturating_sub(conn.started),
            }
        })
        .collect()
}

/// The earliest time a connection waits for: its start or the end of its
/// pause.
fn next_timer(conns: &[Conn]) -> Option<Duration> {
    (conns.iter())
        .filter(|c| c.ended.is_none())
        .filter_map(|c| match (c.id, &c.before) {
            (None, _) => Some(c.started),
            (Some(_), Before::Bytes { next, .. }) => Some(*next),
            (Some(_), _) => c.paused_until,
        })
        .min()
}

/// Moves `conn` as far as its script and the socket allow; connects it
/// first if it is not yet.
fn step<N: Network>(
    net: &mut N,
    conn: &mut Conn,
    buf: &mut [u8],
    now: Duration,
    peer: SocketAddr,
) -> Turn {
    let id = match conn.id {
        Some(id) => id,
        None => match net.connect(peer, None) {
            Ok(id) => {
                conn.id = Some(id);
                id
            }
            Err(err) => {
                conn.ended = Some((End::Failed(err), now));
                return Turn::Waiting;
            }
        },
    };
    let turn = match pump(net, conn, id, buf, now, peer) {
        Ok(turn) => turn,
        Err(err) => {
            conn.ended = Some((End::Failed(err), now));
            Turn::Waiting
        }
    };
    if let Some((end, _)) = &conn.ended {
        let how = match end {
            End::Reset => Close::Reset,
            _ => Close::Orderly,
        };
        net.close(id, how);
        conn.id = None;
        return Turn::Waiting;
    }
    // A preamble between its pieces waits for its timer, not the socket.
    let gap = matches!(conn.before, Before::Bytes { next, .. } if now < next);
    let interest = Interest {
        read: conn.paused_until.is_none(),
        write: !gap
            && (conn.written < conn.write_limit()
                || conn.wants_shut()
                || matches!(conn.before, Before::Header(_))),
    };
    if interest != conn.interest {
        net.set_interest(id, interest);
        conn.interest = interest;
    }
    turn
}

/// Writes what it can of `conn`'s preamble; whether it is all written.
fn send_preamble<N: Network>(
    net: &mut N,
    conn: &mut Conn,
    id: SocketId,
    now: Duration,
    peer: SocketAddr,
) -> io::Result<bool> {
    let done = match &mut conn.before {
        Before::Done => return Ok(true),
        Before::Header(header) => header.send(net, id, peer)?,
        Before::Bytes {
            bytes,
            sent,
            piece,
            gap,
            next,
        } => {
            if now >= *next {
                let to = (*sent + *piece).min(bytes.len());
                let n = try_write(net, id, &bytes[*sent..to])?;
                *sent += n;
                if n > 0 {
                    *next = now + *gap;
                }
            }
            *sent == bytes.len()
        }
    };
    if done {
        conn.before = Before::Done;
        conn.connected = true;
    }
    Ok(done)
}

fn pump<N: Network>(
    net: &mut N,
    conn: &mut Conn,
    id: SocketId,
    buf: &mut [u8],
    now: Duration,
    peer: SocketAddr,
) -> io::Result<Turn> {
    let script = conn.script;
    for _ in 0..STEPS_PER_TURN {
        let mut progressed = false;
        let limit = conn.write_limit() as usize;
        let ready = send_preamble(net, conn, id, now, peer)?;
        if ready && (conn.written as usize) < limit {
            let from = conn.written as usize;
            let to = (from + script.write_size).min(limit);
            let n = try_write(net, id, &script.payload[from..to])?;
            conn.written += n as u64;
            progressed |= n > 0;
            conn.connected |= n > 0;
        }
        if ready && conn.wants_shut() {
            match net.shutdown_write(id) {
                Ok(()) => {
                    conn.shut = true;
                    conn.connected = true;
                    progressed = true;
                }
                Err(err) if would_block(&err) => {}
                Err(err) => return Err(err),
            }
        }
        match conn.paused_until {
            Some(until) if now < until => return Ok(Turn::Waiting),
            Some(_) => conn.paused_until = None,
            None => {}
        }
        if let Some(n) = try_read(net, id, buf)? {
            conn.connected = true;
            if n == 0 {
                conn.ended = Some((End::Closed, now));
                return Ok(Turn::Waiting);
            }
            let before = conn.received;
            record(conn, &buf[..n]);
            progressed = true;
            let crossed = |at: u64| before < at && conn.received >= at;
            if script.reset_at.is_some_and(crossed) {
                conn.ended = Some((End::Reset, now));
                return Ok(Turn::Waiting);
            }
            if let Some((_, pause)) = script.pause.filter(|&(at, _)| crossed(at)) {
                conn.paused_until = Some(now + pause);
            }
        }
        if !progressed {
            return Ok(Turn::Waiting);
        }
    }
    Ok(Turn::Yielded)
}

/// Counts `echo` in and remembers its first wrong byte.
fn record(conn: &mut Conn, echo: &[u8]) {
    let payload = &conn.script.payload;
    if conn.wrong.is_none() {
        let offset = conn.received as usize;
        let expected = payload.get(offset..).unwrap_or_default();
        let same = crate::pattern::matching_prefix(expected, echo);
        if same < echo.len() {
            conn.wrong = Some(Wrong {
                offset: (offset + same) as u64,
                sent: expected.get(same).copied(),
                got: echo[same],
            });
        }
    }
    conn.received += echo.len() as u64;
}

/// Whether a TCP connection to `peer` can be opened within `limit`: the
/// error that says why not, if it cannot.
pub(crate) fn reach<N: Network>(
    net: &mut N,
    clock: &impl Clock,
    peer: SocketAddr,
    limit: Duration,
) -> Result<(), io::Error> {
    let id = net.connect(peer, None)?;
    net.set_interest(id, Interest::BOTH);
    let deadline = clock.now() + limit;
    let mut ready = Vec::new();
    // A half-close goes through once the handshake is done, and fails as
    // the connect did when it did.
    let result = loop {
        match net.shutdown_write(id) {
            Ok(()) => break Ok(()),
            Err(err) if would_block(&err) => {}
            Err(err) => break Err(err),
        }
        let left = deadline.saturating_sub(clock.now());
        if left.is_zero() {
            break Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {}s", limit.as_secs_f64()),
            ));
        }
        ready.clear();
        if let Err(err) = net.wait(Some(left.min(TICK)), &mut ready) {
            break Err(err);
        }
    };
    net.close(id, Close::Orderly);
    result
}
