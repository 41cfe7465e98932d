//! Drives the sans-IO sync core (`sync::reconcile`) and its scheduler (`sync::schedule`) with
//! the node's store and the mesh's QUIC connections: pushes new local events at once,
//! reconciles when the scheduler says so, and stores what peers send through the store's
//! validating path.
//!
//! Decisions live in the cores; this file decodes, calls them, and performs what they asked.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mesh::Mesh;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use sync::reconcile::{Outbox, SyncCore, SyncMessage};
use sync::schedule::{PeerSight, ScheduleConfig, Scheduler};
use sync::{Clock, EventStore};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::drivers::bus::EventRx;
use crate::drivers::world::{WORLD_HASH_KEY, WorldRuntime};
use crate::util::{blocking, lock};

/// Gossip key holding this node's event-set fingerprint (`<count>:<hex>`). Owned by sync.
pub const FINGERPRINT_KEY: &str = "sync_fp";

/// Messages queued per peer. A session over a big difference hands out all its batches at
/// once (100k events = 200 batches of 500), and a dropped batch costs a later round trip by
/// hash; each message is at most ~1 MiB, so the bound is memory only in a catch-up.
const PEER_QUEUE: usize = 512;

/// Own events pushed in one message round: what arrived together goes together, up to this.
const PUSH_BATCH: usize = 500;

/// The sync driver's settings.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// This node's name: its own events are the ones it pushes.
    pub node: String,
    /// When to reconcile with whom (see `sync::schedule`).
    pub schedule: ScheduleConfig,
}

/// A peer's send queue and the address its sending task delivers to.
type PeerQueue = (SocketAddr, mpsc::Sender<Vec<u8>>);

/// A live peer as the mesh view shows it.
struct LivePeer {
    addr: SocketAddr,
    /// Its gossiped `sync_fp`; empty until it publishes one.
    fingerprint: String,
    /// Its gossiped `world_h`; empty until it publishes one.
    world: String,
    /// Its mesh generation: a new one is a new process.
    generation: u64,
}

type LivePeers = BTreeMap<String, LivePeer>;

fn sights(peers: &LivePeers) -> impl Iterator<Item = PeerSight<'_, String>> + Clone {
    peers.iter().map(|(name, p)| PeerSight {
        name,
        generation: p.generation,
        fingerprint: (!p.fingerprint.is_empty()).then_some(&p.fingerprint),
    })
}

/// Per peer, for `labmesh sync status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerSyncView {
    pub peer: String,
    pub fingerprint: String,
    pub fingerprint_equal: bool,
    pub last_reconciliation_s_ago: Option<u64>,
    pub sessions_started: u64,
    pub sessions_completed: u64,
    pub events_sent: u64,
    pub events_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub events_refused: u64,
    /// Sessions dropped because the peer restarted or stopped being live.
    pub sessions_abandoned: u64,
}

/// Sync figures summed over every peer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncTotals {
    pub events_sent: u64,
    pub events_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub sessions_started: u64,
    pub sessions_completed: u64,
    pub events_refused: u64,
    pub sessions_abandoned: u64,
    /// Sync messages this node gave up sending: its queue for the peer was full, the message
    /// was over the mesh's size limit, or the transport could not deliver it.
    pub unsent_queue_full: u64,
    pub unsent_too_large: u64,
    pub unsent_failed: u64,
}

/// Sync messages given up, by reason (see [`SyncTotals`]).
#[derive(Default)]
struct Unsent {
    queue_full: AtomicU64,
    too_large: AtomicU64,
    failed: Arc<AtomicU64>,
}

/// The cores and what they decide from, behind one lock.
struct State {
    core: SyncCore,
    schedule: Scheduler,
    rng: StdRng,
}

