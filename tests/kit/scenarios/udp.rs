//! UDP scenarios that need more than one echo: bursts, two clients at
//! once, TCP and UDP on one port.

use super::*;
use crate::kit::table::param;
use std::net::UdpSocket;
use std::sync::Barrier;
use std::thread;

/// Longest a std UDP burst may run before the datagrams not yet sent are
/// reported as such.
const BURST_LIMIT: Duration = Duration::from_secs(30);

/// UDP burst: many datagrams, loss and order counted.
pub(super) fn udp_burst(case: &Case) -> Result<(), String> {
    let s = &case.scenario;
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    let size = param!(s, datagram_size);
    let mut server = case.start_server()?;
    let dir = tempdir()?;
    match case.column()? {
        Column::Std => {
            let window = param!(s, window);
            let datagrams: Vec<&[u8]> = payload.chunks(size.max(1)).collect();
            let report = with_server(
                &server,
                std_client::udp_burst(server.addr, &datagrams, window, BURST_LIMIT),
            )?;
            // libtest-mimic does not capture output: this line shows in the
            // run's output next to the test's result.
            println!(
                "{}::{}_server::std_client: {report}",
                s.name,
                case.server_build()?
            );
            if !report.clean() {
                return with_server(
                    &server,
                    Err(format!(
                        "the burst did not come back whole on loopback: {report}"
                    )),
                );
            }
        }
        _ => {
            with_server(
                &server,
                column_echo(case, server.addr, &payload, dir.path(), 0),
            )?;
        }
    }
    server.ensure_alive()
}

/// Two UDP clients, distinct payloads, interleaved: each gets only its own
/// echoes.
pub(super) fn udp_two_clients(case: &Case) -> Result<(), String> {
    let size = param!(case.scenario, datagram_size);
    let payloads: Vec<Arc<[u8]>> = (0..2)
        .map(|i| case.payload(i).map(|p| p.bytes.into()))
        .collect::<Result<_, _>>()?;
    let mut server = case.start_server()?;
    let addr = server.addr;
    let result = match case.column()?.build() {
        None => two_std_udp_clients(addr, &payloads[0], &payloads[1], size),
        Some(build) => {
            let dir = tempdir()?;
            let clients: Vec<TogetherClient<'_>> = payloads
                .iter()
                .enumerate()
                .map(|(i, payload)| TogetherClient {
                    args: &case.scenario.client_args,
                    payload: payload.clone(),
                    label: format!("client {i}"),
                })
                .collect();
            echokit_clients_together(case, build, addr, &clients, dir.path())
        }
    };
    with_server(&server, result)?;
    server.ensure_alive()
}

/// The std column of [`udp_two_clients`]: two sockets; datagram i of each
/// is sent (a's, then b's) before either echo is read, so the server always
/// holds both clients' datagrams at once. Each echo must be the client's own
/// datagram i; one that is not is named: the other client's datagram (the
/// echoes went to the wrong client), an earlier one of its own (late or
/// duplicated), or none (changed).
fn two_std_udp_clients(addr: SocketAddr, a: &[u8], b: &[u8], size: usize) -> Result<(), String> {
    let sockets = [
        std_client::udp_socket(addr).map_err(|err| format!("std UDP client 0: bind: {err}"))?,
        std_client::udp_socket(addr).map_err(|err| format!("std UDP client 1: bind: {err}"))?,
    ];
    let datagrams: [Vec<&[u8]>; 2] = [a.chunks(size).collect(), b.chunks(size).collect()];
    let rounds = datagrams[0].len().max(datagrams[1].len());
    for i in 0..rounds {
        for (c, socket) in sockets.iter().enumerate() {
            if let Some(d) = datagrams[c].get(i) {
                socket
                    .send_to(d, addr)
                    .map_err(|err| format!("std UDP client {c}: sending datagram {i}: {err}"))?;
            }
        }
        for (c, socket) in sockets.iter().enumerate() {
            let Some(&d) = datagrams[c].get(i) else {
                continue;
            };
            let what = format!("client {c}'s datagram {i} of {}", datagrams[c].len());
            let received = std_client::udp_receive(socket, addr, d.len(), &what);
            let echo = received.map_err(|err| {
                if stray(&sockets[1 - c], d) {
                    format!(
                        "{err}; client {}'s socket received it instead: echoes went to the \
                         wrong client",
                        1 - c
                    )
                } else {
                    err
                }
            })?;
            if echo == d {
                continue;
            }
            let find = |c: usize| datagrams[c].iter().position(|x| *x == echo.as_slice());
            return Err(match (find(1 - c), find(c)) {
                (Some(j), _) => format!(
                    "client {c} received client {}'s datagram {j} instead of the echo of its \
                     own datagram {i}: echoes went to the wrong client",
                    1 - c
                ),
                (None, Some(j)) => format!(
                    "client {c} received its own datagram {j} again instead of the echo of \
                     datagram {i} (late or duplicated)"
                ),
                (None, None) => format!("the echo of {what} differs: {}", check::compare(d, &echo)),
            });
        }
    }
    Ok(())
}

