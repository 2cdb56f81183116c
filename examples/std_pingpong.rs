//! A pingpong load generator that shares no code with echokit: one
//! blocking `std::net` thread per connection writes a message, reads its
//! echo whole and compares it, over and over, for a fixed time. The
//! `benches/cores.sh` run uses it to show that the ratios between servers
//! are not an artefact of echokit's own generator.
//!
//! ```text
//! cargo build --release --example std_pingpong
//! target/release/examples/std_pingpong --connect 127.0.0.1:7878 --connections 50 --size 512 --secs 3
//! ```
//!
//! Prints one JSON object: `{"requests": N, "secs": S, "requests_per_sec": R}`.
//! Exits 1 (saying why) on a wrong byte, an early end of stream or any
//! other error.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The command line: `--connect ADDR --connections N --size BYTES --secs S`.
struct Options {
    connect: SocketAddr,
    connections: usize,
    size: usize,
    secs: f64,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        connect: SocketAddr::from(([127, 0, 0, 1], 7878)),
        connections: 1,
        size: 64,
        secs: 3.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |err: &dyn std::fmt::Display| format!("{flag} {value}: {err}");
        match flag.as_str() {
            "--connect" => options.connect = value.parse().map_err(|err| bad(&err))?,
            "--connections" => options.connections = value.parse().map_err(|err| bad(&err))?,
            "--size" => options.size = value.parse().map_err(|err| bad(&err))?,
            "--secs" => options.secs = value.parse().map_err(|err| bad(&err))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if options.connections == 0 || options.size == 0 || options.secs.is_nan() || options.secs <= 0.0
    {
        return Err("--connections, --size and --secs must be positive".into());
    }
    Ok(options)
}

/// One connection's loop until `stop`: counts each verified echo.
fn pingpong(
    addr: SocketAddr,
    size: usize,
    seed: u8,
    stop: &AtomicBool,
    done: &AtomicU64,
) -> io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut message: Vec<u8> = (0..size).map(|i| (i as u8) ^ seed).collect();
    let mut echo = vec![0; size];
    let mut round: u8 = 0;
    while !stop.load(Ordering::Relaxed) {
        message[0] = round;
        stream.write_all(&message)?;
        stream.read_exact(&mut echo)?;
        if echo != message {
            let at = (echo.iter().zip(&message)).position(|(a, b)| a != b);
            return Err(io::Error::other(format!("wrong echo at byte {at:?}")));
        }
        done.fetch_add(1, Ordering::Relaxed);
        round = round.wrapping_add(1);
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let options = match parse() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("std_pingpong: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..options.connections)
        .map(|i| {
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            let (addr, size) = (options.connect, options.size);
            thread::spawn(move || pingpong(addr, size, i as u8, &stop, &done))
        })
        .collect();
    // Measure after a short warm-up, while every connection runs.
    thread::sleep(Duration::from_millis(300));
    let (start, before) = (Instant::now(), done.load(Ordering::Relaxed));
    thread::sleep(Duration::from_secs_f64(options.secs));
    let (secs, requests) = (
        start.elapsed().as_secs_f64(),
        done.load(Ordering::Relaxed) - before,
    );
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        if let Err(err) = thread.join().expect("a connection thread panicked") {
            eprintln!("std_pingpong: {err}");
            return std::process::ExitCode::FAILURE;
        }
    }
    println!(
        "{{\"requests\": {requests}, \"secs\": {secs:.3}, \"requests_per_sec\": {:.1}}}",
        requests as f64 / secs
    );
    std::process::ExitCode::SUCCESS
}