pub struct SyncDriver {
    world: Arc<WorldRuntime>,
    store: Arc<EventStore>,
    mesh: Arc<Mesh>,
    clock: Arc<dyn Clock>,
    cfg: SyncSettings,
    state: Mutex<State>,
    /// Monotonic zero of the cores' clock.
    started: Instant,
    refused: Mutex<BTreeMap<String, u64>>,
    /// The latest refusals with their reasons (newest last), for `sync status`.
    refusals: Mutex<VecDeque<serde_json::Value>>,
    /// Per peer: sessions dropped because it restarted or stopped being live.
    abandoned: Mutex<BTreeMap<String, u64>>,
    queues: Mutex<HashMap<String, PeerQueue>>,
    unsent: Unsent,
    /// `sync now` requests: a peer name, or empty for every live peer.
    now_tx: mpsc::UnboundedSender<String>,
    now_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl SyncDriver {
    /// A driver for the node's store over `mesh`; `seed` seeds its session ids and its random
    /// choices (the agent passes a random one, the simulation the run's).
    pub fn new(
        store: Arc<EventStore>,
        mesh: Arc<Mesh>,
        world: Arc<WorldRuntime>,
        clock: Arc<dyn Clock>,
        cfg: SyncSettings,
        seed: u64,
    ) -> Arc<SyncDriver> {
        let (now_tx, now_rx) = mpsc::unbounded_channel();
        let state = State {
            core: SyncCore::new(seed),
            schedule: Scheduler::new(cfg.schedule.clone(), 0),
            rng: StdRng::seed_from_u64(seed ^ 0x5eed),
        };
        Arc::new(SyncDriver {
            world,
            store,
            mesh,
            clock,
            cfg,
            state: Mutex::new(state),
            started: Instant::now(),
            refused: Mutex::new(BTreeMap::new()),
            refusals: Mutex::new(VecDeque::new()),
            abandoned: Mutex::new(BTreeMap::new()),
            queues: Mutex::new(HashMap::new()),
            unsent: Unsent::default(),
            now_tx,
            now_rx: Mutex::new(Some(now_rx)),
        })
    }

    pub fn settings(&self) -> &SyncSettings {
        &self.cfg
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Live peers by name. Every caller acts on what it returns, so this is also where
    /// sessions with a process that restarted or went away are dropped, before anyone decides
    /// from the new view whether a session with that peer is already running.
    async fn live_peers(&self) -> LivePeers {
        let view = self.mesh.view().await;
        let key = |p: &mesh::PeerStatus, k: &str| p.key_values.get(k).cloned().unwrap_or_default();
        let live: LivePeers = view
            .peers
            .iter()
            .filter(|p| p.liveness.is_up())
            .map(|p| {
                let peer = LivePeer {
                    addr: p.gossip_addr,
                    fingerprint: key(p, FINGERPRINT_KEY),
                    world: key(p, WORLD_HASH_KEY),
                    generation: p.generation,
                };
                (p.node.clone(), peer)
            })
            .collect();
        let departed = {
            let mut st = lock(&self.state);
            let State { core, schedule, .. } = &mut *st;
            schedule.departures(core, live.iter().map(|(n, p)| (n.as_str(), p.generation)))
        };
        for (name, why, dropped) in departed.into_iter().filter(|d| d.2 > 0) {
            *lock(&self.abandoned).entry(name.clone()).or_default() += dropped as u64;
            tracing::debug!(
                peer = %name,
                reason = why.as_str(),
                sessions = dropped,
                "dropped sync sessions with a peer's old process"
            );
        }
        live
    }

    /// Asks for a reconciliation now (`labmesh sync now [PEER]`).
    pub fn request_now(&self, peer: Option<&str>) {
        let _ = self.now_tx.send(peer.unwrap_or("").to_owned());
    }

    /// Sends through a per-peer queue so one slow peer never stalls the others.
    fn send(&self, to: &str, addr: SocketAddr, msg: &SyncMessage) {
        let bytes = msg.encode();
        let limit = self.mesh.transport().max_app_message_bytes();
        if bytes.len() > limit {
            // The core batches events under the limit; what can outgrow it is a world
            // snapshot, which is sent whole. Said loudly: the peer will keep a stale world.
            self.unsent.too_large.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                peer = to,
                kind = msg.kind(),
                bytes = bytes.len(),
                limit,
                "sync message over the mesh's message limit; not sent"
            );
            return;
        }
        let mut queues = lock(&self.queues);
        // A peer back on another address gets a new queue; the old one's task ends with it.
        if queues.get(to).is_some_and(|(at, _)| *at != addr) {
            queues.remove(to);
        }
        let (_, tx) = queues.entry(to.to_owned()).or_insert_with(|| {
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(PEER_QUEUE);
            let transport = self.mesh.transport().clone();
            let name = to.to_owned();
            let failed = self.unsent.failed.clone();
            tokio::spawn(async move {
                while let Some(bytes) = rx.recv().await {
                    if let Err(e) = transport.send_app(addr, &bytes).await {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = %name, error = %e, "sync message not delivered");
                    }
                }
            });
            (addr, tx)
        });
        if tx.try_send(bytes).is_err() {
            self.unsent.queue_full.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                peer = to,
                "sync queue full; the next reconciliation catches up"
            );
        }
    }

    fn perform(&self, out: Outbox, peers: &LivePeers) {
        for (to, msg) in out.send {
            match peers.get(&to) {
                Some(p) => self.send(&to, p.addr, &msg),
                None => tracing::debug!(peer = %to, "not live; dropped a sync message"),
            }
        }
        for (from, received) in out.store {
            for reason in self.store.learn_signers(&received.signers) {
                self.refuse(&from, 1, "signer certificate", &reason);
            }
            let events = received.events;
            match blocking(|| self.store.store_bytes_batch(&events)) {
                Ok(results) => {
                    let bad: Vec<String> = results
                        .iter()
                        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
                        .collect();
                    if let Some(first) = bad.first() {
                        self.refuse(&from, bad.len() as u64, "events", first);
                    }
                }
                Err(e) => {
                    tracing::error!(peer = %from, error = %e, "cannot store events from a peer")
                }
            }
        }
    }

    fn on_message(&self, msg: mesh::transport::AppMessage, mut peers: LivePeers) {
        let from = msg.from.node.as_str();
        match SyncMessage::decode(&msg.bytes) {
            Ok(SyncMessage::World { state, reply }) => match self.world.merge_snapshot(&state) {
                Ok(we_had_more) => {
                    tracing::info!(peer = %from, bytes = state.len(), "merged a world snapshot");
                    if we_had_more && !reply {
                        let answer = SyncMessage::World {
                            state: self.world.snapshot_bytes(),
                            reply: true,
                        };
                        self.send(from, msg.from_addr, &answer);
                    }
                }
                Err(e) => self.refuse(from, 1, "world snapshot", &e),
            },
            Ok(decoded) => {
                let mut out = Outbox::default();
                let result =
                    lock(&self.state)
                        .core
                        .on_message(&mut out, &*self.store, from, decoded);
                if let Err(e) = result {
                    tracing::warn!(peer = %from, error = %e, "bad sync message");
                }
                // A peer that just wrote to us may not be "alive" in our view yet.
                peers.entry(from.to_owned()).or_insert(LivePeer {
                    addr: msg.from_addr,
                    fingerprint: String::new(),
                    world: String::new(),
                    generation: 0,
                });
                self.perform(out, &peers);
            }
            Err(e) => self.refuse(from, 1, "sync message", &e.to_string()),
        }
    }

    /// One scheduling round: publish the fingerprint, let the scheduler start what is due,
    /// offer the world snapshot where it differs.
    async fn tick(&self, published: &mut String) {
        let fp = self.store.fingerprint().to_gossip();
        if fp != *published {
            self.mesh.set_key(FINGERPRINT_KEY, &fp).await;
            published.clone_from(&fp);
        }
        let peers = self.live_peers().await;
        let now = self.now_ms();
        let mut out = Outbox::default();
        let report = {
            let mut st = lock(&self.state);
            let State {
                core,
                schedule,
                rng,
            } = &mut *st;
            schedule.tick(
                core,
                &mut out,
                &*self.store,
                &self.cfg.node,
                &fp,
                sights(&peers),
                now,
                self.clock.now(),
                rng,
            )
        };
        if report.expired > 0 {
            tracing::debug!(expired = report.expired, "dropped unfinished sync sessions");
        }
        for (peer, e) in &report.failed {
            tracing::warn!(peer, error = %e, "cannot start a reconciliation");
        }
        self.perform(out, &peers);
        let world = self.world.short_hash();
        let offers = lock(&self.state).schedule.world_offers(
            &self.cfg.node,
            &fp,
            &world,
            peers.iter().map(|(name, p)| {
                let sight = PeerSight {
                    name: name.as_str(),
                    generation: p.generation,
                    fingerprint: (!p.fingerprint.is_empty()).then_some(&p.fingerprint),
                };
                (sight, (!p.world.is_empty()).then_some(&p.world))
            }),
            now,
        );
        for name in offers {
            if let Some(p) = peers.get(&name) {
                let msg = SyncMessage::World {
                    state: self.world.snapshot_bytes(),
                    reply: false,
                };
                self.send(&name, p.addr, &msg);
            }
        }
    }

    /// Pushes this node's own events among `batch` to every live peer; what peers sent us,
    /// they already pushed themselves.
    async fn push(&self, batch: &[Arc<sync::StoredEvent>]) {
        let own: Vec<Vec<u8>> = batch
            .iter()
            .filter(|e| *e.entry.node == self.cfg.node)
            .map(|e| e.bytes.clone())
            .collect();
        if own.is_empty() {
            return;
        }
        let peers = self.live_peers().await;
        let names: Vec<String> = peers.keys().cloned().collect();
        let mut out = Outbox::default();
        lock(&self.state)
            .core
            .push(&mut out, &*self.store, &names, &own);
        self.perform(out, &peers);
    }

    /// Runs until `stop` changes. `events` is the event bus.
    pub async fn run(
        self: Arc<Self>,
        mut events: EventRx,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let Some(mut inbound) = self.mesh.transport().take_app_receiver() else {
            tracing::error!("the sync channel is already taken; sync disabled");
            return;
        };
        let Some(mut now_rx) = lock(&self.now_rx).take() else {
            return;
        };
        let mut tick = tokio::time::interval(self.cfg.schedule.tick);
        let mut published = String::new();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                Some(msg) = inbound.recv() => {
                    let peers = self.live_peers().await;
                    self.on_message(msg, peers);
                }
                Some(first) = events.recv() => {
                    let mut batch = vec![first];
                    while batch.len() < PUSH_BATCH {
                        match events.try_recv() {
                            Ok(more) => batch.push(more),
                            Err(_) => break,
                        }
                    }
                    self.push(&batch).await;
                }
                Some(target) = now_rx.recv() => {
                    let peers = self.live_peers().await;
                    let names = peers.keys().filter(|n| target.is_empty() || **n == target);
                    let mut out = Outbox::default();
                    let now = self.now_ms();
                    {
                        let mut st = lock(&self.state);
                        let State { core, schedule, .. } = &mut *st;
                        schedule.start_now(core, &mut out, &*self.store, names.map(String::as_str), now, self.clock.now());
                    }
                    self.perform(out, &peers);
                }
                _ = tick.tick() => self.tick(&mut published).await,
            }
        }
    }

    /// Counts `count` refused items from `peer` and keeps the reason (the last 20 are shown).
    fn refuse(&self, peer: &str, count: u64, what: &str, reason: &str) {
        *lock(&self.refused).entry(peer.to_owned()).or_default() += count;
        tracing::warn!(peer = %peer, count, what, reason = %reason, "refused input from a peer");
        let mut latest = lock(&self.refusals);
        if latest.len() >= 20 {
            latest.pop_front();
        }
        latest.push_back(serde_json::json!({
            "peer": peer,
            "what": what,
            "count": count,
            "reason": reason.chars().take(300).collect::<String>(),
            "at": sync::event::format_timestamp(self.clock.now()),
        }));
    }

    /// Totals over every peer since the agent started (monotonic), for `/metrics`.
    pub fn totals(&self) -> SyncTotals {
        let mut t = SyncTotals::default();
        for s in lock(&self.state).core.stats.values() {
            t.events_sent += s.events_sent;
            t.events_received += s.events_received;
            t.bytes_sent += s.bytes_sent;
            t.bytes_received += s.bytes_received;
            t.sessions_started += s.sessions_started;
            t.sessions_completed += s.sessions_completed;
        }
        t.events_refused = lock(&self.refused).values().sum();
        t.sessions_abandoned = lock(&self.abandoned).values().sum();
        t.unsent_queue_full = self.unsent.queue_full.load(Ordering::Relaxed);
        t.unsent_too_large = self.unsent.too_large.load(Ordering::Relaxed);
        t.unsent_failed = self.unsent.failed.load(Ordering::Relaxed);
        t
    }

    /// Per-peer figures for `labmesh sync status`.
    pub async fn status(&self) -> serde_json::Value {
        let fp = self.store.fingerprint().to_gossip();
        let view = self.mesh.view().await;
        let now = self.now_ms();
        let (stats, last): (BTreeMap<_, _>, BTreeMap<_, _>) = {
            let st = lock(&self.state);
            let last = view
                .peers
                .iter()
                .filter_map(|p| Some((p.node.clone(), st.schedule.last_session(&p.node)?)))
                .collect();
            (st.core.stats.clone(), last)
        };
        let refused = lock(&self.refused).clone();
        let abandoned = lock(&self.abandoned).clone();
        let peers: Vec<PeerSyncView> = view
            .peers
            .iter()
            .map(|p| {
                let their = p
                    .key_values
                    .get(FINGERPRINT_KEY)
                    .cloned()
                    .unwrap_or_default();
                let s = stats.get(&p.node).cloned().unwrap_or_default();
                PeerSyncView {
                    peer: p.node.clone(),
                    fingerprint_equal: their == fp,
                    fingerprint: their,
                    last_reconciliation_s_ago: last
                        .get(&p.node)
                        .map(|t: &u64| now.saturating_sub(*t) / 1000),
                    sessions_started: s.sessions_started,
                    sessions_completed: s.sessions_completed,
                    events_sent: s.events_sent,
                    events_received: s.events_received,
                    bytes_sent: s.bytes_sent,
                    bytes_received: s.bytes_received,
                    events_refused: refused.get(&p.node).copied().unwrap_or(0),
                    sessions_abandoned: abandoned.get(&p.node).copied().unwrap_or(0),
                }
            })
            .collect();
        serde_json::json!({
            "node": self.cfg.node,
            "fingerprint": fp,
            "events": self.store.len(),
            "peers": peers,
            "refused": refused,
            "latest_refusals": lock(&self.refusals).iter().cloned().collect::<Vec<_>>(),
        })
    }
}
