//! Fuzz target: the fuzzer's bytes are a schedule of events (connections,
//! client and server turns, sleeps, faults, aborts) run on the simulated
//! network; any broken promise of the engine is a crash.

#![no_main]

use echokit::simulation::{run, Scenario};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Err(violation) = run(&Scenario::from_bytes(bytes)) {
        panic!("{violation}");
    }
});
