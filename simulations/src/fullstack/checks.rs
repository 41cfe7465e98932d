//! The invariants a run is held to and the figures it reports: the end-of-run checks
//! ([`Cluster::finish`]), the rule on duplicate notifications, and the HLC stamp check made on
//! every write.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use sha2::Digest;

use super::node::{Delivered, lock};
use super::run::{Cluster, Figures, FullstackConfig, Outcome, STABLE_VIEW_MS};

impl Cluster<'_> {
    /// A node's new stamp must be later than every stamp it holds that was within the HLC's
    /// 10-minute tolerance of its clock when it arrived (causality), and no later than its own
    /// clock or such a stamp (so the HLC reads this node's clock, not the process's).
    pub(super) fn check_stamp(
        &mut self,
        i: usize,
        store: &sync::EventStore,
        clock_ms: u64,
        hlc: &str,
    ) {
        const TOLERANCE_MS: u64 = 600_000;
        let Some(stamp) = hlc_ntp(hlc) else {
            self.clock_violations.push(format!(
                "{} stamped an unreadable HLC {hlc:?}",
                self.names[i]
            ));
            return;
        };
        // Within the tolerance of the node's clock when the stamp arrived, as the HLC decides
        // (a stamp refused then stays refused, though the clock may have come closer since).
        let arrived = std::mem::take(&mut lock(&self.probes[i]).arrived_ms);
        let mut held: Option<u64> = None;
        for (_, h) in store.sync_items(0) {
            let Some(s) = self.stamp_of(store, &h) else {
                continue;
            };
            let at = arrived
                .get(&h)
                .map_or(clock_ms, |&ms| u64::try_from(ms).unwrap_or(0));
            if ntp_ms(s) <= at + TOLERANCE_MS {
                held = held.max(Some(s));
            }
        }
        lock(&self.probes[i]).arrived_ms = arrived;
        if let Some(h) = held
            && stamp <= h
        {
            self.clock_violations.push(format!(
                "{} stamped {hlc}, not after {h:016x} which it holds",
                self.names[i]
            ));
        }
        let bound = held.map_or(0, ntp_ms).max(clock_ms) + 1_000;
        if ntp_ms(stamp) > bound {
            self.clock_violations.push(format!(
                "{} stamped {hlc}, ahead of its clock ({clock_ms} ms) and of what it holds",
                self.names[i]
            ));
        }
    }

    /// The HLC stamp of a held event: recorded when the run wrote it, else (an alerting
    /// engine's event, which moves HLCs too) read once from the store.
    fn stamp_of(&mut self, store: &sync::EventStore, hash: &[u8; 32]) -> Option<u64> {
        if let Some(s) = self.stamps.get(hash) {
            return Some(*s);
        }
        if let Some(s) = self.engine_stamps.get(hash) {
            return *s;
        }
        let stamp = store
            .read_by_hash(hash)
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|doc| hlc_ntp(doc.get("hlc")?.as_str()?));
        self.engine_stamps.insert(*hash, stamp);
        stamp
    }

    pub(super) fn finish(
        mut self,
        cfg: &FullstackConfig,
        figures: Figures,
        wall: std::time::Instant,
    ) -> Outcome {
        let mut violations = Vec::new();
        let since = self.window_start();
        let mut oldest_held_ms = None;
        let mut sets: Vec<(String, BTreeSet<[u8; 32]>)> = Vec::new();
        let mut events_by_source = BTreeMap::new();
        for (i, probe) in self.probes.iter().enumerate() {
            let Some(store) = lock(probe).store.clone() else {
                violations.push(format!("{} is not running at the end", self.names[i]));
                continue;
            };
            let set: BTreeSet<[u8; 32]> = store
                .sync_items(since)
                .into_iter()
                .map(|(_, h)| h)
                .collect();
            // The final set by the seeded part of each event id (the bytes carry HLC ids,
            // which are random per process, and the id's timestamp is virtual time).
            // Only the workload's events: what the agent writes itself (the alerting engine's
            // records, liveness transitions) follows chitchat's gossip order, which the seed
            // does not decide, and their ids come from the store's UUIDv7 context.
            let mut ids: Vec<String> = store
                .query(&sync::Query::default())
                .iter()
                .filter(|e| !e.source.starts_with("labmesh-"))
                .map(|e| super::run::seeded_part(&e.id))
                .collect();
            ids.sort();
            if sets.is_empty() {
                for e in store.query(&sync::Query::default()) {
                    *events_by_source.entry(e.source.to_string()).or_insert(0) += 1;
                }
            }
            self.trace
                .update(format!("final {} {}\n", self.names[i], ids.join(",")).as_bytes());
            if let Some((ms, _)) = store.sync_items(0).first() {
                let ms = i64::try_from(*ms).unwrap_or(i64::MAX);
                oldest_held_ms = Some(oldest_held_ms.map_or(ms, |o: i64| o.min(ms)));
            }
            sets.push((self.names[i].clone(), set));
        }
        if let Some((first_name, first)) = sets.first() {
            for (name, set) in &sets[1..] {
                if set != first {
                    violations.push(format!(
                        "event sets differ after heal: {first_name} holds {} events, {name} {} ({} only on {first_name}, {} only on {name})",
                        first.len(),
                        set.len(),
                        first.difference(set).count(),
                        set.difference(first).count()
                    ));
                }
            }
        }
        // The world is a function of the events (and of the snapshots of history that peers
        // merge): equal events, equal worlds.
        let worlds: Vec<(String, String)> = self
            .probes
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                Some((
                    self.names[i].clone(),
                    lock(p).world.as_ref()?.upgrade()?.short_hash(),
                ))
            })
            .collect();
        let sets_equal = sets.windows(2).all(|w| w[0].1 == w[1].1);
        if sets_equal
            && let Some((first_name, first)) = worlds.first()
            && let Some((name, other)) = worlds.iter().find(|(_, h)| h != first)
        {
            violations.push(format!(
                "world hashes differ with equal event sets: {first_name} {first}, {name} {other}"
            ));
        }
        for (hash, what) in self.in_window(since) {
            for (name, set) in &sets {
                if !set.contains(hash) {
                    violations.push(format!("acknowledged event {what} missing on {name}"));
                }
            }
        }
        violations.extend(self.clock_violations.iter().take(5).cloned());
        violations.extend(self.alerter_violations.iter().cloned());
        violations.extend(duplicate_notifications(&self.sent, &self.repairs));
        let alerters_at_end = self.alerters.as_ref().map(|(_, a)| a.clone());
        if !alerters_at_end
            .as_ref()
            .is_some_and(|a| a.iter().all(|c| c.len() == 1))
        {
            violations.push(format!(
                "no single alerter per component at the end (views stable for {STABLE_VIEW_MS} ms: {:?})",
                alerters_at_end
            ));
        }
        if cfg.loss <= 0.05 && self.false_dead > 0 {
            violations.push(format!(
                "{} peer(s) declared dead while reachable at {:.0} % loss",
                self.false_dead,
                cfg.loss * 100.0
            ));
        }
        if figures.convergence_ms.is_none() {
            violations.push(format!(
                "no convergence within {} s",
                cfg.settle_limit.as_secs()
            ));
        }
        let virtual_ms = self.now_ms();
        let bytes: u64 = self
            .counters
            .iter()
            .map(|c| c.bytes_sent.load(Ordering::Relaxed))
            .sum();
        let lost = self
            .counters
            .iter()
            .map(|c| c.datagrams_lost.load(Ordering::Relaxed))
            .sum();
        let sessions = self.probes.iter().map(|p| lock(p).sessions_completed).sum();
        let opened_with = self
            .names
            .iter()
            .zip(&self.probes)
            .map(|(n, p)| (n.clone(), lock(p).opened_with.clone()))
            .collect();
        let outside_window = self.acknowledged.len() - self.in_window(since).count();
        let clock_span_ms = match (
            self.written_ms.values().min(),
            self.written_ms.values().max(),
        ) {
            (Some(lo), Some(hi)) => u64::try_from(hi - lo).unwrap_or(0),
            _ => 0,
        };
        let first_violation = violations.first().cloned();
        if let Some(v) = first_violation {
            violations[0] = format!("seed {}: {v} (reproduce: {})", cfg.seed, cfg.reproduce());
        }
        let mut spread = self.spread_ms.clone();
        spread.sort_unstable();
        Outcome {
            scenario: cfg.label(),
            nodes: cfg.nodes,
            seed: cfg.seed,
            loss: cfg.loss,
            join_ms: figures.join_ms,
            detection_ms: figures.detection_ms,
            convergence_ms: figures.convergence_ms,
            events_acknowledged: self.acknowledged.len(),
            dissemination_p50_ms: crate::sim::quantile(&spread, 0.5),
            dissemination_p99_ms: crate::sim::quantile(&spread, 0.99),
            bytes_per_node_per_s: bytes as f64
                / self.names.len() as f64
                / (virtual_ms.max(1) as f64 / 1000.0),
            datagrams_lost: lost,
            false_dead: self.false_dead,
            false_suspicions: self.false_suspicions,
            sessions_completed: sessions,
            opened_with,
            virtual_ms,
            wall_ms: wall.elapsed().as_millis() as u64,
            trace_hash: hex::encode(self.trace.finalize()),
            notifications: self.sent.into_iter().map(|(d, _)| d).collect(),
            alerter_checks: self.alerter_checks,
            alerters_during_fault: self.alerters_during_fault,
            alerters_at_end,
            window_start_ms: since,
            events_by_source,
            outside_window,
            clock_span_ms,
            oldest_held_ms,
            violations,
        }
    }
}

