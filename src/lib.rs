//! echokit: an RFC 862 echo server and verifying client, written once and
//! built natively (std sockets and `mio`) and as a WASI 0.2 component.
//!
//! - [`net`]: the socket trait and its backends (the only place that knows
//!   which host it runs on);
//! - [`engine`]: the echo server's event loop and connection state machine;
//! - [`client`]: the send-and-verify client;
//! - [`cli`] and [`commands`]: the command line.

pub mod bench;
pub mod cli;
pub mod client;
pub mod commands;
pub mod engine;
pub mod hash;
pub mod net;
pub mod simulation;
