//! Per-peer liveness, derived from what chitchat sees: a pure state machine fed with
//! observations and a clock reading (milliseconds from any monotonic origin), so tests and the
//! simulator drive it without a network.
//!
//! States:
//! - `alive`: chitchat's phi-accrual detector considers the node live and its heartbeat moved
//!   recently;
//! - `suspect`: still live for chitchat, but no heartbeat change for `suspect_after` (an early
//!   warning: a few gossip rounds missed);
//! - `dead`: chitchat's detector declared it dead (phi above the threshold);
//! - `offline`: dead for longer than `offline_after`; for `transient` nodes (laptops) this is
//!   the normal state when they are away;
//! - `left`: the node announced a graceful shutdown (`status = left` in its key-values).
//!
//! A node that restarts comes back with a higher chitchat generation; the tracker follows the
//! highest generation per node name, so old generations never show as separate nodes.
//!
//! Transitions that become events: first sight of a node never known before → `node_joined`;
//! → `offline` → `node_offline`; `offline`/`left` → `alive` → `node_online`; → `left` →
//! `node_left`. Brief `dead` spells that recover before `offline_after` write nothing: they are
//! noise, not news. Dedup rule: only the live node with the smallest name (other than the
//! subject) records a transition, so a 5-node mesh writes one event, not four; each side of a
//! partition records its own (a duplicate is preferred to a miss).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    Alive,
    Suspect,
    Dead,
    Offline,
    Left,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Dead => "dead",
            Liveness::Offline => "offline",
            Liveness::Left => "left",
        }
    }

    /// Alive or suspect: reachable as far as membership knows.
    pub fn is_up(self) -> bool {
        matches!(self, Liveness::Alive | Liveness::Suspect)
    }
}

/// Settings; each field's doc says what it trades.
#[derive(Debug, Clone)]
pub struct LivenessConfig {
    /// No heartbeat change for this long marks a live node `suspect`. Shorter warns earlier but
    /// flaps on a busy Wi-Fi link; longer hides real trouble. Default 5 gossip intervals (1.5 s).
    pub suspect_after: Duration,
    /// Dead for this long becomes `offline` (and writes `node_offline`). Shorter reports outages
    /// sooner; longer keeps a reboot from paging. Default 30 s.
    pub offline_after: Duration,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            suspect_after: Duration::from_millis(1500),
            offline_after: Duration::from_secs(30),
        }
    }
}

/// What chitchat knows about one (node, generation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub node: String,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    /// Live according to chitchat's failure detector (which hears each node only from itself,
    /// see `gossip_trust`), or vouched for (see [`vouch`]).
    pub live: bool,
    /// Up only because most of the other nodes this observer hears say they hear it.
    pub vouched: bool,
    pub heartbeat: u64,
    pub key_values: BTreeMap<String, String>,
}

/// The names in a node's `reach` key.
fn reach(key_values: &BTreeMap<String, String>) -> BTreeSet<&str> {
    key_values
        .get(crate::keys::REACH)
        .map(|r| r.split(',').filter(|n| !n.is_empty()).collect())
        .unwrap_or_default()
}

/// Marks up the nodes this observer does not hear itself but more than half of the other live
/// nodes it hears do (by their own `reach` key, which only they can publish). A link that
/// fails between two nodes, even one way, makes neither dead while others still hear both; and
/// a lying member cannot keep a dead node alive unless it is most of what the observer hears
/// (in a mesh of three, it is: see mesh/ALGORITHM.md, *Trust model*).
pub fn vouch(observations: &mut [Observation]) {
    let witnesses: Vec<(String, BTreeSet<String>)> = observations
        .iter()
        .filter(|o| o.live)
        .map(|o| {
            let heard = reach(&o.key_values)
                .into_iter()
                .map(str::to_owned)
                .collect();
            (o.node.clone(), heard)
        })
        .collect();
    for o in observations.iter_mut().filter(|o| !o.live) {
        let others: Vec<&BTreeSet<String>> = witnesses
            .iter()
            .filter(|(name, _)| *name != o.node)
            .map(|(_, heard)| heard)
            .collect();
        let yes = others.iter().filter(|h| h.contains(&o.node)).count();
        if yes > 0 && yes * 2 > others.len() {
            o.live = true;
            o.vouched = true;
        }
    }
}

