use super::*;
use proptest::prelude::*;

const CLIENT: &str = "127.0.0.1:40000";
const MICRO: Duration = Duration::from_micros(1);

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn no_rate() -> UdpGuard {
    UdpGuard::new(GuardConfig { peer_rate: None })
}

#[test]
fn service_ports_and_port_zero_are_dropped_and_told_once() {
    let mut guard = UdpGuard::default();
    let now = Duration::from_secs(1);
    let mut firsts = 0;
    for port in [0, 7, 13, 17, 19, 37, 53, 1023] {
        let verdict = guard.check(SocketAddr::new([127, 0, 0, 1].into(), port), b"x", now);
        let Verdict::Drop { reason, first } = verdict else {
            panic!("port {port} echoed");
        };
        assert_eq!(reason, DropReason::ServicePort);
        firsts += usize::from(first);
    }
    assert_eq!(firsts, 1);
    assert_eq!(guard.drops.service_port, 8);
    assert_eq!(
        guard.check(addr("127.0.0.1:1024"), b"x", now),
        Verdict::Echo
    );
}

/// Two guarded echo servers, A and B, handed one datagram that claims to
/// come from B: how many echoes they exchange before one stops.
fn loop_length(payloads: usize) -> u32 {
    let (a_addr, b_addr) = (addr("127.0.0.1:7001"), addr("127.0.0.1:7002"));
    let (mut a, mut b) = (no_rate(), no_rate());
    let mut now = Duration::from_secs(1);
    let mut exchanged = 0;
    // Each forged datagram circulates on its own; they interleave.
    let mut alive: Vec<Vec<u8>> = (0..payloads).map(|i| vec![i as u8; 100]).collect();
    let mut at_a = true;
    while !alive.is_empty() && exchanged < 100_000 {
        now += Duration::from_micros(30);
        let (guard, from) = match at_a {
            true => (&mut a, b_addr),
            false => (&mut b, a_addr),
        };
        alive.retain(|datagram| guard.check(from, datagram, now) == Verdict::Echo);
        exchanged += alive.len() as u32;
        at_a = !at_a;
    }
    exchanged
}

#[test]
fn a_forged_datagram_between_two_echo_servers_stops_within_two_loops() {
    let length = loop_length(1);
    assert!(length <= 2 * LOOP_AFTER, "{length} echoes");
    assert!(length >= LOOP_AFTER, "{length}: a loop was found too soon");
}

#[test]
fn a_loop_carrying_several_datagrams_at_once_stops_too() {
    let length = loop_length(REMEMBERED);
    assert!(
        length <= 2 * LOOP_AFTER * REMEMBERED as u32,
        "{length} echoes"
    );
}

#[test]
fn a_looping_peer_is_echoed_again_after_the_pause() {
    let mut guard = no_rate();
    let peer = addr("127.0.0.1:7001");
    let mut now = Duration::from_secs(1);
    let mut verdicts = Vec::new();
    // The first is echoed, and each of the next LOOP_AFTER returns it.
    for _ in 0..=LOOP_AFTER {
        now += MICRO * 50;
        verdicts.push(guard.check(peer, b"ping", now));
    }
    assert_eq!(
        verdicts.last(),
        Some(&Verdict::Drop {
            reason: DropReason::Loop,
            first: true
        })
    );
    assert_eq!(
        guard.check(peer, b"other", now + MICRO),
        Verdict::Drop {
            reason: DropReason::Loop,
            first: false
        }
    );
    assert_eq!(guard.check(addr(CLIENT), b"ping", now), Verdict::Echo);
    assert_eq!(guard.check(peer, b"ping", now + LOOP_PAUSE), Verdict::Echo);
    assert_eq!(guard.drops.looping, 2);
}

#[test]
fn the_same_payload_at_a_human_rate_is_always_echoed() {
    let mut guard = UdpGuard::default();
    let mut now = Duration::from_secs(1);
    for _ in 0..1000 {
        now += BOUNCE_WINDOW + Duration::from_millis(50);
        assert_eq!(guard.check(addr(CLIENT), b"hello", now), Verdict::Echo);
    }
}

