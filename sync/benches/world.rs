//! WorldState benchmark: `cargo bench -p sync --bench world`.
//!
//! Prints, for synthetic events built in memory (no disk; building them is not timed):
//! - world rebuild from `LABMESH_WORLD_BENCH_EVENTS` events (default 1,000,000): applying them
//!   all, then computing the five views; goal ≤ 5 s;
//! - incremental apply rate on top of that world for `LABMESH_WORLD_BENCH_INCREMENTAL` more
//!   events (default 200,000), a tenth of them late; goal ≥ 200,000 events/s;
//! - for context: views, hash, checkpoint serialisation and parse times of the rebuilt world.
//!
//! Each goal line gives the absolute figure and its ratio to the goal (> 1 is better). For a
//! smoke run: `LABMESH_WORLD_BENCH_EVENTS=100000 LABMESH_WORLD_BENCH_INCREMENTAL=20000`.
//!
//! The mix is a homelab's: mostly heartbeats and other types the world only notes as
//! `last_seen`, some health checks, deployments, remediations and availability changes, over 30
//! days, 20 nodes and 40 services, half the events carrying an `hlc`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};
use sync::event::{Event, Severity};
use sync::world::{Views, WorldState, ntp64_from_datetime};
use uuid::Uuid;

const NODES: usize = 20;
const SERVICES: usize = 40;
const CHUNK: usize = 50_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A tiny deterministic generator (xorshift64*): same events on every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Synth {
    gen_: Gen,
    start: DateTime<Utc>,
    span_ms: u64,
    total: u64,
    node_names: Vec<String>,
    service_names: Vec<String>,
}

impl Synth {
    fn new(total: usize) -> Self {
        Synth {
            gen_: Gen(0x9e37_79b9_7f4a_7c15),
            start: Utc.with_ymd_and_hms(2026, 4, 12, 0, 0, 0).unwrap(),
            span_ms: 30 * 24 * 3600 * 1000,
            total: total as u64,
            node_names: (0..NODES).map(|i| format!("node-{i:02}")).collect(),
            service_names: (0..SERVICES).map(|i| format!("svc-{i:02}")).collect(),
        }
    }

