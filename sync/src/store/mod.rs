//! The durable event store: one JSON file per event, an in-memory index, quarantine for what
//! does not belong.
//!
//! Everything under `events/` is either a valid event sitting exactly where its content says, or
//! it is moved to `quarantine/` with a `.reason` file beside it and an `event_quarantined` event
//! (never deleted, never a crash). Files other tools drop in while the agent runs are picked up
//! through [`EventStore::ingest_path`] and [`EventStore::rescan`] (see `pickup` for the watcher
//! that calls them). Two files with the same `id` but different content are both kept and an
//! `event_conflict` event records it once.
//!
//! The parts, by what they do: this file holds the store's state, its reads and the event bus
//! (one listener told of every stored event, with its bytes and parsed form); [`writer`] writes
//! files durably without an index (what `labmesh emit` uses); `write` stores events this node
//! makes or receives; `ingest` checks one file, settles conflicts and quarantines; `scan` walks
//! the folders (at open and on rescans) and prunes by retention.

mod ingest;
mod scan;
mod write;
pub mod writer;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use writer::{EventWriter, WriteOutcome};

use crate::clock::{Clock, SystemClock};
use crate::durable::{self, IoError};
use crate::event::{DEFAULT_MAX_EVENT_BYTES, Event, EventError};
use crate::index::{ContentHash, Index, IndexEntry, Query};
use crate::layout::QUARANTINE_DIR;
use crate::signature::{EventSigner, SignerDirectory, VerifiedRoots};

/// Default of [`StoreConfig::max_clock_ahead`].
pub const DEFAULT_MAX_CLOCK_AHEAD: Duration = Duration::from_secs(2 * 3600);

/// Store settings. Each field's doc says what it trades.
#[derive(Clone)]
pub struct StoreConfig {
    /// The data dir; events live in `<data_dir>/events`, refused files in `<data_dir>/quarantine`.
    pub data_dir: PathBuf,
    /// This node's name: the `node` of events the store writes itself.
    pub node: String,
    /// Largest event file accepted. Larger catches runaway payloads later; smaller refuses
    /// legitimate build summaries. Default 64 KiB.
    pub max_event_bytes: usize,
    /// How long a file that does not parse may still be in the middle of being written (by a
    /// tool that writes in place instead of renaming) before it is quarantined. Longer tolerates
    /// slow writers; shorter reports broken files sooner. Default 5 s.
    pub settle: Duration,
    /// Temp files older than this are leftovers of a crashed writer and are removed by scans.
    /// Must exceed the longest write any tool performs. Default 15 min.
    pub stale_temp_age: Duration,
    pub clock: Arc<dyn Clock>,
    /// Readers (`labmesh events list`) open the store read-only: bad files are counted and
    /// left where they are (the agent quarantines them), nothing is created or written.
    pub read_only: bool,
    /// Only index these date folders (inclusive): a reader asking about today need not read a
    /// month of files. `None` indexes everything.
    pub dates: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
    /// Events from peers dated more than this ahead of [`Self::clock`] (their `timestamp`, or
    /// their `hlc` when it parses) are refused: a clock in 2099 would win every
    /// last-writer-wins register for good. Longer tolerates worse clocks; shorter bounds how
    /// long a bad one can pin a register. Default [`DEFAULT_MAX_CLOCK_AHEAD`] (2 h).
    pub max_clock_ahead: Duration,
    /// Origin signatures. With it, the store signs what this node writes or adopts and refuses
    /// every file from a peer that its origin did not sign; the agent always sets it. `None`
    /// (readers, unit tests) stores files unchecked.
    pub trust: Option<Arc<EventTrust>>,
}

/// How the store signs and checks events (see [`crate::signature`]).
pub struct EventTrust {
    /// This node's key; `None` on a node that only checks.
    pub signer: Option<Arc<dyn EventSigner>>,
    pub directory: Arc<dyn SignerDirectory>,
    pub roots: VerifiedRoots,
}

impl EventTrust {
    pub fn new(signer: Option<Arc<dyn EventSigner>>, directory: Arc<dyn SignerDirectory>) -> Self {
        EventTrust {
            signer,
            directory,
            roots: VerifiedRoots::default(),
        }
    }
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>, node: impl Into<String>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            node: node.into(),
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            settle: Duration::from_secs(5),
            stale_temp_age: Duration::from_secs(15 * 60),
            clock: Arc::new(SystemClock::default()),
            read_only: false,
            dates: None,
            trust: None,
            max_clock_ahead: DEFAULT_MAX_CLOCK_AHEAD,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("data_dir", &self.data_dir)
            .field("node", &self.node)
            .field("max_event_bytes", &self.max_event_bytes)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("invalid event: {0}")]
    Invalid(#[from] EventError),
}

impl StoreError {
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            StoreError::Io(e) => e.hint(),
            StoreError::Invalid(_) => None,
        }
    }
}

/// SHA-256 of bytes.
pub fn content_hash(bytes: &[u8]) -> ContentHash {
    Sha256::digest(bytes).into()
}

