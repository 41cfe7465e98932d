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
use serde::Serialize;
use sha2::{Digest, Sha256};
use sync::{Event, Severity};

pub use super::builtin::FullScenario;
use super::checks::hlc_ntp;
use super::clock::{NodeClock, VirtualTime};
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

/// Run settings; each field's doc says what it trades.
#[derive(Debug, Clone)]
pub struct FullstackConfig {
    pub nodes: usize,
    pub seed: u64,
    pub scenario: FullScenario,
    /// Independent loss per datagram on every link, 0 to 1.
    pub loss: f64,
    /// One-way latency range per datagram (turmoil draws within it): jitter is the width.
    pub latency_min: Duration,
    pub latency_max: Duration,
    /// Events each node writes, one per `write_every`, during the write phase.
    pub writes_per_node: usize,
    pub write_every: Duration,
    /// How long a partition, one-way cut or crash lasts. Longer than the QUIC idle timeout
    /// (10 s) by default, so connections across it die as they would in a real outage.
    pub fault_for: Duration,
    /// Give up waiting for convergence after this long (virtual).
    pub settle_limit: Duration,
    pub gossip_interval: Duration,
    pub sync: sync::schedule::ScheduleConfig,
    /// The stand-in receiver refuses every delivery until this much virtual time has passed
    /// (a receiver outage at the start of the run).
    pub receiver_down_until: Duration,
    /// How many days the laptop of [`FullScenario::OfflineDays`] is away.
    pub offline_days: u32,
    /// In `steady` and `skew`, how long to run after the first write round has converged
    /// before dissemination is measured. That round opens most QUIC connections, and a
    /// young connection repairs a lost packet slowly: a handshake packet lost waits for
    /// quinn's first probe timeout (about 1 s, from its 333 ms initial RTT), and an RTT
    /// sample taken across such a loss leaves the estimate at hundreds of ms, so probe
    /// timeouts stay near a second until a few dozen samples (keep-alives every 2 s, and
    /// traffic) have brought it down. Agents keep their connections for days, so 60 s shows
    /// what a running mesh does; the 3 s default only lets the first round's dials end (the
    /// connect timeout is 3 s) and shows what a freshly started mesh does.
    pub warmup: Duration,
    /// Set by a scenario file (see [`super::scenario_play`]); empty or none for the built-in
    /// scenarios.
    pub file: FileSettings,
}

/// What a scenario file sets beyond the built-in knobs.
#[derive(Debug, Clone, Default)]
pub struct FileSettings {
    /// The file's name (reported as the scenario) and its time compression.
    pub name: Option<String>,
    pub speed: u64,
    /// Nodes that gossip the agent's `transient` flag.
    pub transient: Vec<usize>,
    /// Initial wall-clock offset per node, ms (missing: 0).
    pub clock_offsets: Vec<i64>,
    /// Loss per directed pair `(from, to)`, on top of [`FullstackConfig::loss`].
    pub pair_loss: Vec<(usize, usize, f64)>,
    /// Windows of virtual time (ms) in which the stand-in receiver refuses every delivery.
    pub receiver_outages: Vec<(u64, u64)>,
}

impl FullstackConfig {
    /// The scenario's name in reports: the file's, or the built-in one's.
    pub fn label(&self) -> String {
        self.file
            .name
            .clone()
            .unwrap_or_else(|| self.scenario.name().to_owned())
    }

    /// The command that reruns this configuration.
    pub(super) fn reproduce(&self) -> String {
        match &self.file.name {
            Some(name) => format!(
                "cargo run -p simulations -- fullstack --scenario {name} --speed {} --seed {}",
                self.file.speed, self.seed
            ),
            None => format!(
                "cargo run -p simulations -- fullstack --scenario {} --nodes {} --seed {}",
                self.scenario.name(),
                self.nodes,
                self.seed
            ),
        }
    }

