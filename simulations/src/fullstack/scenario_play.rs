//! Plays a scenario file (`simulations/scenarios/*.toml`, the discrete simulation's format) on
//! the full stack: the file's nodes, links, clocks, workload, faults and receiver outages,
//! compressed in time by a speed factor so a run fits in minutes of virtual time. The mapping
//! is in [`Plan`]; the run's checks are the built-in scenarios' (`Cluster::finish`). See
//! "Scenario files on the full stack" in `docs/simulation.md`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::scenario::{CrashMoment, Fault as FileFault, LinkSpec, Rates, Scenario, scenarios_dir};
use crate::workload::{self, Work};

use super::node::lock;
use super::run::{Cluster, Fault, Figures, FileSettings, FullScenario, FullstackConfig, Outcome};

/// The default speed compresses a file into at most this many virtual seconds.
pub const MAX_VIRTUAL_S: u64 = 600;

/// The most nodes the full stack runs (each is a whole agent stack in this process).
pub const MAX_NODES: usize = 30;

/// Faults closer than this after scaling overlap what the stack does about each (a gossip
/// round, a sync tick): the plan warns.
const MIN_FAULT_GAP_MS: u64 = 1_000;

/// The QUIC idle timeout: a crash or cut shorter than this is bridged by the old connections.
const QUIC_IDLE_MS: u64 = 10_000;

/// The alerting group wait of the shipped config: a fault shorter than it cannot hold an
/// alert across it.
const GROUP_WAIT_MS: u64 = 30_000;

/// A crash longer than this (virtual) after scaling costs many minutes of wall time.
const LONG_ABSENCE_MS: u64 = 600_000;

/// Above this loss a link is expected to lose peers now and then: a declaration of death
/// across it is not a false one (the run's own rule, applied per pair).
const FALSE_DEATH_LOSS: f64 = 0.05;

/// The smallest whole speed that fits `duration_s + quiet_s` in [`MAX_VIRTUAL_S`].
pub fn default_speed(s: &Scenario) -> u64 {
    (s.duration_s + s.quiet_s).div_ceil(MAX_VIRTUAL_S).max(1)
}

/// Loads a file by name (in `simulations/scenarios/`) or path, refusing one the full stack
/// cannot run.
pub fn load(arg: &str) -> Result<Scenario, String> {
    let s = Scenario::load(arg)?;
    let direct = PathBuf::from(arg);
    let path = if direct.exists() {
        direct
    } else {
        scenarios_dir().join(format!("{arg}.toml"))
    };
    check_nodes(&s).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(s)
}

fn check_nodes(s: &Scenario) -> Result<(), String> {
    if !(2..=MAX_NODES).contains(&s.nodes) {
        return Err(format!(
            "scenario {} has {} nodes; the full stack runs 2 to {MAX_NODES} \
             (the discrete simulation runs it: `cargo run -p simulations -- run {}`)",
            s.name, s.nodes, s.name
        ));
    }
    Ok(())
}

/// A file mapped onto the full stack at one speed: every time in virtual ms from the moment
/// the mesh has formed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub nodes: usize,
    pub speed: u64,
    pub duration_ms: u64,
    pub quiet_ms: u64,
    /// The default link: turmoil draws each datagram's latency in `[latency, latency +
    /// jitter]`.
    pub latency: (Duration, Duration),
    /// Links touching a node with an override `(a, b, min, max)`, `a < b`: the worse spec.
    pub link_latency: Vec<(usize, usize, Duration, Duration)>,
    pub loss: f64,
    /// Loss per directed pair where it differs from [`Plan::loss`].
    pub pair_loss: Vec<(usize, usize, f64)>,
    pub clock_offsets: Vec<i64>,
    pub transient: Vec<usize>,
    /// The file's rates (per hour of the file's time); the player multiplies them by the
    /// speed and divides follow-up delays by it.
    pub rates: Rates,
    /// The faults in file order, with their scaled time (ms).
    pub faults: Vec<(u64, FileFault)>,
    /// Scaled `crash_notifier` down times, by index into [`Plan::faults`].
    pub notifier_down_ms: BTreeMap<usize, u64>,
    pub receiver_outages: Vec<(u64, u64)>,
    pub tick: Duration,
    /// The file's `differ_delay_ms` (the agent's default unless it says otherwise).
    pub differ_delay: Duration,
    /// What the chosen speed makes doubtful (faults too close, cuts shorter than the QUIC
    /// idle timeout or the group wait, absences that stay long).
    pub warnings: Vec<String>,
}

