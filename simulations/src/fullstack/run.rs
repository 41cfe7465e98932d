//! One run: builds the hosts, steps the simulation while sampling what the nodes see, and
//! offers the faults and writes that a script plays ([`super::builtin`] or
//! [`super::scenario_play`]); the invariants checked at the end are in `checks`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use mesh::liveness::Liveness;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

pub use super::builtin::FullScenario;
use super::clock::{NodeClock, VirtualTime};
pub use super::config::{FileSettings, FullstackConfig, Outcome};
use super::node::{self, Delivered, NodeSpec, SharedProbe, lock};
use super::socket::{LossTable, WireCounters};

/// The simulation's epoch: 2026-01-01T00:00:00Z, fixed so that runs do not depend on the date.
pub const EPOCH_SECS: i64 = 1_767_225_600;

/// How long every node's view of who is up must stay unchanged before the alerter invariant
/// applies: the election's settle time (10 s) plus a margin for a node's 1 s alerting tick.
/// The discrete simulation waits 60 s after each membership change; here the views themselves
/// are observed, so the wait can start from the last change anyone saw.
pub const STABLE_VIEW_MS: u64 = 15_000;

/// How long a node whose alerting engine a `crash_notifier` trap stopped runs on before its
/// host is crashed: the discrete simulation's `notify_ms`, time enough for the eager push of
/// what the engine stored (the attempt, or the outcome) on a LAN.
const TRAP_GRACE_MS: u64 = 200;

/// A fault window between an observer and a subject: declaring the subject dead inside it (or
/// shortly after) is legitimate.
#[derive(Debug, Clone)]
pub(super) struct Fault {
    pub(super) pairs: BTreeSet<(usize, usize)>,
    pub(super) from_ms: u64,
    pub(super) to_ms: Option<u64>,
}

pub(super) struct Cluster<'a> {
    pub(super) sim: turmoil::Sim<'a>,
    pub(super) names: Vec<String>,
    pub(super) ips: Vec<IpAddr>,
    pub(super) probes: Vec<SharedProbe>,
    pub(super) clocks: Vec<Arc<NodeClock>>,
    pub(super) counters: Vec<Arc<WireCounters>>,
    time: Arc<VirtualTime>,
    pub(super) running: Vec<bool>,
    pub(super) faults: Vec<Fault>,
    pub(super) trace: Sha256,
    pub(super) rng: StdRng,
    pub(super) acknowledged: BTreeMap<[u8; 32], String>,
    /// The timestamp (ms) of every acknowledged event, by content hash.
    pub(super) written_ms: BTreeMap<[u8; 32], i64>,
    window: Duration,
    /// The HLC stamp (NTP64) of every event written, by content hash.
    pub(super) stamps: BTreeMap<[u8; 32], u64>,
    /// The stamps of other events (the alerting engines'), read from a store when first held.
    pub(super) engine_stamps: BTreeMap<[u8; 32], Option<u64>>,
    /// Writes whose HLC stamp broke causality or did not follow the node's own clock.
    pub(super) clock_violations: Vec<String>,
    pub(super) writes: u64,
    /// Events written while the mesh was whole and not yet on every node: hash, write time.
    pub(super) spreading: Vec<([u8; 32], u64)>,
    /// Write-to-everywhere times of the events that were in `spreading`.
    pub(super) spread_ms: Vec<u64>,
    pub(super) false_dead: u64,
    pub(super) false_suspicions: u64,
    /// A failure being watched for detection: since when, who must see whom go down.
    pub(super) watch: Option<(u64, Vec<usize>, Vec<usize>)>,
    pub(super) detected_ms: Option<u64>,
    /// Notifications so far, each with whether a partition or one-way cut was in force.
    pub(super) sent: Vec<(Delivered, bool)>,
    /// A partition or one-way cut is in force.
    pub(super) partitioned: bool,
    /// When partitions and cuts ended.
    pub(super) repairs: Vec<u64>,
    /// Who each node saw up at the last sample, and when any of that last changed.
    views: Vec<Option<BTreeSet<String>>>,
    view_changed_ms: u64,
    pub(super) alerter_checks: u64,
    /// Alerters per component at the latest check, and when it was made.
    pub(super) alerters: Option<(u64, Vec<Vec<String>>)>,
    pub(super) alerters_during_fault: Option<Vec<Vec<String>>>,
    pub(super) alerter_violations: Vec<String>,
    receiver_down_until_ms: u64,
    receiver_outages: Vec<(u64, u64)>,
    /// Nodes a `crash_notifier` trap stopped, and when they were crashed.
    pub(super) trapped: Vec<(usize, u64)>,
    /// Nodes whose engine a trap stopped, and when their host is to be crashed.
    doomed: Vec<(usize, u64)>,
    /// Shared by every node: the first to notify while it is armed stops at its moment.
    pub(super) notifier_trap: node::NotifierTrap,
    _dirs: Vec<tempfile::TempDir>,
}

