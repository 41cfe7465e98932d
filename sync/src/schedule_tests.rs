use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::reconcile::Outbox;

/// An empty event source: the scheduler's decisions do not depend on the events.
struct Nothing;

impl SyncSource for Nothing {
    fn items(&self, _since_ms: i64) -> Vec<(u64, crate::index::ContentHash)> {
        Vec::new()
    }
    fn bytes(&self, _hash: &crate::index::ContentHash) -> Option<Vec<u8>> {
        None
    }
}

fn wall() -> DateTime<Utc> {
    DateTime::from_timestamp(1_780_000_000, 0).unwrap_or_default()
}

fn sights<'a>(
    peers: &'a [(&'a str, Option<&'a u32>)],
) -> impl Iterator<Item = PeerSight<'a, u32>> + Clone {
    peers.iter().map(|(name, fp)| PeerSight {
        name,
        generation: 1,
        fingerprint: *fp,
    })
}

struct Node {
    core: SyncCore,
    sched: Scheduler,
    rng: StdRng,
}

impl Node {
    fn new(cfg: ScheduleConfig) -> Node {
        Node {
            core: SyncCore::new(1),
            sched: Scheduler::new(cfg, 0),
            rng: StdRng::seed_from_u64(7),
        }
    }

    fn tick(
        &mut self,
        me: &str,
        own: u32,
        peers: &[(&str, Option<&u32>)],
        now: u64,
    ) -> Vec<String> {
        let mut out = Outbox::default();
        let r = self.sched.tick(
            &mut self.core,
            &mut out,
            &Nothing,
            me,
            &own,
            sights(peers),
            now,
            wall(),
            &mut self.rng,
        );
        r.started
    }
}

#[test]
fn the_smaller_name_starts_after_the_delay_and_the_larger_waits_three_times_as_long() {
    let other = 2u32;
    let mut a = Node::new(ScheduleConfig::default());
    let mut b = Node::new(ScheduleConfig::default());
    for now in [0, 1000, 1999] {
        assert!(
            a.tick("alpha", 1, &[("bravo", Some(&other))], now)
                .is_empty()
        );
        assert!(
            b.tick("bravo", 1, &[("alpha", Some(&other))], now)
                .is_empty()
        );
    }
    assert_eq!(
        a.tick("alpha", 1, &[("bravo", Some(&other))], 2000),
        ["bravo"]
    );
    assert!(
        b.tick("bravo", 1, &[("alpha", Some(&other))], 5999)
            .is_empty()
    );
    assert_eq!(
        b.tick("bravo", 1, &[("alpha", Some(&other))], 6000),
        ["alpha"]
    );
    // A session in flight is not started twice.
    assert!(
        a.tick("alpha", 1, &[("bravo", Some(&other))], 8000)
            .is_empty()
    );
}

#[test]
fn equal_or_missing_fingerprints_start_nothing_and_reset_the_wait() {
    let mut a = Node::new(ScheduleConfig::default());
    let (same, other) = (1u32, 2u32);
    assert!(a.tick("a", 1, &[("b", Some(&other))], 0).is_empty());
    // Equal for a moment: the difference starts over.
    assert!(a.tick("a", 1, &[("b", Some(&same))], 1500).is_empty());
    assert!(a.tick("a", 1, &[("b", Some(&other))], 2500).is_empty());
    assert!(a.tick("a", 1, &[("b", None)], 3000).is_empty());
    assert!(a.tick("a", 1, &[("b", Some(&other))], 3500).is_empty());
    assert_eq!(a.tick("a", 1, &[("b", Some(&other))], 5500), ["b"]);
}

#[test]
fn a_peer_that_leaves_the_live_set_differs_afresh_when_it_returns() {
    let mut a = Node::new(ScheduleConfig::default());
    let other = 2u32;
    assert!(a.tick("a", 1, &[("b", Some(&other))], 0).is_empty());
    assert!(a.tick("a", 1, &[], 1000).is_empty());
    assert!(a.tick("a", 1, &[("b", Some(&other))], 2000).is_empty());
    assert_eq!(a.tick("a", 1, &[("b", Some(&other))], 4000), ["b"]);
}

#[test]
fn anti_entropy_picks_one_live_peer_per_interval() {
    let mut a = Node::new(ScheduleConfig::default());
    let same = 1u32;
    let peers = [("b", Some(&same)), ("c", Some(&same)), ("d", Some(&same))];
    assert!(a.tick("a", 1, &peers, 299_999).is_empty());
    let first = a.tick("a", 1, &peers, 300_000);
    assert_eq!(first.len(), 1);
    assert!(a.tick("a", 1, &peers, 300_500).is_empty());
    assert!(
        a.tick("a", 1, &[], 900_000).is_empty(),
        "no live peer, no round"
    );
}

