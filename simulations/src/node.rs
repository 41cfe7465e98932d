//! One simulated node: the real `SyncCore`, `WorldState` and alerting `Engine`, with an
//! in-memory event set standing in for the `EventStore`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use alerting::{AccumulatingRuntime, Config, Engine};
use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};
use sync::index::{ContentHash, SetFingerprint};
use sync::reconcile::{SyncCore, SyncSource};
use sync::schedule::{ScheduleConfig, Scheduler};
use sync::world::WorldState;
use sync::{Event, NewEvent};

use crate::sim::Ms;

/// Virtual time zero, as a wall-clock instant (plus each node's offset).
pub fn epoch() -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000, 0)
        .single()
        .unwrap_or_default()
}

pub fn node_name(i: usize) -> String {
    format!("n{i:04}")
}

pub fn node_index(name: &str) -> Option<usize> {
    name.strip_prefix('n').and_then(|d| d.parse().ok())
}

pub fn content_hash(bytes: &[u8]) -> ContentHash {
    Sha256::digest(bytes).into()
}

/// Event files by content hash, shared by all nodes (each node holds only hashes), so that
/// 1000 nodes do not keep 1000 copies of every file. Parsed once, validated on first sight.
#[derive(Default)]
pub struct Blobs {
    files: HashMap<ContentHash, (Arc<Vec<u8>>, Arc<Event>)>,
}

impl Blobs {
    pub fn insert(&mut self, hash: ContentHash, bytes: Vec<u8>, event: Event) {
        self.files
            .entry(hash)
            .or_insert_with(|| (Arc::new(bytes), Arc::new(event)));
    }

    pub fn event(&self, hash: &ContentHash) -> Option<Arc<Event>> {
        self.files.get(hash).map(|(_, e)| e.clone())
    }

    /// The parsed event of received bytes: from the cache, or parsed and validated as the
    /// store would.
    pub fn accept(&mut self, bytes: &[u8]) -> Result<(ContentHash, Arc<Event>), String> {
        let hash = content_hash(bytes);
        if let Some(e) = self.event(&hash) {
            return Ok((hash, e));
        }
        let event = Event::from_file_bytes(bytes, sync::event::DEFAULT_MAX_EVENT_BYTES, None)
            .map_err(|e| e.to_string())?;
        self.insert(hash, bytes.to_vec(), event);
        self.event(&hash)
            .map(|e| (hash, e))
            .ok_or_else(|| "lost a stored event".to_string())
    }
}

/// What the real `EventStore` answers for sync: the set of `(timestamp ms, hash)` and a
/// fingerprint kept current on insert.
#[derive(Default)]
pub struct MemStore {
    items: BTreeSet<(u64, ContentHash)>,
    hashes: BTreeSet<ContentHash>,
    pub fingerprint: SetFingerprint,
}

impl MemStore {
    /// Inserts; false when already held.
    pub fn insert(&mut self, ts_ms: u64, hash: ContentHash) -> bool {
        if !self.hashes.insert(hash) {
            return false;
        }
        self.items.insert((ts_ms, hash));
        self.fingerprint.add(&hash);
        true
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn contains(&self, hash: &ContentHash) -> bool {
        self.hashes.contains(hash)
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// One hash held by exactly one of the two sets, if any.
    pub fn first_difference(&self, other: &MemStore) -> Option<ContentHash> {
        self.hashes
            .symmetric_difference(&other.hashes)
            .next()
            .copied()
    }

    /// Stored hashes in event-time order (the order the agent replays them at start).
    pub fn in_order(&self) -> impl Iterator<Item = &ContentHash> {
        self.items.iter().map(|(_, h)| h)
    }
}

/// The `SyncSource` over a node's set and the shared files.
pub struct Source<'a> {
    pub store: &'a MemStore,
    pub blobs: &'a Blobs,
}

impl SyncSource for Source<'_> {
    fn items(&self, since_ms: i64) -> Vec<(u64, ContentHash)> {
        let from = u64::try_from(since_ms).unwrap_or(0);
        self.store
            .items
            .range((from, [0u8; 32])..)
            .copied()
            .collect()
    }

    fn bytes(&self, hash: &ContentHash) -> Option<Vec<u8>> {
        if !self.store.hashes.contains(hash) {
            return None;
        }
        self.blobs.files.get(hash).map(|(b, _)| b.as_ref().clone())
    }
}

pub struct SimNode {
    pub idx: usize,
    pub name: String,
    pub up: bool,
    /// Bumped on crash: timers armed before it are ignored.
    pub epoch: u64,
    pub offset_ms: i64,
    pub transient: bool,
    pub core: SyncCore,
    /// The agent's reconcile schedule, on this node's virtual clock.
    pub schedule: Scheduler,
    pub store: MemStore,
    pub world: WorldState,
    pub engine: Engine,
    pub config: Config,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub sync_errors: u64,
    /// Events this node wrote (workload and alerting), for unique ids.
    pub written: u64,
}

impl SimNode {
    pub fn new(
        idx: usize,
        offset_ms: i64,
        transient: bool,
        config: Config,
        schedule: ScheduleConfig,
    ) -> SimNode {
        let name = node_name(idx);
        let now = wall(0, offset_ms);
        SimNode {
            idx,
            engine: Engine::new(&name, transient, 0, config.clone(), now),
            config,
            name,
            up: true,
            epoch: 0,
            offset_ms,
            transient,
            core: SyncCore::new((idx as u64) << 40),
            schedule: Scheduler::new(schedule, 0),
            store: MemStore::default(),
            world: WorldState::new(),
            bytes_sent: 0,
            bytes_received: 0,
            messages_sent: 0,
            sync_errors: 0,
            written: 0,
        }
    }

    /// This node's wall clock at virtual time `at`.
    pub fn now(&self, at: Ms) -> DateTime<Utc> {
        wall(at, self.offset_ms)
    }

    /// Stamps a new event on this node's clock with an id from the run's RNG (the store's
    /// UUIDv7 context would take randomness from the OS and break reproducibility).
    pub fn stamp(&mut self, ne: NewEvent, at: Ms, random: [u8; 10]) -> Result<Event, String> {
        let when = self.now(at);
        let ms = u64::try_from(when.timestamp_millis()).unwrap_or(0);
        self.written += 1;
        let id = uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid();
        ne.into_event_with_id(&self.name, when, id)
            .map_err(|e| e.to_string())
    }

    /// Restarts after a crash: new sync sessions, a fresh schedule (the first anti-entropy
    /// round one interval away) and a fresh engine that replays the stored events, as the
    /// agent does at start.
    pub fn restart(&mut self, at: Ms, blobs: &Blobs, out: &mut AccumulatingRuntime) {
        self.up = true;
        self.core = SyncCore::new(((self.idx as u64) << 40) + (self.epoch << 20));
        self.schedule = Scheduler::new(self.schedule.config().clone(), at);
        let now = self.now(at);
        self.engine = Engine::new(&self.name, self.transient, 0, self.config.clone(), now);
        let events: Vec<Arc<Event>> = self
            .store
            .in_order()
            .filter_map(|h| blobs.event(h))
            .collect();
        self.engine
            .on_events(events.iter().map(|e| e.as_ref()), now, out);
    }
}

pub fn wall(at: Ms, offset_ms: i64) -> DateTime<Utc> {
    let ms = i64::try_from(at).unwrap_or(i64::MAX / 2) + offset_ms;
    epoch() + chrono::Duration::milliseconds(ms)
}