/// One node as this observer sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub node: String,
    pub liveness: Liveness,
    /// Milliseconds since the node's heartbeat last moved (as seen here).
    pub last_heartbeat_age_ms: u64,
    /// Milliseconds in the current state.
    pub since_ms: u64,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    pub transient: bool,
    /// Up only because most of the other nodes this observer hears say they hear it (this
    /// observer cannot reach it itself: a broken link worth a look).
    pub vouched: bool,
    pub key_values: BTreeMap<String, String>,
}

/// A change of state, and whether this observer is the one that records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub node: String,
    pub from: Option<Liveness>,
    pub to: Liveness,
    /// The event type to record (`node_joined`, `node_offline`, `node_online`, `node_left`), if
    /// the transition is news.
    pub event: Option<&'static str>,
    /// True when this observer is the smallest-named live node other than the subject.
    pub record: bool,
    pub transient: bool,
}

struct Change {
    node: String,
    from: Option<Liveness>,
    to: Liveness,
    transient: bool,
}

#[derive(Debug, Clone)]
struct Record {
    liveness: Liveness,
    since: u64,
    heartbeat: u64,
    heartbeat_moved: u64,
    vouched: bool,
    generation: u64,
    gossip_addr: SocketAddr,
    key_values: BTreeMap<String, String>,
}

/// The tracker. `known` holds nodes seen before this process started (persisted by the agent),
/// so a restart does not announce every peer as newly joined.
#[derive(Debug)]
pub struct LivenessTracker {
    cfg: LivenessConfig,
    self_name: String,
    known: BTreeSet<String>,
    peers: BTreeMap<String, Record>,
}

fn is_transient(kv: &BTreeMap<String, String>) -> bool {
    kv.get(crate::keys::TRANSIENT).is_some_and(|v| v == "true")
}

fn announced_leave(kv: &BTreeMap<String, String>) -> bool {
    kv.get(crate::keys::STATUS)
        .is_some_and(|v| v == crate::keys::STATUS_LEFT)
}

impl LivenessTracker {
    pub fn new(
        cfg: LivenessConfig,
        self_name: &str,
        known: impl IntoIterator<Item = String>,
    ) -> Self {
        LivenessTracker {
            cfg,
            self_name: self_name.to_owned(),
            known: known.into_iter().collect(),
            peers: BTreeMap::new(),
        }
    }

    /// Every node ever seen (for persistence).
    pub fn known(&self) -> &BTreeSet<String> {
        &self.known
    }

