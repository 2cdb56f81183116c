//! Time as the engine sees it: read from a clock its caller hands it, so
//! that tests can run it on simulated time.

use std::time::{Duration, Instant};

/// A monotonic clock.
pub trait Clock {
    /// Time since the clock's own start; never goes back.
    fn now(&self) -> Duration;
}

/// The host's monotonic clock (`CLOCK_MONOTONIC` natively,
/// `wasi:clocks/monotonic-clock` in the WebAssembly build).
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    start: Instant,
}

impl MonotonicClock {
    /// A clock that starts now.
    pub fn new() -> Self {
        MonotonicClock {
            start: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}