/// No `(episode, receiver, stage)` accepted twice, unless a copy was sent while a partition or
/// one-way cut was in force or a repair falls between the copies (the discrete simulation's
/// rule in `report.rs`): each side of a split has its own alerter and cannot see the other's
/// ledger. A copy whose sender died before it recorded the outcome (an orphan) allows one more,
/// as in `report.rs`: nobody can know that it arrived.
fn duplicate_notifications(sent: &[(Delivered, bool)], repairs: &[u64]) -> Vec<String> {
    type Key<'a> = (&'a str, &'a str, &'a str);
    let mut by_key: BTreeMap<Key<'_>, Vec<&(Delivered, bool)>> = BTreeMap::new();
    for s in sent.iter().filter(|(d, _)| d.accepted) {
        by_key
            .entry((&s.0.episode, &s.0.receiver, &s.0.stage))
            .or_default()
            .push(s);
    }
    let mut out = Vec::new();
    for ((episode, receiver, stage), sends) in by_key {
        let orphans = sends.iter().filter(|(d, _)| d.orphan).count();
        if sends.len() < 2 + orphans {
            continue;
        }
        let first = sends[0].0.at_ms;
        let last = sends[sends.len() - 1].0.at_ms;
        let healed_between = repairs.iter().any(|&h| h >= first && h <= last);
        if sends.iter().any(|(_, split)| *split) || healed_between {
            continue;
        }
        let who: Vec<String> = sends
            .iter()
            .map(|(d, _)| format!("{}@{}ms", d.sender, d.at_ms))
            .collect();
        out.push(format!(
            "notification sent {} times for episode {episode} ({}) to {receiver} ({stage}): {}",
            sends.len(),
            sends[0].0.rule,
            who.join(", ")
        ));
    }
    out
}

