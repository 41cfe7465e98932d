//! Keeps this node's WorldState current and its views written to `<data>/world/`.
//!
//! Every event that enters the store (from anywhere) is applied; views are rewritten at most
//! twice a second when something changed; a checkpoint in `<data>/state/` lets a restart skip
//! the rebuild when the store has not changed since (deleting it rebuilds the same views).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh::Mesh;
use serde_json::{Value, json};
use sync::world::{Views, WorldState};
use sync::{Clock, EventStore};
use tokio::time::Instant;

use crate::drivers::bus::EventRx;
use crate::util::lock;

/// Gossip key holding a short hash of this node's world state. Owned by sync.
pub const WORLD_HASH_KEY: &str = "world_h";

/// The world driver's settings.
#[derive(Debug, Clone)]
pub struct WorldSettings {
    /// Events older than this many days are pruned (after being folded into the state).
    pub retention_days: u32,
    /// Keep pruned days as `events-archive/YYYY-MM-DD.tar.zst` instead of only deleting them.
    pub archive_pruned: bool,
}

pub struct WorldRuntime {
    state: Mutex<WorldState>,
    store: Arc<EventStore>,
    mesh: Arc<Mesh>,
    clock: Arc<dyn Clock>,
    world_dir: PathBuf,
    checkpoint: PathBuf,
    checkpoint_meta: PathBuf,
    views: Mutex<Option<Views>>,
    retention_days: u32,
    /// `labmesh run` logs, pruned with the events.
    run_logs: std::path::PathBuf,
    archive_pruned: bool,
    /// Set when a peer's snapshot was merged: the views and checkpoint are due.
    merged: std::sync::atomic::AtomicBool,
}