impl Plan {
    pub fn new(s: &Scenario, speed: Option<u64>) -> Result<Plan, String> {
        check_nodes(s)?;
        let speed = speed.unwrap_or_else(|| default_speed(s));
        if speed == 0 {
            return Err("--speed must be at least 1".into());
        }
        let scale = |s: u64| s * 1000 / speed;
        let n = s.nodes;
        let node_spec = |i: usize| {
            s.node_links
                .iter()
                .filter(|l| l.node == i)
                .fold(s.link, |acc, l| acc.worse(l.spec))
        };
        let range = |l: LinkSpec| {
            let min = Duration::from_millis(l.latency_ms.max(1));
            (min, min + Duration::from_millis(l.jitter_ms))
        };
        let overridden: BTreeSet<usize> = s.node_links.iter().map(|l| l.node).collect();
        let mut link_latency = Vec::new();
        let mut pair_loss = Vec::new();
        for a in 0..n {
            for b in (a + 1)..n {
                if !overridden.contains(&a) && !overridden.contains(&b) {
                    continue;
                }
                let spec = node_spec(a).worse(node_spec(b));
                let (min, max) = range(spec);
                link_latency.push((a, b, min, max));
                if spec.loss > s.link.loss {
                    pair_loss.push((a, b, spec.loss));
                    pair_loss.push((b, a, spec.loss));
                }
            }
        }
        let mut clock_offsets = vec![0; n];
        for c in &s.clock_offsets {
            clock_offsets[c.node] = c.offset_ms;
        }
        let mut faults: Vec<(u64, FileFault)> = s
            .faults
            .iter()
            .map(|f| (scale(f.at_s()), f.clone()))
            .collect();
        // The file's order breaks ties (a clock jump listed before a restart at the same time
        // comes first).
        faults.sort_by_key(|(at, _)| *at);
        let notifier_down_ms = faults
            .iter()
            .enumerate()
            .filter_map(|(i, (_, f))| match f {
                FileFault::CrashNotifier {
                    down_s: Some(d), ..
                } => Some((i, scale(*d))),
                _ => None,
            })
            .collect();
        let plan = Plan {
            name: s.name.clone(),
            nodes: n,
            speed,
            duration_ms: scale(s.duration_s),
            quiet_ms: scale(s.quiet_s),
            latency: range(s.link),
            link_latency,
            loss: s.link.loss,
            pair_loss,
            clock_offsets,
            transient: s.transient.clone(),
            rates: s.rates.clone(),
            faults,
            notifier_down_ms,
            receiver_outages: s
                .receiver_outages
                .iter()
                .map(|w| (scale(w.from_s), scale(w.until_s)))
                .collect(),
            tick: Duration::from_millis(s.tick_ms),
            differ_delay: Duration::from_millis(s.differ_delay_ms),
            warnings: Vec::new(),
        };
        Ok(plan.with_warnings())
    }