/// What a store-level write did with one event.
#[derive(Debug, Clone)]
pub struct Appended {
    pub path: PathBuf,
    pub entry: IndexEntry,
    pub outcome: AppendOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    Created,
    Duplicate,
    /// Different content already held the name: the newcomer went to quarantine.
    Conflict {
        quarantined_to: PathBuf,
    },
}

/// What picking up one path did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingest {
    /// Not an event file candidate (a temp file, a folder).
    Ignored,
    /// Already indexed.
    Known,
    Added(IndexEntry),
    /// Does not parse yet and was modified moments ago: try again later.
    Unsettled,
    Quarantined {
        to: PathBuf,
        reason: String,
    },
    /// Bad, but the store is read-only: left in place.
    Refused(String),
}

/// What a scan found, for logs and `--json` output.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanReport {
    pub files_seen: usize,
    pub indexed: usize,
    pub quarantined: Vec<QuarantineRecord>,
    pub conflicts: usize,
    pub stale_temps_removed: usize,
    pub unsettled: usize,
    pub unexpected_folders: Vec<PathBuf>,
    /// Files left in place because the store is read-only and they need the agent's attention.
    pub needs_attention: usize,
    pub elapsed_ms: u64,
    /// The entries this scan added, oldest first.
    #[serde(skip)]
    pub added: Vec<IndexEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineRecord {
    pub file: PathBuf,
    pub quarantined_to: PathBuf,
    pub reason: String,
}

/// The store: a writer, the index, and the pick-up bookkeeping.
pub struct EventStore {
    cfg: StoreConfig,
    writer: EventWriter,
    quarantine_dir: PathBuf,
    index: RwLock<Index>,
    reported_conflicts: Mutex<HashSet<(Uuid, ContentHash, ContentHash)>>,
    /// Content hashes of the files in `quarantine/` (from their `.reason` files), so a copy
    /// that lost a conflict and comes back from a peer is recognised, not quarantined again.
    quarantined: Mutex<HashSet<ContentHash>>,
    /// Files quarantined since the store was opened (monotonic, for metrics).
    quarantined_since_open: std::sync::atomic::AtomicU64,
    folder_mtimes: Mutex<HashMap<PathBuf, SystemTime>>,
    unsettled: Mutex<HashMap<PathBuf, Instant>>,
    listener: RwLock<Option<Listener>>,
    hlc: crate::clock::HybridClock,
}

/// One event as it entered the store, told once to every consumer (sync, world, alerting, the
/// web page's stream): its index entry, the stored bytes (verbatim, as peers receive them) and
/// the parsed event, so no consumer reads the file back or parses it again.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub entry: IndexEntry,
    pub bytes: Vec<u8>,
    /// Shared, so a consumer that keeps events (the alerting engine's burst) copies nothing.
    pub event: Arc<Event>,
}

