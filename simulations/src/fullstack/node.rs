//! One simulated host: the agent's own drivers from the `labmesh` library (mesh, event bus,
//! sync, world, alerting), wired to turmoil: a simulated UDP socket under QUIC, the node's
//! clock, and a recording notifier standing in for the receivers. Nothing here decides what a
//! node does; it only watches what the drivers did, for the invariants.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alerting::receiver::Receiver;
use alerting::{Notification, Role};
use labmesh::drivers::alerting::AlertingSettings;
use labmesh::drivers::bus::EventBus;
use labmesh::drivers::mesh::{Endpoint, PeerConfig, PeerRuntime};
use labmesh::drivers::notify::{Delivery, Notifier};
use labmesh::drivers::sync::{SyncDriver, SyncSettings};
use labmesh::drivers::world::{WorldRuntime, WorldSettings};
use mesh::liveness::Liveness;
use sync::schedule::ScheduleConfig;
use sync::{EventStore, StoreConfig};
use tokio::sync::watch;

use super::clock::NodeClock;
use super::socket::{LossTable, SimUdpSocket, WireCounters};
use crate::scenario::CrashMoment;

/// The gossip and QUIC port of every simulated node.
pub const PORT: u16 = 7370;

/// The agent's sync schedule (`ScheduleConfig::default()`), except the anti-entropy interval,
/// shortened so that a run of a few virtual minutes exercises it.
pub fn schedule() -> ScheduleConfig {
    ScheduleConfig {
        anti_entropy_interval: Duration::from_secs(30),
        ..ScheduleConfig::default()
    }
}

/// What a node needs to start (again, after a crash: the same spec, the same data dir).
#[derive(Clone)]
pub struct NodeSpec {
    pub name: String,
    pub addr: SocketAddr,
    pub seeds: Vec<String>,
    pub mesh_id: String,
    pub identity: certs::NodeIdentity,
    pub data_dir: PathBuf,
    pub clock: Arc<NodeClock>,
    pub loss: LossTable,
    pub counters: Arc<WireCounters>,
    pub seed: u64,
    pub gossip_interval: Duration,
    pub sync: ScheduleConfig,
    /// Gossiped as the agent's `transient` flag (a laptop): never elected alerter, and its
    /// absence is expected.
    pub transient: bool,
    /// The alerting config every node runs (the discrete simulation's: shipped rules, one
    /// receiver).
    pub alerting: alerting::Config,
    /// Shared by every node of a run: see [`NotifierTrap`].
    pub notifier_trap: NotifierTrap,
}

/// A scenario file's `crash_notifier`: while armed, the first node to hand a notification to
/// the receiver takes it and its alerting engine stops at the moment it names; the run crashes
/// its host shortly after (see [`Probe::halted`]).
pub type NotifierTrap = Arc<Mutex<Option<CrashMoment>>>;

/// How often the driver loop's picture of a node ([`Probe`]) is refreshed.
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// A notification the engine handed to the stand-in receiver: one per alert it announced as
/// new, so `(episode, receiver, stage)` says what a person would have been told.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Delivered {
    /// Virtual time of the send.
    pub at_ms: u64,
    pub sender: String,
    pub receiver: String,
    pub episode: String,
    pub rule: String,
    /// The alert's status in the message (`Firing`, `Resolved`, ...).
    pub stage: String,
    /// Whether the stand-in receiver accepted it (it fails everything while `receiver_down`).
    pub accepted: bool,
    /// The sender stopped before it recorded the outcome (a `crash_notifier` trap).
    pub orphan: bool,
}

/// A liveness change a node saw, for the invariants.
#[derive(Debug, Clone)]
pub struct Seen {
    pub subject: String,
    pub to: Liveness,
}

/// What the driver loop reads of a running node between steps.
#[derive(Default)]
pub struct Probe {
    /// The node's store while it runs (`None` before start and after a crash).
    pub store: Option<Arc<EventStore>>,
    /// The node's world driver while it runs (weak: the host owns it, and a crash must drop
    /// it with its socket): its state must agree wherever the events do.
    pub world: Option<std::sync::Weak<WorldRuntime>>,
    /// Peers this node sees as up (alive or suspect).
    pub up: BTreeSet<String>,
    /// Liveness changes not yet collected by the driver loop.
    pub seen: Vec<Seen>,
    pub sessions_started: u64,
    pub sessions_completed: u64,
    pub refused: u64,
    /// How many times the node started.
    pub starts: u64,
    /// Events its store held when it opened, per start (a restart finds its data dir).
    pub opened_with: Vec<usize>,
    /// The alerting engine's role at the latest look (`None` before start and after a
    /// crash).
    pub role: Option<Role>,
    /// Notifications not yet collected by the driver loop.
    pub delivered: Vec<Delivered>,
    /// Set by the run: the stand-in receiver answers every delivery with a failure.
    pub receiver_down: bool,
    /// Set by the node when a [`NotifierTrap`] stopped its engine; the run clears it and
    /// crashes the host a moment later.
    pub halted: bool,
    /// The node's clock (ms since the Unix epoch) when each event reached its store, by content
    /// hash: the HLC follows a stamp only if it was within its tolerance then.
    pub arrived_ms: HashMap<[u8; 32], i64>,
}

