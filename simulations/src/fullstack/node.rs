//! One simulated node: the agent's QUIC transport, chitchat membership and event store, with a
//! thin sync driver around the shipping `SyncCore` (the same decisions as the agent's
//! `node/src/sync_driver.rs`, which lives in the binary crate and so cannot be linked here).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh::keys::NodeInfo;
use mesh::liveness::Liveness;
use mesh::{Mesh, MeshConfig, MeshStats, QuicTransport, TransportConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sync::reconcile::{Runtime, SyncCore, SyncMessage, SyncSource};
use sync::{EventStore, IndexEntry, StoreConfig};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::clock::NodeClock;
use super::socket::{LossTable, SimUdpSocket, WireCounters};

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
}

impl Default for SyncTimings {
    fn default() -> Self {
        SyncTimings {
            tick: Duration::from_millis(500),
            differ_delay: Duration::from_secs(2),
            anti_entropy_interval: Duration::from_secs(30),
            session_timeout: Duration::from_secs(60),
        }
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
    pub sync: SyncTimings,
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
        transient: false,
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
    let (new_tx, new_rx) = mpsc::unbounded_channel();
    store.set_listener(Box::new(move |entry: &IndexEntry| {
        let _ = new_tx.send(entry.clone());
    }));
    {
        let mut p = lock(&probe);
        p.store = Some(store.clone());
        p.opened_with.push(store.len());
    }
    let Some(inbound) = mesh.transport().take_app_receiver() else {
        return Err("the application channel was already taken".into());
    };
    let driver = Driver {
        name: spec.name.clone(),
        store,
        mesh,
        core: SyncCore::new(spec.seed.wrapping_mul(1000).wrapping_add(starts)),
        rng: StdRng::seed_from_u64(spec.seed ^ 0x5eed),
        timings: spec.sync.clone(),
        queues: HashMap::new(),
        differ_since: HashMap::new(),
        last_session: HashMap::new(),
        started: Instant::now(),
        probe,
    };
    driver.run(inbound, new_rx).await;
    Ok(())
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
    name: String,
    store: Arc<EventStore>,
    mesh: Mesh,
    core: SyncCore,
    rng: StdRng,
    timings: SyncTimings,
    queues: HashMap<String, (SocketAddr, mpsc::Sender<Vec<u8>>)>,
    differ_since: HashMap<String, Instant>,
    last_session: HashMap<String, Instant>,
    started: Instant,
    probe: SharedProbe,
}

impl Driver {
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<mesh::transport::AppMessage>,
        mut new_entries: mpsc::UnboundedReceiver<IndexEntry>,
    ) {
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

    async fn live_peers(&self) -> Peers {
        let view = self.mesh.view().await;
        view.peers
            .iter()
            .filter(|p| p.liveness.is_up())
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
        match self
            .core
            .start(&mut out, &Source(&self.store), peer, 0, now)
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