    pub fn new(nodes: usize, seed: u64, scenario: FullScenario) -> Self {
        FullstackConfig {
            nodes,
            seed,
            scenario,
            loss: 0.0,
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(5),
            writes_per_node: 5,
            write_every: Duration::from_secs(1),
            fault_for: match scenario {
                FullScenario::Restart => Duration::from_secs(3),
                // Each side must elect its own alerter (detection, then the 10 s settle) and
                // outlast the 30 s group wait of the alert written before the split, so both
                // sides page.
                FullScenario::Split => Duration::from_secs(45),
                _ => Duration::from_secs(15),
            },
            settle_limit: Duration::from_secs(60),
            gossip_interval: Duration::from_millis(300),
            sync: node::schedule(),
            receiver_down_until: Duration::ZERO,
            offline_days: 3,
            warmup: Duration::from_secs(3),
            file: FileSettings::default(),
        }
    }
}

/// Figures and verdict of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub scenario: String,
    pub nodes: usize,
    pub seed: u64,
    pub loss: f64,
    /// Virtual time until every node saw every other as up.
    pub join_ms: Option<u64>,
    /// Virtual time from a crash or cut until every affected observer saw the other side down.
    pub detection_ms: Option<u64>,
    /// Virtual time from the heal (or restart, or end of writes) until every node held the same
    /// events, all acknowledged writes included.
    pub convergence_ms: Option<u64>,
    pub events_acknowledged: usize,
    /// From a write to the moment every node holds it (virtual ms, sampled every 10 ms), over
    /// the events written while every node was up and no cut was in force: median and 99th
    /// percentile.
    pub dissemination_p50_ms: Option<u64>,
    pub dissemination_p99_ms: Option<u64>,
    /// UDP payload bytes (QUIC packets) per node per virtual second.
    pub bytes_per_node_per_s: f64,
    pub datagrams_lost: u64,
    /// Peers declared dead / suspect while no fault separated them from the observer.
    pub false_dead: u64,
    pub false_suspicions: u64,
    pub sessions_completed: u64,
    /// Per node, the events its store held at each start.
    pub opened_with: BTreeMap<String, Vec<usize>>,
    pub virtual_ms: u64,
    pub wall_ms: u64,
    /// SHA-256 over what the seed decides: the schedule of writes and faults as executed (with
    /// the seeded bits of event ids, not their timestamps) and each node's final event set.
    pub trace_hash: String,
    /// Every notification the stand-in receiver got, in order.
    pub notifications: Vec<Delivered>,
    /// How many times the alerter invariant was checked (views stable for
    /// [`STABLE_VIEW_MS`]).
    pub alerter_checks: u64,
    /// The alerters per connected component at the last check before the fault ended (heal
    /// or restart), and at the end of the run.
    pub alerters_during_fault: Option<Vec<Vec<String>>>,
    pub alerters_at_end: Option<Vec<Vec<String>>>,
    /// The event sets are compared from here (ms since the Unix epoch): the latest start of any
    /// node's sync window at the end, since what is older is no longer reconciled and may be
    /// pruned.
    pub window_start_ms: i64,
    /// Acknowledged events older than [`Outcome::window_start_ms`], so not required everywhere.
    pub outside_window: usize,
    /// From the oldest to the newest acknowledged event's timestamp.
    pub clock_span_ms: u64,
    /// The oldest event any node still holds at the end (ms since the Unix epoch): retention
    /// dropped what is older.
    pub oldest_held_ms: Option<i64>,
    /// What the first running node holds at the end, by `source`: the workload's events and
    /// what the agent's own drivers recorded (`labmesh-mesh` liveness transitions,
    /// `labmesh-alerting` alerts and the ledger).
    pub events_by_source: BTreeMap<String, usize>,
    pub violations: Vec<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

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
    writes: u64,
    /// Events written while the mesh was whole and not yet on every node: hash, write time.
    spreading: Vec<([u8; 32], u64)>,
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
        let sync::NewEvent {
            event_type,
            severity,
            source,
            service,
            correlation_id,
            payload,
        } = new;
        let hlc = store.stamp_hlc();
        self.check_stamp(i, &store, ms, &hlc);
        let mut extra = serde_json::Map::new();
        extra.insert("hlc".into(), hlc.clone().into());
        let event = Event {
            id: uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid(),
            timestamp: at,
            node: self.names[i].clone(),
            event_type: event_type.clone(),
            severity,
            source,
            service,
            correlation_id,
            payload,
            extra,
        };
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