pub type SharedProbe = Arc<Mutex<Probe>>;

pub use labmesh::util::lock;

type BoxError = Box<dyn std::error::Error>;

/// Virtual time since the simulation started (0 outside one).
fn virtual_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// The stand-in receiver: records every notification the engine hands over and answers at
/// once, with a failure while the run holds it down. A [`NotifierTrap`] makes it stop the
/// node's engine at the moment the trap names.
struct RecordingNotifier {
    node: String,
    probe: SharedProbe,
    trap: NotifierTrap,
    /// Stops this node's alerting driver (and nothing else: sync runs on until the host is
    /// crashed, so what the engine stored reaches the peers, as in the discrete simulation).
    halt: watch::Sender<bool>,
    /// The trap this node took, once it took one.
    taken: Mutex<Option<CrashMoment>>,
}

impl RecordingNotifier {
    fn halt(&self) {
        let _ = self.halt.send(true);
        lock(&self.probe).halted = true;
    }
}

impl Notifier for RecordingNotifier {
    fn deliver(&self, n: &Notification, _r: Option<&Receiver>, _timeout: Duration) -> Delivery {
        let moment = {
            let mut taken = lock(&self.taken);
            if taken.is_none() {
                *taken = lock(&self.trap).take();
                if let Some(m) = *taken {
                    tracing::info!(target: "fullstack", node = %self.node, at = virtual_ms(), moment = ?m, "crash_notifier trap");
                }
            }
            *taken
        };
        let orphan = match moment {
            // The attempt record is stored; nothing leaves, no outcome.
            Some(CrashMoment::BeforeSend) => {
                self.halt();
                return Box::pin(std::future::pending());
            }
            Some(CrashMoment::BeforeOutcome) => true,
            Some(CrashMoment::AfterOutcome) | None => false,
        };
        let accepted = {
            let mut probe = lock(&self.probe);
            let accepted = !probe.receiver_down;
            let at_ms = virtual_ms();
            for a in n.message.alerts.iter().filter(|a| a.new) {
                probe.delivered.push(Delivered {
                    at_ms,
                    sender: self.node.clone(),
                    receiver: n.receiver.clone(),
                    episode: a.episode.clone(),
                    rule: a.rule.clone(),
                    stage: format!("{:?}", a.status),
                    accepted,
                    orphan,
                });
            }
            accepted
        };
        if orphan {
            self.halt();
            return Box::pin(std::future::pending());
        }
        if moment == Some(CrashMoment::AfterOutcome) {
            // Stop once the engine has recorded this outcome (its next step, within a tick).
            let halt = self.halt.clone();
            let probe = self.probe.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let _ = halt.send(true);
                lock(&probe).halted = true;
            });
        }
        let result = if accepted {
            Ok(())
        } else {
            Err("the stand-in receiver is down".to_owned())
        };
        Box::pin(async move { result })
    }
}

