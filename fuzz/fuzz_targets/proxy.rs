//! Fuzz target: the fuzzer's bytes are what a connection starts with; the
//! PROXY protocol parser must keep its promises on them (no panic, bounded
//! reads, decisions that stand): see `echokit::proxy::promises`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Err(broken) = echokit::proxy::promises(bytes) {
        panic!("{broken}");
    }
});
