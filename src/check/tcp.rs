//! The TCP scenarios, each one or more scripted connections
//! ([`super::conn`]) and the reading of what came back.

use super::conn::{self, Echoed, End, Preamble, Script, Shut};
use super::{byte, Probe, Verdict};
use crate::clock::Clock;
use crate::net::Network;
use crate::pattern;
use crate::proxy::{ClientHeader, Header};
use std::net::SocketAddr;
use std::time::Duration;

/// A multi-line UTF-8 text: scripts, emoji, combining marks, no final
/// newline.
const UNICODE: &str = include_str!("../../fixtures/unicode.txt");

/// How long the slow reader stops reading, and how much it waits for
/// first.
const STALL: Duration = Duration::from_secs(2);
const STALL_AFTER: u64 = 64 * 1024;
/// When the quick client starts, into the stall.
const QUICK_START: Duration = Duration::from_millis(300);
/// Between the pieces of a slow PROXY header.
const HEADER_GAP: Duration = Duration::from_millis(400);

/// The TCP questions.
#[derive(Clone, Copy, Debug)]
pub(super) enum Question {
    Hello,
    Empty,
    AllBytes,
    Unicode,
    Large,
    ManySmall,
    HalfCloseTail,
    Concurrent(usize),
    SlowReader,
    Reset,
    Ipv6,
    ProxyHeader,
    ProxyRefused,
    ProxySlowHeader,
}

/// `len` bytes of pattern `seed`.
fn generated(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    pattern::fill(seed, 0, &mut bytes);
    bytes
}

/// Asks `question` of the TCP echo at `addr`.
pub(super) fn ask<N: Network, C: Clock>(
    probe: &mut Probe<'_, N, C>,
    addr: SocketAddr,
    question: Question,
) -> Verdict {
    match question {
        Question::Hello => echo(probe, addr, Script::echo(b"hello\n".to_vec())),
        Question::Empty => echo(probe, addr, Script::echo(Vec::new())),
        Question::AllBytes => echo(probe, addr, Script::echo((0..=255).collect())),
        Question::Unicode => echo(probe, addr, Script::echo(UNICODE.as_bytes().to_vec())),
        Question::Large => echo(probe, addr, Script::echo(generated(8, 8 << 20))),
        Question::ManySmall => echo(
            probe,
            addr,
            Script {
                write_size: 7,
                ..Script::echo(generated(6, 70_000))
            },
        ),
        Question::HalfCloseTail => echo(
            probe,
            addr,
            Script {
                shut: Shut::AfterWrites,
                ..Script::echo(generated(5, 64 * 1024))
            },
        ),
        Question::Concurrent(n) => concurrent(probe, addr, n),
        Question::SlowReader => slow_reader(probe, addr),
        Question::Reset => reset(probe, addr),
        Question::Ipv6 => match addr {
            SocketAddr::V6(_) => echo(probe, addr, Script::echo(b"hello over IPv6\n".to_vec())),
            SocketAddr::V4(_) => Verdict::Skip(format!(
                "{addr} is an IPv4 address; give an IPv6 one, such as [::1]:PORT, to check IPv6"
            )),
        },
        Question::ProxyHeader | Question::ProxyRefused | Question::ProxySlowHeader => {
            let Some(header) = probe.options.proxy else {
                return Verdict::Skip(
                    "asked of PROXY protocol endpoints: give --proxy-protocol v1 or v2".into(),
                );
            };
            match question {
                Question::ProxyHeader => {
                    let line = b"hello after a PROXY header\n";
                    header_then_line(probe, addr, header, (1, Duration::ZERO), line)
                }
                Question::ProxyRefused => proxy_refused(probe, addr),
                _ => proxy_slow_header(probe, addr, header),
            }
        }
    }
}

/// A header of `header`'s version claiming a client from TEST-NET-1 (of
/// `addr`'s family, 2001:db8:: for IPv6) that connected to `addr`.
fn claimed(header: ClientHeader, addr: SocketAddr) -> Vec<u8> {
    let source = match addr {
        SocketAddr::V4(_) => SocketAddr::from(([192, 0, 2, 1], 40_000)),
        SocketAddr::V6(_) => SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 40_000)),
    };
    Header::tcp(header.version, source, addr).encode()
}

/// [`claimed`] in `pieces` writes `gap` apart, then `line`, which alone
/// must come back: in one write with the header when `pieces` is 1.
fn header_then_line<N: Network, C: Clock>(
    probe: &mut Probe<'_, N, C>,
    addr: SocketAddr,
    header: ClientHeader,
    (pieces, gap): (usize, Duration),
    line: &[u8],
) -> Verdict {
    let bytes = claimed(header, addr);
    let script = Script {
        preamble: Preamble::Bytes {
            piece: bytes.len().div_ceil(pieces),
            bytes,
            gap,
        },
        ..Script::echo(line.to_vec())
    };
    echo(probe, addr, script)
}

