//! The CRDT laws of `WorldState`, checked on random event sets from a small vocabulary (3 nodes,
//! 3 services, the lifecycle types plus availability and unknown types, timestamps within one
//! day, some events carrying an `hlc`, some duplicated):
//! - `apply` is order-independent and idempotent: any permutation with any duplication gives
//!   the same state and hash;
//! - `merge` is commutative, associative and idempotent, and `world(A) ⊔ world(B) == world(A ∪ B)`;
//! - views are a pure function of the state, also after a checkpoint round trip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sync::event::{Event, Severity, parse_timestamp};
use sync::world::{CvRDT, Views, WorldState, ntp64_from_datetime};
use uuid::Uuid;

const NODES: [&str; 3] = ["saturn", "jupiter", "mars"];
const SERVICES: [&str; 3] = ["mosquitto", "ollama", "grafana"];
const TYPES: [&str; 15] = [
    "service_unhealthy",
    "healthcheck_failed",
    "service_recovered",
    "deployment_started",
    "deployment_completed",
    "deployment_failed",
    "remediation_started",
    "remediation_completed",
    "node_joined",
    "node_online",
    "node_offline",
    "node_left",
    "heartbeat",
    "build_completed",
    "alert_firing",
];
const CIDS: [&str; 4] = ["", "deploy-1", "deploy-2", "hc-1"];

/// The random choices behind one event.
#[derive(Debug, Clone)]
struct Spec {
    id: u128,
    node: usize,
    service: usize,
    ty: usize,
    severity: usize,
    cid: usize,
    /// Milliseconds into the day; coarse values make same-second collisions likely.
    at_ms: i64,
    /// `hlc` field: none, a valid clock this many seconds off the timestamp, or garbage.
    hlc: Option<Option<i64>>,
    /// Payload: peer for availability events, stage/error for deployments.
    peer: Option<usize>,
    stage: usize,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<u128>(),
        0..NODES.len(),
        0..SERVICES.len(),
        0..TYPES.len(),
        0..4usize,
        0..CIDS.len(),
        prop_oneof![(0i64..1440).prop_map(|m| m * 60_000), 0i64..86_400_000],
        prop_oneof![
            2 => Just(None),
            2 => (-600i64..600).prop_map(|s| Some(Some(s))),
            1 => Just(Some(None)),
        ],
        proptest::option::of(0..NODES.len()),
        0..3usize,
    )
        .prop_map(
            |(id, node, service, ty, severity, cid, at_ms, hlc, peer, stage)| Spec {
                id,
                node,
                service,
                ty,
                severity,
                cid,
                at_ms,
                hlc,
                peer,
                stage,
            },
        )
}

fn day_start() -> DateTime<Utc> {
    parse_timestamp("2026-05-12T00:00:00Z").unwrap()
}

fn build(s: &Spec) -> Event {
    let at = day_start() + Duration::milliseconds(s.at_ms);
    let ty = TYPES[s.ty];
    let mut payload = Map::new();
    if ty.starts_with("node_")
        && let Some(p) = s.peer
    {
        payload.insert("peer".into(), NODES[p].into());
    }
    if ty.starts_with("deployment_") && s.stage > 0 {
        payload.insert("stage".into(), ["pull", "verify"][s.stage - 1].into());
        payload.insert("error".into(), "port 1883 not bound".into());
        payload.insert(
            "diagnostic_files".into(),
            json!([format!("/opt/homelab/logs/{}.log", s.id % 7)]),
        );
        payload.insert("version".into(), "2.0".into());
    }
    let mut extra = Map::new();
    match s.hlc {
        None => {}
        Some(Some(offset)) => {
            let t = ntp64_from_datetime(at + Duration::seconds(offset));
            extra.insert("hlc".into(), format!("{t:016x}/{:x}", s.node + 1).into());
        }
        Some(None) => {
            extra.insert("hlc".into(), Value::from("not-a-clock"));
        }
    }
    Event {
        id: Uuid::from_u128(s.id),
        timestamp: at,
        node: NODES[s.node].into(),
        event_type: ty.into(),
        severity: Severity::ALL[s.severity],
        source: "proptest".into(),
        service: SERVICES[s.service].into(),
        correlation_id: CIDS[s.cid].into(),
        payload,
        extra,
    }
}

