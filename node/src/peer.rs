//! The agent's part in the mesh: starts QUIC and chitchat with this node's certificate, turns
//! liveness transitions into events, spreads revocations, and warns before the certificate
//! expires.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use certs::{Rejections, RevocationList, SignedRevocation};
use mesh::keys::{self, NodeInfo};
use mesh::{Mesh, MeshConfig, MeshStats, QuicTransport, Transition, TransportConfig};
use serde_json::{Map, Value, json};
use sync::{EventStore, NewEvent, Query, Severity};

use crate::identity::Identity;
use crate::settings::Settings;

/// Warn this long before this node's certificate expires.
const EXPIRY_WARNING: chrono::Duration = chrono::Duration::days(30);

pub struct PeerRuntime {
    pub mesh: Mesh,
    pub mesh_name: String,
    pub revocations: RevocationList,
    pub tls_rejections: Rejections,
    ca_pem: String,
    store: Arc<EventStore>,
    settings: Settings,
    cert_not_after: chrono::DateTime<chrono::Utc>,
}

/// The address peers should dial: explicit, else the gossip address, else (bound to 0.0.0.0)
/// the first non-loopback address the host name resolves to.
fn advertise_addr(settings: &Settings) -> SocketAddr {
    if let Some(a) = settings.mesh.advertise_addr {
        return a;
    }
    let bind = settings.mesh.gossip_addr;
    if !bind.ip().is_unspecified() {
        return bind;
    }
    let host = crate::settings::host_name();
    let found = (host.as_str(), bind.port())
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

fn state_file(settings: &Settings) -> std::path::PathBuf {
    settings.state_dir().join("known-nodes.json")
}

fn load_known(settings: &Settings) -> Vec<String> {
    std::fs::read(state_file(settings))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_known(settings: &Settings, known: &[String]) {
    let dir = settings.state_dir();
    let result = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| serde_json::to_vec(known).map_err(|e| e.to_string()))
        .and_then(|bytes| {
            sync::durable::write_file_atomic(&state_file(settings), &bytes)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot save the list of known nodes");
    }
}

impl PeerRuntime {
    pub async fn start(
        settings: &Settings,
        identity: &Identity,
        store: Arc<EventStore>,
    ) -> anyhow::Result<Arc<PeerRuntime>> {
        let revocations = RevocationList::new();
        let tls_rejections = Rejections::new();
        let ca_pem = identity.node.ca_pem().to_owned();
        let server =
            certs::server_config(&identity.node, revocations.clone(), tls_rejections.clone())?;
        let client =
            certs::client_config(&identity.node, revocations.clone(), tls_rejections.clone())?;
        let advertise = advertise_addr(settings);
        let mut transport_cfg =
            TransportConfig::new(settings.mesh.gossip_addr, advertise, server, client);
        transport_cfg.keep_alive = Duration::from_secs(2).min(settings.mesh.gossip_interval * 4);
        let is_revoked = revocations.clone();
        let transport = QuicTransport::bind(
            transport_cfg,
            Arc::new(MeshStats::default()),
            Box::new(move |fp| is_revoked.is_revoked(fp)),
        )?;
        let info = NodeInfo {
            role: settings.mesh.role.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            os: std::env::consts::OS.to_owned(),
            gossip_addr: advertise.to_string(),
            api_addr: settings.api_addr.to_string(),
            transient: settings.mesh.transient,
            alerter_priority: settings.mesh.alerter_priority,
            backend: keys::detect_backend().to_owned(),
        };
        let mut cfg = MeshConfig::new(&settings.name, &identity.mesh_id, advertise, info);
        cfg.gossip_interval = settings.mesh.gossip_interval;
        cfg.seeds = settings.mesh.seeds.clone();
        cfg.liveness.offline_after = settings.mesh.offline_after;
        cfg.liveness.suspect_after = settings.mesh.gossip_interval * 5;
        cfg.known_nodes = load_known(settings);
        let mesh = Mesh::start(cfg, transport)
            .await
            .context("cannot start membership")?;
        tracing::info!(
            mesh = %identity.mesh_id,
            gossip = %settings.mesh.gossip_addr,
            advertise = %advertise,
            seeds = ?settings.mesh.seeds,
            "joined the mesh"
        );
        let runtime = Arc::new(PeerRuntime {
            mesh,
            mesh_name: identity.mesh_name.clone(),
            revocations,
            tls_rejections,
            ca_pem,
            store,
            settings: settings.clone(),
            cert_not_after: identity.node.not_after(),
        });
        runtime.apply_stored_revocations().await;
        Ok(runtime)
    }

    /// Runs until `stop` resolves: observes liveness every gossip interval, applies
    /// revocations, checks certificate expiry daily.
    /// `revoked_rx` delivers `cert_revoked` events as the store picks them up.
    pub async fn run(
        self: Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        mut revoked_rx: tokio::sync::mpsc::UnboundedReceiver<sync::IndexEntry>,
    ) {
        let mut tick = tokio::time::interval(self.settings.mesh.gossip_interval);
        let mut known: BTreeSet<String> = load_known(&self.settings).into_iter().collect();
        let mut last_revocation_check = tokio::time::Instant::now();
        let mut last_expiry_check: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
                Some(entry) = revoked_rx.recv() => {
                    self.apply_stored(vec![entry]).await;
                    continue;
                }
            }
            for t in self.mesh.observe().await {
                self.record_transition(&t).await;
            }
            let now_known: BTreeSet<String> = self.mesh.known_nodes().await.into_iter().collect();
            if now_known != known {
                known = now_known;
                save_known(&self.settings, &known.iter().cloned().collect::<Vec<_>>());
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
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || store.append(new)).await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot record an event"),
            Err(e) => tracing::error!(error = %e, "event task failed"),
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
        payload.insert("observer".into(), json!(self.settings.name));
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

    /// Applies every `cert_revoked` event in the store (once, at start).
    async fn apply_stored_revocations(&self) {
        let q = Query {
            types: vec!["cert_revoked".into()],
            ..Query::default()
        };
        let entries = self.store.query(&q);
        self.apply_stored(entries).await;
    }

    /// Applies `cert_revoked` events (written by `labmesh certs revoke`, or received from
    /// peers) and re-publishes them in gossip.
    async fn apply_stored(&self, entries: Vec<sync::IndexEntry>) {
        let store = self.store.clone();
        let records: Vec<SignedRevocation> = tokio::task::spawn_blocking(move || {
            entries
                .iter()
                .filter_map(|e| store.read_bytes(e).ok())
                .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
                .filter_map(|doc| serde_json::from_value(doc["payload"]["record"].clone()).ok())
                .collect()
        })
        .await
        .unwrap_or_default();
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
        let left = self.cert_not_after - chrono::Utc::now();
        if left < EXPIRY_WARNING {
            let mut payload = Map::new();
            payload.insert("node".into(), json!(self.settings.name));
            payload.insert("not_after".into(), json!(self.cert_not_after.to_rfc3339()));
            payload.insert("days_left".into(), json!(left.num_days()));
            payload.insert(
                "fix".into(),
                json!(format!("on the CA node: labmesh certs renew {} --out bundle.json; then restart this node with --join bundle.json", self.settings.name)),
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
