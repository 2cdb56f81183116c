//! Load faults: descriptor exhaustion, connection storms, resets before
//! accept and mid-echo, and the CPU that idle connections cost.

use super::*;

/// Counts of the storm's connects, summed over its threads.
#[derive(Default)]
struct StormTally {
    opened: usize,
    timed_out: usize,
    other: usize,
    not_tried: usize,
    first_error: Option<String>,
}

/// The server runs with 256 descriptors and gets 1000 connections at once.
/// The ones it cannot accept wait in the kernel's accept queue (backlog
/// 1024); accept fails with EMFILE, and the server must pause accepting
/// rather than spin, stay up, and serve again once the client lets go.
pub(crate) fn fd_exhaustion(build: Build) {
    const CONNECTIONS: usize = 1000;
    let _heavy = heavy();
    let mut server = start_server(build, &[], Some(256));
    let addr = server.addr;
    send_within(addr, Duration::from_secs(5)).expect("echo before the flood");

    let mut streams = Vec::with_capacity(CONNECTIONS);
    let mut connect_failures = 0;
    let flood = Instant::now();
    for _ in 0..CONNECTIONS {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(stream) => streams.push(stream),
            Err(_) => connect_failures += 1,
        }
        if flood.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    let flood_time = flood.elapsed();
    // Let the server fill its table and hit EMFILE, then measure its CPU
    // while the rest of the connections wait.
    thread::sleep(Duration::from_millis(300));
    alive(&mut server);
    let cpu_before = cpu(&server);
    let window = Instant::now();
    thread::sleep(Duration::from_secs(1));
    let cpu = cpu(&server).saturating_sub(cpu_before);
    let window = window.elapsed();
    alive(&mut server);

    // Which connections does the server serve? One byte each; the accepted
    // ones echo it, the ones still in the accept queue do not.
    for stream in &mut streams {
        let _ = stream.write_all(b"x");
    }
    thread::sleep(Duration::from_millis(500));
    let mut served = 0;
    let mut closed = 0;
    for stream in &mut streams {
        stream.set_nonblocking(true).expect("nonblocking");
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(1) => served += 1,
            Ok(_) => closed += 1,
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(_) => closed += 1,
        }
    }
    let pending = streams.len() - served - closed;
    alive(&mut server);
    drop(streams);
    let recovery = send_within(addr, Duration::from_secs(5));
    alive(&mut server);

    println!(
        "fd exhaustion [{}]: {CONNECTIONS} connects in {flood_time:.2?} ({connect_failures} failed); \
         served {served}, pending in the accept queue {pending}, closed by the server {closed}; \
         server CPU while saturated {:.3} s over {window:.2?}; echo after release: {recovery:.2?}",
        build.name(),
        cpu.as_secs_f64(),
    );
    let stderr = server.stderr();
    println!(
        "fd exhaustion [{}]: server stderr has {} lines, first: {:?}",
        build.name(),
        stderr.lines().count(),
        stderr.lines().next().unwrap_or("")
    );
    assert!(
        served > 0,
        "no connection was served during the flood; {}",
        server.what
    );
    assert!(
        served + closed < CONNECTIONS && served <= 256,
        "the server served {served} and closed {closed} of {CONNECTIONS} connections with 256 \
         descriptors: the descriptor limit did not bite; {}",
        server.what
    );
    assert!(
        cpu < Duration::from_millis(500),
        "the server used {cpu:?} of CPU in {window:?} while its descriptor table was full: \
         a busy accept loop"
    );
    recovery.expect("echo after the flood's connections closed");
}