/// A set of distinct events, plus a shuffled copy of it with some events repeated.
fn events_and_replay() -> impl Strategy<Value = (Vec<Event>, Vec<Event>)> {
    proptest::collection::vec(spec(), 0..60)
        .prop_flat_map(|specs| {
            let events: Vec<Event> = specs.iter().map(build).collect();
            let n = events.len();
            let dups = proptest::collection::vec(0..n.max(1), 0..(n / 2 + 1));
            (Just(events), dups, any::<u64>())
        })
        .prop_map(|(events, dups, seed)| {
            let mut replay = events.clone();
            for i in dups {
                if let Some(e) = events.get(i) {
                    replay.push(e.clone());
                }
            }
            shuffle(&mut replay, seed);
            (events, replay)
        })
}

/// Fisher–Yates with a small xorshift, so the permutation comes from proptest's seed.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    seed |= 1;
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = (seed % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

fn merged(a: &WorldState, b: &WorldState) -> WorldState {
    let mut out = a.clone();
    out.merge(b.clone());
    out
}

fn view_bytes(world: &WorldState) -> Vec<Vec<u8>> {
    world
        .views()
        .files()
        .iter()
        .map(|(_, v)| Views::to_bytes(v))
        .collect()
}

/// Three overlapping subsets of one event set (each event lands in each subset or not).
fn three_sets() -> impl Strategy<Value = [Vec<Event>; 3]> {
    proptest::collection::vec((spec(), 0u8..8), 0..60).prop_map(|items| {
        let mut sets: [Vec<Event>; 3] = Default::default();
        for (s, mask) in items {
            let e = build(&s);
            for (k, set) in sets.iter_mut().enumerate() {
                if mask & (1 << k) != 0 {
                    set.push(e.clone());
                }
            }
        }
        sets
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn apply_is_order_independent_and_idempotent((events, replay) in events_and_replay()) {
        let a = WorldState::from_events(&events);
        let b = WorldState::from_events(&replay);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.hash(), b.hash());
        prop_assert_eq!(view_bytes(&a), view_bytes(&b));
        // Applying everything a second time changes nothing.
        let mut c = a.clone();
        c.apply_all(&replay);
        prop_assert_eq!(&c, &a);
    }

    #[test]
    fn merge_is_a_join([a, b, c] in three_sets()) {
        let (wa, wb, wc) = (
            WorldState::from_events(&a),
            WorldState::from_events(&b),
            WorldState::from_events(&c),
        );
        // Commutative.
        prop_assert_eq!(merged(&wa, &wb), merged(&wb, &wa));
        // Associative.
        prop_assert_eq!(merged(&merged(&wa, &wb), &wc), merged(&wa, &merged(&wb, &wc)));
        // Idempotent.
        prop_assert_eq!(merged(&wa, &wa), wa.clone());
        // world(A) ⊔ world(B) == world(A ∪ B) (A and B overlap; duplicates are harmless).
        let union: Vec<Event> = a.iter().chain(&b).cloned().collect();
        let joined = merged(&wa, &wb);
        let direct = WorldState::from_events(&union);
        prop_assert_eq!(joined.hash(), direct.hash());
        prop_assert_eq!(&joined, &direct);
        prop_assert_eq!(view_bytes(&joined), view_bytes(&direct));
        // Merging into a state that already applied some events equals applying the rest.
        let mut incremental = wa.clone();
        incremental.apply_all(&b);
        prop_assert_eq!(&incremental, &direct);
    }

    #[test]
    fn views_are_a_pure_function_of_the_state((events, _replay) in events_and_replay()) {
        let world = WorldState::from_events(&events);
        prop_assert_eq!(view_bytes(&world), view_bytes(&world.clone()));
        // Through a serialised checkpoint, in memory and on disk.
        let text = serde_json::to_string(&world).unwrap();
        let back: WorldState = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &world);
        prop_assert_eq!(back.hash(), world.hash());
        prop_assert_eq!(view_bytes(&back), view_bytes(&world));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("world-checkpoint.json");
        world.save(&path).unwrap();
        let loaded = WorldState::load(&path).unwrap().unwrap();
        prop_assert_eq!(view_bytes(&loaded), view_bytes(&world));
    }
}

#[test]
fn empty_world_has_empty_views() {
    let world = WorldState::new();
    let views = world.views();
    assert_eq!(views.nodes, json!({}));
    assert_eq!(views.incidents, json!({}));
    assert_eq!(views.runtime_summary["last_event_at"], Value::Null);
    assert_eq!(merged(&world, &world), world);
}
