//! The sync driver's schedule, as the agent runs it: eager push happens on write (`run.rs`);
//! here each tick hands every node's view to the shipping `sync::schedule::Scheduler`, which
//! expires sessions and starts the ones due. Also the alerter check.

use sync::reconcile::Outbox;
use sync::schedule::PeerSight;

use crate::node::Source;
use crate::run::Sim;

impl Sim {
    /// What the agent's sync driver does every tick, through the same scheduler: expire
    /// sessions, reconcile with peers whose fingerprint has differed long enough, anti-entropy
    /// with one random live peer now and then, at most `max_sessions` at once.
    pub(crate) fn tick(&mut self) {
        let n = self.s.nodes;
        let fps: Vec<_> = self
            .nodes
            .iter()
            .map(|x| x.store.fingerprint.clone())
            .collect();
        let epochs: Vec<u64> = self.nodes.iter().map(|x| x.epoch).collect();
        for i in 0..n {
            if !self.nodes[i].up {
                continue;
            }
            let mut out = Outbox::default();
            let Sim {
                nodes,
                names,
                blobs,
                view,
                rng,
                now,
                ..
            } = self;
            let row = &view[i];
            let peers = (0..n)
                .filter(move |&j| j != i && row[j])
                .map(|j| PeerSight {
                    name: names[j].as_str(),
                    generation: epochs[j],
                    fingerprint: Some(&fps[j]),
                });
            let node = &mut nodes[i];
            let wall = node.now(*now);
            let src = Source {
                store: &node.store,
                blobs,
            };
            let report = node.schedule.tick(
                &mut node.core,
                &mut out,
                &src,
                &names[i],
                &fps[i],
                peers,
                *now,
                wall,
                rng,
            );
            node.sync_errors += report.failed.len() as u64;
            self.perform(i, out, None);
        }
    }

    /// At most one alerter per connected component, once membership has been stable for
    /// the detection delay plus the election's settle time.
    pub(crate) fn check_alerters(&mut self, when: &str) {
        if !self.s.alerting || self.now < self.last_membership + self.s.detect_ms + 60_000 {
            return;
        }
        let n = self.s.nodes;
        let comps = crate::sim::components(
            n,
            |i| self.nodes[i].up,
            |a, b| self.view[a][b] && self.view[b][a],
        );
        for comp in comps {
            let alerters: Vec<&str> = comp
                .iter()
                .filter(|&&i| {
                    let node = &self.nodes[i];
                    node.engine.role(node.now(self.now)) == alerting::Role::Alerter
                })
                .map(|&i| self.nodes[i].name.as_str())
                .collect();
            if let Some(t) = comp.iter().find(|&&i| {
                let node = &self.nodes[i];
                node.transient && alerters.contains(&node.name.as_str())
            }) {
                let msg = format!(
                    "t={}s {when}: transient node {} is the alerter",
                    self.now / 1000,
                    self.nodes[*t].name
                );
                self.violations.push(msg);
            }
            if alerters.len() > 1 {
                let msg = format!(
                    "t={}s {when}: {} alerters in one component: {}",
                    self.now / 1000,
                    alerters.len(),
                    alerters.join(", ")
                );
                self.violations.push(msg);
            }
        }
    }
}
