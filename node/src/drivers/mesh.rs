//! The agent's part in the mesh: starts QUIC and chitchat with this node's certificate, turns
//! liveness transitions into events, spreads revocations, and warns before the certificate
//! expires.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use certs::{NodeIdentity, Rejections, RevocationList, SignedRevocation};
use mesh::keys::{self, NodeInfo};
use mesh::{Mesh, MeshConfig, MeshStats, QuicTransport, Transition, TransportConfig};
use serde_json::{Map, Value, json};
use sync::{Clock, EventStore, NewEvent, Query, Severity};
use tokio::sync::mpsc;

use crate::drivers::bus::EventRx;

/// Warn this long before this node's certificate expires.
const EXPIRY_WARNING: chrono::Duration = chrono::Duration::days(30);

/// The mesh driver's settings; each field's doc says what it trades.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// This node's name (its certificate's).
    pub node: String,
    pub mesh_name: String,
    /// The mesh's short stable id (its name and the start of the CA fingerprint).
    pub mesh_id: String,
    /// Where the QUIC endpoint binds.
    pub bind: SocketAddr,
    /// The address peers dial (see [`advertise_addr`]).
    pub advertise: SocketAddr,
    /// Gossiped so that peers can show and ask this node's API.
    pub api_addr: String,
    /// Peers to contact first; any one live peer is enough.
    pub seeds: Vec<String>,
    /// Often away (a laptop): its absence is normal, it is never the alerter.
    pub transient: bool,
    pub role: String,
    pub alerter_priority: i64,
    /// Gossip interval. Shorter detects failures sooner and costs bandwidth and wake-ups.
    /// Default 300 ms.
    pub gossip_interval: Duration,
    /// How long a dead peer stays `dead` before it is `offline`. Default 30 s.
    pub offline_after: Duration,
    /// Where the nodes this one has known are kept across restarts.
    pub state_dir: PathBuf,
    /// Gossiped as `os` and `backend` (std's OS name; cuda, metal or cpu).
    pub os: String,
    pub backend: String,
}

/// Where the QUIC endpoint's datagrams go: a UDP socket bound to [`PeerConfig::bind`], or a
/// socket and runtime the caller provides (the simulation's network and clock).
pub enum Endpoint {
    Bind,
    Socket {
        udp: Arc<dyn quinn::AsyncUdpSocket>,
        runtime: Arc<dyn quinn::Runtime>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("TLS set-up: {0}")]
    Tls(String),
    #[error(transparent)]
    Transport(#[from] mesh::transport::TransportError),
    #[error("cannot start membership: {0}")]
    Membership(String),
}

pub struct PeerRuntime {
    pub mesh: Arc<Mesh>,
    pub mesh_name: String,
    pub revocations: RevocationList,
    pub tls_rejections: Rejections,
    ca_pem: String,
    store: Arc<EventStore>,
    clock: Arc<dyn Clock>,
    cfg: PeerConfig,
    cert_not_after: chrono::DateTime<chrono::Utc>,
    /// Every liveness transition this node observes, for a caller that watches them (the
    /// simulation's invariants).
    transitions: Option<mpsc::UnboundedSender<Transition>>,
}

/// The address peers should dial: explicit, else the gossip address, else (bound to 0.0.0.0)
/// the first non-loopback address the host name resolves to.
pub fn advertise_addr(explicit: Option<SocketAddr>, bind: SocketAddr, host: &str) -> SocketAddr {
    if let Some(a) = explicit {
        return a;
    }
    if !bind.ip().is_unspecified() {
        return bind;
    }
    let found = (host, bind.port())
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.find(|a| a.is_ipv4() && !a.ip().is_loopback()));
    match found {
        Some(a) => a,
        None => {
            tracing::warn!(
                "cannot tell which address peers should dial (the host name resolves to no LAN address); advertising 127.0.0.1: set --advertise-addr for a multi-host mesh"
            );
            SocketAddr::from(([127, 0, 0, 1], bind.port()))
        }
    }
}