    /// Feeds a full snapshot of chitchat's view at `now_ms`; returns the transitions.
    pub fn observe(&mut self, now_ms: u64, observations: &[Observation]) -> Vec<Transition> {
        // Highest generation per node name wins.
        let mut latest: BTreeMap<&str, &Observation> = BTreeMap::new();
        for o in observations {
            if o.node == self.self_name {
                continue;
            }
            match latest.get(o.node.as_str()) {
                Some(prev) if prev.generation >= o.generation => {}
                _ => {
                    latest.insert(&o.node, o);
                }
            }
        }
        let mut changes: Vec<Change> = Vec::new();
        for (name, o) in &latest {
            let is_new = !self.peers.contains_key(*name);
            let rec = self
                .peers
                .entry((*name).to_owned())
                .or_insert_with(|| Record {
                    liveness: Liveness::Dead,
                    since: now_ms,
                    heartbeat: o.heartbeat,
                    heartbeat_moved: now_ms,
                    vouched: false,
                    generation: o.generation,
                    gossip_addr: o.gossip_addr,
                    key_values: BTreeMap::new(),
                });
            // A vouched node's heartbeat is not ours to see: its witnesses vouch that it moves.
            if o.generation != rec.generation || o.heartbeat != rec.heartbeat || o.vouched {
                rec.heartbeat_moved = now_ms;
            }
            rec.vouched = o.vouched;
            rec.heartbeat = o.heartbeat;
            rec.generation = o.generation;
            rec.gossip_addr = o.gossip_addr;
            rec.key_values = o.key_values.clone();
            let next = if announced_leave(&o.key_values) {
                Liveness::Left
            } else if o.live {
                if now_ms.saturating_sub(rec.heartbeat_moved)
                    > self.cfg.suspect_after.as_millis() as u64
                {
                    Liveness::Suspect
                } else {
                    Liveness::Alive
                }
            } else {
                let dead_since = match rec.liveness {
                    Liveness::Dead | Liveness::Offline if !is_new => rec.since,
                    _ => now_ms,
                };
                if now_ms.saturating_sub(dead_since) >= self.cfg.offline_after.as_millis() as u64 {
                    Liveness::Offline
                } else {
                    Liveness::Dead
                }
            };
            if is_new {
                rec.liveness = next;
                rec.since = now_ms;
                // A node first seen while down is not news yet; one first seen up is.
                if next.is_up() {
                    changes.push(Change {
                        node: (*name).to_owned(),
                        from: None,
                        to: next,
                        transient: is_transient(&o.key_values),
                    });
                }
                continue;
            }
            if rec.liveness != next {
                let previous = rec.liveness;
                if !(previous == Liveness::Dead && next == Liveness::Offline) {
                    rec.since = now_ms;
                }
                rec.liveness = next;
                changes.push(Change {
                    node: (*name).to_owned(),
                    from: Some(previous),
                    to: next,
                    transient: is_transient(&o.key_values),
                });
            }
        }
        // Nodes chitchat forgot (garbage-collected after a long death) stay known as offline.
        for (name, rec) in self.peers.iter_mut() {
            if !latest.contains_key(name.as_str())
                && rec.liveness != Liveness::Offline
                && rec.liveness != Liveness::Left
            {
                let previous = rec.liveness;
                rec.liveness = Liveness::Offline;
                changes.push(Change {
                    node: name.clone(),
                    from: Some(previous),
                    to: Liveness::Offline,
                    transient: is_transient(&rec.key_values),
                });
            }
        }
        let live: BTreeSet<&str> = self
            .peers
            .iter()
            .filter(|(_, r)| r.liveness.is_up())
            .map(|(n, _)| n.as_str())
            .chain(std::iter::once(self.self_name.as_str()))
            .collect();
        let mut out = Vec::new();
        for Change {
            node,
            from,
            to,
            transient,
        } in changes
        {
            let was_known = !self.known.insert(node.clone());
            let event = match (from, to) {
                (_, t) if t.is_up() && !was_known => Some("node_joined"),
                (None, _) => None,
                (Some(_), Liveness::Left) => Some("node_left"),
                (Some(f), Liveness::Offline) if f != Liveness::Left => Some("node_offline"),
                (Some(Liveness::Offline | Liveness::Left), t) if t.is_up() => Some("node_online"),
                _ => None,
            };
            let recorder = live.iter().find(|n| **n != node).copied();
            out.push(Transition {
                record: event.is_some() && recorder == Some(self.self_name.as_str()),
                node,
                from,
                to,
                event,
                transient,
            });
        }
        out
    }

