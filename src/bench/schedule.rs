//! When open-loop work is due: a constant rate from the start of the run,
//! whatever the server does.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Event `j` (counting from 0) is due `j / rate` seconds after `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Schedule {
    start: Duration,
    rate: u64,
}

impl Schedule {
    /// `rate` events per second from `start`; `rate` is at least 1.
    pub(super) fn new(start: Duration, rate: u64) -> Self {
        Schedule {
            start,
            rate: rate.max(1),
        }
    }

    /// When event `j` is due: the first nanosecond at or after `j / rate`.
    pub(super) fn at(&self, j: u64) -> Duration {
        let nanos = (u128::from(j) * NANOS_PER_SEC).div_ceil(u128::from(self.rate));
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How many events are due by `now`: events `0..due(now)`.
    pub(super) fn due(&self, now: Duration) -> u64 {
        let Some(elapsed) = now.checked_sub(self.start) else {
            return 0;
        };
        let due = elapsed.as_nanos() * u128::from(self.rate) / NANOS_PER_SEC + 1;
        u64::try_from(due).unwrap_or(u64::MAX)
    }
}

/// The messages of `slots` connections under one [`Schedule`]: message
/// `k` of slot `c` is event `c + k * slots`, so the total rate is spread
/// evenly over the connections, each at `rate / slots`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Spread {
    /// The run's schedule.
    pub schedule: Schedule,
    /// Connections sharing it.
    pub slots: u64,
}

impl Spread {
    /// When message `message` of slot `slot` is due.
    pub(super) fn at(&self, slot: u64, message: u64) -> Duration {
        self.schedule.at(slot + message * self.slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_fall_due_at_their_time_and_not_before() {
        let schedule = Schedule::new(Duration::from_secs(2), 3);
        assert_eq!(schedule.due(Duration::from_secs(1)), 0);
        assert_eq!(
            schedule.due(Duration::from_secs(2)),
            1,
            "event 0 at the start"
        );
        for j in 0..100 {
            let at = schedule.at(j);
            assert_eq!(schedule.due(at), j + 1, "event {j} due at {at:?}");
            assert_eq!(schedule.due(at - Duration::from_nanos(1)), j);
        }
        assert_eq!(schedule.at(3), Duration::from_secs(3));
    }

    #[test]
    fn a_spread_interleaves_the_slots_evenly() {
        let spread = Spread {
            schedule: Schedule::new(Duration::ZERO, 1000),
            slots: 4,
        };
        assert_eq!(spread.at(0, 0), Duration::ZERO);
        assert_eq!(spread.at(1, 0), Duration::from_millis(1));
        assert_eq!(spread.at(3, 1), Duration::from_millis(7));
    }
}
