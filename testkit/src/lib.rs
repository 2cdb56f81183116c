//! Host-side helpers shared by echokit's integration tests, benches and
//! conformance kit (none of it ships): where the programs under test are
//! ([`paths`], [`wasm`]), the runtimes that run the component
//! ([`runtime`]), how to run a build ([`target`]), their processes
//! ([`process`]), what they cost ([`procfs`], [`limits`]), the bytes they
//! are sent ([`payload`]), plain `std::net` round trips ([`net`]),
//! `echokit bench` runs ([`bench`]) and impaired paths to a server
//! ([`impair`]).
//!
//! It runs on the host only (Linux: it reads /proc and sets rlimits).

pub mod bench;
pub mod impair;
pub mod limits;
pub mod net;
pub mod paths;
pub mod payload;
pub mod process;
pub mod procfs;
pub mod runtime;
pub mod target;
pub mod wasm;

pub use process::{lock, Finished, ServerProcess, StartError, StderrTo};
pub use target::{native_server, Build, Target};