    /// Every peer's status at `now_ms`, by name.
    pub fn view(&self, now_ms: u64) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|(node, r)| PeerStatus {
                node: node.clone(),
                liveness: r.liveness,
                last_heartbeat_age_ms: now_ms.saturating_sub(r.heartbeat_moved),
                since_ms: now_ms.saturating_sub(r.since),
                generation: r.generation,
                gossip_addr: r.gossip_addr,
                transient: is_transient(&r.key_values),
                vouched: r.vouched && r.liveness.is_up(),
                key_values: r.key_values.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(node: &str, generation: u64, live: bool, hb: u64) -> Observation {
        Observation {
            node: node.into(),
            generation,
            gossip_addr: "127.0.0.1:7370".parse().unwrap(),
            live,
            vouched: false,
            heartbeat: hb,
            key_values: BTreeMap::from([("version".into(), "0.1.0".into())]),
        }
    }

    fn hearing(node: &str, heard: &str) -> Observation {
        let mut o = obs(node, 1, true, 1);
        o.key_values.insert(crate::keys::REACH.into(), heard.into());
        o
    }

    #[test]
    fn a_node_most_witnesses_hear_is_up_and_one_liar_is_not_enough() {
        // bravo is unreachable from here; alpha and charlie hear it, delta does not.
        let mut view = vec![
            obs("bravo", 1, false, 5),
            hearing("alpha", "bravo,charlie,delta"),
            hearing("charlie", "alpha,bravo,delta"),
            hearing("delta", "alpha,charlie"),
        ];
        vouch(&mut view);
        assert!(
            view[0].live && view[0].vouched,
            "2 of 3 witnesses hear bravo"
        );
        // Only mallory claims to hear the dead charlie; bravo does not.
        let mut view = vec![
            obs("charlie", 1, false, 5),
            hearing("mallory", "bravo,charlie"),
            hearing("bravo", "mallory"),
        ];
        vouch(&mut view);
        assert!(!view[0].live, "1 of 2 is not a majority");
        // Nobody live hears it: dead.
        let mut view = vec![obs("echo", 1, false, 5), obs("foxtrot", 1, false, 5)];
        vouch(&mut view);
        assert!(!view[0].live && !view[1].live);
        // A vouched node is alive, not suspect, and says so in the view.
        let mut t = LivenessTracker::new(LivenessConfig::default(), "me", BTreeSet::new());
        let mut view = vec![obs("bravo", 1, false, 5), hearing("alpha", "bravo")];
        vouch(&mut view);
        t.observe(0, &view);
        t.observe(10_000, &view);
        let bravo = t
            .view(10_000)
            .into_iter()
            .find(|p| p.node == "bravo")
            .unwrap();
        assert_eq!(bravo.liveness, Liveness::Alive);
        assert!(bravo.vouched);
    }

    fn tracker(me: &str) -> LivenessTracker {
        LivenessTracker::new(LivenessConfig::default(), me, Vec::new())
    }

    #[test]
    fn join_suspect_dead_offline_online() {
        let mut t = tracker("a");
        let tr = t.observe(0, &[obs("b", 1, true, 1)]);
        assert_eq!(tr.len(), 1);
        assert_eq!(
            (tr[0].from, tr[0].to, tr[0].event, tr[0].record),
            (None, Liveness::Alive, Some("node_joined"), true)
        );
        // Heartbeat stalls: suspect after 1.5 s, no event.
        let tr = t.observe(2000, &[obs("b", 1, true, 1)]);
        assert_eq!((tr[0].to, tr[0].event), (Liveness::Suspect, None));
        let tr = t.observe(3000, &[obs("b", 1, false, 1)]);
        assert_eq!((tr[0].to, tr[0].event), (Liveness::Dead, None));
        assert!(t.observe(20_000, &[obs("b", 1, false, 1)]).is_empty());
        let tr = t.observe(33_000, &[obs("b", 1, false, 1)]);
        assert_eq!(
            (tr[0].to, tr[0].event),
            (Liveness::Offline, Some("node_offline"))
        );
        // Restart: a new generation, alive again.
        let tr = t.observe(40_000, &[obs("b", 1, false, 1), obs("b", 2, true, 1)]);
        assert_eq!(
            (tr[0].from, tr[0].to, tr[0].event),
            (
                Some(Liveness::Offline),
                Liveness::Alive,
                Some("node_online")
            )
        );
        assert_eq!(t.view(40_000)[0].generation, 2);
    }

    #[test]
    fn brief_death_is_not_news() {
        let mut t = tracker("a");
        t.observe(0, &[obs("b", 1, true, 1)]);
        let tr = t.observe(1000, &[obs("b", 1, false, 1)]);
        assert_eq!(tr[0].event, None);
        let tr = t.observe(2000, &[obs("b", 1, true, 2)]);
        assert_eq!((tr[0].to, tr[0].event), (Liveness::Alive, None));
    }

    #[test]
    fn graceful_leave() {
        let mut t = tracker("a");
        t.observe(0, &[obs("b", 1, true, 1)]);
        let mut left = obs("b", 1, true, 2);
        left.key_values.insert("status".into(), "left".into());
        let tr = t.observe(100, &[left.clone()]);
        assert_eq!((tr[0].to, tr[0].event), (Liveness::Left, Some("node_left")));
        left.live = false;
        assert!(t.observe(60_000, &[left]).is_empty(), "left stays left");
    }

    #[test]
    fn only_the_smallest_live_observer_records() {
        let all = [
            obs("a", 1, true, 1),
            obs("b", 1, true, 1),
            obs("c", 1, true, 1),
            obs("d", 1, true, 1),
        ];
        let mut recorders = Vec::new();
        for me in ["a", "b", "c", "d"] {
            let mut t = tracker(me);
            t.observe(0, &all);
            let mut view: Vec<Observation> = all.to_vec();
            view.retain(|o| o.node != "a");
            view.push(obs("a", 1, false, 1));
            t.observe(1000, &view);
            let tr = t.observe(40_000, &view);
            for x in tr.iter().filter(|x| x.node == "a" && x.record) {
                recorders.push((me, x.event));
            }
        }
        // "a" went offline: among the others, "b" is the smallest live name.
        assert_eq!(recorders, vec![("b", Some("node_offline"))]);
    }

    #[test]
    fn known_nodes_are_not_joined_again_after_a_restart() {
        let mut t = LivenessTracker::new(LivenessConfig::default(), "a", vec!["b".to_owned()]);
        let tr = t.observe(0, &[obs("b", 1, true, 1)]);
        assert_eq!(tr[0].event, None);
        assert_eq!(tr[0].to, Liveness::Alive);
    }
}
