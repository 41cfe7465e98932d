//! The sync driver's schedule, as the agent's `node/src/sync_driver.rs` runs it: eager push
//! happens on write (`run.rs`); here are the per-tick decisions (session expiry, reconcile with
//! a peer whose fingerprint differs, periodic anti-entropy) and the alerter check.

use rand::Rng;
use rand::seq::SliceRandom;

use crate::node::{Source, SyncOut};
use crate::run::{ANTI_ENTROPY_MS, SESSION_TIMEOUT_MS, Sim};

impl Sim {
    /// What the agent's sync driver does every tick: expire sessions, start one with peers
    /// whose fingerprint has differed long enough (2 s for the smaller name, 6 s for the
    /// other), and anti-entropy with one random live peer every 5 min.
    pub(crate) fn tick(&mut self) {
        let n = self.s.nodes;
        let fps: Vec<_> = self
            .nodes
            .iter()
            .map(|x| x.store.fingerprint.clone())
            .collect();
        let all_equal = fps.windows(2).all(|w| w[0] == w[1]);
        for i in 0..n {
            if !self.nodes[i].up {
                continue;
            }
            let now = self.now;
            let differ_ms = self.s.differ_delay_ms;
            let node = &mut self.nodes[i];
            node.core.expire(now, SESSION_TIMEOUT_MS);
            let mut due = Vec::new();
            if all_equal {
                node.differ_since.clear();
            } else {
                for j in (0..n).filter(|&j| j != i) {
                    if !self.view[i][j] || fps[j] == fps[i] {
                        node.differ_since.remove(&j);
                        continue;
                    }
                    let since = *node.differ_since.entry(j).or_insert(now);
                    let wait = if i < j { differ_ms } else { differ_ms * 3 };
                    let recent = node.last_session.get(&j).is_some_and(|t| now - t < wait);
                    if now - since >= wait && !recent {
                        due.push(j);
                    }
                }
            }
            if now.saturating_sub(node.last_anti_entropy) >= ANTI_ENTROPY_MS {
                let live: Vec<usize> = (0..n).filter(|&j| j != i && self.view[i][j]).collect();
                if !live.is_empty() {
                    node.last_anti_entropy = now;
                    due.push(live[self.rng.random_range(0..live.len())]);
                }
            }
            // The heal herd: after a split heals, every node differs from every peer on the
            // other side, ~N²/2 sessions at once. A few at a time, in random order (so the
            // smallest names are not everyone's first pick), and the fingerprints that match
            // after those sessions spare the rest.
            if self.s.max_sessions > 0 {
                let room = self
                    .s
                    .max_sessions
                    .saturating_sub(self.nodes[i].core.sessions_in_flight());
                if due.len() > room {
                    due.shuffle(&mut self.rng);
                    due.truncate(room);
                }
            }
            for j in due {
                self.start_session(i, j);
            }
        }
    }

    fn start_session(&mut self, i: usize, j: usize) {
        let peer = self.nodes[j].name.clone();
        let node = &mut self.nodes[i];
        if node.core.in_session_with(&peer) {
            return;
        }
        let mut out = SyncOut::default();
        let src = Source {
            store: &node.store,
            blobs: &self.blobs,
        };
        match node.core.start(&mut out, &src, &peer, 0, self.now) {
            Ok(_) => {
                node.last_session.insert(j, self.now);
                self.perform(i, out, None);
            }
            Err(_) => node.sync_errors += 1,
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
