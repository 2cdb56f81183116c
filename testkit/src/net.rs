//! Plain `std::net` round trips, for tests that poke a server directly.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Connects within `connect_timeout`, with `io_timeout` on reads and writes.
pub fn connect(
    addr: SocketAddr,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, connect_timeout)?;
    stream.set_read_timeout(Some(io_timeout))?;
    stream.set_write_timeout(Some(io_timeout))?;
    Ok(stream)
}

/// How a [`round_trip`] failed.
#[derive(Debug)]
pub enum EchoError {
    /// Writing failed.
    Write(io::Error),
    /// Reading the echo failed.
    Read(io::Error),
    /// The bytes that came back instead.
    Wrong(Vec<u8>),
}

/// Writes `bytes` and reads exactly as many back on an open connection;
/// fails unless they are the same.
pub fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), EchoError> {
    stream.write_all(bytes).map_err(EchoError::Write)?;
    let mut back = vec![0; bytes.len()];
    stream.read_exact(&mut back).map_err(EchoError::Read)?;
    if back != bytes {
        return Err(EchoError::Wrong(back));
    }
    Ok(())
}

/// Where `got` first differs from `want`, in words.
pub fn first_difference(got: &[u8], want: &[u8]) -> String {
    match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(at) => format!("first wrong byte at offset {at}"),
        None => format!("got {} bytes, expected {}", got.len(), want.len()),
    }
}
