//! One simulated node: the agent's QUIC transport, chitchat membership and event store, with a
//! thin sync driver around the shipping `SyncCore` and an alerting driver around the shipping
//! `alerting::Engine` (the same decisions as the agent's `node/src/sync_driver.rs` and
//! `node/src/alerting_driver.rs`, which live in the binary crate and so cannot be linked here).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alerting::{Engine, Member, Notification, Role, Timer};
use chrono::{DateTime, Utc};
use mesh::keys::NodeInfo;
use mesh::liveness::Liveness;
use mesh::{Mesh, MeshConfig, MeshStats, QuicTransport, TransportConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sync::reconcile::{Runtime, SyncCore, SyncMessage, SyncSource};
use sync::{Event, EventStore, IndexEntry, NewEvent, Query, StoreConfig};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::clock::NodeClock;
use super::socket::{LossTable, SimUdpSocket, WireCounters};
use crate::scenario::CrashMoment;

/// The gossip key the agent publishes its event-set fingerprint under.
pub const FINGERPRINT_KEY: &str = "sync_fp";

/// The gossip and QUIC port of every simulated node.
pub const PORT: u16 = 7370;

/// The agent's sync timings (`SyncSettings::default()` in the node crate), except the
/// anti-entropy interval, shortened so that a run of a few virtual minutes exercises it.
#[derive(Debug, Clone)]
pub struct SyncTimings {
    pub tick: Duration,
    pub differ_delay: Duration,
    pub anti_entropy_interval: Duration,
    pub session_timeout: Duration,
    /// Reconcile only events from midnight UTC this many days back on the node's clock: the
    /// agent's window, which is its retention (`store.retention_days`, default 30 days).
    pub window: Duration,
    /// Most sessions in flight per node (`SyncSettings::max_sessions`, default 4; 0: no
    /// cap). Without it a 100-node mesh under steady writes, whose fingerprints never match
    /// at a sample, runs thousands of sessions that delay the eager pushes behind them.
    pub max_sessions: usize,
}

impl Default for SyncTimings {
    fn default() -> Self {
        SyncTimings {
            tick: Duration::from_millis(500),
            differ_delay: Duration::from_secs(2),
            anti_entropy_interval: Duration::from_secs(30),
            session_timeout: Duration::from_secs(60),
            window: Duration::from_secs(30 * 86_400),
            max_sessions: 4,
        }
    }
}

/// Start of the reconciled range, as the agent's `SyncDriver::since_ms` computes it: midnight
/// UTC `window` whole days before `now`'s date, the cutoff its retention prune uses too.
pub fn window_start_ms(now: DateTime<Utc>, window: Duration) -> i64 {
    let days = window.as_secs() / 86_400;
    now.date_naive()
        .checked_sub_days(chrono::Days::new(days))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(0, |t| t.and_utc().timestamp_millis())
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
    pub sync: SyncTimings,
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

/// How often the alerting driver refreshes membership and ticks the engine (the agent's 1 s).
const ALERTING_TICK: Duration = Duration::from_secs(1);

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
    /// The alerting engine's role after its latest step (`None` before start and after a
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

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type BoxError = Box<dyn std::error::Error>;

/// The host's software: starts the stack and runs the sync loop until the host is crashed.
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
    let server = certs::server_config(
        &spec.identity,
        certs::RevocationList::new(),
        certs::Rejections::new(),
    )?;
    let client = certs::client_config(
        &spec.identity,
        certs::RevocationList::new(),
        certs::Rejections::new(),
    )?;
    let mut transport_cfg = TransportConfig::new(spec.addr, spec.addr, server, client);
    transport_cfg.keep_alive = Duration::from_secs(2).min(spec.gossip_interval * 4);
    let transport = QuicTransport::with_socket(
        transport_cfg,
        Arc::new(MeshStats::default()),
        Box::new(|_| false),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    let info = NodeInfo {
        role: "sim".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        os: "turmoil".into(),
        gossip_addr: spec.addr.to_string(),
        api_addr: "127.0.0.1:0".into(),
        transient: spec.transient,
        alerter_priority: 0,
        backend: "cpu".into(),
    };
    let mut mesh_cfg = MeshConfig::new(&spec.name, &spec.mesh_id, spec.addr, info);
    mesh_cfg.gossip_interval = spec.gossip_interval;
    mesh_cfg.seeds = spec.seeds.clone();
    mesh_cfg.liveness.suspect_after = spec.gossip_interval * 5;
    let mesh = Mesh::start(mesh_cfg, transport).await?;

    let mut store_cfg = StoreConfig::new(&spec.data_dir, spec.name.as_str());
    store_cfg.clock = spec.clock.clone();
    let (store, _) = EventStore::open(store_cfg)?;
    let store = Arc::new(store);
    let pruned_on = prune(&store, &spec.name, spec.clock.as_ref(), spec.sync.window);
    let replay: Vec<Event> = store
        .query(&Query::default())
        .iter()
        .filter_map(|e| parse(&store, e))
        .collect();
    let (new_tx, new_rx) = mpsc::unbounded_channel();
    store.set_listener(Box::new(move |stored: &Arc<sync::StoredEvent>| {
        let _ = new_tx.send(stored.entry.clone());
    }));
    {
        let mut p = lock(&probe);
        p.store = Some(store.clone());
        p.opened_with.push(store.len());
    }
    let Some(inbound) = mesh.transport().take_app_receiver() else {
        return Err("the application channel was already taken".into());
    };
    let engine = Engine::new(
        &spec.name,
        spec.transient,
        0,
        spec.alerting.clone(),
        sync::Clock::now(spec.clock.as_ref()),
    );
    let (timers_tx, timers_rx) = mpsc::unbounded_channel();
    let (results_tx, results_rx) = mpsc::unbounded_channel();
    let mut driver = Driver {
        alerting: Alerting {
            engine,
            clock: spec.clock.clone(),
            timers: timers_tx,
            results: results_tx,
            trap: spec.notifier_trap.clone(),
            halt_after: None,
            halted: false,
        },
        name: spec.name.clone(),
        store,
        mesh,
        core: SyncCore::new(spec.seed.wrapping_mul(1000).wrapping_add(starts)),
        rng: StdRng::seed_from_u64(spec.seed ^ 0x5eed),
        timings: spec.sync.clone(),
        queues: HashMap::new(),
        differ_since: HashMap::new(),
        generations: BTreeMap::new(),
        last_session: HashMap::new(),
        started: Instant::now(),
        pruned_on,
        probe,
    };
    // As the agent at start: the retained log first, then membership.
    driver.alert(|e, now, fx| e.on_events(replay.iter(), now, fx));
    driver.membership().await;
    driver.run(inbound, new_rx, timers_rx, results_rx).await;
    Ok(())
}

/// The agent's retention (`node/src/world_driver.rs`, at start and when the date changes):
/// drops the date folders before the window, so that the fingerprint, which covers the whole
/// store, covers the same days as the reconciled range. Without a world state to fold them
/// into first (the full stack does not run one). Returns the date it pruned on.
fn prune(
    store: &EventStore,
    name: &str,
    clock: &dyn sync::Clock,
    window: Duration,
) -> chrono::NaiveDate {
    let today = clock.now().date_naive();
    let days = u32::try_from(window.as_secs() / 86_400).unwrap_or(u32::MAX);
    if let Err(e) = store.prune(today, days, false) {
        tracing::error!(node = %name, error = %e, "cannot prune old events");
    }
    today
}

fn parse(store: &EventStore, entry: &IndexEntry) -> Option<Event> {
    let bytes = store.read_bytes(entry).ok()?;
    Event::from_file_bytes(&bytes, store.config().max_event_bytes, Some(entry.id)).ok()
}

/// Virtual time since the simulation started (0 outside one).
fn virtual_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// The engine and what performs its requests.
struct Alerting {
    engine: Engine,
    clock: Arc<super::clock::NodeClock>,
    timers: mpsc::UnboundedSender<Timer>,
    results: mpsc::UnboundedSender<(String, u32, Result<(), String>)>,
    trap: NotifierTrap,
    /// Stop once the outcome of this notification id is recorded (`after_outcome`).
    halt_after: Option<String>,
    /// A trap stopped this node's engine: no engine call until its host is crashed.
    halted: bool,
}

/// The engine's side effects during one call, as in the agent: events are stored at once (so a
/// `notification_attempted` record is durable before its send), notifications wait until the
/// call returns.
struct Effects<'a> {
    store: &'a EventStore,
    timers: &'a mpsc::UnboundedSender<Timer>,
    sends: Vec<Notification>,
}

impl alerting::Runtime for Effects<'_> {
    fn write_event(&mut self, event: NewEvent) {
        if let Err(e) = self.store.append(event) {
            tracing::error!(error = %e, "alerting: cannot store an event");
        }
    }

    fn notify(&mut self, notification: Notification) {
        self.sends.push(notification);
    }

    fn submit_after(&mut self, timer: Timer, after: Duration) {
        let tx = self.timers.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(timer);
        });
    }
}