/// Whether `datagram` is waiting on `socket` (read without blocking).
fn stray(socket: &UdpSocket, datagram: &[u8]) -> bool {
    let mut buf = vec![0; 65_536];
    let found = socket.set_nonblocking(true).is_ok()
        && (0..64)
            .any(|_| matches!(socket.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == datagram));
    let _ = socket.set_nonblocking(false);
    found
}

/// One of the echokit clients [`echokit_clients_together`] runs.
struct TogetherClient<'a> {
    /// `client_args` or `udp_client_args` of the table.
    args: &'a [String],
    payload: Arc<[u8]>,
    label: String,
}

/// Runs echokit clients of `build` against `addr` at the same time (see
/// [`check::run_together`]), each with its payload on standard input, and
/// checks each against the table's `expect`.
fn echokit_clients_together(
    case: &Case,
    build: Build,
    addr: SocketAddr,
    clients: &[TogetherClient<'_>],
    dir: &Path,
) -> Result<(), String> {
    let mut invocations = Vec::new();
    let mut outputs = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let output = dir.join(format!("output-{i}.bin"));
        let places = Places {
            server: Some(addr),
            output: Some(output.clone()),
            datagram_size: case.scenario.params.datagram_size,
            ..Places::default()
        };
        let args = substitute(client.args, &places)?;
        let uses_output = client.args.iter().any(|a| a.contains("{output}"));
        outputs.push(uses_output.then_some(output));
        invocations.push(check::Invocation {
            target: case.client_target(build).with_dir(dir),
            args,
            stdin: client.payload.to_vec(),
        });
    }
    let outcomes = check::run_together(&invocations, check::PROCESS_TIMEOUT)?;
    let problems: Vec<String> = clients
        .iter()
        .zip(&outcomes)
        .zip(&outputs)
        .filter_map(|((client, out), output)| {
            check::check(case.expect(), out, &client.payload, output.as_deref())
                .err()
                .map(|err| format!("{}: {err}", client.label))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// TCP and UDP on one port: a TCP echo and a UDP echo at the same time.
pub(super) fn tcp_and_udp(case: &Case) -> Result<(), String> {
    let payload: Arc<[u8]> = case.payload(0)?.bytes.into();
    let mut server = case.start_server()?;
    let addr = server.addr;
    let result = match case.column()?.build() {
        None => {
            let size = datagram_size(case);
            let both = Barrier::new(2);
            thread::scope(|scope| {
                let tcp = scope.spawn(|| {
                    both.wait();
                    std_client::echo(addr, &payload)
                        .and_then(|echo| check::verify_echo(&payload, &echo))
                        .map_err(|err| format!("TCP: {err}"))
                });
                let udp = scope.spawn(|| {
                    both.wait();
                    std_client::udp_echo(addr, &payload, size)
                        .and_then(|echo| check::verify_echo(&payload, &echo))
                        .map_err(|err| format!("UDP: {err}"))
                });
                let tcp = tcp
                    .join()
                    .unwrap_or_else(|_| Err("TCP thread panicked".into()));
                let udp = udp
                    .join()
                    .unwrap_or_else(|_| Err("UDP thread panicked".into()));
                match (tcp, udp) {
                    (Ok(()), Ok(())) => Ok(()),
                    (a, b) => Err([a.err(), b.err()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join("\n")),
                }
            })
        }
        Some(build) => {
            let dir = tempdir()?;
            let clients = [
                TogetherClient {
                    args: &case.scenario.client_args,
                    payload: payload.clone(),
                    label: "TCP client".into(),
                },
                TogetherClient {
                    args: &case.scenario.udp_client_args,
                    payload: payload.clone(),
                    label: "UDP client".into(),
                },
            ];
            echokit_clients_together(case, build, addr, &clients, dir.path())
        }
    };
    with_server(&server, result)?;
    server.ensure_alive()
}