    fn with_warnings(mut self) -> Plan {
        let mut w = Vec::new();
        let times: BTreeSet<u64> = self.faults.iter().map(|(at, _)| *at).collect();
        let times: Vec<u64> = times.into_iter().collect();
        for pair in times.windows(2) {
            if pair[1] - pair[0] < MIN_FAULT_GAP_MS {
                w.push(format!(
                    "faults at {} ms and {} ms are under {MIN_FAULT_GAP_MS} ms apart at speed {}",
                    pair[0], pair[1], self.speed
                ));
            }
        }
        // How long each crash and cut lasts after scaling.
        let mut down_since: BTreeMap<usize, u64> = BTreeMap::new();
        let mut cut_since: Option<u64> = None;
        for (i, (at, f)) in self.faults.iter().enumerate() {
            match f {
                FileFault::Crash { node, .. } => {
                    down_since.insert(*node, *at);
                }
                FileFault::Restart { node, .. } => {
                    if let Some(from) = down_since.remove(node) {
                        w.extend(self.span_warnings(&format!("crash of node {node}"), *at - from));
                    }
                }
                FileFault::Partition { .. } | FileFault::OneWay { .. } => {
                    cut_since.get_or_insert(*at);
                }
                FileFault::Heal { .. } => {
                    if let Some(from) = cut_since.take() {
                        w.extend(self.span_warnings("cut", *at - from));
                    }
                }
                FileFault::CrashNotifier { .. } => {
                    if let Some(d) = self.notifier_down_ms.get(&i) {
                        w.extend(self.span_warnings("crash_notifier", *d));
                    }
                }
                FileFault::ClockJump { .. } => {}
            }
        }
        let incident_ms = self.rates.incident_s * 1000 / self.speed;
        if self.rates.incidents_per_hour > 0.0 && incident_ms < GROUP_WAIT_MS {
            w.push(format!(
                "incidents last {incident_ms} ms at speed {}, under the {GROUP_WAIT_MS} ms group \
                 wait: most recover before anyone is paged",
                self.speed
            ));
        }
        self.warnings = w;
        self
    }

    fn span_warnings(&self, what: &str, ms: u64) -> Vec<String> {
        let mut w = Vec::new();
        if ms < QUIC_IDLE_MS {
            w.push(format!(
                "{what} lasts {ms} ms, under the QUIC idle timeout ({QUIC_IDLE_MS} ms): \
                 connections across it survive"
            ));
        }
        if ms > LONG_ABSENCE_MS {
            w.push(format!(
                "{what} lasts {ms} ms of virtual time: raise --speed to shorten the run"
            ));
        }
        w
    }

    /// The run's settings for one seed.
    pub fn config(&self, seed: u64) -> FullstackConfig {
        let mut cfg = FullstackConfig::new(self.nodes, seed, FullScenario::File);
        cfg.loss = self.loss;
        cfg.latency_min = self.latency.0;
        cfg.latency_max = self.latency.1;
        cfg.sync.tick = self.tick;
        cfg.sync.differ_delay = self.differ_delay;
        cfg.file = FileSettings {
            name: Some(self.name.clone()),
            speed: self.speed,
            transient: self.transient.clone(),
            clock_offsets: self.clock_offsets.clone(),
            pair_loss: self.pair_loss.clone(),
            receiver_outages: Vec::new(),
        };
        cfg
    }

    /// Workload rate per hour of virtual time.
    fn rate(&self, per_hour: f64) -> f64 {
        per_hour * self.speed as f64
    }
}

/// One file run on the full stack.
#[derive(Debug, Clone, Serialize)]
pub struct FileOutcome {
    pub speed: u64,
    /// The run's figures and verdict, as for a built-in scenario.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// What the speed makes doubtful (see [`Plan::warnings`]).
    pub warnings: Vec<String>,
    /// `crash_notifier` faults as played: who stopped, when, or that none fired.
    pub notifier_crashes: Vec<String>,
}

impl FileOutcome {
    pub fn ok(&self) -> bool {
        self.outcome.ok()
    }
}

enum Item {
    Work(usize, Work),
    Fault(usize),
    Restart(usize),
}

struct Player<'a, 'p> {
    c: Cluster<'a>,
    plan: &'p Plan,
    queue: BTreeMap<(u64, u64), Item>,
    seq: u64,
    work_seq: u64,
    /// When the mesh had formed: the file's time 0.
    t0: u64,
    /// Fault windows of the partitions and cuts in force, ended by a heal.
    cut_faults: Vec<usize>,
    /// Fault windows of lossy links, open the whole run.
    lossy_faults: Vec<usize>,
    watched: bool,
    last_repair: Option<u64>,
    converged_after: Option<u64>,
    /// The armed `crash_notifier`'s down time, if it restarts.
    armed_down: Option<Option<u64>>,
    /// `crash_notifier`s due while another was still armed: each is armed once the one before
    /// it fired.
    waiting_traps: VecDeque<(CrashMoment, Option<u64>)>,
    notifier_crashes: Vec<String>,
}

