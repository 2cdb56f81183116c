//! The reference tokio echo server that `benches/matrix.rs` measures echokit
//! against: the canonical accept loop with one task per connection, each
//! reading into a 64 KiB buffer and writing it all back until EOF, on the
//! multi-thread runtime (one worker per core).
//!
//! Like echokit, it turns Nagle's algorithm off on accepted sockets and
//! listens with an accept queue of 1024, so the two differ only in how they
//! schedule the work.
//!
//! ```text
//! cargo build --release --example tokio_echo
//! target/release/examples/tokio_echo --listen 127.0.0.1:0
//! ```
//!
//! It prints `listening on IP:PORT` once bound, then serves until killed.
//! Native only: tokio's networking does not build for wasm32-wasip2.

#[cfg(not(target_os = "wasi"))]
mod server {
    use clap::Parser;
    use std::io::{self, Write};
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    /// Length of the accept queue, as echokit's default `--backlog`.
    const BACKLOG: u32 = 1024;
    /// Each connection's read buffer.
    const BUFFER_SIZE: usize = 64 * 1024;
    /// How long accepting pauses after an accept error such as "too many
    /// open files", so a full descriptor table does not turn into a busy loop.
    const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

    /// Reference tokio TCP echo server (RFC 862).
    #[derive(Debug, Parser)]
    #[command(name = "tokio_echo")]
    struct Args {
        /// Address to listen on, IP:PORT; port 0 picks a free port.
        /// Prints "listening on IP:PORT" once bound.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    }

    #[tokio::main]
    pub(crate) async fn main() -> io::Result<()> {
        let args = Args::parse();
        let listener = listen(args.listen)?;
        let bound = listener.local_addr()?;
        {
            let mut stdout = io::stdout().lock();
            writeln!(stdout, "listening on {bound}")?;
            stdout.flush()?;
        }
        loop {
            match listener.accept().await {
                Ok((socket, _peer)) => {
                    tokio::spawn(async move {
                        if let Err(err) = echo(socket).await {
                            if !is_disconnect(&err) {
                                eprintln!("tokio_echo: connection: {err}");
                            }
                        }
                    });
                }
                Err(err) => {
                    eprintln!("tokio_echo: accept: {err}");
                    // The accept loop runs on the thread that called
                    // `block_on`, not on a worker, so this blocks only
                    // accepting (and needs no "time" feature).
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
            }
        }
    }

    /// Binds like echokit does: address reuse on, accept queue of
    /// [`BACKLOG`]. (`TcpListener::bind` would queue only 128, and a burst
    /// of connects would then lose SYNs to retransmission timeouts.)
    fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    }

    /// Echoes everything `socket` receives, then closes its sending side.
    async fn echo(mut socket: TcpStream) -> io::Result<()> {
        socket.set_nodelay(true)?;
        let mut buf = vec![0; BUFFER_SIZE];
        loop {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                return socket.shutdown().await;
            }
            socket.write_all(&buf[..n]).await?;
        }
    }

    /// Errors that only mean the client went away first.
    fn is_disconnect(err: &io::Error) -> bool {
        matches!(
            err.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::NotConnected
                | io::ErrorKind::ConnectionAborted
        )
    }
}

#[cfg(not(target_os = "wasi"))]
fn main() -> std::io::Result<()> {
    server::main()
}

#[cfg(target_os = "wasi")]
fn main() {
    eprintln!("tokio_echo: native only (tokio's networking does not build for WASI)");
    std::process::exit(2);
}
