//! Property tests: the real engine and client on the simulated network with
//! injected faults, for thousands of generated scenarios (see
//! `echokit::simulation` for the promises checked after every turn).

#![cfg(not(target_os = "wasi"))]

use echokit::engine::Config;
use echokit::net::faults::FaultRates;
use echokit::simulation::{run, Event, Scenario};
use proptest::prelude::*;
use std::time::Duration;

fn rates() -> impl Strategy<Value = FaultRates> {
    (0..400u16, 0..400u16, 0..30u16, 0..300u16, 0..=1000u16).prop_map(
        |(short_io, spurious_would_block, reset, accept_failure, unspliced)| FaultRates {
            short_io,
            spurious_would_block,
            reset,
            accept_failure,
            unspliced,
        },
    )
}

/// Events without faults or aborts: every echo must come back whole. The
/// server may still be told to splice less often, so that echoes switch
/// between splicing and reading then writing.
fn clean_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (0..20_000usize).prop_map(|len| Event::Open { len }),
        4 => Just(Event::DriveClients),
        4 => Just(Event::ServerTurn),
        1 => (0..50u64).prop_map(|ms| Event::Sleep(Duration::from_millis(ms))),
        1 => (0..=1000u16).prop_map(|unspliced| Event::ServerFaults(FaultRates {
            unspliced,
            ..FaultRates::default()
        })),
    ]
}

fn faulty_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => clean_event(),
        1 => rates().prop_map(Event::ServerFaults),
        1 => rates().prop_map(Event::ClientFaults),
        1 => any::<usize>().prop_map(|connection| Event::Abort { connection }),
    ]
}

fn scenario(events: impl Strategy<Value = Vec<Event>>) -> impl Strategy<Value = Scenario> {
    (any::<u64>(), 1..4096usize, 1..70_000usize, events).prop_map(
        |(seed, buffer, max_backlog, events)| Scenario {
            seed,
            buffer,
            config: Config {
                max_backlog,
                ..Config::default()
            },
            events,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn without_faults_every_echo_is_whole(s in scenario(prop::collection::vec(clean_event(), 0..40))) {
        let summary = run(&s).map_err(|v| TestCaseError::fail(v.0))?;
        prop_assert_eq!(summary.failed, 0);
    }

    #[test]
    fn faults_never_corrupt_stall_or_overfill(s in scenario(prop::collection::vec(faulty_event(), 0..60))) {
        run(&s).map_err(|v| TestCaseError::fail(v.0))?;
    }

    /// Without faults, so that the server accepts at once and its idle
    /// clock starts when the client's does.
    #[test]
    fn idle_connections_close_on_simulated_time(
        s in scenario(prop::collection::vec(clean_event(), 0..30)),
        silent in 1..5usize,
        timeout_ms in 50..3000u64,
    ) {
        let mut s = s;
        s.config.idle_timeout = Some(Duration::from_millis(timeout_ms));
        s.events.splice(0..0, std::iter::repeat_n(Event::OpenSilent, silent));
        let summary = run(&s).map_err(|v| TestCaseError::fail(v.0))?;
        prop_assert_eq!(summary.timed_out, silent);
    }
}
