//! The durable event store: one JSON file per event, an in-memory index, quarantine for what
//! does not belong.
//!
//! Everything under `events/` is either a valid event sitting exactly where its content says, or
//! it is moved to `quarantine/` with a `.reason` file beside it and an `event_quarantined` event
//! (never deleted, never a crash). Files other tools drop in while the agent runs are picked up
//! through [`EventStore::ingest_path`] and [`EventStore::rescan`] (see `pickup` for the watcher
//! that calls them). Two files with the same `id` but different content are both kept and an
//! `event_conflict` event records it once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::durable::{self, IoError, PendingFile, Published};
use crate::event::{DEFAULT_MAX_EVENT_BYTES, Event, EventError, NewEvent, Severity};
use crate::index::{ContentHash, Index, IndexEntry, Inserted, Query};
use crate::layout::{self, EVENTS_DIR, QUARANTINE_DIR};

/// Where time comes from. The agent uses the system clock; tests and the simulator inject
/// skewed or virtual clocks through this.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock, optionally shifted (for clock-skew tests: `LABMESH_CLOCK_OFFSET_MS`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock {
    pub offset_ms: i64,
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms)
    }
}

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

/// Writes event files durably without an index: what `labmesh emit` and batch importers use,
/// so that writing an event costs no scan of the store.
#[derive(Debug, Clone)]
pub struct EventWriter {
    events_dir: PathBuf,
    max_event_bytes: usize,
}

/// What happened to one event handed to a writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored under this path.
    Created(PathBuf),
    /// The same bytes were already stored there.
    Duplicate(PathBuf),
    /// Another file with different content holds the name; nothing was written.
    NameTaken(PathBuf),
}

impl WriteOutcome {
    pub fn path(&self) -> &Path {
        match self {
            WriteOutcome::Created(p) | WriteOutcome::Duplicate(p) | WriteOutcome::NameTaken(p) => p,
        }
    }
}

impl EventWriter {
    pub fn new(data_dir: &Path, max_event_bytes: usize) -> Self {
        EventWriter {
            events_dir: data_dir.join(EVENTS_DIR),
            max_event_bytes,
        }
    }

    pub fn events_dir(&self) -> &Path {
        &self.events_dir
    }

    /// Writes one event durably; returns where it landed.
    pub fn write(&self, event: &Event) -> Result<WriteOutcome, StoreError> {
        let mut out = self.write_batch(std::slice::from_ref(event))?;
        Ok(out.remove(0))
    }

    /// Writes a batch with one durability barrier and one fsync per folder (group commit).
    /// When this returns `Ok`, every event in it is on disk; on `Err`, none was published by
    /// this call unless it failed while publishing (each file is then whole or absent).
    pub fn write_batch(&self, events: &[Event]) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut items = Vec::with_capacity(events.len());
        for event in events {
            event.validate()?;
            let bytes = event.to_file_bytes();
            if bytes.len() > self.max_event_bytes {
                return Err(EventError::TooLarge {
                    size: bytes.len(),
                    limit: self.max_event_bytes,
                }
                .into());
            }
            items.push((layout::relative_path(event), bytes));
        }
        self.write_files(&items)
    }

    /// Publishes pre-serialised event files (`rel` relative to `events/`).
    pub(crate) fn write_files(
        &self,
        items: &[(PathBuf, Vec<u8>)],
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut touched = BTreeSet::new();
        let sync_each = !durable::batch_barrier_available(items.len());
        let mut pending: Vec<PendingFile> = Vec::with_capacity(items.len());
        for (rel, bytes) in items {
            let target = self.events_dir.join(rel);
            let folder = target.parent().unwrap_or(&self.events_dir).to_owned();
            let ensure = if touched.contains(&folder) {
                Ok(())
            } else {
                durable::create_dirs(&folder, &mut touched)
            };
            let written = ensure.and_then(|()| durable::write_temp(&target, bytes, sync_each));
            match written {
                Ok(p) => pending.push(p),
                Err(e) => {
                    durable::discard(&pending);
                    return Err(e.into());
                }
            }
            touched.insert(folder);
        }
        if let Err(e) = durable::barrier(&mut pending, &self.events_dir) {
            durable::discard(&pending);
            return Err(e.into());
        }
        let mut outcomes = Vec::with_capacity(pending.len());
        for (i, p) in pending.iter().enumerate() {
            match durable::publish(p) {
                Ok(Published::Created) => outcomes.push(WriteOutcome::Created(p.target.clone())),
                Ok(Published::AlreadyExists) => {
                    let same = fs::read(&p.target).is_ok_and(|existing| existing == items[i].1);
                    outcomes.push(if same {
                        WriteOutcome::Duplicate(p.target.clone())
                    } else {
                        WriteOutcome::NameTaken(p.target.clone())
                    });
                }
                Err(e) => {
                    durable::discard(&pending[i..]);
                    return Err(e.into());
                }
            }
        }
        for dir in &touched {
            durable::sync_dir(dir)?;
        }
        Ok(outcomes)
    }
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

