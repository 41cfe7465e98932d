//! Membership: chitchat `=0.11.0` on the QUIC transport, and the liveness tracker fed from it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

// tokio's clock: liveness then follows the simulator's virtual time in a simulation.
use tokio::time::Instant;

use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, spawn_chitchat};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::keys::{self, NodeInfo};
use crate::liveness::{LivenessConfig, LivenessTracker, Observation, PeerStatus, Transition};
use crate::stats::StatsSnapshot;
use crate::transport::QuicTransport;

/// Membership settings; each field's doc says what it trades.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub node: String,
    /// Separates meshes that share a network: peers with another id are ignored. labmesh uses
    /// the mesh name plus a prefix of the CA fingerprint.
    pub mesh_id: String,
    /// How often each node gossips with a few others. Shorter detects failures sooner and costs
    /// more bandwidth (roughly linear). Default 300 ms.
    pub gossip_interval: Duration,
    /// `HOST:PORT` of nodes to contact first. Any one live seed is enough to join.
    pub seeds: Vec<String>,
    /// The address peers dial (must be the transport's advertised address).
    pub advertise: SocketAddr,
    /// chitchat's phi threshold: higher tolerates more jitter before declaring a node dead, at
    /// the cost of slower detection. Default 8 (chitchat's).
    pub phi_threshold: f64,
    /// How long chitchat keeps a dead node's state before forgetting it. Every restart leaves
    /// a dead generation behind that rides in every digest until then, so shorter keeps gossip
    /// small; the liveness tracker remembers forgotten nodes as `offline` anyway. Default 1 h.
    pub dead_node_grace_period: Duration,
    pub liveness: LivenessConfig,
    pub info: NodeInfo,
    /// Nodes known from earlier runs (not announced as joined again).
    pub known_nodes: Vec<String>,
}

impl MeshConfig {
    pub fn new(node: &str, mesh_id: &str, advertise: SocketAddr, info: NodeInfo) -> Self {
        MeshConfig {
            node: node.to_owned(),
            mesh_id: mesh_id.to_owned(),
            gossip_interval: Duration::from_millis(300),
            seeds: Vec::new(),
            advertise,
            phi_threshold: 8.0,
            dead_node_grace_period: Duration::from_secs(3600),
            liveness: LivenessConfig::default(),
            info,
            known_nodes: Vec::new(),
        }
    }
}

/// The whole mesh as this node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct MeshView {
    pub node: String,
    pub mesh_id: String,
    pub gossip_addr: SocketAddr,
    pub key_values: BTreeMap<String, String>,
    pub peers: Vec<PeerStatus>,
    pub transport: StatsSnapshot,
}

pub struct Mesh {
    handle: ChitchatHandle,
    transport: QuicTransport,
    tracker: Mutex<LivenessTracker>,
    /// Highest chitchat generation seen per node: a higher one means the node restarted.
    generations: Mutex<BTreeMap<String, u64>>,
    started: Instant,
    cfg: MeshConfig,
    /// Keeps `reach` current (see [`publish_reach`]).
    reach_task: tokio::task::JoinHandle<()>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.reach_task.abort();
    }
}

/// Publishes `reach`, the nodes chitchat hears directly (which, behind `gossip_trust`, means
/// heard from themselves), once a gossip round and only when it changed. Its own task, so the
/// witnesses other nodes count on stay current however often anyone reads this node's view.
async fn publish_reach(chitchat: Arc<Mutex<chitchat::Chitchat>>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let mut guard = chitchat.lock().await;
        let me = guard.self_chitchat_id().clone();
        let heard: BTreeSet<&str> = guard
            .live_nodes()
            .filter(|id| **id != me)
            .map(|id| &*id.node_id)
            .collect();
        let reach = heard.into_iter().collect::<Vec<_>>().join(",");
        let state = guard.self_node_state();
        if state.get(keys::REACH) != Some(reach.as_str()) {
            state.set(keys::REACH, reach);
        }
    }
}