impl<'a> Player<'a, '_> {
    fn push(&mut self, at: u64, item: Item) {
        self.seq += 1;
        self.queue.insert((at, self.seq), item);
    }

    fn schedule(&mut self, node: usize, work: Work, from: u64) {
        let per_hour = match work {
            Work::Incident => self.plan.rates.incidents_per_hour,
            Work::Deploy => self.plan.rates.deployments_per_hour,
            Work::Metric => self.plan.rates.metrics_per_hour,
            _ => return,
        };
        if let Some(wait) = workload::next_wait(&mut self.c.rng, self.plan.rate(per_hour)) {
            let at = from + wait;
            if at < self.t0 + self.plan.duration_ms {
                self.push(at, Item::Work(node, work));
            }
        }
    }

    /// Runs to `target`, or less when a trap stopped a node (its restart may be due first).
    fn advance(&mut self, target: u64) -> Result<(), String> {
        while self.c.now_ms() < target {
            let next = (self.c.now_ms() / 100 + 1) * 100;
            self.c.run_until_elapsed(next.min(target))?;
            let now = self.c.now_ms();
            if self.last_repair.is_some()
                && self.converged_after.is_none()
                && now.is_multiple_of(500)
                && self.c.converged()
            {
                self.converged_after = self.last_repair.map(|r| now - r);
            }
            if !self.c.trapped.is_empty() {
                self.on_trapped();
                return Ok(());
            }
        }
        Ok(())
    }

    fn on_trapped(&mut self) {
        for (i, at) in std::mem::take(&mut self.c.trapped) {
            let down = self.armed_down.take().flatten();
            self.notifier_crashes.push(format!(
                "{} stopped by crash_notifier at {} ms (file time {} s){}",
                self.c.names[i],
                at - self.t0,
                (at - self.t0) * self.plan.speed / 1000,
                down.map_or(", not restarted".into(), |d| format!(
                    ", restarts {d} ms later"
                ))
            ));
            self.watch(vec![i]);
            if let Some(d) = down {
                self.push(at + d, Item::Restart(i));
            }
            if let Some((moment, down)) = self.waiting_traps.pop_front() {
                self.arm(moment, down);
            }
        }
    }

    fn arm(&mut self, moment: CrashMoment, down: Option<u64>) {
        *lock(&self.c.notifier_trap) = Some(moment);
        self.armed_down = Some(down);
        self.c
            .note(&format!("arm crash_notifier {}", moment_name(moment)));
    }

    /// Detection is measured for the first crash or partition only.
    fn watch(&mut self, subjects: Vec<usize>) {
        if self.watched {
            return;
        }
        self.watched = true;
        let observers = (0..self.plan.nodes)
            .filter(|o| !subjects.contains(o))
            .collect();
        self.c.watch = Some((self.c.now_ms(), observers, subjects));
    }

    fn repaired(&mut self) {
        self.last_repair = Some(self.c.now_ms());
        self.converged_after = None;
    }

    fn fault(&mut self, idx: usize) -> Result<(), String> {
        let (_, f) = self.plan.faults[idx].clone();
        let n = self.plan.nodes;
        match f {
            FileFault::Partition { groups, .. } => {
                let mut groups: Vec<Vec<usize>> =
                    groups.into_iter().filter(|g| !g.is_empty()).collect();
                let rest: Vec<usize> = (0..n)
                    .filter(|i| !groups.iter().any(|g| g.contains(i)))
                    .collect();
                if !rest.is_empty() {
                    groups.push(rest);
                }
                for a in 0..groups.len() {
                    for b in (a + 1)..groups.len() {
                        self.cut_faults.push(self.c.faults.len());
                        self.c.partition(&groups[a], &groups[b]);
                    }
                }
                if let Some(first) = groups.first() {
                    self.watch(first.clone());
                }
            }
            FileFault::OneWay { from, to, .. } => {
                for &x in &from {
                    for &y in to.iter().filter(|&&y| y != x) {
                        self.c.sim.partition_oneway(self.c.ips[x], self.c.ips[y]);
                    }
                }
                let pairs = self.c.all_pairs(&from, &to);
                self.cut_faults.push(self.c.faults.len());
                let from_ms = self.c.now_ms();
                self.c.faults.push(Fault {
                    pairs,
                    from_ms,
                    to_ms: None,
                });
                self.c.partitioned = true;
                self.c.note(&format!("one-way cut {from:?} -> {to:?}"));
            }
            FileFault::Heal { .. } => {
                self.c.keep_fault_alerters();
                for a in 0..n {
                    for b in (a + 1)..n {
                        self.c.sim.repair(self.c.ips[a], self.c.ips[b]);
                    }
                }
                self.c.partitioned = false;
                let now = self.c.now_ms();
                self.c.repairs.push(now);
                for i in std::mem::take(&mut self.cut_faults) {
                    self.c.faults[i].to_ms.get_or_insert(now);
                }
                self.c.note("heal");
                self.repaired();
            }
            FileFault::Crash { node, .. } => {
                if self.c.running[node] {
                    self.c.crash(node);
                    self.watch(vec![node]);
                }
            }
            FileFault::Restart { node, .. } => self.restart(node),
            FileFault::CrashNotifier { moment, .. } => {
                let down = self.plan.notifier_down_ms.get(&idx).copied();
                if self.armed_down.is_some() {
                    self.waiting_traps.push_back((moment, down));
                } else {
                    self.arm(moment, down);
                }
            }
            FileFault::ClockJump { node, by_ms, .. } => {
                self.c.clocks[node].jump(by_ms);
                let name = self.c.names[node].clone();
                self.c.note(&format!("clock jump {name} {by_ms:+} ms"));
            }
        }
        Ok(())
    }

    fn restart(&mut self, node: usize) {
        if self.c.running[node] {
            return;
        }
        self.c.restart(node);
        // A lossy link stays lossy: its window outlives the restart of one of its ends.
        for &i in &self.lossy_faults {
            self.c.faults[i].to_ms = None;
        }
        self.repaired();
    }

    fn work(&mut self, node: usize, work: Work) -> Result<(), String> {
        if matches!(work, Work::Incident | Work::Deploy | Work::Metric) {
            let now = self.c.now_ms();
            self.schedule(node, work.clone(), now);
        }
        if !self.c.running[node] {
            return Ok(());
        }
        self.work_seq += 1;
        let (event, follow) =
            workload::make(&mut self.c.rng, &work, &self.plan.rates, self.work_seq);
        self.c.write_new(node, event)?;
        if let Some((after, next)) = follow {
            let at = self.c.now_ms() + after / self.plan.speed;
            self.push(at, Item::Work(node, next));
        }
        Ok(())
    }
}

