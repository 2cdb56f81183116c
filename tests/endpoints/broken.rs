//! Echo servers broken on purpose, each in one well-known way, on threads
//! of the test process; `echokit check` must fail the scenarios each
//! breaks, for the right reason, and pass the rest.

use serde::Deserialize;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;
use testkit::lock;

/// The broken servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Broken {
    /// Flips the byte at offset 1000 of every connection.
    FlipByte,
    /// Echoes in batches 20 ms late, and closes as soon as the client
    /// half-closes, dropping what it still holds (a relay that turns a
    /// half-close into a full close).
    DropAfterFin,
    /// Echoes the first 64 KiB of every connection, then closes its side.
    Truncate64k,
    /// Accepts connections and never reads or closes them.
    NeverRead,
    /// Echoes datagrams whole, from another socket (another port).
    UdpOtherPort,
}

/// The offset [`Broken::FlipByte`] flips.
const FLIP_AT: usize = 1000;
/// Where [`Broken::Truncate64k`] stops.
const TRUNCATE_AT: usize = 64 * 1024;

/// Starts `broken` on a free loopback port; returns its address. It runs
/// until the test process ends.
pub(crate) fn start(broken: Broken) -> SocketAddr {
    if broken == Broken::UdpOtherPort {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        let other = UdpSocket::bind("127.0.0.1:0").expect("bind another UDP port");
        let addr = socket.local_addr().expect("local address");
        thread::spawn(move || {
            let mut buf = vec![0; 65_536];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = other.send_to(&buf[..n], from);
            }
        });
        return addr;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    let addr = listener.local_addr().expect("local address");
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            match broken {
                Broken::NeverRead => held.push(stream),
                Broken::DropAfterFin => {
                    thread::spawn(move || drop_after_fin(stream));
                }
                _ => {
                    thread::spawn(move || echo(stream, broken));
                }
            }
        }
    });
    addr
}

/// Echoes `stream`, flipping or truncating as `broken` says.
fn echo(mut stream: TcpStream, broken: Broken) {
    let mut buf = vec![0; 16 * 1024];
    let mut offset = 0;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        if broken == Broken::FlipByte && (offset..offset + n).contains(&FLIP_AT) {
            chunk[FLIP_AT - offset] ^= 0x20;
        }
        let keep = match broken {
            Broken::Truncate64k => n.min(TRUNCATE_AT.saturating_sub(offset)),
            _ => n,
        };
        if stream.write_all(&chunk[..keep]).is_err() {
            return;
        }
        offset += n;
        if broken == Broken::Truncate64k && offset >= TRUNCATE_AT {
            // Close in order, reading on so that no reset cuts the echo
            // sent before the end.
            let _ = stream.shutdown(Shutdown::Write);
            while let Ok(1..) = stream.read(&mut buf) {}
            return;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

/// Reads into a queue that a second thread echoes in batches, 20 ms
/// after the batch began; on the client's FIN, closes the whole connection
/// at once, dropping the batch.
fn drop_after_fin(stream: TcpStream) {
    let queue = Arc::new((Mutex::new((Vec::<u8>::new(), false)), Condvar::new()));
    let (writer_queue, mut writer) = (Arc::clone(&queue), stream.try_clone().expect("clone"));
    let echo = thread::spawn(move || loop {
        let (batch, ready) = &*writer_queue;
        {
            let mut batch = lock(batch);
            while batch.0.is_empty() && !batch.1 {
                batch = ready.wait(batch).unwrap_or_else(|e| e.into_inner());
            }
            if batch.1 {
                return;
            }
        }
        thread::sleep(Duration::from_millis(20));
        let bytes = std::mem::take(&mut lock(batch).0);
        if writer.write_all(&bytes).is_err() {
            return;
        }
    });
    let mut reader = &stream;
    let mut buf = vec![0; 64 * 1024];
    while let Ok(n @ 1..) = reader.read(&mut buf) {
        let (batch, ready) = &*queue;
        lock(batch).0.extend_from_slice(&buf[..n]);
        ready.notify_one();
    }
    let (batch, ready) = &*queue;
    lock(batch).1 = true;
    ready.notify_one();
    let _ = stream.shutdown(Shutdown::Both);
    let _ = echo.join();
}