impl Mesh {
    /// Starts chitchat on the (already bound) QUIC transport.
    pub async fn start(cfg: MeshConfig, transport: QuicTransport) -> anyhow::Result<Mesh> {
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let failure_detector = FailureDetectorConfig {
            phi_threshold: cfg.phi_threshold,
            dead_node_grace_period: cfg.dead_node_grace_period,
            initial_interval: cfg.gossip_interval * 2,
            ..FailureDetectorConfig::default()
        };
        let chitchat_cfg = ChitchatConfig {
            chitchat_id: ChitchatId::new(cfg.node.clone(), generation, cfg.advertise),
            cluster_id: cfg.mesh_id.clone(),
            gossip_interval: cfg.gossip_interval,
            listen_addr: cfg.advertise,
            seed_nodes: cfg.seeds.clone(),
            failure_detector_config: failure_detector,
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        transport.set_gossip_interval(cfg.gossip_interval);
        let handle = spawn_chitchat(chitchat_cfg, cfg.info.key_values(), &transport).await?;
        let reach_task = tokio::spawn(publish_reach(handle.chitchat(), cfg.gossip_interval));
        let tracker =
            LivenessTracker::new(cfg.liveness.clone(), &cfg.node, cfg.known_nodes.clone());
        Ok(Mesh {
            handle,
            reach_task,
            transport,
            tracker: Mutex::new(tracker),
            generations: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
            cfg,
        })
    }

    pub fn config(&self) -> &MeshConfig {
        &self.cfg
    }

    pub fn transport(&self) -> &QuicTransport {
        &self.transport
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn observations(&self) -> (Vec<Observation>, BTreeMap<String, String>) {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let live: BTreeSet<ChitchatId> = guard.live_nodes().cloned().collect();
        let self_id = guard.self_chitchat_id().clone();
        let mut own = BTreeMap::new();
        let mut out = Vec::new();
        for (id, state) in guard.node_states() {
            let kv: BTreeMap<String, String> = state
                .key_values()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            if *id == self_id {
                own = kv;
                continue;
            }
            out.push(Observation {
                node: id.node_id.to_string(),
                generation: id.generation_id,
                gossip_addr: id.gossip_advertise_addr,
                live: live.contains(id),
                vouched: false,
                heartbeat: u64::from(state.heartbeat()),
                key_values: kv,
            });
        }
        (out, own)
    }

    /// Takes a fresh look at chitchat's state; returns liveness transitions since the last look.
    /// The agent calls this every gossip interval.
    pub async fn observe(&self) -> Vec<Transition> {
        let (mut obs, _) = self.observations().await;
        crate::liveness::vouch(&mut obs);
        self.forget_restarted(&obs).await;
        let now = self.now_ms();
        self.tracker.lock().await.observe(now, &obs)
    }

    /// A node that restarted within the QUIC idle timeout still has a connection here that
    /// looks alive but leads to its previous process, whose packets its new endpoint drops:
    /// whatever we sent on it (gossip, a sync session's first message) would be lost until the
    /// timeout. Its new chitchat generation tells us, so we dial afresh.
    async fn forget_restarted(&self, obs: &[Observation]) {
        let mut generations = self.generations.lock().await;
        for o in obs {
            match generations.get(&o.node) {
                Some(&known) if known >= o.generation => {}
                known => {
                    if known.is_some() {
                        tracing::debug!(node = %o.node, generation = o.generation, "peer restarted; dropping its connection");
                        self.transport.forget_connection(o.gossip_addr);
                    }
                    generations.insert(o.node.clone(), o.generation);
                }
            }
        }
    }

    /// Every node ever seen (the agent persists it).
    pub async fn known_nodes(&self) -> Vec<String> {
        self.tracker.lock().await.known().iter().cloned().collect()
    }

    pub async fn view(&self) -> MeshView {
        let (_, own) = self.observations().await;
        let now = self.now_ms();
        let peers = self.tracker.lock().await.view(now);
        MeshView {
            node: self.cfg.node.clone(),
            mesh_id: self.cfg.mesh_id.clone(),
            gossip_addr: self.cfg.advertise,
            key_values: own,
            peers,
            transport: self.transport.stats().snapshot(),
        }
    }

    /// Publishes (or replaces) one of this node's key-values.
    pub async fn set_key(&self, key: &str, value: &str) {
        let chitchat = self.handle.chitchat();
        chitchat.lock().await.self_node_state().set(key, value);
    }

    /// Every key-value with a prefix, from every node (e.g. revocation records).
    pub async fn values_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let mut out = Vec::new();
        for state in guard.node_states().values() {
            for (k, v) in state.key_values() {
                if k.starts_with(prefix) {
                    out.push((k.to_owned(), v.to_owned()));
                }
            }
        }
        out
    }

    /// Graceful leave: announce `status = left`, push it to every live peer at once, give it a
    /// few gossip rounds to spread, then stop chitchat and close the endpoint.
    pub async fn leave(&self) {
        self.set_key(keys::STATUS, keys::STATUS_LEFT).await;
        let peers: Vec<SocketAddr> = {
            let chitchat = self.handle.chitchat();
            let guard = chitchat.lock().await;
            let me = guard.self_chitchat_id().clone();
            guard
                .live_nodes()
                .filter(|id| **id != me)
                .map(|id| id.gossip_advertise_addr)
                .collect()
        };
        for _ in 0..3 {
            for addr in &peers {
                let _ = self.handle.gossip(*addr);
            }
            tokio::time::sleep(self.cfg.gossip_interval).await;
        }
        let _ = self.handle.initiate_shutdown();
        self.transport.close().await;
    }

    /// Stops without announcing (as a crash would look to the others; for tests).
    pub async fn abort(&self) {
        let _ = self.handle.initiate_shutdown();
        self.transport.close().await;
    }
}

/// Convenience for callers that hold the mesh behind an `Arc`.
pub type SharedMesh = Arc<Mesh>;
