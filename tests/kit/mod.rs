//! The conformance kit's parts; tests/conformance.rs ties them together.

pub mod check;
pub mod limits;
pub mod payload;
pub mod scenarios;
pub mod server;
pub mod std_client;
pub mod table;
pub mod target;
pub mod world;