/// Called with every entry that enters the index, whatever the path (a local append, a file
/// dropped in, an event from a peer). Must be quick: it runs on the inserting thread.
pub type Listener = Box<dyn Fn(&IndexEntry) + Send + Sync>;

/// One candidate file read and checked off the index lock.
struct Checked {
    path: PathBuf,
    rel: PathBuf,
    result: Result<(Event, ContentHash, usize), Refusal>,
}

enum Refusal {
    /// Quarantine with this reason.
    Bad(String),
    /// Not yet: a writer may still be at it.
    Unsettled,
}

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
        let hlc = crate::clock::HybridClock::with_clock(cfg.clock.clone());
        // Start past every stamp this node made or followed before it stopped (the hint the
        // store leaves): a peer's fast clock may have carried the HLC ahead of this node's own
        // clock, and a fresh HLC would stamp new events before ones the node already holds.
        if let Ok(hint) = fs::read_to_string(cfg.data_dir.join("state/hlc")) {
            hlc.observe(hint.trim());
        }
        let store = EventStore {
            cfg,
            writer,
            quarantine_dir: quarantine_dir.clone(),
            index: RwLock::new(Index::new()),
            reported_conflicts: Mutex::new(HashSet::new()),
            quarantined: Mutex::new(quarantined_hashes(&quarantine_dir)),
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

    /// Creates, validates and durably stores an event stamped now on this node.
    pub fn append(&self, new: NewEvent) -> Result<Appended, StoreError> {
        let mut event = new.into_event(&self.cfg.node, self.cfg.clock.now())?;
        event
            .extra
            .insert("hlc".into(), Value::String(self.hlc.stamp()));
        let mut out = self.append_batch(std::slice::from_ref(&event))?;
        Ok(out.remove(0))
    }

    /// Stores a batch of complete events with one group commit, then indexes them.
    pub fn append_batch(&self, events: &[Event]) -> Result<Vec<Appended>, StoreError> {
        let mut items = Vec::with_capacity(events.len());
        for event in events {
            event.validate()?;
            let bytes = event.to_file_bytes();
            if bytes.len() > self.cfg.max_event_bytes {
                return Err(EventError::TooLarge {
                    size: bytes.len(),
                    limit: self.cfg.max_event_bytes,
                }
                .into());
            }
            items.push((event, layout::relative_path(event), bytes));
        }
        let out = self.store_items(items)?;
        // Own stamps can run ahead of the last hint (after following a fast peer), so the hint
        // must cover them too for the next start.
        self.save_hlc_hint();
        Ok(out)
    }

    /// Stores event files received as bytes (from a peer or an import): validated exactly like
    /// files found on disk, kept byte for byte.
    pub fn store_bytes_batch(
        &self,
        files: &[Vec<u8>],
    ) -> Result<Vec<Result<Appended, EventError>>, StoreError> {
        let mut parsed = Vec::with_capacity(files.len());
        let mut results: Vec<Option<Result<Appended, EventError>>> =
            Vec::with_capacity(files.len());
        for bytes in files {
            match Event::from_file_bytes(bytes, self.cfg.max_event_bytes, None) {
                Ok(event) => {
                    if let Some(Value::String(hlc)) = event.extra.get("hlc") {
                        self.hlc.observe(hlc);
                    }
                    parsed.push(event);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let mut items = Vec::with_capacity(parsed.len());
        let mut parsed_iter = parsed.iter();
        for (bytes, r) in files.iter().zip(&results) {
            if r.is_none()
                && let Some(event) = parsed_iter.next()
            {
                items.push((event, layout::relative_path(event), bytes.clone()));
            }
        }
        let mut stored = self.store_items(items)?.into_iter();
        self.save_hlc_hint();
        Ok(results
            .into_iter()
            .map(|r| match r {
                Some(err) => err,
                None => stored.next().ok_or(EventError::Empty),
            })
            .collect())
    }

    fn store_items(
        &self,
        items: Vec<(&Event, PathBuf, Vec<u8>)>,
    ) -> Result<Vec<Appended>, StoreError> {
        let files: Vec<(PathBuf, Vec<u8>)> = items
            .iter()
            .map(|(_, rel, bytes)| (rel.clone(), bytes.clone()))
            .collect();
        let outcomes = self.writer.write_files(&files)?;
        let mut appended = Vec::with_capacity(outcomes.len());
        for ((event, rel, bytes), outcome) in items.into_iter().zip(outcomes) {
            let hash = content_hash(&bytes);
            let entry = self.write_index().entry_for(event, hash, bytes.len());
            let outcome = match outcome {
                WriteOutcome::Created(_) | WriteOutcome::Duplicate(_) => {
                    self.index_entry(entry.clone(), &rel);
                    if matches!(outcome, WriteOutcome::Created(_)) {
                        AppendOutcome::Created
                    } else {
                        AppendOutcome::Duplicate
                    }
                }
                WriteOutcome::NameTaken(path) => {
                    let existing = fs::read(&path)
                        .map(|b| content_hash(&b))
                        .unwrap_or_default();
                    self.resolve_conflict(event, &entry, &rel, &bytes, existing, &path)?
                }
            };
            appended.push(Appended {
                path: self.events_dir().join(&rel),
                entry,
                outcome,
            });
        }
        Ok(appended)
    }

    /// Retention: deletes the date folders older than `keep_days` days before `today` (UTC)
    /// and forgets their events. The caller must have folded them into the world state (and
    /// saved its checkpoint) first. Returns the folders removed.
    /// With `archive`, each folder is first written to `events-archive/YYYY-MM-DD.tar.zst`; a
    /// folder whose archive cannot be written stays (and the error is returned).
    pub fn prune(
        &self,
        today: chrono::NaiveDate,
        keep_days: u32,
        archive: bool,
    ) -> Result<Vec<PathBuf>, StoreError> {
        let Some(cutoff) = today.checked_sub_days(chrono::Days::new(u64::from(keep_days))) else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        for date in read_dir_sorted(self.events_dir())? {
            let name = file_name_of(&date);
            let Some(day) = layout::parse_date_folder(&name) else {
                continue;
            };
            if day >= cutoff || !date.is_dir() {
                continue;
            }
            if archive {
                let to = crate::archive::archive_day(
                    &date,
                    &self.cfg.data_dir.join(crate::archive::ARCHIVE_DIR),
                )?;
                tracing::info!(folder = %date.display(), archive = %to.display(), "archived a pruned day");
            }
            fs::remove_dir_all(&date).map_err(|e| IoError::new("remove old events", &date, e))?;
            removed.push(date);
        }
        if !removed.is_empty() {
            durable::sync_dir(self.events_dir())?;
            let cutoff_ms = cutoff
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc().timestamp_millis())
                .unwrap_or(i64::MIN);
            let forgotten = self.write_index().remove_before(cutoff_ms);
            lock(&self.folder_mtimes).retain(|p, _| p.exists());
            tracing::info!(folders = removed.len(), events = forgotten, %cutoff, "pruned events past the retention window");
        }
        Ok(removed)
    }

    /// Installs the listener told about every new index entry (one; a second replaces it).
    pub fn set_listener(&self, listener: Listener) {
        *self.listener.write().unwrap_or_else(|p| p.into_inner()) = Some(listener);
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

    /// Indexes an entry and reports a conflict if its id was already held by other content.
    /// When its (time, id) slot is held by another copy, the copy with the smaller content
    /// hash keeps the slot and the other moves to quarantine (see [`Self::resolve_conflict`]).
    fn index_entry(&self, entry: IndexEntry, rel: &Path) {
        let id = entry.id;
        let hash = entry.hash;
        let fresh = entry.clone();
        let inserted = self.write_index().insert(entry);
        if let Inserted::Occupied(existing) = inserted {
            let path = self.events_dir().join(rel);
            if let Err(e) = self.settle_occupied(fresh, rel, &path, existing) {
                tracing::error!(file = %path.display(), error = %e, "cannot settle a conflict");
            }
            return;
        }
        if !matches!(inserted, Inserted::Duplicate)
            && let Some(listener) = self
                .listener
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
        {
            listener(&fresh);
        }
        if let Inserted::Conflict(others) = inserted {
            for (millis, other_hash) in others {
                let other_rel = self
                    .read_index()
                    .get(millis, &id)
                    .map(|e| e.relative_path())
                    .unwrap_or_default();
                self.report_conflict(id, other_hash, hash, &[other_rel, rel.to_owned()]);
            }
        }
    }

    /// Two copies of one event (same time and id, different content) compete for one slot:
    /// the smaller content hash wins on every node, whatever the order they arrive in, so the
    /// mesh converges on one set instead of trading the copies forever. The loser is kept in
    /// `quarantine/` (once: a copy already there is not written again) and the conflict is
    /// recorded once as `event_conflict`.
    fn resolve_conflict(
        &self,
        event: &Event,
        entry: &IndexEntry,
        rel: &Path,
        bytes: &[u8],
        existing: ContentHash,
        existing_path: &Path,
    ) -> Result<AppendOutcome, StoreError> {
        let hash = entry.hash;
        let reason = |loser: &ContentHash, winner: &ContentHash| {
            format!(
                "conflict: event {} exists with other content; the copy with the smaller sha256 ({}) keeps events/{} and this one (sha256 {}) is kept here",
                event.id,
                hex::encode(winner),
                rel.display(),
                hex::encode(loser)
            )
        };
        if hash < existing {
            // The newcomer wins: the held copy moves out, the newcomer takes its name.
            let to = self.quarantine_file(existing_path, &reason(&existing, &hash))?;
            self.write_index().remove_hash(&existing);
            self.writer
                .write_files(&[(rel.to_owned(), bytes.to_vec())])?;
            self.index_entry(entry.clone(), rel);
            self.report_conflict(
                event.id,
                existing,
                hash,
                &[rel.to_owned(), self.relative_to_data(&to)],
            );
            return Ok(AppendOutcome::Conflict { quarantined_to: to });
        }
        if lock(&self.quarantined).contains(&hash) {
            return Ok(AppendOutcome::Duplicate);
        }
        let to = self.quarantine_bytes(rel, bytes, &reason(&hash, &existing))?;
        self.report_conflict(
            event.id,
            existing,
            hash,
            &[rel.to_owned(), self.relative_to_data(&to)],
        );
        Ok(AppendOutcome::Conflict { quarantined_to: to })
    }

    /// A file already in `events/` (at `rel`) found its slot held by `existing`: the same rule
    /// as [`Self::resolve_conflict`], with both copies on disk.
    fn settle_occupied(
        &self,
        incoming: IndexEntry,
        rel: &Path,
        path: &Path,
        existing: IndexEntry,
    ) -> Result<(), StoreError> {
        let existing_rel = existing.relative_path();
        let (winner, loser, loser_path) = if incoming.hash < existing.hash {
            (&incoming, &existing, self.events_dir().join(&existing_rel))
        } else {
            (&existing, &incoming, path.to_owned())
        };
        let reason = format!(
            "conflict: event {} exists with other content; the copy with the smaller sha256 ({}) stays in events/ and this one (sha256 {}) is kept here",
            incoming.id,
            hex::encode(winner.hash),
            hex::encode(loser.hash)
        );
        if lock(&self.quarantined).contains(&loser.hash) {
            // Already kept once: this file is a byte-identical extra copy.
            fs::remove_file(&loser_path)
                .map_err(|e| IoError::new("remove a duplicate", &loser_path, e))?;
        } else {
            self.quarantine_file(&loser_path, &reason)?;
        }
        if loser.hash == existing.hash {
            self.write_index().remove_hash(&existing.hash);
            self.index_entry(incoming.clone(), rel);
        }
        self.report_conflict(
            incoming.id,
            existing.hash,
            incoming.hash,
            &[existing_rel, rel.to_owned()],
        );
        Ok(())
    }

    fn relative_to_data(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.cfg.data_dir)
            .map(Path::to_owned)
            .unwrap_or_else(|_| path.to_owned())
    }

    /// Writes an `event_conflict` event once per (id, pair of contents).
    fn report_conflict(&self, id: Uuid, a: ContentHash, b: ContentHash, files: &[PathBuf]) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        if !lock(&self.reported_conflicts).insert((id, lo, hi)) {
            return;
        }
        let mut payload = Map::new();
        payload.insert("id".into(), json!(id.hyphenated().to_string()));
        payload.insert("sha256".into(), json!([hex::encode(lo), hex::encode(hi)]));
        payload.insert(
            "files".into(),
            json!(
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
            ),
        );
        let new = NewEvent::new("event_conflict", Severity::Warning, "labmesh-store")
            .service("labmesh")
            .payload(payload);
        if let Err(e) = self.append(new) {
            tracing::error!(%id, error = %e, "could not record event_conflict");
        } else {
            tracing::warn!(%id, "two different events share one id; both kept");
        }
    }

    fn note_reported_conflict(&self, event: &Event) {
        if event.event_type != "event_conflict" {
            return;
        }
        let id = event
            .payload
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok());
        let hashes: Vec<ContentHash> = event
            .payload
            .get("sha256")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter_map(|h| hex::decode(h).ok()?.try_into().ok())
                    .collect()
            })
            .unwrap_or_default();
        if let (Some(id), [lo, hi]) = (id, hashes.as_slice()) {
            lock(&self.reported_conflicts).insert((id, *lo, *hi));
        }
    }

    /// Moves a file out of `events/` into `quarantine/`, writes its `.reason`, and records an
    /// `event_quarantined` event. Returns where it went.
    pub fn quarantine_file(&self, path: &Path, reason: &str) -> Result<PathBuf, StoreError> {
        let rel = path
            .strip_prefix(self.events_dir())
            .map(Path::to_owned)
            .unwrap_or_else(|_| path.to_owned());
        let dest = self.quarantine_destination(path)?;
        fs::rename(path, &dest).map_err(|e| IoError::new("move to quarantine", path, e))?;
        if let Some(dir) = path.parent() {
            durable::sync_dir(dir)?;
        }
        let hash = fs::read(&dest)
            .map(|b| hex::encode(content_hash(&b)))
            .unwrap_or_default();
        self.finish_quarantine(&rel, &dest, reason, &hash)?;
        Ok(dest)
    }

    /// Quarantines bytes that never had a place in `events/` (a conflicting copy from a peer).
    fn quarantine_bytes(
        &self,
        rel: &Path,
        bytes: &[u8],
        reason: &str,
    ) -> Result<PathBuf, StoreError> {
        let dest = self.quarantine_destination(rel)?;
        durable::write_file_atomic(&dest, bytes)?;
        self.finish_quarantine(rel, &dest, reason, &hex::encode(content_hash(bytes)))?;
        Ok(dest)
    }

    fn quarantine_destination(&self, original: &Path) -> Result<PathBuf, StoreError> {
        let name = original
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty() && !layout::is_hidden(n))
            .unwrap_or_else(|| "unnamed".to_owned());
        let mut touched = BTreeSet::new();
        durable::create_dirs(&self.quarantine_dir, &mut touched)?;
        let mut dest = self.quarantine_dir.join(&name);
        let mut n = 1;
        while dest.symlink_metadata().is_ok() || reason_path(&dest).symlink_metadata().is_ok() {
            dest = self.quarantine_dir.join(format!("{name}.{n}"));
            n += 1;
        }
        Ok(dest)
    }

    fn finish_quarantine(
        &self,
        rel: &Path,
        dest: &Path,
        reason: &str,
        sha256: &str,
    ) -> Result<(), StoreError> {
        let now = crate::event::format_timestamp(self.cfg.clock.now());
        let text = format!(
            "file: events/{}\nquarantined_at: {now}\nreason: {reason}\nsha256: {sha256}\n",
            rel.display()
        );
        durable::write_file_atomic(&reason_path(dest), text.as_bytes())?;
        self.quarantined_since_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(raw) = hex::decode(sha256)
            && let Ok(hash) = ContentHash::try_from(raw.as_slice())
        {
            lock(&self.quarantined).insert(hash);
        }
        tracing::warn!(file = %rel.display(), to = %dest.display(), %reason, "quarantined an event file");
        let mut payload = Map::new();
        payload.insert("file".into(), json!(format!("events/{}", rel.display())));
        payload.insert(
            "quarantined_to".into(),
            json!(self.relative_to_data(dest).display().to_string()),
        );
        payload.insert("reason".into(), json!(reason));
        payload.insert("sha256".into(), json!(sha256));
        let new = NewEvent::new("event_quarantined", Severity::Warning, "labmesh-store")
            .service("labmesh")
            .payload(payload);
        if let Err(e) = self.append(new) {
            tracing::error!(error = %e, "could not record event_quarantined");
        }
        Ok(())
    }

    /// Reads and checks one candidate file without touching the index.
    fn check_file(&self, path: &Path) -> Checked {
        let rel = path
            .strip_prefix(self.events_dir())
            .map(Path::to_owned)
            .unwrap_or_else(|_| path.to_owned());
        let result = self.check_file_inner(path, &rel);
        Checked {
            path: path.to_owned(),
            rel,
            result,
        }
    }

    fn check_file_inner(
        &self,
        path: &Path,
        rel: &Path,
    ) -> Result<(Event, ContentHash, usize), Refusal> {
        let meta = path
            .symlink_metadata()
            .map_err(|e| Refusal::Bad(format!("cannot stat: {e}")))?;
        if meta.file_type().is_symlink() {
            return Err(Refusal::Bad(
                "is a symbolic link; event files must be regular files (a link could point outside the data dir or change under the store)".into(),
            ));
        }
        if !meta.is_file() {
            return Err(Refusal::Bad("is not a regular file".into()));
        }
        let recent = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_none_or(|age| age < self.cfg.settle);
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed_name = layout::parse_file_name(&name);
        let max = self.cfg.max_event_bytes;
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).min(max + 1));
        let read =
            fs::File::open(path).and_then(|f| f.take(max as u64 + 1).read_to_end(&mut bytes));
        if let Err(e) = read {
            return Err(Refusal::Bad(format!("cannot read: {e}")));
        }
        if bytes.len() > max {
            return Err(Refusal::Bad(
                EventError::TooLarge {
                    size: usize::try_from(meta.len()).unwrap_or(usize::MAX),
                    limit: max,
                }
                .to_string(),
            ));
        }
        let event =
            match Event::from_file_bytes(&bytes, max, parsed_name.as_ref().ok().map(|n| n.id)) {
                Ok(ev) => ev,
                Err(_) if recent => return Err(Refusal::Unsettled),
                Err(e) => return Err(Refusal::Bad(e.to_string())),
            };
        if let Err(e) = parsed_name {
            return Err(Refusal::Bad(e.to_string()));
        }
        layout::check_placement(rel, &event).map_err(Refusal::Bad)?;
        if !self.cfg.read_only && !has_id_field(&bytes) {
            // Tools written before labmesh (the seed's scripts) leave the id to the file name.
            // Peers receive bytes, not names, so the id goes into the file: inserted as the
            // first field, every other byte unchanged.
            bytes = with_id_field(&bytes, event.id);
            durable::write_file_atomic(path, &bytes)
                .map_err(|e| Refusal::Bad(format!("cannot add the id field: {e}")))?;
            tracing::info!(file = %rel.display(), "added the id from the file name to an event file");
        }
        let hash = content_hash(&bytes);
        Ok((event, hash, bytes.len()))
    }

    /// Applies the verdict on one checked file.
    fn settle(&self, checked: Checked) -> Result<Ingest, StoreError> {
        match checked.result {
            Ok((event, hash, size)) => {
                lock(&self.unsettled).remove(&checked.path);
                self.note_reported_conflict(&event);
                let entry = self.write_index().entry_for(&event, hash, size);
                let before = self.len();
                self.index_entry(entry.clone(), &checked.rel);
                Ok(if self.len() > before {
                    Ingest::Added(entry)
                } else {
                    Ingest::Known
                })
            }
            Err(Refusal::Unsettled) if self.cfg.read_only => Ok(Ingest::Refused(
                "does not parse (still being written?)".into(),
            )),
            Err(Refusal::Bad(reason)) if self.cfg.read_only => Ok(Ingest::Refused(reason)),
            Err(Refusal::Unsettled) => {
                lock(&self.unsettled)
                    .entry(checked.path)
                    .or_insert_with(Instant::now);
                Ok(Ingest::Unsettled)
            }
            Err(Refusal::Bad(reason)) => {
                lock(&self.unsettled).remove(&checked.path);
                let to = self.quarantine_file(&checked.path, &reason)?;
                Ok(Ingest::Quarantined { to, reason })
            }
        }
    }

    /// Picks up one path under `events/` (from a file-system notification or a scan).
    pub fn ingest_path(&self, path: &Path) -> Result<Ingest, StoreError> {
        let Ok(rel) = path.strip_prefix(self.events_dir()) else {
            return Ok(Ingest::Ignored);
        };
        let name = match path.file_name() {
            Some(n) => n.to_string_lossy().into_owned(),
            None => return Ok(Ingest::Ignored),
        };
        if layout::is_hidden(&name) {
            return Ok(Ingest::Ignored);
        }
        let Ok(meta) = path.symlink_metadata() else {
            lock(&self.unsettled).remove(path);
            return Ok(Ingest::Ignored);
        };
        if meta.is_dir() {
            return Ok(Ingest::Ignored);
        }
        if rel.components().count() == 3
            && let Ok(parsed) = layout::parse_file_name(&name)
            && let Some(entry) = self.read_index().get(parsed.millis, &parsed.id)
            && entry.relative_path() == rel
        {
            return Ok(Ingest::Known);
        }
        let checked = self.check_file(path);
        self.settle(checked)
    }

    /// Files that did not parse while they may still have been written, to retry.
    pub fn unsettled(&self) -> Vec<PathBuf> {
        lock(&self.unsettled).keys().cloned().collect()
    }

    /// Walks `events/` for files the index does not know. A full scan (`full`) reads every
    /// folder; otherwise node folders whose modification time has not changed since the last
    /// scan are skipped.
    pub fn rescan(&self) -> Result<ScanReport, StoreError> {
        self.scan(false)
    }

    fn scan(&self, full: bool) -> Result<ScanReport, StoreError> {
        let started = Instant::now();
        let mut report = ScanReport::default();
        let mut candidates = Vec::new();
        let mut misplaced = Vec::new();
        let events_dir = self.events_dir().to_owned();
        for date in read_dir_sorted(&events_dir)? {
            let Ok(meta) = date.symlink_metadata() else {
                continue;
            };
            let date_name = file_name_of(&date);
            if layout::is_hidden(&date_name) {
                continue;
            }
            if !meta.is_dir() {
                misplaced.push(date);
                continue;
            }
            let Some(day) = layout::parse_date_folder(&date_name) else {
                report.unexpected_folders.push(date);
                continue;
            };
            if let Some((first, last)) = self.cfg.dates
                && (day < first || day > last)
            {
                continue;
            }
            for node in read_dir_sorted(&date)? {
                let Ok(meta) = node.symlink_metadata() else {
                    continue;
                };
                let node_name = file_name_of(&node);
                if layout::is_hidden(&node_name) {
                    continue;
                }
                if !meta.is_dir() {
                    misplaced.push(node);
                    continue;
                }
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                if !full && lock(&self.folder_mtimes).get(&node) == Some(&mtime) {
                    continue;
                }
                let mut subfolders = false;
                for file in read_dir_sorted(&node)? {
                    let name = file_name_of(&file);
                    if layout::is_hidden(&name) {
                        if !self.cfg.read_only && self.remove_if_stale_temp(&file, &name) {
                            report.stale_temps_removed += 1;
                        }
                        continue;
                    }
                    if file.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                        report.unexpected_folders.push(file);
                        subfolders = true;
                        continue;
                    }
                    report.files_seen += 1;
                    if let Ok(parsed) = layout::parse_file_name(&name)
                        && self.read_index().get(parsed.millis, &parsed.id).is_some()
                    {
                        continue;
                    }
                    candidates.push(file);
                }
                if !subfolders {
                    lock(&self.folder_mtimes).insert(node, mtime);
                }
            }
        }
        report.files_seen += misplaced.len();
        candidates.extend(misplaced);
        let before = self.len();
        let checked_files = check_in_parallel(self, candidates);
        // Learn which conflicts were already reported before indexing finds them again.
        for checked in &checked_files {
            if let Ok((event, _, _)) = &checked.result {
                self.note_reported_conflict(event);
            }
        }
        for checked in checked_files {
            let file = Path::new(EVENTS_DIR).join(&checked.rel);
            match self.settle(checked)? {
                Ingest::Quarantined { to, reason } => report.quarantined.push(QuarantineRecord {
                    file,
                    quarantined_to: to,
                    reason,
                }),
                Ingest::Unsettled => report.unsettled += 1,
                Ingest::Refused(_) => report.needs_attention += 1,
                Ingest::Added(entry) => report.added.push(entry),
                Ingest::Known | Ingest::Ignored => {}
            }
        }
        report.added.sort_by_key(|e| (e.millis, e.id));
        report.indexed = self.len().saturating_sub(before);
        report.conflicts = lock(&self.reported_conflicts).len();
        report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(report)
    }

    fn remove_if_stale_temp(&self, path: &Path, name: &str) -> bool {
        if !name.ends_with(".tmp") {
            return false;
        }
        let stale = path
            .symlink_metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > self.cfg.stale_temp_age);
        stale && fs::remove_file(path).is_ok()
    }
}