/// The time of an HLC stamp (`<NTP64 hex>/<id>`).
pub(super) fn hlc_ntp(stamp: &str) -> Option<u64> {
    u64::from_str_radix(stamp.get(..16)?, 16).ok()
}

/// NTP64 (32.32 fixed point seconds since the Unix epoch) in ms.
fn ntp_ms(ntp: u64) -> u64 {
    (ntp >> 32) * 1000 + (((ntp & 0xffff_ffff) * 1000) >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(sender: &str, at_ms: u64, split: bool) -> (Delivered, bool) {
        let d = Delivered {
            at_ms,
            sender: sender.into(),
            receiver: "phone".into(),
            episode: "e1".into(),
            rule: "build_failed".into(),
            stage: "Firing".into(),
            accepted: true,
            orphan: false,
        };
        (d, split)
    }

    #[test]
    fn a_notification_told_twice_is_a_violation_unless_a_partition_explains_it() {
        let twice = [sent("n0", 1_000, false), sent("n1", 5_000, false)];
        let found = duplicate_notifications(&twice, &[]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("n0@1000ms, n1@5000ms"), "{found:?}");
        // Sent while a partition was in force, or with a heal between the copies: allowed.
        let split = [sent("n0", 1_000, true), sent("n2", 1_000, true)];
        assert!(duplicate_notifications(&split, &[]).is_empty());
        assert!(duplicate_notifications(&twice, &[3_000]).is_empty());
        // A delivery the receiver refused told nobody anything.
        let mut refused = twice.clone();
        refused[0].0.accepted = false;
        assert!(duplicate_notifications(&refused, &[]).is_empty());
        // The sender died before it learnt the first copy arrived: one more is allowed, two
        // are not.
        let mut orphaned = twice.to_vec();
        orphaned[0].0.orphan = true;
        assert!(duplicate_notifications(&orphaned, &[]).is_empty());
        orphaned.push(sent("n2", 9_000, false));
        assert_eq!(duplicate_notifications(&orphaned, &[]).len(), 1);
    }
}
