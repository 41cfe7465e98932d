//! Drives the sans-IO sync core (`sync::reconcile`) with the agent's store and the mesh's QUIC
//! connections: pushes new local events at once, reconciles with a peer whose gossiped
//! fingerprint differs, and stores what peers send through the store's validating path.
//!
//! Decisions live in the core; this file decodes, calls it, and performs what it asked.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sync::reconcile::{Runtime, SyncCore, SyncMessage, SyncSource};
use sync::{EventStore, IndexEntry};
use tokio::sync::mpsc;

use crate::peer::PeerRuntime;
use crate::sync_peers::{Departure, peers_to_abandon};
use crate::world_driver::{WORLD_HASH_KEY, WorldRuntime};

/// Gossip key holding this node's event-set fingerprint (`<count>:<hex>`). Owned by sync.
pub const FINGERPRINT_KEY: &str = "sync_fp";

/// A peer's send queue and the address its sending task delivers to.
type PeerQueue = (SocketAddr, mpsc::Sender<Vec<u8>>);

/// A live peer as the mesh view shows it.
struct LivePeer {
    addr: SocketAddr,
    /// Its gossiped `sync_fp`; empty until it publishes one.
    fingerprint: String,
    /// Its mesh generation: a new one is a new process.
    generation: u64,
}

type LivePeers = BTreeMap<String, LivePeer>;

/// Messages queued per peer. A session over a big difference hands out all its batches at
/// once (100k events = 200 batches of 500), and a dropped batch costs a later round trip by
/// hash; each message is at most ~1 MiB, so the bound is memory only in a catch-up.
const PEER_QUEUE: usize = 512;

const WORLD_RESEND_MIN: Duration = Duration::from_secs(5);
const WORLD_RESEND_MAX: Duration = Duration::from_secs(300);

/// Settings; each field's doc says what it trades.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Reconcile with a peer whose fingerprint has differed this long. Shorter repairs sooner
    /// but may start sessions for events that eager push is still delivering. Default 2 s.
    pub differ_delay: Duration,
    /// Reconcile with one peer this often even when fingerprints agree (catches hash
    /// collisions of the short gossip fingerprint, costs one small round trip). Default 5 min.
    pub anti_entropy_interval: Duration,
    /// Reconcile only events newer than this (the retention window). Default 30 days.
    pub window: Duration,
    /// A session that has not finished after this long is dropped (the next one redoes what is
    /// missing). Default 60 s.
    pub session_timeout: Duration,
    /// Most reconciliation sessions this node starts at once. After a partition heals every
    /// node differs from every peer across it; without a cap that is ~N²/2 sessions at once
    /// (docs/simulation.md), with one the first few sessions bring this node level and the
    /// matching fingerprints spare the rest. Lower: less burst, slower repair. 0: no cap.
    /// Default 4.
    pub max_sessions: usize,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            differ_delay: Duration::from_secs(2),
            anti_entropy_interval: Duration::from_secs(300),
            window: Duration::from_secs(30 * 24 * 3600),
            session_timeout: Duration::from_secs(60),
            max_sessions: 4,
        }
    }
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

pub struct SyncDriver {
    world: Arc<WorldRuntime>,
    store: Arc<EventStore>,
    peer: Arc<PeerRuntime>,
    node: String,
    cfg: SyncSettings,
    core: Mutex<SyncCore>,
    started: Instant,
    refused: Mutex<BTreeMap<String, u64>>,
    /// The latest refusals with their reasons (newest last), for `sync status`.
    refusals: Mutex<std::collections::VecDeque<serde_json::Value>>,
    last_session: Mutex<BTreeMap<String, Instant>>,
    differ_since: Mutex<HashMap<String, Instant>>,
    /// Live peers and their mesh generations as last seen, to notice restarts and departures.
    generations: Mutex<BTreeMap<String, u64>>,
    /// Per peer: sessions dropped because it restarted or stopped being live.
    abandoned: Mutex<BTreeMap<String, u64>>,
    queues: Mutex<HashMap<String, PeerQueue>>,
    unsent: Unsent,
    /// Per peer: when a world snapshot was last offered, and the wait before the next.
    last_world_sent: Mutex<HashMap<String, (Instant, Duration)>>,
    /// `sync now` requests: a peer name, or empty for every live peer.
    now_tx: mpsc::UnboundedSender<String>,
    now_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
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
    store: Vec<(String, Vec<Vec<u8>>)>,
}

