//! Scenario files (`simulations/scenarios/*.toml`): topology, workload, links and faults.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One simulated run's setup. Times are virtual seconds from the start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Number of nodes, named `n0000`, `n0001`, ...
    pub nodes: usize,
    /// How long nodes emit events.
    pub duration_s: u64,
    /// Quiet time after `duration_s` (no new workload) before the invariants are checked.
    #[serde(default = "default_quiet")]
    pub quiet_s: u64,
    #[serde(default)]
    pub rates: Rates,
    /// Every link, unless a node's override is worse.
    #[serde(default)]
    pub link: LinkSpec,
    /// Links touching these nodes use the worse of both specs.
    #[serde(default)]
    pub node_links: Vec<NodeLink>,
    /// Per-node wall-clock offsets (the node's clock reads virtual time plus this).
    #[serde(default)]
    pub clock_offsets: Vec<ClockOffset>,
    /// Nodes that never become the alerter (laptops).
    #[serde(default)]
    pub transient: Vec<usize>,
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Sync driver tick (fingerprint comparison, session expiry), ms. The agent uses 500.
    #[serde(default = "default_tick")]
    pub tick_ms: u64,
    /// Run an alerting engine on every node. The sweep turns it off at large N to measure
    /// sync alone (see docs/simulation.md for why).
    #[serde(default = "default_true")]
    pub alerting: bool,
    /// How long gossip takes to notice a membership change, ms.
    #[serde(default = "default_detect")]
    pub detect_ms: u64,
    /// Windows during which the receiver refuses every notification (a down ntfy server).
    #[serde(default)]
    pub receiver_outages: Vec<Window>,
    /// How long a notification's send takes before its outcome is known, ms.
    #[serde(default = "default_notify")]
    pub notify_ms: u64,
    /// Most reconciliation sessions one node runs at once (the heal herd's cap); 0: no cap.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// What a link's `loss` means: a whole sync message dropped (`message`, the default: a
    /// QUIC stream lost with its connection, harsher than the agent sees) or each 1200-byte
    /// packet of it lost and retransmitted by QUIC after a probe timeout (`packet`: the
    /// message arrives late, as on the agent's reliable uni streams).
    #[serde(default)]
    pub loss_model: LossModel,
    /// How long a peer's fingerprint must differ before the smaller name of the pair starts
    /// a session (the larger waits three times as long), ms. The agent's `differ_delay`,
    /// default 2000: shorter repairs a lost push sooner but starts sessions for events a
    /// push is still delivering.
    #[serde(default = "default_differ")]
    pub differ_delay_ms: u64,
}

fn default_differ() -> u64 {
    2_000
}

/// See [`Scenario::loss_model`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossModel {
    #[default]
    Message,
    Packet,
}

fn default_notify() -> u64 {
    200
}
pub fn default_max_sessions() -> usize {
    4
}

/// `[from_s, until_s)` in virtual seconds.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub from_s: u64,
    pub until_s: u64,
}

impl Window {
    pub fn contains_ms(&self, ms: u64) -> bool {
        self.from_s * 1000 <= ms && ms < self.until_s * 1000
    }
}

/// Where, within one notification, the alerter dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashMoment {
    /// The attempt is recorded (stored and pushed) but the send never leaves.
    BeforeSend,
    /// The receiver got it; the outcome is never recorded.
    BeforeOutcome,
    /// The receiver got it and `notification_sent` is recorded.
    AfterOutcome,
}

fn default_quiet() -> u64 {
    120
}
fn default_true() -> bool {
    true
}
fn default_tick() -> u64 {
    500
}
fn default_detect() -> u64 {
    10_000
}

/// Events per node per hour, by kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rates {
    /// `service_unhealthy`, later followed by `service_recovered` (an incident episode).
    pub incidents_per_hour: f64,
    /// `deployment_started` + `deployment_completed`.
    pub deployments_per_hour: f64,
    /// `metric_sample` events (a type the world only counts as "last seen").
    pub metrics_per_hour: f64,
    /// How long an incident lasts before its recovery event, seconds.
    pub incident_s: u64,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            incidents_per_hour: 1.0,
            deployments_per_hour: 1.0,
            metrics_per_hour: 12.0,
            incident_s: 300,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkSpec {
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// Probability that one sync message is lost (its QUIC stream reset with the connection).
    pub loss: f64,
}

