//! Figures and invariants of one run.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::run::Sim;
use crate::sim::{Ms, quantile};

/// One event's spread: when it was written, how many nodes hold it, when the last got it.
#[derive(Debug, Clone)]
pub struct Track {
    pub emitted: Ms,
    pub holders: usize,
    pub full_at: Option<Ms>,
    /// Written while every node was up and no split was in force.
    pub whole: bool,
}

/// `(episode, receiver, stage)`: `firing:<severity>` or `resolved`, the ledger's unit.
pub type NoteKey = (String, String, String);

/// A notification that reached its receiver and was news to it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub at: Ms,
    pub node: usize,
    pub key: NoteKey,
    /// A partition or one-way cut was in force when it was sent.
    pub split: bool,
    /// Its sender crashed before recording the outcome: the ledger allows one more copy.
    pub orphan: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub nodes: usize,
    pub virtual_s: u64,
    pub trace_hash: String,
    pub messages_delivered: u64,
    pub events: usize,
    /// Events that never reached every node.
    pub events_not_everywhere: usize,
    /// Write to last node, over events written while the mesh was whole (every node up, no
    /// split); events written during a fault are covered by `convergence_after_heal_ms`.
    pub dissemination_p50_ms: Option<Ms>,
    pub dissemination_p99_ms: Option<Ms>,
    /// From the last heal or restart until every event written before it was everywhere.
    pub convergence_after_heal_ms: Option<Ms>,
    pub bytes_per_node_per_s: f64,
    /// From a crash, partition or cut to a node's membership view dropping the peer.
    pub detection_p50_ms: Option<Ms>,
    pub detection_max_ms: Option<Ms>,
    /// Peers declared dead while up and reachable (any loss; violations only at <= 5 %).
    pub false_suspicions: u64,
    /// Notifications that reached a receiver and were news to it.
    pub notifications: usize,
    /// Sends a receiver refused (outages).
    pub notifications_refused: u64,
    /// Copies beyond the first that reached a receiver (each allowed: across a partition, or
    /// the one the ledger permits after a send without recorded outcome).
    pub duplicate_notifications: usize,
    /// Reconciliation sessions started, all nodes together.
    pub sessions: u64,
    pub sync_errors: u64,
    pub dropped_by_cut: u64,
    pub dropped_by_loss: u64,
    pub wall_ms: u128,
    pub violations: Vec<String>,
    /// (virtual s, event copies missing across all nodes) over the run, for the plot.
    #[serde(skip)]
    pub series: Vec<(u64, u64)>,
}

impl Report {
    pub fn build(mut sim: Sim, delivered: u64, trace_hash: String, wall: Duration) -> Report {
        let mut violations = std::mem::take(&mut sim.violations);
        violations.extend(final_invariants(&sim));
        let mut times: Vec<Ms> = sim
            .tracks
            .values()
            .filter(|t| t.whole)
            .filter_map(|t| t.full_at.map(|f| f - t.emitted))
            .collect();
        times.sort_unstable();
        let convergence = sim.repairs.last().and_then(|&h| {
            let mut worst = 0;
            for t in sim.tracks.values().filter(|t| t.emitted <= h) {
                worst = worst.max(t.full_at?.saturating_sub(h));
            }
            Some(worst)
        });
        let virtual_s = (sim.now / 1000).max(1);
        let mut detections = sim.detections.clone();
        detections.sort_unstable();
        let bytes: u64 = sim.nodes.iter().map(|n| n.bytes_sent).sum();
        Report {
            scenario: sim.s.name.clone(),
            seed: sim.seed,
            nodes: sim.s.nodes,
            virtual_s,
            trace_hash,
            messages_delivered: delivered,
            events: sim.tracks.len(),
            events_not_everywhere: sim.tracks.values().filter(|t| t.full_at.is_none()).count(),
            dissemination_p50_ms: quantile(&times, 0.5),
            dissemination_p99_ms: quantile(&times, 0.99),
            convergence_after_heal_ms: convergence,
            bytes_per_node_per_s: bytes as f64 / sim.s.nodes as f64 / virtual_s as f64,
            detection_p50_ms: quantile(&detections, 0.5),
            detection_max_ms: detections.last().copied(),
            false_suspicions: sim.false_suspicions,
            notifications: sim.sent.len(),
            notifications_refused: sim.refused,
            duplicate_notifications: {
                let mut per_key: BTreeMap<&NoteKey, usize> = BTreeMap::new();
                for s in &sim.sent {
                    *per_key.entry(&s.key).or_default() += 1;
                }
                per_key.values().map(|n| n - 1).sum()
            },
            sessions: sim
                .nodes
                .iter()
                .flat_map(|n| n.core.stats.values())
                .map(|st| st.sessions_started)
                .sum(),
            sync_errors: sim.nodes.iter().map(|n| n.sync_errors).sum(),
            dropped_by_cut: sim.net.dropped_cut,
            dropped_by_loss: sim.net.dropped_loss,
            wall_ms: wall.as_millis(),
            violations,
            series: std::mem::take(&mut sim.series),
        }
    }

    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The line printed for a failing seed: the seed, the first violation, how to rerun.
    pub fn failure(&self) -> Option<String> {
        self.violations.first().map(|v| {
            format!(
                "FAIL {} seed {}: {v} ({} violation(s); rerun: {})",
                self.scenario,
                self.seed,
                self.violations.len(),
                self.rerun()
            )
        })
    }