impl Runtime for Outbox {
    fn send(&mut self, to: &str, msg: SyncMessage) {
        self.send.push((to.to_owned(), msg));
    }
    fn store(&mut self, from: &str, events: Vec<Vec<u8>>) {
        self.store.push((from.to_owned(), events));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SyncDriver {
    pub fn new(
        store: Arc<EventStore>,
        peer: Arc<PeerRuntime>,
        world: Arc<WorldRuntime>,
        node: &str,
        cfg: SyncSettings,
    ) -> Arc<SyncDriver> {
        let (now_tx, now_rx) = mpsc::unbounded_channel();
        Arc::new(SyncDriver {
            world,
            last_world_sent: Mutex::new(HashMap::new()),
            store,
            peer,
            node: node.to_owned(),
            cfg,
            core: Mutex::new(SyncCore::new(rand::random())),
            started: Instant::now(),
            refused: Mutex::new(BTreeMap::new()),
            refusals: Mutex::new(std::collections::VecDeque::new()),
            last_session: Mutex::new(BTreeMap::new()),
            differ_since: Mutex::new(HashMap::new()),
            generations: Mutex::new(BTreeMap::new()),
            abandoned: Mutex::new(BTreeMap::new()),
            queues: Mutex::new(HashMap::new()),
            unsent: Unsent::default(),
            now_tx,
            now_rx: Mutex::new(Some(now_rx)),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Start of the reconciled range: midnight UTC `window` days ago, the same cutoff the
    /// retention prune uses, so the range covers exactly the days the store keeps (the
    /// fingerprint covers the whole store, and the two must agree or peers that differ only
    /// outside the range would never look equal).
    fn since_ms(&self) -> i64 {
        let days = self.cfg.window.as_secs() / 86_400;
        chrono::Utc::now()
            .date_naive()
            .checked_sub_days(chrono::Days::new(days))
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(0, |t| t.and_utc().timestamp_millis())
    }

    /// Live peers by name. Every caller acts on what it returns, so this is also where
    /// sessions with a process that restarted or went away are dropped, before anyone decides
    /// from the new view whether a session with that peer is already running.
    async fn live_peers(&self) -> LivePeers {
        let view = self.peer.mesh.view().await;
        let live: LivePeers = view
            .peers
            .iter()
            .filter(|p| p.liveness.is_up())
            .map(|p| {
                let fingerprint = p
                    .key_values
                    .get(FINGERPRINT_KEY)
                    .cloned()
                    .unwrap_or_default();
                let peer = LivePeer {
                    addr: p.gossip_addr,
                    fingerprint,
                    generation: p.generation,
                };
                (p.node.clone(), peer)
            })
            .collect();
        let current: BTreeMap<String, u64> = live
            .iter()
            .map(|(n, p)| (n.clone(), p.generation))
            .collect();
        let departed = {
            let mut known = lock(&self.generations);
            let departed = peers_to_abandon(&known, &current);
            *known = current;
            departed
        };
        for (name, why) in departed {
            self.abandon(&name, why);
        }
        live
    }

    fn abandon(&self, peer: &str, why: Departure) {
        let dropped = lock(&self.core).abandon(peer);
        if dropped == 0 {
            return;
        }
        *lock(&self.abandoned).entry(peer.to_owned()).or_default() += dropped as u64;
        tracing::debug!(
            peer,
            reason = why.as_str(),
            sessions = dropped,
            "dropped sync sessions with a peer's old process"
        );
    }

    /// Asks for a reconciliation now (`labmesh sync now [PEER]`).
    pub fn request_now(&self, peer: Option<&str>) {
        let _ = self.now_tx.send(peer.unwrap_or("").to_owned());
    }

    /// Sends through a per-peer queue so one slow peer never stalls the others.
    fn send(self: &Arc<Self>, to: &str, addr: SocketAddr, msg: &SyncMessage) {
        let bytes = msg.encode();
        let limit = self.peer.mesh.transport().max_app_message_bytes();
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
            let transport = self.peer.mesh.transport().clone();
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

    async fn perform(self: &Arc<Self>, out: Outbox, peers: &LivePeers) {
        for (to, msg) in out.send {
            match peers.get(&to) {
                Some(p) => self.send(&to, p.addr, &msg),
                None => tracing::debug!(peer = %to, "not live; dropped a sync message"),
            }
        }
        for (from, events) in out.store {
            let store = self.store.clone();
            let result =
                tokio::task::spawn_blocking(move || store.store_bytes_batch(&events)).await;
            match result {
                Ok(Ok(results)) => {
                    let bad: Vec<String> = results
                        .iter()
                        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
                        .collect();
                    if let Some(first) = bad.first() {
                        self.refuse(&from, bad.len() as u64, "events", first);
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(peer = %from, error = %e, "cannot store events from a peer")
                }
                Err(e) => tracing::error!(error = %e, "store task failed"),
            }
        }
    }

    async fn start_session(self: &Arc<Self>, peer: &str, peers: &LivePeers) {
        let mut out = Outbox::default();
        let store = self.store.clone();
        let since = self.since_ms();
        let now = self.now_ms();
        let started = {
            let mut core = lock(&self.core);
            if core.in_session_with(peer) {
                return;
            }
            core.start(&mut out, &Source(&store), peer, since, now)
        };
        match started {
            Ok(_) => {
                lock(&self.last_session).insert(peer.to_owned(), Instant::now());
                self.perform(out, peers).await;
            }
            Err(e) => tracing::warn!(peer, error = %e, "cannot start a reconciliation"),
        }
    }

    /// Runs until `stop` changes.
    pub async fn run(
        self: Arc<Self>,
        mut new_entries: mpsc::UnboundedReceiver<IndexEntry>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let Some(mut inbound) = self.peer.mesh.transport().take_app_receiver() else {
            tracing::error!("the sync channel is already taken; sync disabled");
            return;
        };
        let Some(mut now_rx) = lock(&self.now_rx).take() else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut last_anti_entropy = Instant::now();
        let mut published = String::new();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                Some(msg) = inbound.recv() => {
                    let peers = self.live_peers().await;
                    match SyncMessage::decode(&msg.bytes) {
                        Ok(SyncMessage::World { state, reply }) => {
                            match self.world.merge_snapshot(&state) {
                                Ok(we_had_more) => {
                                    tracing::info!(peer = %msg.from.node, bytes = state.len(), "merged a world snapshot");
                                    if we_had_more && !reply {
                                        let answer = SyncMessage::World { state: self.world.snapshot_bytes(), reply: true };
                                        self.send(&msg.from.node, msg.from_addr, &answer);
                                    }
                                }
                                Err(e) => self.refuse(&msg.from.node, 1, "world snapshot", &e),
                            }
                        }
                        Ok(decoded) => {
                            let mut out = Outbox::default();
                            let store = self.store.clone();
                            let result = {
                                let mut core = lock(&self.core);
                                core.on_message(&mut out, &Source(&store), &msg.from.node, decoded)
                            };
                            if let Err(e) = result {
                                tracing::warn!(peer = %msg.from.node, error = %e, "bad sync message");
                            }
                            let mut peers = peers;
                            // A peer that just wrote to us may not be "alive" in our view yet.
                            peers.entry(msg.from.node.clone()).or_insert(LivePeer {
                                addr: msg.from_addr,
                                fingerprint: String::new(),
                                generation: 0,
                            });
                            self.perform(out, &peers).await;
                        }
                        Err(e) => self.refuse(&msg.from.node, 1, "sync message", &e.to_string()),
                    }
                }
                Some(entry) = new_entries.recv() => {
                    // Eager push: only events written on this node; what peers sent us, they
                    // already pushed themselves.
                    let mut batch = vec![entry];
                    while let Ok(more) = new_entries.try_recv() {
                        batch.push(more);
                        if batch.len() >= 500 { break; }
                    }
                    let own: Vec<Vec<u8>> = batch
                        .iter()
                        .filter(|e| *e.node == self.node)
                        .filter_map(|e| self.store.read_bytes(e).ok())
                        .collect();
                    if !own.is_empty() {
                        let peers = self.live_peers().await;
                        let names: Vec<String> = peers.keys().cloned().collect();
                        let mut out = Outbox::default();
                        lock(&self.core).push(&mut out, &names, &own);
                        self.perform(out, &peers).await;
                    }
                }
                Some(target) = now_rx.recv() => {
                    let peers = self.live_peers().await;
                    for name in peers.keys().filter(|n| target.is_empty() || **n == target).cloned().collect::<Vec<_>>() {
                        self.start_session(&name, &peers).await;
                    }
                }
                _ = tick.tick() => {
                    let fp = self.store.fingerprint().to_gossip();
                    if fp != published {
                        self.peer.mesh.set_key(FINGERPRINT_KEY, &fp).await;
                        published = fp.clone();
                    }
                    let expired = lock(&self.core).expire(self.now_ms(), self.cfg.session_timeout.as_millis() as u64);
                    if expired > 0 {
                        tracing::debug!(expired, "dropped unfinished sync sessions");
                    }
                    let peers = self.live_peers().await;
                    let mut due = Vec::new();
                    {
                        let mut differ = lock(&self.differ_since);
                        differ.retain(|n, _| peers.contains_key(n));
                        for (name, peer) in &peers {
                            let their = &peer.fingerprint;
                            if their.is_empty() || *their == fp {
                                differ.remove(name);
                                continue;
                            }
                            let since = *differ.entry(name.clone()).or_insert_with(Instant::now);
                            // The smaller name starts; the other waits a while in case it is
                            // already doing so, then starts too.
                            let wait = if self.node < *name { self.cfg.differ_delay } else { self.cfg.differ_delay * 3 };
                            let recent = lock(&self.last_session).get(name).is_some_and(|t| t.elapsed() < wait);
                            if since.elapsed() >= wait && !recent {
                                due.push(name.clone());
                            }
                        }
                    }
                    if last_anti_entropy.elapsed() >= self.cfg.anti_entropy_interval && !peers.is_empty() {
                        last_anti_entropy = Instant::now();
                        let pick = rand::random::<u64>() as usize % peers.len();
                        if let Some(name) = peers.keys().nth(pick) {
                            due.push(name.clone());
                        }
                    }
                    let room = self.cfg.max_sessions.saturating_sub(lock(&self.core).sessions_in_flight());
                    if self.cfg.max_sessions > 0 && due.len() > room {
                        // A random start, or every node's first pick is the smallest name.
                        let skip = rand::random::<u64>() as usize % due.len();
                        due.rotate_left(skip);
                        due.truncate(room);
                    }
                    for name in due {
                        self.start_session(&name, &peers).await;
                    }
                    self.offer_world_snapshots(&fp).await;
                }
            }
        }
    }

    /// When a peer holds the same events but another world (history pruned on one side),
    /// send it our snapshot; it merges and answers with its own if it knew more. A snapshot
    /// can be lost (the peer was still connecting), so resend while the hashes differ, backing
    /// off from 5 s to 5 min; equal hashes reset the backoff.
    async fn offer_world_snapshots(self: &Arc<Self>, fp: &str) {
        let view = self.peer.mesh.view().await;
        let ours = self.world.short_hash();
        for p in view.peers.iter().filter(|p| p.liveness.is_up()) {
            let same_events = p.key_values.get(FINGERPRINT_KEY).is_some_and(|f| f == fp);
            let their_world = p
                .key_values
                .get(WORLD_HASH_KEY)
                .cloned()
                .unwrap_or_default();
            if their_world == ours {
                lock(&self.last_world_sent).remove(&p.node);
            }
            if !same_events || their_world.is_empty() || their_world == ours || self.node > p.node {
                continue;
            }
            let mut sent = lock(&self.last_world_sent);
            let due = !matches!(sent.get(&p.node), Some((at, wait)) if at.elapsed() < *wait);
            if !due {
                continue;
            }
            let wait = sent
                .get(&p.node)
                .map_or(WORLD_RESEND_MIN, |(_, w)| (*w * 2).min(WORLD_RESEND_MAX));
            sent.insert(p.node.clone(), (Instant::now(), wait));
            drop(sent);
            let msg = SyncMessage::World {
                state: self.world.snapshot_bytes(),
                reply: false,
            };
            self.send(&p.node, p.gossip_addr, &msg);
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
            "at": sync::event::format_timestamp(chrono::Utc::now()),
        }));
    }

    /// Totals over every peer since the agent started (monotonic), for `/metrics`.
    pub fn totals(&self) -> SyncTotals {
        let mut t = SyncTotals::default();
        for s in lock(&self.core).stats.values() {
            t.events_sent += s.events_sent;
            t.events_received += s.events_received;
            t.bytes_sent += s.bytes_sent;
            t.bytes_received += s.bytes_received;
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
        let view = self.peer.mesh.view().await;
        let stats = lock(&self.core).stats.clone();
        let refused = lock(&self.refused).clone();
        let last = lock(&self.last_session).clone();
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
                    last_reconciliation_s_ago: last.get(&p.node).map(|t| t.elapsed().as_secs()),
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
            "node": self.node,
            "fingerprint": fp,
            "events": self.store.len(),
            "peers": peers,
            "refused": refused,
            "latest_refusals": lock(&self.refusals).iter().cloned().collect::<Vec<_>>(),
        })
    }
}
