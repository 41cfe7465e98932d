//! Runs one scenario with one seed: the event loop that drives every node's real cores.

use std::collections::HashMap;
use std::time::Instant;

use alerting::{AccumulatingRuntime, Config, Timer};
use rand::Rng;
use rand::rngs::StdRng;
use sync::NewEvent;
use sync::index::ContentHash;
use sync::reconcile::{Outbox, SyncMessage};
use sync::schedule::ScheduleConfig;

use crate::node::{Blobs, SimNode, Source, content_hash, node_index};
use crate::report::{NoteKey, Report, Sent, Track};
use crate::scenario::{CrashMoment, Fault, Scenario};
use crate::sim::{Ms, Net, Queue, Trace, rng};
use crate::workload::{Work, make, next_wait};

/// The mesh's limit on one application message (`mesh::transport`, 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// After the scenario's end: stop once nothing was written for this long...
const DRAIN_MS: u64 = 60_000;
/// ...or after this much extra virtual time.
const MAX_DRAIN_MS: u64 = 3_600_000;
/// Alerting config of every node: one receiver, the shipped rules.
pub const ALERTING_TOML: &str =
    "[[receiver]]\nname = \"phone\"\nkind = \"ntfy\"\ntopic = \"lab\"\n";

pub(crate) enum Ev {
    Deliver {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    Tick,
    Work {
        node: usize,
        work: Work,
    },
    Timer {
        node: usize,
        epoch: u64,
        timer: Timer,
    },
    Fault(usize),
    Membership,
    /// A notification's send finished (`ok`: the receiver took it).
    NotifyDone {
        node: usize,
        epoch: u64,
        id: String,
        ok: bool,
    },
    Crash(usize),
    Restart(usize),
}

/// A `crash_notifier` fault waiting for its notification.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CrashTrigger {
    pub(crate) moment: CrashMoment,
    pub(crate) down_s: Option<u64>,
}

pub struct Sim {
    pub s: Scenario,
    pub seed: u64,
    pub(crate) rng: StdRng,
    pub(crate) q: Queue<Ev>,
    pub net: Net,
    pub nodes: Vec<SimNode>,
    /// Every node's name, by index (the names the cores see).
    pub names: Vec<String>,
    pub blobs: Blobs,
    pub(crate) trace: Trace,
    /// `view[i][j]`: node i currently sees node j as live (gossip's view, updated late).
    pub(crate) view: Vec<Vec<bool>>,
    pub now: Ms,
    pub last_membership: Ms,
    pub tracks: HashMap<ContentHash, Track>,
    pub sent: Vec<Sent>,
    pub repairs: Vec<Ms>,
    /// Times a partition or cut was healed (duplicates across one are accepted).
    pub heals: Vec<Ms>,
    /// Every (episode, receiver, stage) some node tried to tell, and who tried last.
    pub attempted: std::collections::BTreeMap<NoteKey, usize>,
    /// (episode, receiver) pairs whose notifications were given up (final failure recorded).
    pub given_up: std::collections::BTreeSet<(String, String)>,
    /// Sends the receiver refused (an outage).
    pub refused: u64,
    /// (node, notification id) → indices in `sent` of copies whose outcome is not recorded
    /// yet: if the node crashes first, the ledger allows one more copy of each.
    pub(crate) awaiting_outcome: std::collections::BTreeMap<(usize, String), Vec<usize>>,
    pub(crate) crash_trigger: Option<CrashTrigger>,
    /// When reachability last got worse (a crash, a partition, a cut): detection is timed
    /// from here.
    pub(crate) worse_at: Option<Ms>,
    pub detections: Vec<Ms>,
    pub false_suspicions: u64,
    /// (virtual s, event copies still missing across all nodes), for the convergence plot.
    pub series: Vec<(u64, u64)>,
    pub(crate) holders_total: u64,
    pub(crate) next_sample: Ms,
    pub violations: Vec<String>,
    pub(crate) work_seq: u64,
    pub(crate) last_write: Ms,
}