    /// The one command that reruns exactly this seed.
    pub fn rerun(&self) -> String {
        format!(
            "cargo run --release -p simulations -- run {} --seeds {}",
            self.scenario, self.seed
        )
    }
}

/// Checked once the run (with its quiet tail) is over.
fn final_invariants(sim: &Sim) -> Vec<String> {
    let mut out = Vec::new();
    let up: Vec<_> = sim.nodes.iter().filter(|n| n.up).collect();
    if let Some(first) = up.first() {
        for n in &up[1..] {
            if n.store.fingerprint != first.store.fingerprint {
                let example = first
                    .store
                    .first_difference(&n.store)
                    .and_then(|h| Some((sim.blobs.event(&h)?, sim.tracks.get(&h)?.clone())))
                    .map(|(e, t)| {
                        format!(
                            "; e.g. {} by {} written at t={}s, on {} nodes",
                            e.event_type,
                            e.node,
                            t.emitted / 1000,
                            t.holders
                        )
                    })
                    .unwrap_or_default();
                out.push(format!(
                    "event sets differ after heal: {} holds {} events ({}), {} holds {} ({}){example}",
                    first.name,
                    first.store.len(),
                    first.store.fingerprint.to_gossip(),
                    n.name,
                    n.store.len(),
                    n.store.fingerprint.to_gossip()
                ));
                break;
            }
        }
        let h0 = first.world.hash();
        if let Some(n) = up[1..].iter().find(|n| n.world.hash() != h0) {
            out.push(format!(
                "world hashes differ: {} {} vs {} {}",
                first.name,
                hex::encode(&h0[..8]),
                n.name,
                hex::encode(&n.world.hash()[..8])
            ));
        }
    }
    out.extend(acknowledged_everywhere(sim, &up));
    out.extend(notifications(sim));
    out
}

/// Every event some node stored (its write was acknowledged) is on every up node, unless every
/// node holding it is down (it cannot have spread, and is not lost: it is on that node's disk).
fn acknowledged_everywhere(sim: &Sim, up: &[&crate::node::SimNode]) -> Option<String> {
    let n_up = up.len();
    let mut missing = sim
        .tracks
        .iter()
        .filter(|(_, t)| t.holders < sim.s.nodes)
        .filter(|(h, _)| {
            let on_up = up.iter().filter(|n| n.store.contains(h)).count();
            on_up > 0 && on_up < n_up
        });
    let (hash, t) = missing.next()?;
    let lacking: Vec<&str> = up
        .iter()
        .filter(|n| !n.store.contains(hash))
        .map(|n| n.name.as_str())
        .collect();
    let what = sim
        .blobs
        .event(hash)
        .map(|e| format!("{} by {}", e.event_type, e.node))
        .unwrap_or_default();
    Some(format!(
        "acknowledged event {what} written at t={}s is missing on {} after heal ({} more events missing somewhere)",
        t.emitted / 1000,
        lacking.join(", "),
        missing.count()
    ))
}

/// No (episode, receiver, stage) reaches its receiver twice, except copies that straddle a
/// partition (each side has its alerter) and the one extra copy the ledger allows per send
/// whose sender died before recording the outcome (ALGORITHM.md, "What is guaranteed"). And
/// every attempted one reaches it at least once unless it was given up.
fn notifications(sim: &Sim) -> Vec<String> {
    let mut out = Vec::new();
    let mut by_key: BTreeMap<&NoteKey, Vec<&Sent>> = BTreeMap::new();
    for s in &sim.sent {
        by_key.entry(&s.key).or_default().push(s);
    }
    let arrived = |k: &NoteKey| by_key.contains_key(k);
    for key in sim.attempted.keys() {
        if sim.owed(key, &arrived) {
            out.push(format!(
                "notification never arrived: episode {} to {} ({})",
                key.0, key.1, key.2
            ));
        }
    }
    for (key, sends) in by_key {
        let orphans = sends.iter().filter(|s| s.orphan).count();
        if sends.len() < 2 + orphans {
            continue;
        }
        let first = sends[0].at;
        let last = sends[sends.len() - 1].at;
        let healed_between = sim.heals.iter().any(|&h| h >= first && h <= last);
        if sends.iter().any(|s| s.split) || healed_between {
            continue;
        }
        let who: Vec<String> = sends
            .iter()
            .map(|s| format!("{}@{}s", sim.nodes[s.node].name, s.at / 1000))
            .collect();
        out.push(format!(
            "notification sent {} times for episode {} to {} ({}): {}",
            sends.len(),
            key.0,
            key.1,
            key.2,
            who.join(", ")
        ));
    }
    out
}