fn revocations_file(cfg: &PeerConfig) -> PathBuf {
    cfg.state_dir.join("revocations.json")
}

/// Fills `list` from `<state>/revocations.json` and the stored `cert_revoked` events; returns
/// whether the events held records the file did not (then the file is rewritten). Records
/// that do not verify against the mesh CA are skipped with a warning.
fn load_revocations(
    cfg: &PeerConfig,
    store: &EventStore,
    list: &RevocationList,
    ca_pem: &str,
) -> bool {
    let path = revocations_file(cfg);
    let from_file: Vec<SignedRevocation> = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::error!(file = %path.display(), error = %e, "unreadable revocation list; using the revocations in stored events");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    };
    for record in from_file {
        if let Err(e) = list.add(record, ca_pem) {
            tracing::warn!(file = %path.display(), error = %e, "skipped a revocation record that does not verify");
        }
    }
    let q = Query {
        types: vec!["cert_revoked".into()],
        ..Query::default()
    };
    let mut new = false;
    for entry in store.query(&q) {
        let record = store
            .read_event(&entry)
            .ok()
            .and_then(|e| e.payload.get("record").cloned())
            .and_then(|r| serde_json::from_value::<SignedRevocation>(r).ok());
        if let Some(record) = record {
            new |= list.add(record, ca_pem).unwrap_or(false);
        }
    }
    new
}

fn state_file(cfg: &PeerConfig) -> PathBuf {
    cfg.state_dir.join("known-nodes.json")
}

