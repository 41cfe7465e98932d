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

/// A notification that was news to its receiver: `(episode, receiver, status)`.
#[derive(Debug, Clone)]
pub struct Sent {
    pub at: Ms,
    pub node: usize,
    pub key: (String, String, String),
    /// A partition or one-way cut was in force when it was sent.
    pub split: bool,
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
    pub notifications: usize,
    /// Reconciliation sessions started, all nodes together.
    pub sessions: u64,
    pub sync_errors: u64,
    pub dropped_by_cut: u64,
    pub dropped_by_loss: u64,
    pub wall_ms: u128,
    pub violations: Vec<String>,
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
            notifications: sim.sent.len(),
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
        }
    }

    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The line printed for a failing seed: the seed, the first violation, how to rerun.
    pub fn failure(&self) -> Option<String> {
        self.violations.first().map(|v| {
            format!(
                "FAIL {} seed {}: {v} ({} violation(s); rerun: cargo run -p simulations -- run {} --seeds {}..{})",
                self.scenario,
                self.seed,
                self.violations.len(),
                self.scenario,
                self.seed,
                self.seed
            )
        })
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
    // No (episode, receiver, status) announced twice, unless the copies straddle a split.
    let mut by_key: BTreeMap<&(String, String, String), Vec<&Sent>> = BTreeMap::new();
    for s in &sim.sent {
        by_key.entry(&s.key).or_default().push(s);
    }
    for (key, sends) in by_key {
        if sends.len() < 2 {
            continue;
        }
        let first = sends[0].at;
        let last = sends[sends.len() - 1].at;
        let healed_between = sim.repairs.iter().any(|&h| h >= first && h <= last);
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