/// The host's software: the agent's drivers on the simulated network, until the host is
/// crashed.
pub async fn run(spec: NodeSpec, probe: SharedProbe) -> Result<(), BoxError> {
    let starts = {
        let mut p = lock(&probe);
        p.starts += 1;
        p.starts
    };
    let socket = SimUdpSocket::bind(
        spec.addr,
        spec.loss.clone(),
        spec.seed ^ starts.rotate_left(32),
        spec.counters.clone(),
    )
    .await?;
    let clock: Arc<dyn sync::Clock> = spec.clock.clone();
    let mut store_cfg = StoreConfig::new(&spec.data_dir, spec.name.as_str());
    store_cfg.clock = clock.clone();
    // As the agent: events signed with the node's key, peers' checked against the mesh CA.
    let (trust, signers) =
        labmesh::trust::event_trust(&spec.identity, Some(&spec.data_dir.join("certs")), true)?;
    store_cfg.trust = Some(trust);
    let (store, _) = EventStore::open(store_cfg)?;
    let store = Arc::new(store);
    // As the agent: the bus first, every consumer subscribed before its driver starts.
    let bus = EventBus::attach(&store);
    let (peer_rx, world_rx, sync_rx, alerting_rx, mut watched) = (
        bus.subscribe(),
        bus.subscribe(),
        bus.subscribe(),
        bus.subscribe(),
        bus.subscribe(),
    );
    {
        let mut p = lock(&probe);
        p.store = Some(store.clone());
        p.opened_with.push(store.len());
    }
    let (transitions_tx, mut transitions) = tokio::sync::mpsc::unbounded_channel();
    let peer_cfg = PeerConfig {
        node: spec.name.clone(),
        mesh_name: "simmesh".into(),
        mesh_id: spec.mesh_id.clone(),
        bind: spec.addr,
        advertise: spec.addr,
        api_addr: "127.0.0.1:0".into(),
        seeds: spec.seeds.clone(),
        transient: spec.transient,
        role: "sim".into(),
        alerter_priority: 0,
        gossip_interval: spec.gossip_interval,
        offline_after: Duration::from_secs(30),
        state_dir: spec.data_dir.join("state"),
        os: "turmoil".into(),
        backend: "cpu".into(),
    };
    let endpoint = Endpoint::Socket {
        udp: socket,
        runtime: Arc::new(quinn::TokioRuntime),
    };
    let peer = PeerRuntime::start(
        peer_cfg,
        &spec.identity,
        store.clone(),
        clock.clone(),
        endpoint,
        Some(transitions_tx),
    )
    .await?;
    signers.use_revocations(peer.revocations.clone());
    let mesh = peer.mesh.clone();
    let world = WorldRuntime::open(
        &spec.data_dir,
        store.clone(),
        mesh.clone(),
        clock.clone(),
        WorldSettings {
            retention_days: u32::try_from(spec.sync.window.as_secs() / 86_400).unwrap_or(u32::MAX),
            archive_pruned: false,
        },
    );
    lock(&probe).world = Some(Arc::downgrade(&world));
    let settings = SyncSettings {
        node: spec.name.clone(),
        schedule: spec.sync.clone(),
    };
    let seed = spec.seed.wrapping_mul(1000).wrapping_add(starts);
    let sync = SyncDriver::new(
        store.clone(),
        mesh.clone(),
        world.clone(),
        clock.clone(),
        settings,
        seed,
    );
    // Never sent: the host runs until the simulation crashes it.
    let (_stop_tx, stop) = watch::channel(false);
    let (halt_tx, halt) = watch::channel(false);
    let notifier = Arc::new(RecordingNotifier {
        node: spec.name.clone(),
        probe: probe.clone(),
        trap: spec.notifier_trap.clone(),
        halt: halt_tx,
        taken: Mutex::new(None),
    });
    let (alerting, _alerting_task) = labmesh::drivers::alerting::start(
        AlertingSettings {
            node: spec.name.clone(),
            transient: spec.transient,
            alerter_priority: 0,
            config: spec.alerting.clone(),
            tick: Duration::from_secs(1),
        },
        store.clone(),
        mesh.clone(),
        clock.clone(),
        notifier,
        alerting_rx,
        halt,
    );
    tokio::spawn(peer.clone().run(stop.clone(), peer_rx));
    tokio::spawn(world.clone().run(world_rx, stop.clone()));
    tokio::spawn(sync.clone().run(sync_rx, stop));
    // Watch what the drivers did, for the run's invariants.
    let mut every = tokio::time::interval(WATCH_EVERY);
    loop {
        tokio::select! {
            Some(stored) = watched.recv() => {
                let at = sync::Clock::now(clock.as_ref()).timestamp_millis();
                lock(&probe).arrived_ms.entry(stored.entry.hash).or_insert(at);
            }
            Some(t) = transitions.recv() => {
                lock(&probe).seen.push(Seen { subject: t.node, to: t.to });
            }
            _ = every.tick() => {
                let view = mesh.view().await;
                let totals = sync.totals();
                let role = alerting.snapshot().role;
                let mut p = lock(&probe);
                p.up = view.peers.iter().filter(|p| p.liveness.is_up()).map(|p| p.node.clone()).collect();
                p.sessions_started = totals.sessions_started;
                p.sessions_completed = totals.sessions_completed;
                p.refused = totals.events_refused;
                if !p.halted && role.is_some() {
                    p.role = role;
                }
            }
        }
    }
}