/// Called with every event that enters the index, whatever the path (a local append, a file
/// dropped in, an event from a peer). Must be quick: it runs on the inserting thread.
pub type Listener = Box<dyn Fn(&Arc<StoredEvent>) + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl EventStore {
    /// Opens (creating if needed) the store under `cfg.data_dir`, scans `events/`, quarantines
    /// what does not belong, and builds the index.
    pub fn open(cfg: StoreConfig) -> Result<(EventStore, ScanReport), StoreError> {
        let writer = EventWriter::new(&cfg.data_dir, cfg.max_event_bytes);
        let quarantine_dir = cfg.data_dir.join(QUARANTINE_DIR);
        if !cfg.read_only {
            let mut touched = BTreeSet::new();
            durable::create_dirs(writer.events_dir(), &mut touched)?;
            durable::create_dirs(&quarantine_dir, &mut touched)?;
            for dir in &touched {
                durable::sync_dir(dir)?;
            }
        }
        // Events and their HLC stamps read the same clock, so a node's skew shows in both.
        // Events and their HLC stamps read the same clock, so a node's skew shows in both. It
        // starts past every stamp this node made or followed before it stopped (the hint the
        // store leaves): a peer's fast clock may have carried the HLC ahead of this node's own
        // clock, and a fresh HLC would stamp new events before ones the node already holds.
        let hlc = crate::clock::HybridClock::for_writer(&cfg.data_dir, cfg.clock.clone());
        let store = EventStore {
            cfg,
            writer,
            quarantine_dir: quarantine_dir.clone(),
            index: RwLock::new(Index::new()),
            reported_conflicts: Mutex::new(HashSet::new()),
            quarantined: Mutex::new(scan::quarantined_hashes(&quarantine_dir)),
            quarantined_since_open: std::sync::atomic::AtomicU64::new(0),
            folder_mtimes: Mutex::new(HashMap::new()),
            unsettled: Mutex::new(HashMap::new()),
            listener: RwLock::new(None),
            hlc,
        };
        let report = store.scan(true)?;
        Ok((store, report))
    }

    /// Event files moved to (or written in) `quarantine/` since the store was opened.
    pub fn quarantined_since_open(&self) -> u64 {
        self.quarantined_since_open
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn events_dir(&self) -> &Path {
        self.writer.events_dir()
    }

    pub fn quarantine_dir(&self) -> &Path {
        &self.quarantine_dir
    }

    /// Leaves the clock's current value in `<data>/state/hlc` so that short-lived writers on
    /// this node (`labmesh emit`) stamp their events after everything this node has seen, even
    /// from a peer whose wall clock runs ahead. A hint: written without fsync.
    fn save_hlc_hint(&self) {
        let dir = self.cfg.data_dir.join("state");
        let stamp = self.hlc.stamp();
        let _ = fs::create_dir_all(&dir).and_then(|()| {
            let tmp = dir.join(".hlc.tmp");
            fs::write(&tmp, stamp.as_bytes())?;
            fs::rename(&tmp, dir.join("hlc"))
        });
    }

    /// A fresh hybrid-logical-clock stamp for an event this node writes.
    pub fn stamp_hlc(&self) -> String {
        self.hlc.stamp()
    }

    pub fn writer(&self) -> &EventWriter {
        &self.writer
    }

    fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_index(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.read_index().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read_index().is_empty()
    }

    pub fn total_bytes(&self) -> u64 {
        self.read_index().total_bytes()
    }

    pub fn query(&self, query: &Query) -> Vec<IndexEntry> {
        self.read_index().query(query)
    }

    /// Runs `f` with the index held for reading (for callers that walk all entries).
    pub fn with_index<R>(&self, f: impl FnOnce(&Index) -> R) -> R {
        f(&self.read_index())
    }

    /// The absolute path of an indexed event.
    pub fn path_of(&self, entry: &IndexEntry) -> PathBuf {
        self.events_dir().join(entry.relative_path())
    }

    /// The stored bytes of an indexed event.
    pub fn read_bytes(&self, entry: &IndexEntry) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(entry);
        fs::read(&path).map_err(|e| IoError::new("read", &path, e).into())
    }

    /// Installs the listener told about every new event (one; a second replaces it). The
    /// agent's is its event bus, which fans each event out to every consumer.
    pub fn set_listener(&self, listener: Listener) {
        *self.listener.write().unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }

    fn has_listener(&self) -> bool {
        self.listener
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Tells the listener, if any, of an event that just entered the index.
    fn tell_listener(&self, entry: IndexEntry, event: &Event, bytes: Option<&[u8]>) {
        let guard = self.listener.read().unwrap_or_else(|p| p.into_inner());
        let Some(listener) = guard.as_ref() else {
            return;
        };
        let bytes = match bytes {
            Some(b) => b.to_vec(),
            None => match self.read_bytes(&entry) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read back a stored event for its consumers");
                    return;
                }
            },
        };
        listener(&Arc::new(StoredEvent {
            entry,
            bytes,
            event: Arc::new(event.clone()),
        }));
    }

    /// The parsed event of an indexed entry, read from its file. The one way every reader
    /// (the replay at start, the world rebuild, the API) turns an entry into an event.
    pub fn read_event(&self, entry: &IndexEntry) -> Result<Event, StoreError> {
        let bytes = self.read_bytes(entry)?;
        Ok(Event::from_file_bytes(
            &bytes,
            self.cfg.max_event_bytes,
            Some(entry.id),
        )?)
    }

    /// The fingerprint of the whole event set (see [`crate::index::SetFingerprint`]).
    pub fn fingerprint(&self) -> crate::index::SetFingerprint {
        self.read_index().fingerprint()
    }

    /// `(timestamp ms, content hash)` of every event at or after `since_ms`, in time order.
    pub fn sync_items(&self, since_ms: i64) -> Vec<(u64, ContentHash)> {
        self.read_index().sync_items(since_ms)
    }

    /// Whether the event file with this content hash is stored here (indexed, not
    /// quarantined).
    pub fn holds(&self, hash: &ContentHash) -> bool {
        self.read_index().by_hash(hash).is_some()
    }

    /// The bytes of the event file with this content hash, if stored here.
    pub fn read_by_hash(&self, hash: &ContentHash) -> Option<Vec<u8>> {
        let entry = self.read_index().by_hash(hash).cloned()?;
        self.read_bytes(&entry).ok()
    }
}

/// The store is the sync core's event source: the items it reconciles and the bytes it ships.
impl crate::reconcile::SyncSource for EventStore {
    fn items(&self, since_ms: i64) -> Vec<(u64, ContentHash)> {
        self.sync_items(since_ms)
    }
    fn bytes(&self, hash: &ContentHash) -> Option<Vec<u8>> {
        self.read_by_hash(hash)
    }
    fn signer_certificates(&self, files: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let Some(trust) = &self.cfg.trust else {
            return Vec::new();
        };
        let keys: BTreeSet<_> = files
            .iter()
            .filter_map(|f| crate::signature::key_of(f))
            .collect();
        keys.iter()
            .filter_map(|k| trust.directory.certificate(k))
            .collect()
    }
}