/// A header in three pieces, [`HEADER_GAP`] apart, then a line: it must
/// come back (the header's deadline is longer, 3 s by default).
fn proxy_slow_header<N: Network, C: Clock>(
    probe: &mut Probe<'_, N, C>,
    addr: SocketAddr,
    header: ClientHeader,
) -> Verdict {
    let line = b"after a slow PROXY header\n";
    match header_then_line(probe, addr, header, (3, HEADER_GAP), line) {
        Verdict::Fail(fault) => Verdict::Fail(format!(
            "a header sent in three pieces {}s apart: {fault} (the spec lets a receiver drop a \
             header that comes in pieces, though it recommends waiting for the rest)",
            HEADER_GAP.as_secs_f64()
        )),
        verdict => verdict,
    }
}

/// A connection without a header and one with a malformed header: each
/// must be closed with nothing echoed.
fn proxy_refused<N: Network, C: Clock>(probe: &mut Probe<'_, N, C>, addr: SocketAddr) -> Verdict {
    let cases = [
        ("without a PROXY header", Preamble::Nothing),
        (
            "with a malformed PROXY header",
            Preamble::Bytes {
                bytes: b"PROXY TCP4 not-an-address\r\n".to_vec(),
                piece: usize::MAX,
                gap: Duration::ZERO,
            },
        ),
    ];
    for (what, preamble) in cases {
        let script = Script {
            preamble,
            ..Script::echo(b"this line must not come back\n".to_vec())
        };
        let echoed = run(probe, addr, std::slice::from_ref(&script)).remove(0);
        probe.notes.push(format!(
            "{what}: {} bytes back, {:?} after {:.3}s",
            echoed.received,
            echoed.end,
            echoed.took.as_secs_f64()
        ));
        if echoed.received > 0 {
            return Verdict::Fail(format!(
                "a connection {what} got {} bytes back: the endpoint echoes without a valid header",
                echoed.received
            ));
        }
        if let End::TimedOut = echoed.end {
            return Verdict::Fail(format!(
                "a connection {what} was neither echoed nor closed within {}s",
                probe.options.timeout.as_secs_f64()
            ));
        }
    }
    Verdict::Pass
}

/// Runs `scripts` at once for at most the probe's timeout.
fn run<N: Network, C: Clock>(
    probe: &mut Probe<'_, N, C>,
    addr: SocketAddr,
    scripts: &[Script],
) -> Vec<Echoed> {
    let header = probe.options.proxy;
    conn::run(
        probe.net,
        probe.clock,
        addr,
        (scripts, header),
        probe.options.timeout,
    )
}

/// One connection's echo of `script`.
fn echo<N: Network, C: Clock>(
    probe: &mut Probe<'_, N, C>,
    addr: SocketAddr,
    script: Script,
) -> Verdict {
    let echoed = run(probe, addr, std::slice::from_ref(&script)).remove(0);
    probe.notes.push(format!(
        "{} bytes sent, {} back in {:.3}s",
        echoed.written,
        echoed.received,
        echoed.took.as_secs_f64()
    ));
    verdict(fault(&script, &echoed, probe.options.timeout))
}

fn verdict(fault: Option<String>) -> Verdict {
    fault.map_or(Verdict::Pass, Verdict::Fail)
}

/// How the echo of `script` went wrong, if it did.
fn fault(script: &Script, echoed: &Echoed, timeout: Duration) -> Option<String> {
    let len = script.payload.len() as u64;
    let received = echoed.received;
    if let Some(wrong) = echoed.wrong {
        return Some(match wrong.sent {
            Some(_) => format!(
                "{} at offset {} came back as 0x{:02x}",
                byte(wrong.sent),
                wrong.offset,
                wrong.got
            ),
            None => format!(
                "{} bytes came back, {} more than were sent (the first extra, at offset {}, is 0x{:02x})",
                received,
                received - len,
                wrong.offset,
                wrong.got
            ),
        });
    }
    if received < len {
        let short =
            format!("received {received} of {len} bytes, first difference at offset {received}");
        return Some(match &echoed.end {
            End::Closed if echoed.shut => format!(
                "the endpoint closed without sending the last {} bytes ({short})",
                len - received
            ),
            End::Closed => format!("{short}: the endpoint closed the connection"),
            End::Failed(err) => format!("{short}: {err}"),
            End::TimedOut if !echoed.connected => format!(
                "the connection was not accepted within {}s",
                timeout.as_secs_f64()
            ),
            End::TimedOut if received == 0 => {
                format!(
                    "no byte of {len} came back within {}s",
                    timeout.as_secs_f64()
                )
            }
            End::TimedOut => format!(
                "{short}; the rest did not come within {}s",
                timeout.as_secs_f64()
            ),
            // Resets end the scripts that ask for them, which read no verdict.
            End::Reset => short,
        });
    }
    match &echoed.end {
        End::Closed | End::Reset => None,
        End::Failed(err) => Some(format!(
            "the whole echo came back, then the connection failed ({err}) instead of closing in order"
        )),
        End::TimedOut => Some(format!(
            "the whole echo came back, but the endpoint did not close its side within {}s of the client's FIN",
            timeout.as_secs_f64()
        )),
    }
}

