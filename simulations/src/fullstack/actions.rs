//! What a script does to a running cluster: partitions, one-way cuts and heals, crashes and
//! restarts, and the writes whose spread the run measures.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::Rng;
use sync::Severity;

use super::checks::hlc_ntp;
use super::node::lock;
use super::run::{Cluster, Fault, seeded_part};

impl Cluster<'_> {
    pub(super) fn all_pairs(&self, a: &[usize], b: &[usize]) -> BTreeSet<(usize, usize)> {
        let mut pairs = BTreeSet::new();
        for &x in a {
            for &y in b {
                pairs.insert((x, y));
                pairs.insert((y, x));
            }
        }
        pairs
    }

    pub(super) fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.sim.partition(self.ips[x], self.ips[y]);
            }
        }
        let pairs = self.all_pairs(a, b);
        let from_ms = self.now_ms();
        self.faults.push(Fault {
            pairs,
            from_ms,
            to_ms: None,
        });
        self.partitioned = true;
        self.note(&format!("partition {a:?} | {b:?}"));
    }

    pub(super) fn heal(&mut self, a: &[usize], b: &[usize]) {
        self.keep_fault_alerters();
        self.partitioned = false;
        self.repairs.push(self.now_ms());
        for &x in a {
            for &y in b {
                self.sim.repair(self.ips[x], self.ips[y]);
            }
        }
        self.end_faults();
        self.note(&format!("heal {a:?} | {b:?}"));
    }

    pub(super) fn end_faults(&mut self) {
        let now = self.now_ms();
        for f in &mut self.faults {
            f.to_ms.get_or_insert(now);
        }
    }

    pub(super) fn crash(&mut self, i: usize) {
        let name = self.names[i].clone();
        self.sim.crash(name.as_str());
        {
            let mut probe = lock(&self.probes[i]);
            probe.store = None;
            probe.world = None;
            probe.role = None;
        }
        self.running[i] = false;
        let others: Vec<usize> = (0..self.names.len()).filter(|&o| o != i).collect();
        let pairs = self.all_pairs(&[i], &others);
        let from_ms = self.now_ms();
        self.faults.push(Fault {
            pairs,
            from_ms,
            to_ms: None,
        });
        self.note(&format!("crash {name}"));
    }

    pub(super) fn restart(&mut self, i: usize) {
        let name = self.names[i].clone();
        self.keep_fault_alerters();
        self.sim.bounce(name.as_str());
        self.running[i] = true;
        // Only the crash's own window: a partition still in force stays open.
        let now = self.now_ms();
        for f in &mut self.faults {
            if f.pairs.iter().all(|&(a, b)| a == i || b == i) {
                f.to_ms.get_or_insert(now);
            }
        }
        self.note(&format!("restart {name}"));
    }

    /// Writes one event on node `i` through its store (the agent's append path: validated,
    /// fsynced, indexed, then pushed by the sync loop). Ids come from the run's RNG and
    /// timestamps from the node's clock, so the same seed writes the same events.
    pub(super) fn write(&mut self, i: usize) -> Result<(), String> {
        self.write_kind(i, "sim_write", Severity::Info)
    }

    /// [`Cluster::write`] with an event type and severity of the caller's choice (an event a
    /// shipped alerting rule matches).
    pub(super) fn write_kind(
        &mut self,
        i: usize,
        event_type: &str,
        severity: Severity,
    ) -> Result<(), String> {
        let mut event = sync::NewEvent::new(event_type, severity, "fullstack");
        event.payload.insert("seq".into(), (self.writes + 1).into());
        self.write_new(i, event)
    }

    /// Writes `new` on node `i` (see [`Cluster::write`]); a node whose store is not open (down,
    /// or starting) writes nothing.
    pub(super) fn write_new(&mut self, i: usize, new: sync::NewEvent) -> Result<(), String> {
        // Drawn before the store is looked at, so that a node still opening its store after a
        // restart does not shift the rest of the seed's schedule.
        let random: [u8; 10] = self.rng.random();
        let Some(store) = lock(&self.probes[i]).store.clone() else {
            return Ok(());
        };
        let at = sync::Clock::now(self.clocks[i].as_ref());
        let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
        self.writes += 1;
        let event_type = new.event_type.clone();
        let hlc = store.stamp_hlc();
        self.check_stamp(i, &store, ms, &hlc);
        // The agent's own event constructor, with an id from the seed: the store's UUIDv7
        // context would take randomness from the OS and break reproducibility.
        let id = uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid();
        let mut event = new
            .into_event_with_id(&self.names[i], at, id)
            .map_err(|e| format!("{} wrote an invalid event: {e}", self.names[i]))?;
        event.extra.insert("hlc".into(), hlc.clone().into());
        let appended = store
            .append_batch(std::slice::from_ref(&event))
            .map_err(|e| format!("{} cannot write: {e}", self.names[i]))?;
        for a in appended {
            self.acknowledged
                .insert(a.entry.hash, format!("{} {}", self.names[i], event.id));
            self.written_ms.insert(a.entry.hash, at.timestamp_millis());
            if let Some(stamp) = hlc_ntp(&hlc) {
                self.stamps.insert(a.entry.hash, stamp);
            }
            if !self.partitioned && self.running.iter().all(|r| *r) {
                self.spreading.push((a.entry.hash, self.now_ms()));
            }
        }
        let line = format!(
            "write {} {event_type} {}",
            self.names[i],
            seeded_part(&event.id)
        );
        self.note(&line);
        Ok(())
    }

    /// One write on each running node in `on`, `count` rounds, `every` apart.
    pub(super) fn write_rounds(
        &mut self,
        on: &[usize],
        count: usize,
        every: Duration,
    ) -> Result<(), String> {
        for _ in 0..count {
            for &i in on {
                if self.running[i] {
                    self.write(i)?;
                }
            }
            self.run_for(every)?;
        }
        Ok(())
    }
}