#[test]
fn the_session_cap_holds_and_rotates_the_first_pick() {
    let cfg = ScheduleConfig {
        max_sessions: 2,
        ..ScheduleConfig::default()
    };
    let other = 2u32;
    let names = ["b", "c", "d", "e", "f"];
    let peers: Vec<(&str, Option<&u32>)> = names.iter().map(|n| (*n, Some(&other))).collect();
    let mut firsts = std::collections::BTreeSet::new();
    for seed in 0..20 {
        let mut a = Node::new(cfg.clone());
        a.rng = StdRng::seed_from_u64(seed);
        a.tick("a", 1, &peers, 0);
        let started = a.tick("a", 1, &peers, 2000);
        assert_eq!(started.len(), 2);
        assert!(a.tick("a", 1, &peers, 2500).is_empty(), "cap reached");
        firsts.insert(started[0].clone());
    }
    assert!(firsts.len() > 2, "the first pick varies: {firsts:?}");
}

#[test]
fn sessions_past_the_timeout_expire_and_free_the_peer() {
    let mut a = Node::new(ScheduleConfig::default());
    let other = 2u32;
    a.tick("a", 1, &[("b", Some(&other))], 0);
    assert_eq!(a.tick("a", 1, &[("b", Some(&other))], 2000), ["b"]);
    let mut out = Outbox::default();
    let r = a.sched.tick(
        &mut a.core,
        &mut out,
        &Nothing,
        "a",
        &1u32,
        sights(&[("b", Some(&other))]),
        62_001,
        wall(),
        &mut a.rng,
    );
    assert_eq!(r.expired, 1);
    assert_eq!(r.started, ["b"]);
}

fn gens<'a>(peers: &'a [(&'a str, u64)]) -> impl Iterator<Item = (&'a str, u64)> {
    peers.iter().copied()
}

#[test]
fn a_new_generation_is_a_restart_and_a_missing_peer_is_gone() {
    let mut a = Node::new(ScheduleConfig::default());
    let mut out = Outbox::default();
    for p in ["bravo", "charlie"] {
        a.sched
            .start_now(&mut a.core, &mut out, &Nothing, [p], 0, wall());
    }
    assert!(
        a.sched
            .departures(&mut a.core, gens(&[("bravo", 100), ("charlie", 200)]))
            .is_empty(),
        "first sight"
    );
    let d = a
        .sched
        .departures(&mut a.core, gens(&[("bravo", 150), ("charlie", 200)]));
    assert_eq!(d, vec![("bravo".to_owned(), Departure::Restarted, 1)]);
    let d = a.sched.departures(&mut a.core, gens(&[("bravo", 150)]));
    assert_eq!(d, vec![("charlie".to_owned(), Departure::Gone, 1)]);
    assert_eq!(a.core.sessions_in_flight(), 0);
    // Gone once, back with a new process: nothing more to drop.
    assert_eq!(a.sched.departures(&mut a.core, gens(&[])).len(), 1);
    assert!(
        a.sched
            .departures(&mut a.core, gens(&[("bravo", 300)]))
            .is_empty()
    );
}

#[test]
fn world_offers_back_off_and_reset_when_worlds_agree() {
    let mut a = Node::new(ScheduleConfig::default());
    let (fp, mine, theirs) = (1u32, "w1".to_owned(), "w2".to_owned());
    let offer = |s: &mut Scheduler, world: &String, now| {
        let peer = [(
            PeerSight {
                name: "b",
                generation: 1,
                fingerprint: Some(&fp),
            },
            Some(world),
        )];
        s.world_offers("a", &fp, &mine, peer.into_iter(), now)
    };
    assert_eq!(offer(&mut a.sched, &theirs, 0), ["b"]);
    assert!(offer(&mut a.sched, &theirs, 4_999).is_empty());
    assert_eq!(offer(&mut a.sched, &theirs, 5_000), ["b"]);
    assert!(offer(&mut a.sched, &theirs, 14_999).is_empty(), "10 s now");
    assert_eq!(offer(&mut a.sched, &theirs, 15_000), ["b"]);
    assert!(offer(&mut a.sched, &mine, 16_000).is_empty());
    assert_eq!(offer(&mut a.sched, &theirs, 16_001), ["b"], "backoff reset");
    // The larger name never offers first.
    let peer = [(
        PeerSight {
            name: "0",
            generation: 1,
            fingerprint: Some(&fp),
        },
        Some(&theirs),
    )];
    assert!(
        a.sched
            .world_offers("a", &fp, &mine, peer.into_iter(), 0)
            .is_empty()
    );
}

#[test]
fn the_window_starts_at_midnight_utc_window_days_back() {
    let at = DateTime::parse_from_rfc3339("2026-05-31T13:45:00Z")
        .unwrap()
        .to_utc();
    let start = window_start_ms(at, Duration::from_secs(30 * 86_400));
    let expected = DateTime::parse_from_rfc3339("2026-05-01T00:00:00Z")
        .unwrap()
        .timestamp_millis();
    assert_eq!(start, expected);
}