/// `n` connections, all open at once: each echoes its first half, waits
/// for the others to have theirs, then the rest.
fn concurrent<N: Network, C: Clock>(
    probe: &mut Probe<'_, N, C>,
    addr: SocketAddr,
    n: usize,
) -> Verdict {
    const LEN: usize = 16 * 1024;
    let scripts: Vec<Script> = (0..n)
        .map(|i| Script {
            hold: Some(LEN as u64 / 2),
            write_size: LEN / 2,
            ..Script::echo(generated(7000 + i as u64, LEN))
        })
        .collect();
    let echoed = run(probe, addr, &scripts);
    let timeout = probe.options.timeout;
    let failed = (scripts.iter().zip(&echoed))
        .filter(|(script, echoed)| fault(script, echoed, timeout).is_some())
        .count();
    let slowest = echoed.iter().map(|e| e.took).max().unwrap_or_default();
    probe.notes.push(format!(
        "{n} connections of {LEN} bytes, the slowest done in {:.3}s",
        slowest.as_secs_f64()
    ));
    // The connection that got least far says most: the others may only
    // have waited for it at half-way.
    let Some((i, worst)) =
        (echoed.iter().enumerate()).min_by_key(|(_, e)| (e.connected, e.received))
    else {
        return Verdict::Pass;
    };
    match fault(&scripts[i], worst, timeout) {
        None => Verdict::Pass,
        Some(fault) => {
            let unaccepted = echoed.iter().filter(|e| !e.connected).count();
            let waiting = match unaccepted {
                0 => String::new(),
                k => format!("; {k} connections were never accepted, and the others waited for them half-way"),
            };
            Verdict::Fail(format!(
                "{failed} of {n} connections failed; connection {i}, which got least far: {fault}{waiting}"
            ))
        }
    }
}

/// A client writes 4 MiB and stops reading for 2 s once 64 KiB came
/// back; 0.3 s into that another client echoes a line, which must finish
/// before the stall ends; then the slow client must get every byte.
fn slow_reader<N: Network, C: Clock>(probe: &mut Probe<'_, N, C>, addr: SocketAddr) -> Verdict {
    let slow = Script {
        pause: Some((STALL_AFTER, STALL)),
        ..Script::echo(generated(8, 4 << 20))
    };
    let quick = Script {
        start_after: QUICK_START,
        ..Script::echo(b"while another client stalls\n".to_vec())
    };
    let scripts = [slow, quick];
    let echoed = run(probe, addr, &scripts);
    let (slow_echo, quick_echo) = (&echoed[0], &echoed[1]);
    let quick_done = QUICK_START + quick_echo.took;
    probe.notes.push(format!(
        "the other client finished {:.3}s into the stall; the slow one in {:.3}s",
        quick_done.as_secs_f64(),
        slow_echo.took.as_secs_f64()
    ));
    let timeout = probe.options.timeout;
    if let Some(fault) = fault(&scripts[1], quick_echo, timeout) {
        return Verdict::Fail(format!("the other client: {fault}"));
    }
    if quick_done >= STALL {
        return Verdict::Fail(format!(
            "the other client's echo took until {:.3}s, after the slow client's {}s stall: \
             one client that does not read held up another",
            quick_done.as_secs_f64(),
            STALL.as_secs()
        ));
    }
    verdict(fault(&scripts[0], slow_echo, timeout).map(|fault| format!("the slow client: {fault}")))
}

/// Three clients reset their connection once 64 KiB of a 1 MiB echo came
/// back; then a line must echo as ever.
fn reset<N: Network, C: Clock>(probe: &mut Probe<'_, N, C>, addr: SocketAddr) -> Verdict {
    for round in 0..3 {
        let script = Script {
            reset_at: Some(64 * 1024),
            ..Script::echo(generated(90 + round, 1 << 20))
        };
        let echoed = run(probe, addr, std::slice::from_ref(&script)).remove(0);
        let reset = matches!(echoed.end, End::Reset);
        if !reset || echoed.wrong.is_some() {
            let fault = fault(&script, &echoed, probe.options.timeout)
                .unwrap_or_else(|| "it ended before the client could reset it".to_owned());
            return Verdict::Fail(format!("resetting client {round}: {fault}"));
        }
    }
    match echo(probe, addr, Script::echo(b"after three resets\n".to_vec())) {
        Verdict::Fail(fault) => Verdict::Fail(format!("after three resets mid-echo: {fault}")),
        verdict => verdict,
    }
}