#[test]
fn the_rate_bound_holds_for_one_source_and_spares_another() {
    let rate = 1000;
    let mut guard = UdpGuard::new(GuardConfig {
        peer_rate: Some(rate),
    });
    let mut now = Duration::from_secs(1);
    let (mut flood_echoed, mut firsts) = (0, 0);
    // One second of 100,000 datagrams from one address, on many ports.
    for i in 0..100_000u32 {
        now += Duration::from_micros(10);
        let from = SocketAddr::new([10, 0, 0, 1].into(), 2000 + (i % 5000) as u16);
        match guard.check(from, &i.to_le_bytes(), now) {
            Verdict::Echo => flood_echoed += 1,
            Verdict::Drop { first, .. } => firsts += u32::from(first),
        }
        if i % 100 == 0 {
            let other = guard.check(addr(CLIENT), &i.to_be_bytes(), now);
            assert_eq!(other, Verdict::Echo, "the other source was limited");
        }
    }
    let bound = rate + rate / 10;
    assert!(
        flood_echoed <= bound && flood_echoed >= rate,
        "{flood_echoed} echoed"
    );
    assert_eq!(firsts, 1, "the episode is told once");
    assert_eq!(guard.drops.rate, u64::from(100_000 - flood_echoed));
}

#[test]
fn forged_sources_cannot_grow_the_tables_past_their_bound() {
    let mut guard = UdpGuard::default();
    let now = Duration::from_secs(1);
    for i in 0..(MAX_TRACKED as u32 + 5000) {
        let [a, b, c, d] = i.to_be_bytes();
        let from = SocketAddr::new([10 | a, b, c, d].into(), 40_000);
        guard.check(from, b"x", now);
    }
    assert!(guard.peers.len() <= MAX_TRACKED);
    assert!(guard.sources.len() <= MAX_TRACKED);
    // Later, the stale entries make room again.
    guard.check(addr(CLIENT), b"x", now + STALE);
    assert!(guard.peers.len() < 10, "{} peers kept", guard.peers.len());
}

#[test]
fn fingerprints_see_length_head_and_tail() {
    let base = vec![7u8; 1000];
    let mut head = base.clone();
    head[0] = 8;
    let mut tail = base.clone();
    tail[999] = 8;
    let prints = [&base[..], &head, &tail, &base[..999]].map(fingerprint);
    for (i, a) in prints.iter().enumerate() {
        for b in &prints[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

proptest! {
    /// A client whose successive datagrams differ (as every load
    /// generator's do), at any pace under the rate bound, is never dropped.
    #[test]
    fn ordinary_clients_are_never_dropped(
        gaps in prop::collection::vec(1u64..50_000, 1..500),
        seed: u64,
    ) {
        let mut guard = UdpGuard::default();
        let mut now = Duration::from_secs(1);
        for (i, gap) in gaps.iter().enumerate() {
            now += Duration::from_micros(*gap);
            let datagram = (seed.wrapping_add(i as u64)).to_le_bytes();
            prop_assert_eq!(guard.check(addr(CLIENT), &datagram, now), Verdict::Echo);
        }
    }

    /// Whatever a forged source sends, and however often, no more than
    /// the rate bound (plus its burst) is echoed to its address.
    #[test]
    fn no_forged_stream_gets_more_than_the_bound(
        rate in 1u32..5000,
        sends in prop::collection::vec((0u64..2000, 1024u16..2000, 0u8..4), 1..2000),
    ) {
        let mut guard = UdpGuard::new(GuardConfig { peer_rate: Some(rate) });
        let start = Duration::from_secs(1);
        let mut now = start;
        let mut echoed = 0u64;
        for (gap, port, payload) in sends {
            now += Duration::from_micros(gap);
            let from = SocketAddr::new([10, 0, 0, 1].into(), port);
            if guard.check(from, &[payload], now) == Verdict::Echo {
                echoed += 1;
            }
        }
        let allowed = (now - start).as_secs_f64() * f64::from(rate) + burst(rate);
        prop_assert!(echoed as f64 <= allowed + 1.0, "{} echoed, {} allowed", echoed, allowed);
    }
}