fn moment_name(m: CrashMoment) -> &'static str {
    match m {
        CrashMoment::BeforeSend => "before_send",
        CrashMoment::BeforeOutcome => "before_outcome",
        CrashMoment::AfterOutcome => "after_outcome",
    }
}

/// Plays `s` with one seed at `speed` (default: [`default_speed`]).
pub fn play(s: &Scenario, seed: u64, speed: Option<u64>) -> Result<FileOutcome, String> {
    let plan = Plan::new(s, speed)?;
    play_plan(&plan, seed)
}

pub fn play_plan(plan: &Plan, seed: u64) -> Result<FileOutcome, String> {
    let wall = Instant::now();
    let mut cfg = plan.config(seed);
    let mut c = Cluster::build(&cfg)?;
    for &(a, b, min, max) in &plan.link_latency {
        c.sim.set_link_latency(c.ips[a], c.ips[b], min);
        c.sim.set_link_max_message_latency(c.ips[a], c.ips[b], max);
    }
    let mut lossy_faults = Vec::new();
    let lossy: BTreeSet<(usize, usize)> = plan
        .pair_loss
        .iter()
        .filter(|(_, _, l)| *l > FALSE_DEATH_LOSS)
        .map(|&(a, b, _)| (a, b))
        .collect();
    if !lossy.is_empty() {
        lossy_faults.push(c.faults.len());
        c.faults.push(Fault {
            pairs: lossy,
            from_ms: 0,
            to_ms: None,
        });
    }
    let all = c.everyone();
    let join_ms = c.run_until(Duration::from_secs(30), |c| c.sees(&all, &all, true))?;
    if join_ms.is_none() {
        return Err(format!(
            "seed {seed}: the mesh did not form within 30 s of virtual time"
        ));
    }
    c.note("joined");
    let t0 = c.now_ms();
    // Outages are timed from the file's time 0 like everything else.
    let outages: Vec<(u64, u64)> = plan
        .receiver_outages
        .iter()
        .map(|&(a, b)| (t0 + a, t0 + b))
        .collect();
    cfg.file.receiver_outages = outages.clone();
    c.set_receiver_outages(outages);
    let mut p = Player {
        c,
        plan,
        queue: BTreeMap::new(),
        seq: 0,
        work_seq: 0,
        t0,
        cut_faults: Vec::new(),
        lossy_faults,
        watched: false,
        last_repair: None,
        converged_after: None,
        armed_down: None,
        waiting_traps: VecDeque::new(),
        notifier_crashes: Vec::new(),
    };
    for i in 0..plan.faults.len() {
        p.push(t0 + plan.faults[i].0, Item::Fault(i));
    }
    for node in 0..plan.nodes {
        for work in [Work::Incident, Work::Deploy, Work::Metric] {
            p.schedule(node, work, t0);
        }
    }
    let end = t0 + plan.duration_ms + plan.quiet_ms;
    loop {
        let next = p.queue.first_key_value().map(|(k, _)| k.0);
        let target = match next {
            Some(at) => at,
            None if p.c.now_ms() < end => end,
            None => break,
        };
        if p.c.now_ms() < target {
            p.advance(target)?;
            continue;
        }
        let Some((_, item)) = p.queue.pop_first() else {
            break;
        };
        match item {
            Item::Work(node, work) => p.work(node, work)?,
            Item::Fault(i) => p.fault(i)?,
            Item::Restart(node) => p.restart(node),
        }
    }
    let unfired = usize::from(lock(&p.c.notifier_trap).take().is_some()) + p.waiting_traps.len();
    if unfired > 0 {
        p.notifier_crashes.push(format!(
            "{unfired} crash_notifier(s) never fired: no notification after them"
        ));
    }
    let settle = cfg.settle_limit;
    let convergence_ms = match (p.last_repair, p.converged_after) {
        (Some(_), Some(after)) => Some(after),
        (Some(r), None) => {
            p.c.run_until(settle, Cluster::converged)?
                .map(|_| p.c.now_ms() - r)
        }
        (None, _) => p.c.run_until(settle, Cluster::converged)?,
    };
    let figures = Figures {
        join_ms,
        detection_ms: p.c.detected_ms,
        convergence_ms,
    };
    p.c.run_until(settle, Cluster::alerting_settled)?;
    p.c.run_until(settle, Cluster::converged)?;
    p.c.run_for(Duration::from_secs(2))?;
    let notifier_crashes = std::mem::take(&mut p.notifier_crashes);
    let outcome = p.c.finish(&cfg, figures, wall);
    Ok(FileOutcome {
        speed: plan.speed,
        outcome,
        warnings: plan.warnings.clone(),
        notifier_crashes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Scenario {
        match load(name) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_default_speed_fits_a_file_in_ten_virtual_minutes() {
        // 2400 + 300 s: 4.5 times too long, so 5.
        let split = shipped("split-brain-5");
        assert_eq!(default_speed(&split), 5);
        let plan = Plan::new(&split, None).unwrap();
        assert_eq!((plan.duration_ms, plan.quiet_ms), (480_000, 60_000));
        let at: Vec<u64> = plan.faults.iter().map(|(at, _)| *at).collect();
        assert_eq!(at, [120_000, 360_000]);
        // Latency 3 ms, jitter 5 ms; 1 % loss everywhere, no per-pair override.
        assert_eq!(
            plan.latency,
            (Duration::from_millis(3), Duration::from_millis(8))
        );
        assert!((plan.loss - 0.01).abs() < 1e-9 && plan.pair_loss.is_empty());
        // Eight days: a speed of 1153 leaves just under 600 s.
        let week = shipped("offline-week");
        assert_eq!(default_speed(&week), 1153);
        let plan = Plan::new(&week, None).unwrap();
        assert_eq!(plan.faults[0].0, 43_200_000 / 1153);
        assert!(plan.duration_ms + plan.quiet_ms <= MAX_VIRTUAL_S * 1000);
        assert_eq!(plan.tick, Duration::from_secs(1));
        // Short files run at their own pace.
        let mut short = split.clone();
        (short.duration_s, short.quiet_s) = (300, 60);
        assert_eq!(default_speed(&short), 1);
    }

    #[test]
    fn a_slow_node_makes_every_link_it_touches_slow_and_lossy() {
        let plan = Plan::new(&shipped("flaky-wifi-laptop"), Some(10)).unwrap();
        assert_eq!(plan.transient, [5]);
        // Node 5 (80 ms + 200 ms jitter, 30 % loss) against each of the five others, both
        // ways; the others keep the default link.
        assert_eq!(plan.link_latency.len(), 5);
        assert!(plan.link_latency.iter().all(|&(a, b, min, max)| b == 5
            && a < 5
            && min == Duration::from_millis(80)
            && max == Duration::from_millis(280)));
        assert_eq!(plan.pair_loss.len(), 10);
        assert!(
            plan.pair_loss
                .iter()
                .all(|&(a, b, l)| (a == 5 || b == 5) && l == 0.3)
        );
        // Partition at 900 s and heal at 1500 s, at 10x.
        assert_eq!(plan.faults[0].0, 90_000);
        assert_eq!(plan.faults[1].0, 150_000);
    }

    #[test]
    fn offsets_outages_and_notifier_downtimes_scale_but_clock_jumps_do_not() {
        let skew = Plan::new(&shipped("skewed-clocks"), None).unwrap();
        assert_eq!(
            skew.clock_offsets,
            [0, 600_000, -600_000, 45_000, -3_000, 0]
        );
        let outage = Plan::new(&shipped("receiver-outage"), Some(10)).unwrap();
        assert_eq!(
            outage.receiver_outages,
            [(60_000, 300_000), (330_000, 360_000)]
        );
        let crash = Plan::new(&shipped("alerter-crash-mid-notification"), Some(6)).unwrap();
        assert_eq!(
            crash.notifier_down_ms.values().copied().collect::<Vec<_>>(),
            [30_000; 3]
        );
        let rolling = Plan::new(&shipped("rolling-restarts"), Some(10)).unwrap();
        let jump = rolling
            .faults
            .iter()
            .find(|(_, f)| matches!(f, FileFault::ClockJump { .. }));
        assert!(
            matches!(
                jump,
                Some((147_000, FileFault::ClockJump { by_ms: 120_000, .. }))
            ),
            "{jump:?}"
        );
        // 90 s crashes at 10x last 9 s: under the QUIC idle timeout, which the plan says.
        assert!(
            rolling
                .warnings
                .iter()
                .any(|w| w.contains("QUIC idle timeout")),
            "{:?}",
            rolling.warnings
        );
    }

    #[test]
    fn a_hundred_nodes_are_refused_naming_the_file() {
        let err = load("lossy-100").unwrap_err();
        assert!(err.contains("lossy-100.toml"), "{err}");
        assert!(
            err.contains("100 nodes") && err.contains("2 to 30"),
            "{err}"
        );
        assert!(Plan::new(&Scenario::load("lossy-100").unwrap(), None).is_err());
    }
}