impl WorldRuntime {
    /// Loads the checkpoint, or rebuilds from every stored event when the store changed since.
    /// Blocking (a rebuild reads every event file).
    pub fn open(
        data_dir: &std::path::Path,
        store: Arc<EventStore>,
        mesh: Arc<Mesh>,
        clock: Arc<dyn Clock>,
        settings: WorldSettings,
    ) -> Arc<WorldRuntime> {
        let checkpoint = data_dir.join("state/world-checkpoint.json");
        let checkpoint_meta = data_dir.join("state/world-checkpoint.fingerprint");
        let started = Instant::now();
        let fingerprint = store.fingerprint().to_gossip();
        let saved_fp = std::fs::read_to_string(&checkpoint_meta).unwrap_or_default();
        let loaded = match WorldState::load(&checkpoint) {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(error = %e, "world checkpoint unreadable; rebuilding from events");
                None
            }
        };
        let (state, rebuilt) = match loaded {
            Some(state) if saved_fp.trim() == fingerprint => (state, false),
            other => {
                // Applying is idempotent: start from the checkpoint if any and fold everything.
                let mut state = other.unwrap_or_default();
                let entries = store.query(&sync::Query::default());
                for e in &entries {
                    if let Ok(ev) = store.read_event(e) {
                        state.apply(&ev);
                    }
                }
                (state, true)
            }
        };
        tracing::info!(
            rebuilt,
            ms = started.elapsed().as_millis() as u64,
            "world state ready"
        );
        Arc::new(WorldRuntime {
            state: Mutex::new(state),
            store,
            mesh,
            clock,
            world_dir: data_dir.join("world"),
            run_logs: data_dir.join(crate::runs::schema::RUN_LOG_DIR),
            checkpoint,
            checkpoint_meta,
            views: Mutex::new(None),
            retention_days: settings.retention_days,
            archive_pruned: settings.archive_pruned,
            merged: std::sync::atomic::AtomicBool::new(false),
        })
    }

    async fn live_overlay(&self) -> BTreeMap<String, Value> {
        let view = self.mesh.view().await;
        let mut live: BTreeMap<String, Value> = view
            .peers
            .iter()
            .map(|p| {
                (
                    p.node.clone(),
                    json!({"liveness": p.liveness, "last_heartbeat_age_ms": p.last_heartbeat_age_ms}),
                )
            })
            .collect();
        live.insert(
            view.node.clone(),
            json!({"liveness": "alive", "last_heartbeat_age_ms": 0, "self": true}),
        );
        live
    }

    async fn write_views(&self) {
        let live = self.live_overlay().await;
        let views = lock(&self.state).views_with_live(&live);
        if let Err(e) = std::fs::create_dir_all(&self.world_dir)
            .map_err(|e| e.to_string())
            .and_then(|()| views.write(&self.world_dir).map_err(|e| e.to_string()))
        {
            tracing::error!(dir = %self.world_dir.display(), error = %e, "cannot write the world views");
        }
        *lock(&self.views) = Some(views);
    }

    /// Retention: every event is already folded into the state, so save the checkpoint, then
    /// drop the date folders past the window.
    /// When the checkpoint cannot be saved (a full disk), nothing is pruned: the events are
    /// then the only durable copy of that history.
    fn prune(&self) {
        if let Err(e) = self.save_checkpoint() {
            tracing::error!(error = %e, "not pruning old events: the world checkpoint that keeps their history did not save");
            return;
        }
        if let Err(e) = self.store.prune(
            self.clock.now().date_naive(),
            self.retention_days,
            self.archive_pruned,
        ) {
            tracing::error!(error = %e, "cannot prune old events");
        }
        match crate::runs::logs::prune(
            &self.run_logs,
            std::time::SystemTime::now(),
            self.retention_days,
        ) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "pruned run logs past retention"),
            Err(e) => {
                tracing::warn!(dir = %self.run_logs.display(), error = %e, "cannot prune run logs")
            }
        }
    }

    fn save_checkpoint(&self) -> Result<(), String> {
        let state = lock(&self.state).clone();
        let fp = self.store.fingerprint().to_gossip();
        let result = std::fs::create_dir_all(self.checkpoint.parent().unwrap_or(&self.world_dir))
            .map_err(|e| e.to_string())
            .and_then(|()| state.save(&self.checkpoint).map_err(|e| e.to_string()))
            .and_then(|()| {
                sync::durable::write_file_atomic(&self.checkpoint_meta, fp.as_bytes())
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = &result {
            tracing::warn!(error = %e, "cannot save the world checkpoint");
        }
        result
    }

    /// Merges a peer's snapshot (history this node pruned or never saw as events). Returns
    /// whether this node knew something the snapshot lacked (then it should answer with its own).
    pub fn merge_snapshot(&self, bytes: &[u8]) -> Result<bool, String> {
        let other: WorldState =
            serde_json::from_slice(bytes).map_err(|e| format!("bad world snapshot: {e}"))?;
        let now = self.clock.now();
        let ahead = chrono::Duration::from_std(self.store.config().max_clock_ahead)
            .unwrap_or(chrono::Duration::MAX);
        let limit =
            sync::world::order::ntp64_from_datetime(now.checked_add_signed(ahead).unwrap_or(now));
        if let Some(latest) = other.latest_marker_time()
            && latest > limit
        {
            return Err(format!(
                "bad world snapshot: a register is dated {}, more than store.max_clock_ahead past this node's clock (it would win every later event)",
                sync::event::format_timestamp(sync::world::order::datetime_from_ntp64(latest))
            ));
        }
        let mut state = lock(&self.state);
        let mut theirs_merged = other.clone();
        sync::world::CvRDT::merge(&mut theirs_merged, state.clone());
        let we_had_more = theirs_merged != other;
        sync::world::CvRDT::merge(&mut *state, other);
        self.merged
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(we_had_more)
    }

    /// This node's state as JSON, for a peer.
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&*lock(&self.state)).unwrap_or_default()
    }

    /// A short hash of the state, gossiped as `world_h`.
    pub fn short_hash(&self) -> String {
        hex::encode(&lock(&self.state).hash()[..8])
    }

    /// The current views (as last written).
    pub fn views(&self) -> Option<Views> {
        lock(&self.views).clone()
    }

    /// Runs until `stop` changes. `events` is the event bus.
    pub async fn run(
        self: Arc<Self>,
        mut events: EventRx,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        self.write_views().await;
        crate::util::blocking(|| self.prune());
        let mut dirty = false;
        let mut published_hash = String::new();
        let mut last_prune = Instant::now();
        let mut prune_date = self.clock.now().date_naive();
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        let mut last_checkpoint = Instant::now();
        let mut last_write = Instant::now();
        let mut changed_since_checkpoint = false;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                Some(first) = events.recv() => {
                    let mut state = lock(&self.state);
                    state.apply(&first.event);
                    while let Ok(more) = events.try_recv() {
                        state.apply(&more.event);
                    }
                    dirty = true;
                    changed_since_checkpoint = true;
                }
                _ = tick.tick() => {
                    if self.merged.swap(false, std::sync::atomic::Ordering::Relaxed) {
                        dirty = true;
                        changed_since_checkpoint = true;
                    }
                    let h = self.short_hash();
                    if h != published_hash {
                        self.mesh.set_key(WORLD_HASH_KEY, &h).await;
                        published_hash = h;
                    }
                    // At midnight UTC the cutoff moves (peers prune at the same moment, so
                    // their fingerprints stay comparable), and hourly in case files older
                    // than the window arrived meanwhile.
                    let today = self.clock.now().date_naive();
                    if today != prune_date || last_prune.elapsed() >= Duration::from_secs(3600) {
                        last_prune = Instant::now();
                        prune_date = today;
                        crate::util::blocking(|| self.prune());
                    }
                    // Liveness overlays change without events: refresh nodes.json now and then.
                    if dirty || last_write.elapsed() >= Duration::from_secs(5) {
                        self.write_views().await;
                        dirty = false;
                        last_write = Instant::now();
                    }
                    if changed_since_checkpoint && last_checkpoint.elapsed() >= Duration::from_secs(30) {
                        // Logged inside; the next save tries again.
                        let _ = crate::util::blocking(|| self.save_checkpoint());
                        changed_since_checkpoint = false;
                        last_checkpoint = Instant::now();
                    }
                }
            }
        }
        self.write_views().await;
        // Logged inside: on shutdown there is nothing else to do about it.
        let _ = self.save_checkpoint();
    }
}
