//! The conformance kit's parts; tests/conformance.rs ties them together.

pub(crate) mod check;
pub(crate) mod payload;
pub(crate) mod scenarios;
pub(crate) mod std_client;
pub(crate) mod table;
pub(crate) mod world;