struct Source<'a>(&'a EventStore);

impl SyncSource for Source<'_> {
    fn items(&self, since_ms: i64) -> Vec<(u64, [u8; 32])> {
        self.0.sync_items(since_ms)
    }
    fn bytes(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
        self.0.read_by_hash(hash)
    }
}

#[derive(Default)]
struct Outbox {
    send: Vec<(String, SyncMessage)>,
    store: Vec<Vec<Vec<u8>>>,
}

impl Runtime for Outbox {
    fn send(&mut self, to: &str, msg: SyncMessage) {
        self.send.push((to.to_owned(), msg));
    }
    fn store(&mut self, _from: &str, events: Vec<Vec<u8>>) {
        self.store.push(events);
    }
}

/// Live peers by name: where to reach them and the fingerprint they gossip.
type Peers = BTreeMap<String, (SocketAddr, String)>;

struct Driver {
    alerting: Alerting,
    name: String,
    store: Arc<EventStore>,
    mesh: Mesh,
    core: SyncCore,
    rng: StdRng,
    timings: SyncTimings,
    queues: HashMap<String, (SocketAddr, mpsc::Sender<Vec<u8>>)>,
    differ_since: HashMap<String, Instant>,
    /// Live peers and their mesh generations at the last look, to drop sessions with a process
    /// that restarted or left (the agent's `sync_peers::peers_to_abandon`).
    generations: BTreeMap<String, u64>,
    last_session: HashMap<String, Instant>,
    started: Instant,
    /// The node's date at its latest retention prune.
    pruned_on: chrono::NaiveDate,
    probe: SharedProbe,
}

