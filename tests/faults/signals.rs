//! Termination: graceful shutdown on SIGINT and SIGTERM (native), and the
//! wasm build's lack of it (WASI 0.2 has no signals).

use super::*;
use std::os::unix::process::ExitStatusExt;

pub(crate) fn sigterm_drains_open_echo(build: Build) {
    // The client writes for about 3 s, so that a server which refuses only
    // when it exits is told apart from one that refuses at once, with room
    // for a busy machine.
    const CHUNKS: usize = 30;
    let mut server = start_server(build, &["--shutdown-timeout", "10"], None);
    let addr = server.addr;
    let data = random_bytes(CHUNKS * 1024, 6);
    let mut stream = connect(addr).expect("connect");
    let mut reader = stream.try_clone().expect("clone");
    let read = thread::spawn(move || {
        let mut got = Vec::new();
        let result = (&mut reader)
            .take((CHUNKS * 1024 + 1) as u64)
            .read_to_end(&mut got);
        (result, got)
    });
    let mut signalled = None;
    let mut refused = None;
    for (i, chunk) in data.chunks(1024).enumerate() {
        stream.write_all(chunk).expect("write before the end");
        if i == 2 {
            server.signal(libc::SIGTERM).expect("kill");
            let at = Instant::now();
            signalled = Some(at);
            refused = Some(thread::spawn(move || loop {
                match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    Err(err) if err.kind() == ErrorKind::ConnectionRefused => {
                        return Ok(at.elapsed())
                    }
                    Err(err) => return Err(format!("connect: {err}")),
                    Ok(_) if at.elapsed() > Duration::from_millis(2500) => {
                        return Err("new connections still accepted 2.5 s after SIGTERM".to_owned())
                    }
                    Ok(_) => thread::sleep(Duration::from_millis(10)),
                }
            }));
        }
        thread::sleep(Duration::from_millis(100));
    }
    stream.shutdown(Shutdown::Write).expect("half close");
    let (result, got) = read.join().unwrap();
    let refused = refused.unwrap().join().unwrap();
    let status = server.wait_exit(Duration::from_secs(12));
    let exited = signalled.unwrap().elapsed();
    let stderr = server.stderr();
    println!(
        "graceful shutdown [native]: refused new connections {refused:.2?} after SIGTERM; client \
         got {} of {} bytes; server exited ({status:?}) {exited:.2?} after the signal; stderr: {stderr:?}",
        got.len(),
        data.len()
    );
    result.expect("reading the echo");
    assert!(
        got == data,
        "echo cut short: {}",
        first_difference(&got, &data)
    );
    let refused = refused.expect("a connection after SIGTERM must be refused");
    assert!(
        refused < Duration::from_millis(1500),
        "refused only after {refused:?}"
    );
    let status = status.expect("the server did not exit within 12 s of SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    let summary = parse_summary(&stderr).unwrap();
    assert_eq!(summary.cut_off, 0, "{summary:?}");
    assert!(summary.bytes >= data.len() as u64, "{summary:?}");
    assert!(summary.served >= 1, "{summary:?}");
}

pub(crate) fn shutdown_timeout_cuts_off(build: Build) {
    let mut server = start_server(build, &["--shutdown-timeout", "1"], None);
    let mut stream = connect(server.addr).expect("connect");
    echo_small(&mut stream, &random_bytes(100, 7)).expect("echo");
    server.signal(libc::SIGTERM).expect("kill");
    let signalled = Instant::now();
    let status = server.wait_exit(Duration::from_secs(5));
    let exited = signalled.elapsed();
    let client_closed = closed_within(&mut stream, Duration::from_secs(1));
    let stderr = server.stderr();
    println!(
        "shutdown timeout [native]: exited ({status:?}) {exited:.2?} after SIGTERM; the client saw \
         its connection closed: {}; stderr: {stderr:?}",
        client_closed.is_some()
    );
    let status = status.expect("the server did not exit within 5 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status: {status}");
    assert!(
        exited >= Duration::from_millis(900) && exited <= Duration::from_secs(4),
        "exited {exited:?} after SIGTERM with --shutdown-timeout 1"
    );
    let summary = parse_summary(&stderr).unwrap();
    assert_eq!(
        summary,
        Summary {
            served: 1,
            bytes: 100,
            datagrams: 0,
            cut_off: 1
        }
    );
    assert!(
        client_closed.is_some(),
        "the cut-off client's connection stayed open"
    );
}