fn load_known(cfg: &PeerConfig) -> Vec<String> {
    std::fs::read(state_file(cfg))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_known(cfg: &PeerConfig, known: &[String]) {
    let result = std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| serde_json::to_vec(known).map_err(|e| e.to_string()))
        .and_then(|bytes| {
            sync::durable::write_file_atomic(&state_file(cfg), &bytes).map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot save the list of known nodes");
    }
}

impl PeerRuntime {
    /// Starts the QUIC endpoint and chitchat, and applies the revocations already stored.
    pub async fn start(
        cfg: PeerConfig,
        identity: &NodeIdentity,
        store: Arc<EventStore>,
        clock: Arc<dyn Clock>,
        endpoint: Endpoint,
        transitions: Option<mpsc::UnboundedSender<Transition>>,
    ) -> Result<Arc<PeerRuntime>, MeshError> {
        let revocations = RevocationList::new();
        let tls_rejections = Rejections::new();
        let ca_pem = identity.ca_pem().to_owned();
        // Before anything can connect: the revocations this node kept, and those in stored
        // events (a node that upgraded, or records that arrived while it was down).
        let preloaded = load_revocations(&cfg, &store, &revocations, &ca_pem);
        let tls = |e: certs::CertError| MeshError::Tls(e.to_string());
        let server = certs::server_config(identity, revocations.clone(), tls_rejections.clone())
            .map_err(tls)?;
        let client = certs::client_config(identity, revocations.clone(), tls_rejections.clone())
            .map_err(tls)?;
        let mut transport_cfg = TransportConfig::new(cfg.bind, cfg.advertise, server, client);
        transport_cfg.keep_alive = Duration::from_secs(2).min(cfg.gossip_interval * 4);
        let is_revoked = revocations.clone();
        let check: mesh::transport::RevocationCheck = Box::new(move |fp| is_revoked.is_revoked(fp));
        let stats = Arc::new(MeshStats::default());
        let transport = match endpoint {
            Endpoint::Bind => QuicTransport::bind(transport_cfg, stats, check)?,
            Endpoint::Socket { udp, runtime } => {
                QuicTransport::with_socket(transport_cfg, stats, check, udp, runtime)?
            }
        };
        let info = NodeInfo {
            role: cfg.role.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            os: cfg.os.clone(),
            gossip_addr: cfg.advertise.to_string(),
            api_addr: cfg.api_addr.clone(),
            transient: cfg.transient,
            alerter_priority: cfg.alerter_priority,
            backend: cfg.backend.clone(),
        };
        let mut mesh_cfg = MeshConfig::new(&cfg.node, &cfg.mesh_id, cfg.advertise, info);
        mesh_cfg.gossip_interval = cfg.gossip_interval;
        mesh_cfg.seeds = cfg.seeds.clone();
        mesh_cfg.liveness.offline_after = cfg.offline_after;
        mesh_cfg.liveness.suspect_after = cfg.gossip_interval * 5;
        mesh_cfg.known_nodes = load_known(&cfg);
        let mesh = Mesh::start(mesh_cfg, transport)
            .await
            .map_err(|e| MeshError::Membership(format!("{e:#}")))?;
        tracing::info!(
            mesh = %cfg.mesh_id,
            gossip = %cfg.bind,
            advertise = %cfg.advertise,
            seeds = ?cfg.seeds,
            "joined the mesh"
        );
        let runtime = Arc::new(PeerRuntime {
            mesh: Arc::new(mesh),
            mesh_name: cfg.mesh_name.clone(),
            revocations,
            tls_rejections,
            ca_pem,
            store,
            clock,
            cert_not_after: identity.not_after(),
            cfg,
            transitions,
        });
        if preloaded {
            runtime.save_revocations();
        }
        for record in runtime.revocations.records() {
            runtime.publish(&record).await;
        }
        Ok(runtime)
    }

    /// Runs until `stop` resolves: observes liveness every gossip interval, applies
    /// revocations, checks certificate expiry daily. `events` is the event bus: stored
    /// `cert_revoked` events (written here, by `labmesh certs revoke`, or received) apply at
    /// once.
    pub async fn run(
        self: Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        mut events: EventRx,
    ) {
        let mut tick = tokio::time::interval(self.cfg.gossip_interval);
        let mut known: BTreeSet<String> = load_known(&self.cfg).into_iter().collect();
        let mut last_revocation_check = tokio::time::Instant::now();
        let mut last_expiry_check: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
                Some(stored) = events.recv() => {
                    if stored.event.event_type == "cert_revoked" {
                        self.apply_stored(std::iter::once(&*stored.event)).await;
                    }
                    continue;
                }
            }
            for t in self.mesh.observe().await {
                self.record_transition(&t).await;
                if let Some(tx) = &self.transitions {
                    let _ = tx.send(t);
                }
            }
            let now_known: BTreeSet<String> = self.mesh.known_nodes().await.into_iter().collect();
            if now_known != known {
                known = now_known;
                save_known(&self.cfg, &known.iter().cloned().collect::<Vec<_>>());
            }
            if last_revocation_check.elapsed() >= Duration::from_secs(1) {
                last_revocation_check = tokio::time::Instant::now();
                self.apply_gossiped_revocations().await;
            }
            if last_expiry_check.is_none_or(|t| t.elapsed() >= Duration::from_secs(24 * 3600)) {
                last_expiry_check = Some(tokio::time::Instant::now());
                self.check_expiry().await;
            }
        }
    }

    async fn append(&self, new: NewEvent) {
        if let Err(e) = crate::util::blocking(|| self.store.append(new)) {
            tracing::error!(error = %e, "cannot record an event");
        }
    }

    async fn record_transition(&self, t: &Transition) {
        tracing::info!(
            peer = %t.node,
            from = t.from.map_or("unseen", |l| l.as_str()),
            to = t.to.as_str(),
            recorded_here = t.record,
            "peer liveness changed"
        );
        let (Some(event_type), true) = (t.event, t.record) else {
            return;
        };
        let severity = match event_type {
            "node_offline" if !t.transient => Severity::Warning,
            _ => Severity::Info,
        };
        let mut payload = Map::new();
        payload.insert("peer".into(), json!(t.node));
        payload.insert("from".into(), json!(t.from.map(|l| l.as_str())));
        payload.insert("to".into(), json!(t.to.as_str()));
        payload.insert("transient".into(), json!(t.transient));
        payload.insert("observer".into(), json!(self.cfg.node));
        let new = NewEvent::new(event_type, severity, "labmesh-mesh")
            .service("labmesh")
            .payload(payload);
        self.append(new).await;
    }

    /// Verifies and applies a record; returns true when it is new here.
    fn apply(&self, record: SignedRevocation) -> bool {
        match self.revocations.add(record.clone(), &self.ca_pem) {
            Ok(true) => {
                tracing::warn!(node = %record.node, serial = %record.serial, reason = %record.reason, "certificate revoked");
                self.save_revocations();
                let closed = self.mesh.transport().drop_revoked();
                if closed > 0 {
                    tracing::warn!(closed, "closed connections of a revoked certificate");
                }
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, node = %record.node, "ignored a revocation record that does not verify");
                false
            }
        }
    }

    /// Keeps every record in `<state>/revocations.json`, which retention never touches: a
    /// certificate is valid for 825 days, its `cert_revoked` event only 30.
    fn save_revocations(&self) {
        let records = self.revocations.records();
        let saved = serde_json::to_vec_pretty(&records)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                std::fs::create_dir_all(&self.cfg.state_dir).map_err(|e| e.to_string())?;
                sync::durable::write_file_atomic(&revocations_file(&self.cfg), &bytes)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = saved {
            tracing::error!(error = %e, file = %revocations_file(&self.cfg).display(), "cannot keep the revocation list; it still holds in memory and in events");
        }
    }

    async fn publish(&self, record: &SignedRevocation) {
        if let Ok(text) = serde_json::to_string(record) {
            let key = format!(
                "{}{}",
                keys::REVOCATION_PREFIX,
                &record.fingerprint[..16.min(record.fingerprint.len())]
            );
            self.mesh.set_key(&key, &text).await;
        }
    }

    /// Applies `cert_revoked` events (written by `labmesh certs revoke`, or received from
    /// peers) and re-publishes them in gossip.
    async fn apply_stored(&self, events: impl Iterator<Item = &sync::Event>) {
        let records: Vec<SignedRevocation> = events
            .filter_map(|e| e.payload.get("record"))
            .filter_map(|r| serde_json::from_value(r.clone()).ok())
            .collect();
        for record in records {
            if self.apply(record.clone()) {
                self.publish(&record).await;
            }
        }
    }

    /// Applies revocation records other nodes publish; stores and re-publishes new ones, so a
    /// revocation keeps spreading while the CA holder is away.
    async fn apply_gossiped_revocations(&self) {
        for (_, value) in self.mesh.values_with_prefix(keys::REVOCATION_PREFIX).await {
            let Ok(record) = serde_json::from_str::<SignedRevocation>(&value) else {
                continue;
            };
            if self.apply(record.clone()) {
                self.publish(&record).await;
                self.append(revocation_event(&record)).await;
            }
        }
    }

    async fn check_expiry(&self) {
        let left = self.cert_not_after - self.clock.now();
        if left < EXPIRY_WARNING {
            let mut payload = Map::new();
            payload.insert("node".into(), json!(self.cfg.node));
            payload.insert("not_after".into(), json!(self.cert_not_after.to_rfc3339()));
            payload.insert("days_left".into(), json!(left.num_days()));
            payload.insert(
                "fix".into(),
                json!(format!("on the CA node: labmesh certs renew {} --out bundle.json; then restart this node with --join bundle.json", self.cfg.node)),
            );
            tracing::warn!(
                days_left = left.num_days(),
                "this node's certificate expires soon"
            );
            self.append(
                NewEvent::new("certificate_expiring", Severity::Warning, "labmesh-certs")
                    .service("labmesh")
                    .payload(payload),
            )
            .await;
        }
    }
}

/// The event that carries a revocation record.
pub fn revocation_event(record: &SignedRevocation) -> NewEvent {
    let mut payload = Map::new();
    payload.insert("node".into(), json!(record.node));
    payload.insert("serial".into(), json!(record.serial));
    payload.insert("reason".into(), json!(record.reason));
    payload.insert(
        "record".into(),
        serde_json::to_value(record).unwrap_or(Value::Null),
    );
    NewEvent::new("cert_revoked", Severity::Warning, "labmesh-certs")
        .service("labmesh")
        .payload(payload)
}
