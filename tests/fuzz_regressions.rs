//! The fuzz target's check, run by the ordinary test suite: every input the
//! fuzzer ever crashed on (kept in fuzz/regressions/) and a few thousand
//! random schedules. `just fuzz` runs the coverage-guided fuzzer itself.

#![cfg(not(target_os = "wasi"))]

use echokit::hash::mix;
use echokit::simulation::{run, Scenario};
use std::fs;
use std::path::Path;

fn check(name: &str, bytes: &[u8]) {
    if let Err(violation) = run(&Scenario::from_bytes(bytes)) {
        panic!("{name}: {violation}");
    }
}

#[test]
fn fuzzer_crashes_stay_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut count = 0;
    for entry in fs::read_dir(&dir).expect("fuzz/regressions exists") {
        let path = entry.unwrap().path();
        check(&path.display().to_string(), &fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "no regression inputs in {}", dir.display());
}

#[test]
fn random_schedules_keep_every_promise() {
    for case in 0..2000u64 {
        let len = (mix(case) % 300) as usize;
        let bytes: Vec<u8> = (0..len as u64).map(|i| mix(case << 16 ^ i) as u8).collect();
        check(&format!("random schedule {case}"), &bytes);
    }
}