pub(crate) fn second_signal_exits_at_once(build: Build) {
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let mut server = start_server(build, &[], None);
        let mut stream = connect(server.addr).expect("connect");
        echo_small(&mut stream, b"hold").expect("echo");
        server.signal(signal).expect("kill");
        thread::sleep(Duration::from_millis(300));
        assert_eq!(
            server.wait_exit(Duration::ZERO),
            None,
            "the server exited on the first signal {signal} with a connection open (default \
             --shutdown-timeout 5); stderr: {}",
            server.stderr()
        );
        server.signal(signal).expect("kill");
        let second = Instant::now();
        let status = server.wait_exit(Duration::from_secs(4));
        let exited = second.elapsed();
        println!(
            "second signal [native]: signal {signal} twice: exited ({status:?}) {exited:.2?} after \
             the second"
        );
        let status = status.expect("no exit within 4 s of the second signal");
        assert_eq!(
            status.code(),
            Some(code),
            "exit status after a second signal {signal}: {status}"
        );
        // Well short of the 5 s drain a first signal would wait for.
        assert!(exited < Duration::from_secs(2), "took {exited:?}");
    }
}

pub(crate) fn signal_kills_server_without_drain(build: Build) {
    let mut server = start_server(build, &[], None);
    let mut stream = connect(server.addr).expect("connect");
    echo_small(&mut stream, b"hold").expect("echo");
    server.signal(libc::SIGTERM).expect("kill");
    let signalled = Instant::now();
    let status = server.wait_exit(Duration::from_secs(3));
    let exited = signalled.elapsed();
    let closed = closed_within(&mut stream, Duration::from_secs(1));
    println!(
        "signals [wasm]: SIGTERM ended wasmtime ({status:?}) after {exited:.2?}; connection closed: \
         {}; stderr: {:?}",
        closed.is_some(),
        server.stderr()
    );
    let status = status.expect("wasmtime still running 3 s after SIGTERM");
    assert!(
        !status.success() && status.signal() == Some(libc::SIGTERM),
        "wasmtime ended by SIGTERM's default action, not a graceful exit; got {status}"
    );
    assert!(
        !server.stderr().contains("echokit: stopped:"),
        "a graceful-shutdown summary from the wasm build: WASI has no signals, update this test"
    );
    assert!(closed.is_some(), "the open connection survived the server");
}

/// With two event loops, the `-v` shutdown summary counts each loop's
/// connections; 40 short connections are spread over both (each loop has
/// its own SO_REUSEPORT listener).
pub(crate) fn connections_per_event_loop(build: Build) {
    const CLIENTS: u64 = 40;
    let mut server = start_server(build, &["--workers", "2", "-v"], None);
    for i in 0..CLIENTS {
        let mut stream = connect(server.addr).expect("connect");
        echo_small(&mut stream, &[i as u8]).unwrap_or_else(|err| panic!("client {i}: {err}"));
    }
    // Every close seen before the signal: the counts are final.
    thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGTERM).expect("SIGTERM");
    server.wait_exit(Duration::from_secs(10));
    let stderr = server.stderr();
    let line = (stderr.lines())
        .find_map(|line| line.strip_prefix("echokit: connections per event loop: "))
        .unwrap_or_else(|| panic!("no per-loop counts in {stderr:?}"));
    let counts: Vec<u64> = line
        .split(", ")
        .map(|n| n.parse().expect("a count"))
        .collect();
    println!("connections per event loop [{}]: {counts:?}", build.name());
    assert_eq!(counts.len(), 2, "{line}");
    assert_eq!(counts.iter().sum::<u64>(), CLIENTS, "{line}");
    // A fair hash leaves fewer than 5 of 40 on one loop once in ten million.
    assert!(counts.iter().all(|&n| n >= 5), "uneven spread: {line}");
}