fn reason_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".reason");
    PathBuf::from(s)
}

fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(IoError::new("list folder", dir, e).into()),
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    Ok(paths)
}

/// Reads and checks files on every core: a cold start over a million files is I/O and JSON
/// parsing bound, and both parallelise.
fn check_in_parallel(store: &EventStore, files: Vec<PathBuf>) -> Vec<Checked> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    if files.len() < 64 || workers == 1 {
        return files.iter().map(|f| store.check_file(f)).collect();
    }
    let chunk = files.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || part.iter().map(|f| store.check_file(f)).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// The content hashes named in the `.reason` files of a quarantine folder (missing or
/// unreadable files are skipped: this only saves re-quarantining a copy).
fn quarantined_hashes(dir: &Path) -> HashSet<ContentHash> {
    let Ok(entries) = fs::read_dir(dir) else {
        return HashSet::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".reason"))
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .filter_map(|text| {
            let line = text.lines().find_map(|l| l.strip_prefix("sha256: "))?;
            let raw = hex::decode(line.trim()).ok()?;
            ContentHash::try_from(raw.as_slice()).ok()
        })
        .collect()
}

/// Whether a JSON object has a top-level `id` key (values are skipped, not built).
fn has_id_field(bytes: &[u8]) -> bool {
    serde_json::from_slice::<HashMap<std::borrow::Cow<'_, str>, serde::de::IgnoredAny>>(bytes)
        .map(|m| m.contains_key("id"))
        .unwrap_or(true)
}

/// `bytes` (a JSON object) with `"id":"<id>",` inserted right after its opening brace.
fn with_id_field(bytes: &[u8], id: Uuid) -> Vec<u8> {
    let Some(brace) = bytes.iter().position(|b| *b == b'{') else {
        return bytes.to_vec();
    };
    // A valid event is never an empty object, so a comma always follows.
    let mut out = Vec::with_capacity(bytes.len() + 48);
    out.extend_from_slice(&bytes[..=brace]);
    out.extend_from_slice(format!("\"id\":\"{}\",", id.hyphenated()).as_bytes());
    out.extend_from_slice(&bytes[brace + 1..]);
    out
}