impl Default for LinkSpec {
    fn default() -> Self {
        LinkSpec {
            latency_ms: 2,
            jitter_ms: 2,
            loss: 0.0,
        }
    }
}

impl LinkSpec {
    pub fn worse(self, other: LinkSpec) -> LinkSpec {
        LinkSpec {
            latency_ms: self.latency_ms.max(other.latency_ms),
            jitter_ms: self.jitter_ms.max(other.jitter_ms),
            loss: self.loss.max(other.loss),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeLink {
    pub node: usize,
    #[serde(flatten)]
    pub spec: LinkSpec,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockOffset {
    pub node: usize,
    pub offset_ms: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Nodes in different groups cannot reach each other (nodes in no group form one more).
    Partition { at_s: u64, groups: Vec<Vec<usize>> },
    /// Messages from `from` to `to` are dropped; the other way works.
    OneWay {
        at_s: u64,
        from: Vec<usize>,
        to: Vec<usize>,
    },
    /// Removes every partition and one-way cut.
    Heal { at_s: u64 },
    /// The node stops (its store and world are kept; sessions and timers are lost).
    Crash { at_s: u64, node: usize },
    /// The node starts again and rebuilds its alerting state from its stored events.
    Restart { at_s: u64, node: usize },
    /// The first node to start a notification at or after `at_s` crashes at `moment` of it,
    /// and restarts `down_s` later (never, without it).
    CrashNotifier {
        at_s: u64,
        moment: CrashMoment,
        down_s: Option<u64>,
    },
    /// The node's wall clock jumps by `by_ms` (an NTP step, a VM resumed from suspend).
    ClockJump { at_s: u64, node: usize, by_ms: i64 },
}

impl Fault {
    pub fn at_s(&self) -> u64 {
        match self {
            Fault::Partition { at_s, .. }
            | Fault::OneWay { at_s, .. }
            | Fault::Heal { at_s }
            | Fault::Crash { at_s, .. }
            | Fault::Restart { at_s, .. }
            | Fault::CrashNotifier { at_s, .. }
            | Fault::ClockJump { at_s, .. } => *at_s,
        }
    }

    /// True for the faults that end a split (convergence is measured from the last one).
    pub fn is_repair(&self) -> bool {
        matches!(self, Fault::Heal { .. } | Fault::Restart { .. })
    }
}

impl Scenario {
    pub fn from_toml(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        s.check()?;
        Ok(s)
    }

    /// Loads `arg` as a path, or as a name in `simulations/scenarios/`.
    pub fn load(arg: &str) -> Result<Scenario, String> {
        let direct = PathBuf::from(arg);
        let path = if direct.exists() {
            direct
        } else {
            scenarios_dir().join(format!("{arg}.toml"))
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read scenario {}: {e}", path.display()))?;
        Scenario::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn check(&self) -> Result<(), String> {
        if self.nodes < 2 {
            return Err("a mesh needs at least 2 nodes".into());
        }
        if self.tick_ms == 0 {
            return Err("tick_ms must be positive".into());
        }
        let bad = |n: usize| n >= self.nodes;
        let mut named: Vec<usize> = self.transient.clone();
        named.extend(self.node_links.iter().map(|l| l.node));
        named.extend(self.clock_offsets.iter().map(|c| c.node));
        for f in &self.faults {
            match f {
                Fault::Partition { groups, .. } => named.extend(groups.iter().flatten()),
                Fault::OneWay { from, to, .. } => named.extend(from.iter().chain(to)),
                Fault::Crash { node, .. }
                | Fault::Restart { node, .. }
                | Fault::ClockJump { node, .. } => named.push(*node),
                Fault::Heal { .. } | Fault::CrashNotifier { .. } => {}
            }
        }
        match named.into_iter().find(|n| bad(*n)) {
            Some(n) => Err(format!("node {n} named but only {} nodes", self.nodes)),
            None => Ok(()),
        }
    }
}

pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}