impl Sim {
    pub fn new(s: &Scenario, seed: u64) -> Result<Sim, String> {
        let config = Config::from_toml_str(ALERTING_TOML).map_err(|e| e.to_string())?;
        let n = s.nodes;
        let nodes = (0..n)
            .map(|i| {
                let offset = s
                    .clock_offsets
                    .iter()
                    .find(|c| c.node == i)
                    .map_or(0, |c| c.offset_ms);
                SimNode::new(
                    i,
                    offset,
                    s.transient.contains(&i),
                    config.clone(),
                    schedule(s),
                )
            })
            .collect::<Vec<SimNode>>();
        let names = nodes.iter().map(|n| n.name.clone()).collect();
        let mut sim = Sim {
            s: s.clone(),
            seed,
            rng: rng(seed),
            q: Queue::default(),
            net: Net::new(s),
            nodes,
            names,
            blobs: Blobs::default(),
            trace: Trace::default(),
            view: vec![vec![true; n]; n],
            now: 0,
            last_membership: 0,
            tracks: HashMap::new(),
            sent: Vec::new(),
            repairs: Vec::new(),
            heals: Vec::new(),
            attempted: Default::default(),
            given_up: Default::default(),
            refused: 0,
            awaiting_outcome: Default::default(),
            crash_trigger: None,
            worse_at: None,
            detections: Vec::new(),
            false_suspicions: 0,
            series: Vec::new(),
            holders_total: 0,
            next_sample: 0,
            violations: Vec::new(),
            work_seq: 0,
            last_write: 0,
        };
        for (i, f) in s.faults.iter().enumerate() {
            sim.q.push(f.at_s() * 1000, Ev::Fault(i));
        }
        for node in 0..n {
            for work in [Work::Incident, Work::Deploy, Work::Metric] {
                sim.schedule_work(node, work);
            }
        }
        sim.q.push(0, Ev::Membership);
        sim.q.push(s.tick_ms, Ev::Tick);
        Ok(sim)
    }

    fn end_ms(&self) -> Ms {
        (self.s.duration_s + self.s.quiet_s) * 1000
    }

    fn schedule_work(&mut self, node: usize, work: Work) {
        let rate = match work {
            Work::Incident => self.s.rates.incidents_per_hour,
            Work::Deploy => self.s.rates.deployments_per_hour,
            _ => self.s.rates.metrics_per_hour,
        };
        if let Some(wait) = next_wait(&mut self.rng, rate) {
            let at = self.now + wait;
            if at < self.s.duration_s * 1000 {
                self.q.push(at, Ev::Work { node, work });
            }
        }
    }

