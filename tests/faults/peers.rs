//! Misbehaving peers: slowloris and idle clients, a peer that floods and
//! never reads, and one connection too many.

use super::*;

/// With `--idle-timeout 1`: a silent connection and one trickling a byte
/// every 1.5 s are both closed within about 3 s; one moving a byte every
/// 200 ms stays open.
pub(crate) fn slowloris_and_idle(build: Build) {
    let server = start_server(build, &["--idle-timeout", "1"], None);
    let addr = server.addr;
    let idle = thread::spawn(move || -> Result<Option<Duration>, String> {
        let mut stream = connect(addr).map_err(|err| format!("connect: {err}"))?;
        Ok(closed_within(&mut stream, Duration::from_secs(5)))
    });
    let trickle = thread::spawn(move || -> Result<(Option<Duration>, usize), String> {
        let mut stream = connect(addr).map_err(|err| format!("connect: {err}"))?;
        let start = Instant::now();
        let mut sent = 0;
        for _ in 0..4 {
            if stream.write_all(b"t").is_err() {
                return Ok((Some(start.elapsed()), sent));
            }
            sent += 1;
            // Waiting for the next byte's turn: the echo arrives, then the
            // connection either stays silent for 1.5 s or is closed.
            let mut echo = [0u8; 1];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            match stream.read(&mut echo) {
                Ok(1) => {}
                _ => return Ok((Some(start.elapsed()), sent)),
            }
            let next = Duration::from_millis(1500) * sent as u32;
            let left = next.saturating_sub(start.elapsed());
            if closed_within(&mut stream, left).is_some() {
                return Ok((Some(start.elapsed()), sent));
            }
        }
        Ok((None, sent))
    });
    let active = thread::spawn(move || -> Result<usize, String> {
        let mut stream = connect(addr).map_err(|err| format!("connect: {err}"))?;
        let start = Instant::now();
        let mut echoed = 0;
        for i in 0..40u8 {
            if start.elapsed() >= Duration::from_millis(3200) {
                break;
            }
            echo_small(&mut stream, &[i])
                .map_err(|err| format!("after {:.2?}: {err}", start.elapsed()))?;
            echoed += 1;
            thread::sleep(Duration::from_millis(200));
        }
        Ok(echoed)
    });
    let idle = idle.join().unwrap();
    let trickle = trickle.join().unwrap();
    let active = active.join().unwrap();
    println!(
        "slowloris/idle [{}] with --idle-timeout 1: idle connection closed after {idle:.2?}; \
         trickling connection closed after {trickle:.2?} (closed at, bytes sent); active \
         connection echoed {active:?} bytes over 3 s",
        build.name()
    );
    let idle = idle.expect("idle connection");
    let idle = idle.expect("the idle connection was not closed within 5 s");
    assert!(
        idle <= Duration::from_secs(3) && idle >= Duration::from_millis(900),
        "the idle connection was closed after {idle:?}, expected 1 to 3 s"
    );
    let (trickle, _) = trickle.expect("trickling connection");
    let trickle = trickle.expect("the trickling connection was not closed");
    assert!(
        trickle <= Duration::from_secs(3),
        "the trickling connection was closed after {trickle:?}, expected within 3 s"
    );
    let active = active.expect("the active connection was closed or broken");
    assert!(
        active >= 12,
        "the active connection echoed only {active} bytes"
    );
}

