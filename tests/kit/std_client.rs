//! The fifth client column: a plain `std::net` echo client, written here and
//! independent of echokit's own client code.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

/// Socket timeout of every blocking std-client operation: a hung server
/// fails the test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Connects with [`IO_TIMEOUT`] on reads and writes.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Sends `chunks` (one `write_all` each) while a second thread reads the
/// echo; half-closes after the last chunk and returns everything read up
/// to EOF.
pub fn echo_chunks<C: AsRef<[u8]> + Sync>(
    addr: SocketAddr,
    chunks: &[C],
) -> Result<Vec<u8>, String> {
    let stream = connect(addr).map_err(|err| format!("std client: connect {addr}: {err}"))?;
    stream
        .set_nodelay(true)
        .map_err(|err| format!("std client: TCP_NODELAY: {err}"))?;
    let mut reader = stream
        .try_clone()
        .map_err(|err| format!("std client: clone: {err}"))?;
    thread::scope(|scope| {
        let read = scope.spawn(move || {
            let mut echo = Vec::new();
            reader.read_to_end(&mut echo).map(|_| echo)
        });
        let mut writer = &stream;
        let mut write_result = Ok(());
        for chunk in chunks {
            if let Err(err) = writer.write_all(chunk.as_ref()) {
                write_result = Err(err);
                break;
            }
        }
        if write_result.is_ok() {
            write_result = stream.shutdown(Shutdown::Write);
        }
        let read_result = read
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("reader thread panicked")));
        match (write_result, read_result) {
            (Ok(()), Ok(echo)) => Ok(echo),
            (Err(err), _) => Err(format!("std client: write to {addr}: {err}")),
            (_, Err(err)) => Err(format!("std client: read from {addr}: {err}")),
        }
    })
}

/// Sends `payload` as one write and returns the echo read to EOF.
pub fn echo(addr: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, String> {
    echo_chunks(addr, &[payload])
}

/// Writes `bytes` and reads exactly as many back (the connection stays
/// open): proves the server is serving this connection right now.
pub fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    stream
        .write_all(bytes)
        .map_err(|err| format!("std client: write: {err}"))?;
    let mut back = vec![0; bytes.len()];
    stream
        .read_exact(&mut back)
        .map_err(|err| format!("std client: reading {} echoed bytes: {err}", bytes.len()))?;
    if back != bytes {
        return Err(format!("std client: sent {bytes:?}, got back {back:?}"));
    }
    Ok(())
}

/// Whether a read error means the peer closed or reset the connection.
pub fn is_closed_by_peer(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}