    /// Runs to the end and checks the invariants.
    pub fn run(mut self) -> Report {
        let started = Instant::now();
        let end = self.end_ms();
        while let Some((at, ev)) = self.q.pop() {
            // Past the end, run on until nothing was written for a minute (an alert resolving
            // in the quiet tail writes events too), so the final checks see a settled mesh.
            if at > end
                && ((at > self.last_write + DRAIN_MS && !self.owes_notifications())
                    || at > end + MAX_DRAIN_MS)
            {
                break;
            }
            self.now = at;
            self.step(ev);
        }
        self.check_alerters("at the end");
        self.sample();
        let trace = std::mem::take(&mut self.trace);
        Report::build(self, trace.delivered, trace.finish(), started.elapsed())
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { from, to, bytes } => self.deliver(from, to, bytes),
            Ev::Tick => {
                if self.now >= self.next_sample {
                    self.sample();
                }
                self.tick();
                if self.now % 600_000 < self.s.tick_ms {
                    self.check_alerters("during the run");
                }
                self.q.push(self.now + self.s.tick_ms, Ev::Tick);
            }
            Ev::Work { node, work } => {
                if matches!(work, Work::Incident | Work::Deploy | Work::Metric) {
                    self.schedule_work(node, work.clone());
                }
                if self.nodes[node].up {
                    self.work_seq += 1;
                    let (ne, follow) = make(&mut self.rng, &work, &self.s.rates, self.work_seq);
                    self.write(node, ne);
                    if let Some((after, next)) = follow {
                        self.q.push(self.now + after, Ev::Work { node, work: next });
                    }
                }
            }
            Ev::Timer { node, epoch, timer } => {
                let n = &mut self.nodes[node];
                if n.up && n.epoch == epoch {
                    let mut out = AccumulatingRuntime::default();
                    let now = n.now(self.now);
                    n.engine.on_timer(timer, now, &mut out);
                    self.alert_out(node, out);
                }
            }
            Ev::Fault(i) => self.fault(i),
            Ev::Membership => self.membership(),
            Ev::NotifyDone {
                node,
                epoch,
                id,
                ok,
            } => {
                let n = &mut self.nodes[node];
                if n.up && n.epoch == epoch {
                    self.awaiting_outcome.remove(&(node, id.clone()));
                    let mut out = AccumulatingRuntime::default();
                    let now = n.now(self.now);
                    let result = if ok {
                        Ok(())
                    } else {
                        Err("503 from the receiver".to_owned())
                    };
                    n.engine.on_delivery(&id, result, now, &mut out);
                    self.alert_out(node, out);
                }
            }
            Ev::Crash(node) => self.crash(node),
            Ev::Restart(node) => self.restart(node),
        }
    }

    /// Records how many event copies are still missing (for the convergence plot), at most
    /// about 2000 points per run.
    fn sample(&mut self) {
        let copies = self.tracks.len() as u64 * self.s.nodes as u64;
        self.series
            .push((self.now / 1000, copies.saturating_sub(self.holders_total)));
        let every = (self.end_ms() / 2000).max(5_000);
        self.next_sample = self.now + every;
    }

    fn crash(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if !n.up {
            return;
        }
        // Every send of this node still waiting for its outcome dies without one.
        let orphaned: Vec<(usize, String)> = self
            .awaiting_outcome
            .range((node, String::new())..)
            .take_while(|((n, _), _)| *n == node)
            .map(|(k, _)| k.clone())
            .collect();
        for k in orphaned {
            for idx in self.awaiting_outcome.remove(&k).unwrap_or_default() {
                if let Some(s) = self.sent.get_mut(idx) {
                    s.orphan = true;
                }
            }
        }
        n.up = false;
        n.epoch += 1;
        self.worse_at = Some(self.now);
        self.q.push(self.now + self.s.detect_ms, Ev::Membership);
    }

    fn restart(&mut self, node: usize) {
        if self.nodes[node].up {
            return;
        }
        // As the agent at start: nobody known live until gossip says so.
        let n = self.s.nodes;
        self.view[node] = (0..n).map(|j| j == node).collect();
        let mut out = AccumulatingRuntime::default();
        self.nodes[node].restart(self.now, &self.blobs, &mut out);
        self.alert_out(node, out);
        self.repairs.push(self.now);
        self.q.push(self.now + self.s.detect_ms, Ev::Membership);
    }

    fn fault(&mut self, i: usize) {
        let Some(f) = self.s.faults.get(i).cloned() else {
            return;
        };
        self.check_alerters(&format!("before fault #{i}"));
        match &f {
            Fault::Partition { groups, .. } => {
                self.net.partition(self.s.nodes, groups);
                self.worse_at = Some(self.now);
            }
            Fault::OneWay { from, to, .. } => {
                self.net.cut_oneway(from, to);
                self.worse_at = Some(self.now);
            }
            Fault::Heal { .. } => {
                self.net.heal();
                self.repairs.push(self.now);
                self.heals.push(self.now);
            }
            Fault::Crash { node, .. } => self.crash(*node),
            Fault::Restart { node, .. } => self.restart(*node),
            Fault::CrashNotifier { moment, down_s, .. } => {
                self.crash_trigger = Some(CrashTrigger {
                    moment: *moment,
                    down_s: *down_s,
                });
            }
            Fault::ClockJump { node, by_ms, .. } => self.nodes[*node].offset_ms += by_ms,
        }
        self.q.push(self.now + self.s.detect_ms, Ev::Membership);
    }

    /// Gossip has noticed the current reachability: views, sessions and elections follow.
    fn membership(&mut self) {
        let n = self.s.nodes;
        self.last_membership = self.now;
        // Gossip is transitive: a peer is live when heartbeats reach us through anyone, i.e.
        // when it is up and in our connected component (two-way links).
        let comps =
            crate::sim::components(n, |i| self.nodes[i].up, |a, b| self.net.connected(a, b));
        let mut comp_of = vec![usize::MAX; n];
        for (c, members) in comps.iter().enumerate() {
            for &m in members {
                comp_of[m] = c;
            }
        }
        for i in 0..n {
            if !self.nodes[i].up {
                continue;
            }
            let row: Vec<bool> = (0..n).map(|j| comp_of[j] == comp_of[i]).collect();
            let members: Vec<alerting::Member> = (0..n)
                .map(|j| alerting::Member {
                    name: self.nodes[j].name.clone(),
                    live: row[j],
                    transient: self.nodes[j].transient,
                    alerter_priority: 0,
                })
                .collect();
            let gone: Vec<usize> = (0..n).filter(|&j| !row[j] && self.view[i][j]).collect();
            for &j in &gone {
                if self.nodes[j].up && self.net.connected(i, j) {
                    self.false_suspicion(i, j);
                } else if let Some(at) = self.worse_at {
                    self.detections.push(self.now - at);
                }
            }
            // As the agent's sync driver: sessions with a process that is gone are dropped.
            let live: Vec<(&str, u64)> = (0..n)
                .filter(|&j| j != i && row[j])
                .map(|j| (self.names[j].as_str(), self.nodes[j].epoch))
                .collect();
            let node = &mut self.nodes[i];
            node.schedule.departures(&mut node.core, live);
            self.view[i] = row;
            if !self.s.alerting {
                continue;
            }
            let node = &mut self.nodes[i];
            let mut out = AccumulatingRuntime::default();
            let now = node.now(self.now);
            node.engine.on_membership(members, now, &mut out);
            self.alert_out(i, out);
        }
    }

    /// Node `i` declared `j` dead while `j` was up and reachable both ways. On links with at
    /// most 5 % loss that is a violation: the failure detector must ride out that much.
    fn false_suspicion(&mut self, i: usize, j: usize) {
        self.false_suspicions += 1;
        if self.net.loss(i, j) <= 0.05 {
            self.violations.push(format!(
                "t={}s: {} declared {} dead while it was up and reachable",
                self.now / 1000,
                self.nodes[i].name,
                self.nodes[j].name
            ));
        }
    }

    /// A new event written on node `i`: stored, then pushed to every peer it sees live.
    pub(crate) fn write(&mut self, i: usize, ne: NewEvent) {
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        let event = match self.nodes[i].stamp(ne, self.now, random) {
            Ok(e) => e,
            Err(e) => {
                self.violations.push(format!(
                    "{} wrote an invalid event: {e}",
                    self.nodes[i].name
                ));
                return;
            }
        };
        self.last_write = self.now;
        let bytes = event.to_file_bytes();
        let hash = content_hash(&bytes);
        self.blobs.insert(hash, bytes.clone(), event);
        self.tracks.entry(hash).or_insert(Track {
            emitted: self.now,
            holders: 0,
            full_at: None,
            whole: !self.net.is_split() && self.nodes.iter().all(|n| n.up),
        });
        self.store_event(i, hash);
        let peers: Vec<String> = (0..self.s.nodes)
            .filter(|&j| j != i && self.view[i][j])
            .map(|j| self.nodes[j].name.clone())
            .collect();
        let mut out = Outbox::default();
        let node = &mut self.nodes[i];
        let src = Source {
            store: &node.store,
            blobs: &self.blobs,
        };
        node.core.push(&mut out, &src, &peers, &[bytes]);
        self.perform(i, out, None);
    }

    /// Stores one event on node `i` (when new) and feeds its world and alerting engine.
    fn store_event(&mut self, i: usize, hash: ContentHash) {
        let Some(event) = self.blobs.event(&hash) else {
            return;
        };
        let node = &mut self.nodes[i];
        if !node.store.insert(event.timestamp_millis(), hash) {
            return;
        }
        node.world.apply(&event);
        // The engine holds new events for its burst timer, as in the agent: one evaluation
        // per burst, not one pipeline pass per delivery.
        if self.s.alerting {
            let mut out = AccumulatingRuntime::default();
            let now = node.now(self.now);
            node.engine.on_stored(event.clone(), now, &mut out);
            self.alert_out(i, out);
        }
        self.holders_total += 1;
        if let Some(t) = self.tracks.get_mut(&hash) {
            t.holders += 1;
            if t.holders == self.s.nodes {
                t.full_at = Some(self.now);
            }
        }
    }

    /// Sends what the sync core queued (to live peers, or back to the peer that wrote to us)
    /// and stores what it received.
    pub(crate) fn perform(&mut self, i: usize, out: Outbox, reply_to: Option<usize>) {
        for (to, mut msg) in out.send {
            // negentropy 0.5 lists the ids it needs in `HashSet` order (random per process):
            // sort them, or no two runs of a seed would be alike. (Proposed for sync itself.)
            if let SyncMessage::Fetch { hashes, .. } = &mut msg {
                hashes.sort_unstable();
            }
            let Some(j) = node_index(&to).filter(|&j| j < self.s.nodes) else {
                continue;
            };
            if !self.view[i][j] && reply_to != Some(j) {
                continue;
            }
            let bytes = msg.encode();
            if bytes.len() > MAX_MESSAGE_BYTES {
                self.violations.push(format!(
                    "{} sent a {}-byte sync message, over the {MAX_MESSAGE_BYTES}-byte limit",
                    self.nodes[i].name,
                    bytes.len()
                ));
                continue;
            }
            self.nodes[i].bytes_sent += bytes.len() as u64;
            self.nodes[i].messages_sent += 1;
            if let Some((delay, resent)) = self.net.transit(&mut self.rng, i, j, bytes.len()) {
                self.nodes[i].bytes_sent += resent;
                self.q.push(
                    self.now + delay,
                    Ev::Deliver {
                        from: i,
                        to: j,
                        bytes,
                    },
                );
            }
        }
        for (_, batch) in out.store {
            for bytes in batch.events {
                match self.blobs.accept(&bytes) {
                    Ok((hash, _)) => self.store_event(i, hash),
                    Err(e) => self.violations.push(format!(
                        "{} refused a synced event: {e}",
                        self.nodes[i].name
                    )),
                }
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        if !self.nodes[to].up || !self.net.allowed(from, to) {
            return;
        }
        self.trace.record(self.now, from, to, &bytes);
        self.nodes[to].bytes_received += bytes.len() as u64;
        let msg = match SyncMessage::decode(&bytes) {
            Ok(SyncMessage::World { .. }) => return,
            Ok(m) => m,
            Err(e) => {
                self.violations
                    .push(format!("undecodable sync message: {e}"));
                return;
            }
        };
        let from_name = self.nodes[from].name.clone();
        let node = &mut self.nodes[to];
        let mut out = Outbox::default();
        let src = Source {
            store: &node.store,
            blobs: &self.blobs,
        };
        if node
            .core
            .on_message(&mut out, &src, &from_name, msg)
            .is_err()
        {
            node.sync_errors += 1;
        }
        self.perform(to, out, Some(from));
    }
}

/// The agent's sync schedule with the scenario's tick, differ delay and session cap. The
/// discrete model keeps no retention, so its window covers everything.
pub(crate) fn schedule(s: &Scenario) -> ScheduleConfig {
    ScheduleConfig {
        tick: std::time::Duration::from_millis(s.tick_ms),
        differ_delay: std::time::Duration::from_millis(s.differ_delay_ms),
        max_sessions: s.max_sessions,
        window: std::time::Duration::MAX,
        ..ScheduleConfig::default()
    }
}
