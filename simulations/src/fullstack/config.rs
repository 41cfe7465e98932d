//! What one full-stack run is told ([`FullstackConfig`], with what a scenario file adds) and
//! what it reports ([`Outcome`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::builtin::FullScenario;
use super::node::{self, Delivered};

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