/// With `--idle-timeout 2`: a peer that floods the server and never reads
/// its echo fills both socket buffers; the server closes it as idle. That
/// close must not wait for the peer (wasmtime 48 makes dropping an output
/// stream wait for its pending write): another client is served at once,
/// also with 150 more connections open (the wasm build then polls in
/// chunks, the lingering stream among them). The wasm build holds the
/// closed socket until the peer goes away, and counts it against
/// `--max-connections` (152 here) until then.
pub(crate) fn non_reading_peer(build: Build) {
    let limit = ["--max-connections", "152"];
    let server = start_server(
        build,
        &[&["--idle-timeout", "2"][..], &limit].concat(),
        None,
    );
    let addr = server.addr;
    let mut flood = connect(addr).expect("connect");
    flood.set_nonblocking(true).expect("non-blocking");
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    // Until the server's echo has backed up into this socket and the
    // server has stopped reading: no byte taken for 300 ms.
    let mut last_taken = Instant::now();
    while last_taken.elapsed() < Duration::from_millis(300) && sent < (256 << 20) {
        match flood.write(&chunk) {
            Ok(n) => {
                sent += n;
                last_taken = Instant::now();
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(err) => panic!("flood write: {err}"),
        }
    }
    // The idle close comes at most 2.5 s (timeout plus sweep) after the
    // last byte moved.
    thread::sleep(Duration::from_millis(2800));
    let took = send_within(addr, Duration::from_secs(3));
    // An echoed connection held open, or None when the server refused it.
    let admit = || -> Option<TcpStream> {
        let mut stream = connect(addr).ok()?;
        echo_small(&mut stream, b"a").ok().map(|()| stream)
    };
    let held: Vec<TcpStream> = (0..150).map(|_| admit().expect("one of 150")).collect();
    let extra = [admit(), admit()];
    let more = extra.each_ref().map(Option::is_some);
    drop(flood);
    thread::sleep(Duration::from_millis(300));
    let after_peer_left = admit().is_some();
    println!(
        "non-reading peer [{}]: sent {sent} bytes, never read; after its idle close another \
         client's echo took {took:?}; with 150 more open, the next two admitted: {more:?}; \
         once the peer left: {after_peer_left}",
        build.name()
    );
    let took = took.expect("the server stalled after closing a peer that does not read");
    assert!(took < Duration::from_secs(2), "the next echo took {took:?}");
    let lingering = build == Build::Wasm;
    assert_eq!(
        more,
        [true, !lingering],
        "150 + 2 connections against a limit of 152, the closed one lingering: {lingering}"
    );
    assert_eq!(
        after_peer_left, lingering,
        "a slot freed by the peer leaving"
    );
    drop(held);
}

/// `--max-connections 5`: the sixth connection is closed at once, the
/// first five keep echoing, and a slot freed is a slot for the next.
pub(crate) fn max_connections(build: Build) {
    let help = Target::new(build)
        .must()
        .args(["serve", "--help"])
        .stdin(Stdio::null())
        .output()
        .expect("serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    // The option's entry: its line, and the lines of a longer help below
    // it up to the next option.
    let mut lines = help
        .lines()
        .skip_while(|line| !line.contains("--max-connections"));
    let first = lines.next().unwrap_or_default();
    let entry: String = std::iter::once(first)
        .chain(lines.take_while(|line| !line.trim_start().starts_with('-')))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        entry.contains("[default: 10000]"),
        "`serve --help` does not give 10000 as the default of --max-connections: {entry:?}\n{help}"
    );
    let line = entry.trim().to_owned();

    let mut server = start_server(build, &["--max-connections", "5"], None);
    let addr = server.addr;
    let mut first: Vec<TcpStream> = (0..5)
        .map(|i| {
            let mut stream = connect(addr).expect("connect");
            echo_small(&mut stream, &[i]).expect("echo on one of the first 5");
            stream
        })
        .collect();
    let mut sixth = connect(addr).expect("connect the 6th");
    let _ = sixth.write_all(b"6");
    let sixth_closed = closed_within(&mut sixth, Duration::from_secs(2));
    for (i, stream) in first.iter_mut().enumerate() {
        echo_small(stream, &random_bytes(4096, i as u64))
            .unwrap_or_else(|err| panic!("connection {i} of the first 5 after the 6th: {err}"));
    }
    // A slot freed is a slot for the next connection.
    drop(first.pop());
    let start = Instant::now();
    let mut admitted = None;
    for _ in 0..50 {
        let mut next = connect(addr).expect("connect after one closed");
        if echo_small(&mut next, b"n").is_ok() {
            admitted = Some(start.elapsed());
            break;
        }
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    alive(&mut server);
    println!(
        "max connections [{}]: help says {:?}; 6th connection closed after {sixth_closed:.2?}; \
         first 5 kept echoing; a new connection admitted {admitted:.2?} after one of the 5 closed",
        build.name(),
        line.trim()
    );
    let sixth_closed = sixth_closed.expect("the 6th connection was not closed within 2 s");
    assert!(
        sixth_closed < Duration::from_millis(500),
        "the 6th connection closed only after {sixth_closed:?}"
    );
    admitted.expect("no connection admitted after one of the 5 closed");
}
