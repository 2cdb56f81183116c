//! echokit: an RFC 862 echo server, verifying clients and a verifying load
//! generator, written once against a small socket trait and built natively
//! and as a WASI 0.2 component.
//!
//! - [`net`]: the socket trait [`net::Network`], what a backend can do
//!   ([`net::Capabilities`]), and the backends; the only module that knows
//!   which host it runs on;
//! - [`clock`]: the time the engine and clients are handed;
//! - [`engine`]: the echo server's event loop, connection and datagram
//!   state machines, and the events it reports;
//! - [`client`]: the send-and-verify clients (TCP stream, UDP datagrams);
//! - [`bench`](mod@bench): the load generator;
//! - [`check`]: the conformance scenarios, run against any echo endpoint;
//! - [`hash`] and [`pattern`]: the generated payloads;
//! - [`proxy`]: the PROXY protocol header (v1 and v2), parsed and written;
//! - `simulation` (feature `simulation`): the engine and client on the
//!   in-memory network with injected faults, checking the engine's
//!   promises after every turn, for the property tests and the fuzzer.
//!
//! The command line is the `echokit` binary's own (`src/cli/`): the
//! library never prints, reads flags or exits the process.

pub mod bench;
pub mod check;
pub mod client;
pub mod clock;
pub mod engine;
pub mod hash;
pub mod net;
pub mod pattern;
pub mod proxy;
#[cfg(any(test, feature = "simulation"))]
pub mod simulation;