/// 5000 connections opened and closed as fast as four threads can:
/// afterwards the server echoes and its resident memory is back near where
/// it started. (Connections reset before they are accepted are the subject
/// of [`reset_before_accept`].)
pub(crate) fn connection_storm(build: Build) {
    const CONNECTIONS: usize = 5000;
    const THREADS: usize = 4;
    let _heavy = heavy();
    let mut server = start_server(build, &[], None);
    let addr = server.addr;
    send_within(addr, Duration::from_secs(5)).expect("echo before the storm");
    thread::sleep(Duration::from_millis(200));
    let before = rss_kib(&server);

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (stop, peak, pid) = (Arc::clone(&stop), Arc::clone(&peak), server.pid());
        thread::spawn(move || {
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                peak.fetch_max(procfs::rss_kib(pid).unwrap_or(0), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let storm = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            thread::spawn(move || {
                let mut tally = StormTally::default();
                let start = Instant::now();
                for i in 0..CONNECTIONS / THREADS {
                    if start.elapsed() > Duration::from_secs(10) {
                        tally.not_tried += CONNECTIONS / THREADS - i;
                        break;
                    }
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                        Ok(stream) => {
                            tally.opened += 1;
                            drop(stream);
                        }
                        Err(err) if err.kind() == ErrorKind::TimedOut => tally.timed_out += 1,
                        Err(err) => {
                            tally.other += 1;
                            tally.first_error.get_or_insert(err.to_string());
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = StormTally::default();
    for worker in workers {
        let t = worker.join().unwrap();
        tally.opened += t.opened;
        tally.timed_out += t.timed_out;
        tally.other += t.other;
        tally.not_tried += t.not_tried;
        tally.first_error = tally.first_error.or(t.first_error);
    }
    let storm_time = storm.elapsed();
    thread::sleep(Duration::from_millis(500));
    alive(&mut server);
    let echo = send_within(addr, Duration::from_secs(5));
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let after = rss_kib(&server);
    let peak = peak.load(Ordering::Relaxed).max(after);
    let limit = before + before / 5 + 2048;
    println!(
        "connection storm [{}]: {} of {CONNECTIONS} connections opened and closed in \
         {storm_time:.2?} ({:.0}/s); {} connects timed out (accept queue full), {} failed \
         otherwise, {} not tried (10 s limit); RSS before {before} KiB, peak {peak} KiB, after \
         {after} KiB (limit {limit} KiB); echo after: {echo:.2?}",
        build.name(),
        tally.opened,
        tally.opened as f64 / storm_time.as_secs_f64(),
        tally.timed_out,
        tally.other,
        tally.not_tried,
    );
    alive(&mut server);
    echo.expect("echo after the storm");
    // A connect may time out when the server accepts more slowly than four
    // threads connect: the kernel then drops SYNs at the full accept
    // queue. Anything else (refused, reset) is the server's doing.
    assert_eq!(
        tally.other, 0,
        "connections failed during the storm: {:?}",
        tally.first_error
    );
    assert!(
        tally.opened >= CONNECTIONS * 9 / 10,
        "only {} of {CONNECTIONS} connections opened",
        tally.opened
    );
    assert!(
        after <= limit,
        "RSS grew from {before} KiB to {after} KiB after the storm (limit {limit} KiB)"
    );
}

/// Connections that their client resets before the server accepts them (a
/// health checker's connect-and-RST, a client giving up) must cost no more
/// than one failed accept each. The server is stopped (SIGSTOP) while 20
/// connections are queued and reset, then continued (SIGCONT): a normal
/// echo must succeed within 1 s.
pub(crate) fn reset_before_accept(build: Build) {
    const RESETS: usize = 20;
    let mut server = start_server(build, &[], None);
    let addr = server.addr;
    send_within(addr, Duration::from_secs(5)).expect("echo before the resets");
    server.signal(libc::SIGSTOP).expect("kill");
    let mut queued = 0;
    for _ in 0..RESETS {
        if let Ok(stream) = connect(addr) {
            reset_and_close(stream);
            queued += 1;
        }
    }
    server.signal(libc::SIGCONT).expect("kill");
    let echo = send_within(addr, Duration::from_secs(5));
    alive(&mut server);
    let stderr = server.stderr();
    println!(
        "reset before accept [{}]: {queued} connections reset in the accept queue; next echo \
         after {echo:.2?}; server stderr: {} lines, first {:?}",
        build.name(),
        stderr.lines().count(),
        stderr.lines().next().unwrap_or("")
    );
    assert_eq!(
        queued, RESETS,
        "connections failed while the server was stopped"
    );
    let echo = echo.expect("echo after the resets");
    assert!(
        echo < Duration::from_secs(1),
        "{RESETS} connections reset before accept delayed the next echo by {echo:?}; server \
         stderr: {stderr}"
    );
}

const MIB: usize = 1024 * 1024;
const CHUNK: usize = 16 * 1024;

/// Echoes half of 1 MiB in 16 KiB chunks (one chunk ahead), pushes two more
/// chunks without reading their echo, then resets the connection (SO_LINGER
/// 0, close) while the server still has echo to send.
fn reset_half_way(addr: SocketAddr, seed: u64) -> Result<usize, String> {
    let mut stream = connect(addr).map_err(|err| format!("connect: {err}"))?;
    let half = MIB / 2 / CHUNK;
    let data = random_bytes((half + 3) * CHUNK, seed);
    let chunks: Vec<&[u8]> = data.chunks(CHUNK).collect();
    let mut got = vec![0u8; CHUNK];
    stream
        .write_all(chunks[0])
        .map_err(|err| format!("write: {err}"))?;
    for i in 0..half {
        stream
            .write_all(chunks[i + 1])
            .map_err(|err| format!("write: {err}"))?;
        stream
            .read_exact(&mut got)
            .map_err(|err| format!("read: {err}"))?;
        if got != chunks[i] {
            return Err(format!("wrong echo in chunk {i}"));
        }
    }
    let _ = stream.write_all(chunks[half + 1]);
    let _ = stream.write_all(chunks[half + 2]);
    reset_and_close(stream);
    Ok(half * CHUNK)
}

/// 50 connections reset half-way through a 1 MiB echo while five
/// well-behaved ones echo 1 MiB each: every good echo is byte-exact.
pub(crate) fn resets_mid_echo(build: Build) {
    const RESET: usize = 50;
    const GOOD: usize = 5;
    let _heavy = heavy();
    let mut server = start_server(build, &[], None);
    let addr = server.addr;
    let barrier = Arc::new(Barrier::new(RESET + GOOD));
    let start = Instant::now();
    let resets: Vec<_> = (0..RESET)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                reset_half_way(addr, 1000 + i as u64)
            })
        })
        .collect();
    let goods: Vec<_> = (0..GOOD)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let data = Arc::new(random_bytes(MIB, i as u64));
            thread::spawn(move || {
                let stream = connect(addr);
                barrier.wait();
                echo_full_duplex(stream.map_err(|err| format!("connect: {err}"))?, data)
            })
        })
        .collect();
    let resets: Vec<Result<usize, String>> =
        resets.into_iter().map(|t| t.join().unwrap()).collect();
    let goods: Vec<Result<(), String>> = goods.into_iter().map(|t| t.join().unwrap()).collect();
    let elapsed = start.elapsed();
    thread::sleep(Duration::from_millis(200));
    alive(&mut server);
    let echo = send_within(addr, Duration::from_secs(5));
    let reset_bytes: usize = resets.iter().flatten().sum();
    println!(
        "resets mid-echo [{}]: {} of {RESET} connections reset half-way after {} KiB echoed in \
         all; {} of {GOOD} well-behaved 1 MiB echoes complete; {elapsed:.2?}; echo after: {echo:.2?}",
        build.name(),
        resets.iter().filter(|r| r.is_ok()).count(),
        reset_bytes / 1024,
        goods.iter().filter(|r| r.is_ok()).count(),
    );
    for (i, good) in goods.iter().enumerate() {
        if let Err(err) = good {
            panic!("well-behaved connection {i} did not get its echo: {err}");
        }
    }
    for (i, reset) in resets.iter().enumerate() {
        if let Err(err) = reset {
            panic!("connection {i} failed before its reset: {err}");
        }
    }
    alive(&mut server);
    echo.expect("echo after the resets");
}

/// 1000 open, silent connections (each echoed one byte first, so they are
/// served, not queued) cost the server almost no CPU: below 0.1 s in 5 s.
pub(crate) fn idle_cpu(build: Build) {
    const CONNECTIONS: usize = 1000;
    const WINDOW: Duration = Duration::from_secs(5);
    let mut server = start_server(build, &[], None);
    let addr = server.addr;
    let mut streams = Vec::with_capacity(CONNECTIONS);
    let setup = Instant::now();
    for i in 0..CONNECTIONS {
        let mut stream = connect(addr).unwrap_or_else(|err| panic!("connection {i}: {err}"));
        echo_small(&mut stream, b"i").unwrap_or_else(|err| panic!("connection {i}: {err}"));
        streams.push(stream);
        assert!(setup.elapsed() < Duration::from_secs(20), "setup too slow");
    }
    let setup = setup.elapsed();
    thread::sleep(Duration::from_millis(500));
    let before = cpu(&server);
    let start = Instant::now();
    thread::sleep(WINDOW);
    let cpu = cpu(&server).saturating_sub(before);
    let window = start.elapsed();
    alive(&mut server);
    for stream in &mut streams[..10] {
        echo_small(stream, b"z").expect("echo after the idle window");
    }
    let percent = 100.0 * cpu.as_secs_f64() / window.as_secs_f64();
    println!(
        "idle CPU [{}]: {CONNECTIONS} idle connections (set up in {setup:.2?}); server CPU {:.3} s \
         over {window:.2?} = {percent:.2}% of one core; RSS {} KiB",
        build.name(),
        cpu.as_secs_f64(),
        rss_kib(&server)
    );
    assert!(
        cpu < Duration::from_millis(100),
        "the server used {cpu:?} of CPU in {window:?} with {CONNECTIONS} idle connections"
    );
}