    /// Event number `seq`: times grow with `seq` (as a live mesh produces them), except `late`
    /// events which go back up to a week.
    fn event(&mut self, seq: u64, late: bool) -> Event {
        let g = &mut self.gen_;
        let mut ms = seq * self.span_ms / self.total.max(1) + g.next() % 1000;
        if late {
            ms = ms.saturating_sub(g.next() % (7 * 24 * 3600 * 1000));
        }
        let at = self.start + chrono::Duration::milliseconds(ms as i64);
        let node = g.below(NODES);
        let service = g.below(SERVICES);
        let roll = g.below(100);
        let (ty, severity) = match roll {
            0..=69 => ("heartbeat", Severity::Info),
            70..=73 => ("service_unhealthy", Severity::Error),
            74..=75 => ("healthcheck_failed", Severity::Warning),
            76..=79 => ("service_recovered", Severity::Info),
            80..=83 => ("deployment_started", Severity::Info),
            84..=85 => ("deployment_completed", Severity::Info),
            86..=87 => ("deployment_failed", Severity::Error),
            88..=89 => ("remediation_started", Severity::Info),
            90..=91 => ("remediation_completed", Severity::Info),
            92 => ("node_offline", Severity::Warning),
            93 => ("node_online", Severity::Info),
            _ => ("build_completed", Severity::Info),
        };
        let mut payload = Map::new();
        let mut correlation_id = String::new();
        if ty.starts_with("deployment_") || ty.starts_with("remediation_") {
            correlation_id = format!("deploy-{}", seq / 40 + g.below(4) as u64);
        }
        if ty == "deployment_failed" {
            payload.insert("stage".into(), "verify".into());
            payload.insert("error".into(), "port 1883 not bound".into());
            payload.insert(
                "diagnostic_files".into(),
                Value::from(vec![format!("/opt/homelab/logs/{correlation_id}.log")]),
            );
        }
        if ty.starts_with("node_") {
            payload.insert(
                "peer".into(),
                self.node_names[g.below(NODES)].clone().into(),
            );
        }
        if ty == "heartbeat" {
            payload.insert("load".into(), (g.below(400) as f64 / 100.0).into());
        }
        let mut extra = Map::new();
        if seq.is_multiple_of(2) {
            let t = ntp64_from_datetime(at);
            extra.insert("hlc".into(), format!("{t:016x}/{:x}", node + 1).into());
        }
        Event {
            id: Uuid::from_u64_pair(ms, seq),
            timestamp: at,
            node: self.node_names[node].clone(),
            event_type: ty.into(),
            severity,
            source: "bench".into(),
            service: self.service_names[service].clone(),
            correlation_id,
            payload,
            extra,
        }
    }
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn main() {
    let total = env_usize("LABMESH_WORLD_BENCH_EVENTS", 1_000_000);
    let incremental = env_usize("LABMESH_WORLD_BENCH_INCREMENTAL", 200_000);
    let mut synth = Synth::new(total + incremental);

    // Rebuild: apply every event, chunk by chunk (building a chunk is not timed).
    let mut world = WorldState::new();
    let mut apply_time = Duration::ZERO;
    let mut seq = 0u64;
    while (seq as usize) < total {
        let n = CHUNK.min(total - seq as usize);
        let chunk: Vec<Event> = (0..n).map(|i| synth.event(seq + i as u64, false)).collect();
        seq += n as u64;
        let ((), took) = time(|| world.apply_all(&chunk));
        apply_time += took;
    }
    let (views, views_time) = time(|| world.views());
    let (bytes, bytes_time) = time(|| {
        views
            .files()
            .iter()
            .map(|(_, v)| Views::to_bytes(v).len())
            .sum::<usize>()
    });
    let rebuild = apply_time + views_time + bytes_time;
    let incidents = views.incidents.as_object().map_or(0, |m| m.len());
    let deployments = views.deployments.as_object().map_or(0, |m| m.len());
    println!(
        "world rebuild, {total} events in memory: {:.2} s (apply {:.2} s, views {:.3} s, view bytes {:.3} s); goal <= 5 s, ratio {:.1}x",
        rebuild.as_secs_f64(),
        apply_time.as_secs_f64(),
        views_time.as_secs_f64(),
        bytes_time.as_secs_f64(),
        5.0 / rebuild.as_secs_f64(),
    );
    println!(
        "  world: {} records, {incidents} incidents, {deployments} deployments, {} KiB of view files",
        world.records().len(),
        bytes / 1024,
    );

    // Incremental: new events on the rebuilt world, one `apply` each; every tenth is late.
    let mut applied = 0usize;
    let mut inc_time = Duration::ZERO;
    while applied < incremental {
        let n = CHUNK.min(incremental - applied);
        let chunk: Vec<Event> = (0..n)
            .map(|i| {
                let s = seq + (applied + i) as u64;
                synth.event(s, s.is_multiple_of(10))
            })
            .collect();
        let ((), took) = time(|| {
            for ev in &chunk {
                world.apply(ev);
            }
        });
        inc_time += took;
        applied += n;
    }
    let rate = incremental as f64 / inc_time.as_secs_f64();
    println!(
        "incremental apply, {incremental} events on that world: {:.0} events/s ({:.2} µs/event); goal >= 200000/s, ratio {:.1}x",
        rate,
        inc_time.as_secs_f64() * 1e6 / incremental as f64,
        rate / 200_000.0,
    );

    // Context: what a tick and a checkpoint cost at this size.
    let (_, views_again) = time(|| world.views());
    let (hash, hash_time) = time(|| world.hash());
    let (text, save_time) = time(|| serde_json::to_vec(&world).unwrap());
    let (back, load_time) = time(|| serde_json::from_slice::<WorldState>(&text).unwrap());
    assert_eq!(back.hash(), hash);
    println!(
        "  views {:.3} s, hash {:.3} s, checkpoint {} MiB: serialise {:.3} s, parse {:.3} s",
        views_again.as_secs_f64(),
        hash_time.as_secs_f64(),
        text.len() / (1024 * 1024),
        save_time.as_secs_f64(),
        load_time.as_secs_f64(),
    );
}