fn data_root() -> Result<tempfile::TempDir, String> {
    // fsyncs on tmpfs cost nothing; the store's durability path still runs unchanged.
    let shm = std::path::Path::new("/dev/shm");
    let builder = tempfile::Builder::new()
        .prefix("labmesh-fullstack-")
        .clone();
    let dir = if shm.is_dir() {
        builder.tempdir_in(shm)
    } else {
        builder.tempdir()
    };
    dir.map_err(|e| format!("cannot make a data dir: {e}"))
}

impl<'a> Cluster<'a> {
    pub(super) fn build(cfg: &FullstackConfig) -> Result<Cluster<'a>, String> {
        if !(2..=100).contains(&cfg.nodes) {
            return Err(format!("{} nodes: the full stack runs 2 to 100", cfg.nodes));
        }
        let epoch = DateTime::<Utc>::from_timestamp(EPOCH_SECS, 0).unwrap_or_default();
        let mut sim = turmoil::Builder::new()
            .rng_seed(cfg.seed)
            .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH_SECS as u64))
            .simulation_duration(Duration::from_secs(30 * 24 * 3600))
            .tick_duration(Duration::from_millis(1))
            .min_message_latency(cfg.latency_min)
            .max_message_latency(cfg.latency_max)
            .udp_capacity(1 << 16)
            .build();
        let ca = certs::MeshCa::generate("simmesh", 365).map_err(|e| e.to_string())?;
        let mesh_id = format!(
            "simmesh-{}",
            &certs::fingerprint_hex(&ca.fingerprint())[..8]
        );
        let names: Vec<String> = (0..cfg.nodes).map(|i| format!("n{i}")).collect();
        let ips: Vec<IpAddr> = names.iter().map(|n| sim.lookup(n.as_str())).collect();
        let time = Arc::new(VirtualTime::default());
        let loss = LossTable::default();
        if cfg.loss > 0.0 {
            for a in &ips {
                for b in &ips {
                    if a != b {
                        loss.set(*a, *b, cfg.loss);
                    }
                }
            }
        }
        for &(from, to, rate) in &cfg.file.pair_loss {
            if let (Some(a), Some(b)) = (ips.get(from), ips.get(to)) {
                loss.set(*a, *b, rate.max(cfg.loss));
            }
        }
        let notifier_trap = node::NotifierTrap::default();
        let alerting = alerting::Config::from_toml_str(crate::run::ALERTING_TOML)
            .map_err(|e| format!("alerting config: {e}"))?;
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let root = data_root()?;
        let mut probes = Vec::new();
        let mut clocks = Vec::new();
        let mut counters = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let (offset, drift) = if cfg.scenario == FullScenario::Skew {
                (
                    rng.random_range(-300_000..=300_000),
                    rng.random_range(-200..=200),
                )
            } else {
                (cfg.file.clock_offsets.get(i).copied().unwrap_or(0), 0)
            };
            let clock = Arc::new(NodeClock::new(time.clone(), epoch, offset, drift));
            let identity = ca.issue(name, &[ips[i]], 365).map_err(|e| e.to_string())?;
            let addr = SocketAddr::new(ips[i], node::PORT);
            let seeds = (0..cfg.nodes.min(2))
                .filter(|&s| s != i)
                .map(|s| SocketAddr::new(ips[s], node::PORT).to_string())
                .collect();
            let probe = SharedProbe::default();
            let counter = Arc::new(WireCounters::default());
            let spec = NodeSpec {
                name: name.clone(),
                addr,
                seeds,
                mesh_id: mesh_id.clone(),
                identity,
                data_dir: root.path().join(name),
                clock: clock.clone(),
                loss: loss.clone(),
                counters: counter.clone(),
                seed: cfg.seed.wrapping_mul(31).wrapping_add(i as u64),
                gossip_interval: cfg.gossip_interval,
                sync: cfg.sync.clone(),
                transient: (cfg.scenario == FullScenario::OfflineDays && i + 1 == cfg.nodes)
                    || cfg.file.transient.contains(&i),
                alerting: alerting.clone(),
                notifier_trap: notifier_trap.clone(),
            };
            let host_probe = probe.clone();
            sim.host(name.as_str(), move || {
                node::run(spec.clone(), host_probe.clone())
            });
            probes.push(probe);
            clocks.push(clock);
            counters.push(counter);
        }
        let mut trace = Sha256::new();
        trace.update(format!("{} {} {}\n", cfg.label(), cfg.nodes, cfg.seed));
        Ok(Cluster {
            sim,
            running: vec![true; names.len()],
            names,
            ips,
            probes,
            clocks,
            counters,
            time,
            faults: Vec::new(),
            trace,
            rng,
            acknowledged: BTreeMap::new(),
            written_ms: BTreeMap::new(),
            window: cfg.sync.window,
            stamps: BTreeMap::new(),
            engine_stamps: BTreeMap::new(),
            clock_violations: Vec::new(),
            writes: 0,
            spreading: Vec::new(),
            spread_ms: Vec::new(),
            false_dead: 0,
            false_suspicions: 0,
            watch: None,
            detected_ms: None,
            sent: Vec::new(),
            partitioned: false,
            repairs: Vec::new(),
            views: vec![None; cfg.nodes],
            view_changed_ms: 0,
            alerter_checks: 0,
            alerters: None,
            alerters_during_fault: None,
            alerter_violations: Vec::new(),
            receiver_down_until_ms: cfg.receiver_down_until.as_millis() as u64,
            receiver_outages: cfg.file.receiver_outages.clone(),
            trapped: Vec::new(),
            doomed: Vec::new(),
            notifier_trap,
            _dirs: vec![root],
        })
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.sim.elapsed().as_millis() as u64
    }

    /// Windows (virtual ms) in which the stand-in receiver refuses every delivery.
    pub(super) fn set_receiver_outages(&mut self, windows: Vec<(u64, u64)>) {
        self.receiver_outages = windows;
    }

    /// Adds a step of the seeded schedule to the trace. Virtual times stay out of it: when
    /// the mesh forms depends on chitchat's own randomness (outside the seed), and every later
    /// step is timed from there, so times would make the same seed hash differently now and then.
    pub(super) fn note(&mut self, what: &str) {
        tracing::debug!(target: "fullstack", "{} {what}", self.now_ms());
        self.trace.update(what.as_bytes());
        self.trace.update(b"\n");
    }

    /// Advances the simulation by one tick and collects what the nodes saw.
    fn step(&mut self) -> Result<(), String> {
        self.sim
            .step()
            .map_err(|e| format!("simulation failed: {e}"))?;
        self.time.set_ms(self.now_ms());
        let now = self.now_ms();
        for i in 0..self.probes.len() {
            if std::mem::take(&mut lock(&self.probes[i]).halted) {
                self.doomed.push((i, now + TRAP_GRACE_MS));
            }
        }
        while let Some(k) = self.doomed.iter().position(|&(_, at)| at <= now) {
            let (i, _) = self.doomed.remove(k);
            if self.running[i] {
                self.crash(i);
                self.trapped.push((i, now));
            }
        }
        if now.is_multiple_of(50)
            && let Some((since, observers, subjects)) = &self.watch
            && self.sees(observers, subjects, false)
        {
            self.detected_ms = Some(now - since);
            self.watch = None;
        }
        if now.is_multiple_of(100) {
            self.watch_alerting(now);
        }
        if now.is_multiple_of(10) && !self.spreading.is_empty() {
            self.watch_spread(now);
        }
        for observer in 0..self.probes.len() {
            let seen = std::mem::take(&mut lock(&self.probes[observer]).seen);
            for s in seen {
                if !matches!(s.to, Liveness::Dead | Liveness::Suspect) {
                    continue;
                }
                let Some(subject) = self.names.iter().position(|n| *n == s.subject) else {
                    continue;
                };
                // A declaration up to 60 s after a fault ended still belongs to it (chitchat
                // and the tracker take a few seconds to see the end of a fault).
                let excused = self.faults.iter().any(|f| {
                    f.pairs.contains(&(observer, subject))
                        && f.from_ms <= now
                        && f.to_ms.is_none_or(|to| now <= to + 60_000)
                });
                if !excused {
                    if s.to == Liveness::Dead {
                        self.false_dead += 1;
                        tracing::info!(target: "fullstack", at = now, observer = %self.names[observer], subject = %s.subject, "declared dead while reachable");
                    } else {
                        self.false_suspicions += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves the events every node now holds from `spreading` to `spread_ms`. A fault ends
    /// the watch: what is written whole but caught by a cut measures the cut, not spreading.
    fn watch_spread(&mut self, now: u64) {
        if self.partitioned || self.running.iter().any(|r| !r) {
            self.spreading.clear();
            return;
        }
        let stores: Vec<_> = self.probes.iter().map(|p| lock(p).store.clone()).collect();
        let spread_ms = &mut self.spread_ms;
        self.spreading.retain(|(hash, at)| {
            let everywhere = stores
                .iter()
                .all(|s| s.as_ref().is_some_and(|s| s.holds(hash)));
            if everywhere {
                spread_ms.push(now - at);
            }
            !everywhere
        });
    }

    /// Collects notifications and, once every view has been still for [`STABLE_VIEW_MS`],
    /// checks that each connected component has at most one alerter.
    fn watch_alerting(&mut self, now: u64) {
        for i in 0..self.probes.len() {
            let mut probe = lock(&self.probes[i]);
            probe.receiver_down = now < self.receiver_down_until_ms
                || self
                    .receiver_outages
                    .iter()
                    .any(|&(from, until)| from <= now && now < until);
            let partitioned = self.partitioned;
            self.sent
                .extend(probe.delivered.drain(..).map(|d| (d, partitioned)));
            let view = self.running[i].then(|| probe.up.clone());
            if view != self.views[i] {
                self.views[i] = view;
                self.view_changed_ms = now;
            }
        }
        if now < self.view_changed_ms + STABLE_VIEW_MS {
            return;
        }
        self.alerter_checks += 1;
        let mut found = Vec::new();
        for comp in self.components() {
            let alerters: Vec<String> = comp
                .iter()
                .filter(|&&i| lock(&self.probes[i]).role == Some(alerting::Role::Alerter))
                .map(|&i| self.names[i].clone())
                .collect();
            if alerters.len() > 1 && self.alerter_violations.len() < 5 {
                self.alerter_violations.push(format!(
                    "t={}ms: {} alerters in one component ({}): {}",
                    now,
                    alerters.len(),
                    comp.iter()
                        .map(|&i| self.names[i].as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    alerters.join(", ")
                ));
            }
            found.push(alerters);
        }
        self.alerters = Some((now, found));
    }

    /// Connected components of running nodes, by mutual views (each sees the other up).
    fn components(&self) -> Vec<Vec<usize>> {
        let n = self.names.len();
        let sees = |a: usize, b: usize| {
            self.views[a]
                .as_ref()
                .is_some_and(|v| v.contains(&self.names[b]))
        };
        let mut comp = vec![usize::MAX; n];
        let mut out = Vec::new();
        for start in (0..n).filter(|&i| self.running[i]) {
            if comp[start] != usize::MAX {
                continue;
            }
            let id = out.len();
            let mut members = vec![start];
            comp[start] = id;
            let mut k = 0;
            while k < members.len() {
                let a = members[k];
                let joining: Vec<usize> = (0..n)
                    .filter(|&b| comp[b] == usize::MAX && self.running[b])
                    .filter(|&b| sees(a, b) && sees(b, a))
                    .collect();
                for b in joining {
                    comp[b] = id;
                    members.push(b);
                }
                k += 1;
            }
            members.sort_unstable();
            out.push(members);
        }
        out
    }

    /// The alerter check ran just now and found exactly one alerter in every component.
    pub(super) fn alerting_settled(&self) -> bool {
        self.alerters.as_ref().is_some_and(|(at, found)| {
            *at + 100 >= self.now_ms() && found.iter().all(|a| a.len() == 1)
        })
    }

    /// Remembers the alerters of the fault, before a heal or a restart changes the views.
    pub(super) fn keep_fault_alerters(&mut self) {
        self.alerters_during_fault = self.alerters.as_ref().map(|(_, a)| a.clone());
    }

    pub(super) fn run_for(&mut self, d: Duration) -> Result<(), String> {
        let until = self.now_ms() + d.as_millis() as u64;
        while self.now_ms() < until {
            self.step()?;
        }
        Ok(())
    }

    pub(super) fn run_until_elapsed(&mut self, at_ms: u64) -> Result<(), String> {
        while self.now_ms() < at_ms {
            self.step()?;
        }
        Ok(())
    }

    /// Steps until `done` holds (checked every 100 ms of virtual time) or `limit` passes;
    /// returns the virtual time it took.
    pub(super) fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Cluster<'a>) -> bool,
    ) -> Result<Option<u64>, String> {
        let start = self.now_ms();
        loop {
            if done(self) {
                return Ok(Some(self.now_ms() - start));
            }
            if self.now_ms() - start >= limit.as_millis() as u64 {
                return Ok(None);
            }
            self.run_for(Duration::from_millis(100))?;
        }
    }

    /// Every running node holds the same events, and every acknowledged event among them.
    pub(super) fn converged(&self) -> bool {
        let since = self.window_start();
        let mut first: Option<BTreeSet<[u8; 32]>> = None;
        for (i, probe) in self.probes.iter().enumerate() {
            if !self.running[i] {
                continue;
            }
            let Some(store) = lock(probe).store.clone() else {
                return false;
            };
            let set: BTreeSet<[u8; 32]> = store
                .sync_items(since)
                .into_iter()
                .map(|(_, h)| h)
                .collect();
            if !self.in_window(since).all(|(h, _)| set.contains(h)) {
                return false;
            }
            match &first {
                None => first = Some(set),
                Some(f) if *f != set => return false,
                Some(_) => {}
            }
        }
        true
    }

    /// Where the event sets are compared from: the latest start of any node's sync window on
    /// its own clock. Older events are no longer reconciled (and the agent prunes them).
    pub(super) fn window_start(&self) -> i64 {
        self.clocks
            .iter()
            .map(|c| sync::schedule::window_start_ms(sync::Clock::now(c.as_ref()), self.window))
            .max()
            .unwrap_or(0)
    }

    /// The acknowledged events at or after `since`.
    pub(super) fn in_window(&self, since: i64) -> impl Iterator<Item = (&[u8; 32], &String)> {
        self.acknowledged
            .iter()
            .filter(move |(h, _)| self.written_ms.get(*h).is_some_and(|&ms| ms >= since))
    }

    /// Every running observer in `observers` sees every node in `subjects` as up (`up`) or
    /// none of them (`!up`).
    pub(super) fn sees(&self, observers: &[usize], subjects: &[usize], up: bool) -> bool {
        observers.iter().filter(|&&o| self.running[o]).all(|&o| {
            let probe = lock(&self.probes[o]);
            subjects
                .iter()
                .filter(|&&s| s != o)
                .all(|&s| probe.up.contains(&self.names[s]) == up)
        })
    }

    pub(super) fn everyone(&self) -> Vec<usize> {
        (0..self.names.len()).collect()
    }
}

#[derive(Default)]
pub(super) struct Figures {
    pub(super) join_ms: Option<u64>,
    pub(super) detection_ms: Option<u64>,
    pub(super) convergence_ms: Option<u64>,
}

/// Runs one scenario with one seed.
pub fn run(cfg: &FullstackConfig) -> Result<Outcome, String> {
    let wall = std::time::Instant::now();
    let mut c = Cluster::build(cfg)?;
    let all = c.everyone();
    let mut figures = Figures {
        join_ms: c.run_until(Duration::from_secs(30), |c| c.sees(&all, &all, true))?,
        ..Figures::default()
    };
    if figures.join_ms.is_none() {
        return Err(format!(
            "seed {}: the mesh did not form within 30 s of virtual time",
            cfg.seed
        ));
    }
    c.note("joined");
    super::builtin::script(&mut c, cfg, &mut figures)?;
    let settle = cfg.settle_limit;
    // The views settle and one alerter per component is named (its election events sync
    // like any other), then the sets are equal again.
    c.run_until(settle, Cluster::alerting_settled)?;
    c.run_until(settle, Cluster::converged)?;
    // A little more time, so that a declaration of death right after convergence is caught.
    c.run_for(Duration::from_secs(2))?;
    Ok(c.finish(cfg, figures, wall))
}

/// The part of an event id the seed decides: a UUIDv7's bits after its 48-bit millisecond
/// timestamp, drawn from the run's RNG. The timestamp is virtual time, which follows when the
/// mesh formed (chitchat's randomness, outside the seed), so it stays out of the trace.
pub(super) fn seeded_part(id: &uuid::Uuid) -> String {
    hex::encode(&id.as_bytes()[6..])
}