impl Driver {
    /// Runs one engine call, then hands its notifications to the stand-in receiver, which
    /// records them and answers at once (failure while the run holds it down).
    fn alert(&mut self, f: impl FnOnce(&mut Engine, DateTime<Utc>, &mut Effects<'_>)) {
        if self.alerting.halted {
            // Stopped by a trap: the engine is dead; sync runs on until the host is crashed,
            // so what the engine stored reaches the peers as in the discrete simulation.
            return;
        }
        let now = sync::Clock::now(self.alerting.clock.as_ref());
        let mut fx = Effects {
            store: &self.store,
            timers: &self.alerting.timers,
            sends: Vec::new(),
        };
        f(&mut self.alerting.engine, now, &mut fx);
        let sends = fx.sends;
        let role = self.alerting.engine.role(now);
        let moment = if sends.is_empty() {
            None
        } else {
            lock(&self.alerting.trap).take()
        };
        let mut probe = lock(&self.probe);
        probe.role = Some(role);
        let accepted = !probe.receiver_down;
        let at_ms = virtual_ms();
        if let Some(m) = moment {
            tracing::info!(target: "fullstack", node = %self.name, at = at_ms, moment = ?m, "crash_notifier trap");
        }
        for n in sends {
            match moment {
                // The attempt record is stored; nothing leaves, no outcome.
                Some(CrashMoment::BeforeSend) => {
                    self.alerting.halted = true;
                    probe.halted = true;
                    continue;
                }
                Some(CrashMoment::BeforeOutcome) => {
                    self.alerting.halted = true;
                    probe.halted = true;
                }
                Some(CrashMoment::AfterOutcome) => {
                    self.alerting.halt_after = Some(n.id.clone());
                }
                None => {}
            }
            for a in n.message.alerts.iter().filter(|a| a.new) {
                probe.delivered.push(Delivered {
                    at_ms,
                    sender: self.name.clone(),
                    receiver: n.receiver.clone(),
                    episode: a.episode.clone(),
                    rule: a.rule.clone(),
                    stage: format!("{:?}", a.status),
                    accepted,
                    orphan: self.alerting.halted,
                });
            }
            if self.alerting.halted {
                continue;
            }
            let result = if accepted {
                Ok(())
            } else {
                Err("the stand-in receiver is down".to_owned())
            };
            let _ = self.alerting.results.send((n.id, n.attempt, result));
        }
    }

    /// The agent's membership snapshot: itself live, every peer not `Left`, live when alive
    /// or suspect.
    async fn membership(&mut self) {
        let view = self.mesh.view().await;
        let me = NodeInfo::from_key_values(&view.key_values);
        let mut members = vec![Member {
            name: view.node.clone(),
            live: true,
            transient: me.transient,
            alerter_priority: me.alerter_priority,
        }];
        for p in &view.peers {
            if p.liveness == Liveness::Left {
                continue;
            }
            let info = NodeInfo::from_key_values(&p.key_values);
            members.push(Member {
                name: p.node.clone(),
                live: p.liveness.is_up(),
                transient: info.transient,
                alerter_priority: info.alerter_priority,
            });
        }
        self.alert(|e, now, fx| e.on_membership(members, now, fx));
    }

    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<mesh::transport::AppMessage>,
        mut new_entries: mpsc::UnboundedReceiver<IndexEntry>,
        mut timers: mpsc::UnboundedReceiver<Timer>,
        mut results: mpsc::UnboundedReceiver<(String, u32, Result<(), String>)>,
    ) {
        let mut alert_tick = tokio::time::interval(ALERTING_TICK);
        alert_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(self.timings.tick);
        let mut observe = tokio::time::interval(self.mesh.config().gossip_interval);
        let mut last_anti_entropy = Instant::now();
        let mut published = String::new();
        loop {
            tokio::select! {
                Some(msg) = inbound.recv() => {
                    let decoded = match SyncMessage::decode(&msg.bytes) {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(node = %self.name, peer = %msg.from.node, error = %e, "bad sync message");
                            lock(&self.probe).refused += 1;
                            continue;
                        }
                    };
                    let mut out = Outbox::default();
                    if let Err(e) = self.core.on_message(&mut out, &Source(&self.store), &msg.from.node, decoded) {
                        tracing::debug!(node = %self.name, peer = %msg.from.node, error = %e, "sync message not applied");
                    }
                    let mut peers = self.live_peers().await;
                    // A peer that just wrote to us may not be "alive" in our view yet.
                    peers.entry(msg.from.node.clone()).or_insert((msg.from_addr, String::new()));
                    self.perform(out, &peers);
                }
                Some(entry) = new_entries.recv() => {
                    let mut batch = vec![entry];
                    while let Ok(more) = new_entries.try_recv() {
                        batch.push(more);
                    }
                    {
                        let at = sync::Clock::now(self.alerting.clock.as_ref()).timestamp_millis();
                        let mut probe = lock(&self.probe);
                        for e in &batch {
                            probe.arrived_ms.entry(e.hash).or_insert(at);
                        }
                    }
                    // Eager push of this node's own events; peers push theirs themselves.
                    let own: Vec<Vec<u8>> = batch
                        .iter()
                        .filter(|e| *e.node == *self.name)
                        .filter_map(|e| self.store.read_bytes(e).ok())
                        .collect();
                    if !own.is_empty() {
                        let peers = self.live_peers().await;
                        let names: Vec<String> = peers.keys().cloned().collect();
                        let mut out = Outbox::default();
                        self.core.push(&mut out, &names, &own);
                        self.perform(out, &peers);
                    }
                    // Every stored event, own or synced, reaches the engine.
                    let events: Vec<Event> = batch.iter().filter_map(|e| parse(&self.store, e)).collect();
                    self.alert(|e, now, fx| e.on_events(events.iter(), now, fx));
                }
                Some(timer) = timers.recv() => self.alert(|e, now, fx| e.on_timer(timer, now, fx)),
                Some((id, attempt, result)) = results.recv() => {
                    self.alert(|e, now, fx| e.on_attempt_delivery(&id, attempt, result, now, fx));
                    if self.alerting.halt_after.as_ref() == Some(&id) {
                        self.alerting.halted = true;
                        lock(&self.probe).halted = true;
                    }
                }
                _ = alert_tick.tick() => {
                    self.membership().await;
                    self.alert(|e, now, fx| e.tick(now, fx));
                }
                _ = observe.tick() => {
                    let changes = self.mesh.observe().await;
                    let view = self.mesh.view().await;
                    let up = view.peers.iter().filter(|p| p.liveness.is_up()).map(|p| p.node.clone()).collect();
                    let mut probe = lock(&self.probe);
                    probe.up = up;
                    probe.seen.extend(changes.into_iter().map(|t| Seen { subject: t.node, to: t.to }));
                }
                _ = tick.tick() => {
                    // At midnight UTC on this node's clock the window moves (a clock jump
                    // moves it by days).
                    if sync::Clock::now(self.alerting.clock.as_ref()).date_naive() != self.pruned_on {
                        self.pruned_on = prune(&self.store, &self.name, self.alerting.clock.as_ref(), self.timings.window);
                    }
                    let fp = self.store.fingerprint().to_gossip();
                    if fp != published {
                        self.mesh.set_key(FINGERPRINT_KEY, &fp).await;
                        published = fp.clone();
                    }
                    let now = self.started.elapsed().as_millis() as u64;
                    self.core.expire(now, self.timings.session_timeout.as_millis() as u64);
                    let peers = self.live_peers().await;
                    let mut due = self.differing(&peers, &fp);
                    if last_anti_entropy.elapsed() >= self.timings.anti_entropy_interval && !peers.is_empty() {
                        last_anti_entropy = Instant::now();
                        let pick = self.rng.random_range(0..peers.len());
                        if let Some(name) = peers.keys().nth(pick) {
                            due.push(name.clone());
                        }
                    }
                    // The agent's cap, in its way: a random start, then as many as there is room.
                    let room = self.timings.max_sessions.saturating_sub(self.core.sessions_in_flight());
                    if self.timings.max_sessions > 0 && due.len() > room {
                        let skip = self.rng.random_range(0..due.len());
                        due.rotate_left(skip);
                        due.truncate(room);
                    }
                    for name in due {
                        self.start_session(&name, &peers);
                    }
                    let stats = &self.core.stats;
                    let mut probe = lock(&self.probe);
                    probe.sessions_started = stats.values().map(|s| s.sessions_started).sum();
                    probe.sessions_completed = stats.values().map(|s| s.sessions_completed).sum();
                }
            }
        }
    }

    /// Peers whose fingerprint has differed long enough (the agent's rule: the smaller name
    /// starts; the other waits three times as long in case it already does).
    fn differing(&mut self, peers: &Peers, fp: &str) -> Vec<String> {
        self.differ_since.retain(|n, _| peers.contains_key(n));
        let mut due = Vec::new();
        for (name, (_, theirs)) in peers {
            if theirs.is_empty() || theirs == fp {
                self.differ_since.remove(name);
                continue;
            }
            let since = *self
                .differ_since
                .entry(name.clone())
                .or_insert_with(Instant::now);
            let wait = if self.name < *name {
                self.timings.differ_delay
            } else {
                self.timings.differ_delay * 3
            };
            let recent = self
                .last_session
                .get(name)
                .is_some_and(|t| t.elapsed() < wait);
            if since.elapsed() >= wait && !recent {
                due.push(name.clone());
            }
        }
        due
    }

    async fn live_peers(&mut self) -> Peers {
        let view = self.mesh.view().await;
        let live: Vec<_> = view.peers.iter().filter(|p| p.liveness.is_up()).collect();
        // As the agent does: a session with a peer whose process restarted or that left the
        // live set is never answered, so it is dropped now rather than at its timeout.
        let current: BTreeMap<String, u64> = live
            .iter()
            .map(|p| (p.node.clone(), p.generation))
            .collect();
        for (name, generation) in &self.generations {
            if current.get(name) != Some(generation) {
                self.core.abandon(name);
            }
        }
        self.generations = current;
        live.iter()
            .map(|p| {
                let fp = p
                    .key_values
                    .get(FINGERPRINT_KEY)
                    .cloned()
                    .unwrap_or_default();
                (p.node.clone(), (p.gossip_addr, fp))
            })
            .collect()
    }

    fn start_session(&mut self, peer: &str, peers: &Peers) {
        if self.core.in_session_with(peer) {
            return;
        }
        let mut out = Outbox::default();
        let now = self.started.elapsed().as_millis() as u64;
        let since = window_start_ms(
            sync::Clock::now(self.alerting.clock.as_ref()),
            self.timings.window,
        );
        match self
            .core
            .start(&mut out, &Source(&self.store), peer, since, now)
        {
            Ok(_) => {
                self.last_session.insert(peer.to_owned(), Instant::now());
                self.perform(out, peers);
            }
            Err(e) => {
                tracing::warn!(node = %self.name, peer, error = %e, "cannot start a reconciliation")
            }
        }
    }

    fn perform(&mut self, out: Outbox, peers: &Peers) {
        for (to, msg) in out.send {
            if let Some((addr, _)) = peers.get(&to) {
                self.send(&to, *addr, &msg);
            }
        }
        for events in out.store {
            match self.store.store_bytes_batch(&events) {
                Ok(results) => {
                    let bad = results.iter().filter(|r| r.is_err()).count() as u64;
                    lock(&self.probe).refused += bad;
                }
                Err(e) => {
                    tracing::error!(node = %self.name, error = %e, "cannot store events from a peer")
                }
            }
        }
    }

    /// One queue and sending task per peer, as in the agent, so a dead peer never stalls the
    /// others.
    fn send(&mut self, to: &str, addr: SocketAddr, msg: &SyncMessage) {
        if self.queues.get(to).is_some_and(|(at, _)| *at != addr) {
            self.queues.remove(to);
        }
        let transport = self.mesh.transport().clone();
        let (_, tx) = self.queues.entry(to.to_owned()).or_insert_with(|| {
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(512);
            tokio::spawn(async move {
                while let Some(bytes) = rx.recv().await {
                    if let Err(e) = transport.send_app(addr, &bytes).await {
                        tracing::debug!(%addr, error = %e, "sync message not delivered");
                    }
                }
            });
            (addr, tx)
        });
        let _ = tx.try_send(msg.encode());
    }
}
