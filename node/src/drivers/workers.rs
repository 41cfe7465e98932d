//! External workers' heartbeats: `POST /v1/heartbeat` (token required) with
//! `{worker_id, health_status, metrics?, interval_s?}`; `GET /v1/workers` lists them.
//!
//! A worker that misses `missed_intervals` (default 2) of its own intervals is `stale`: one
//! `heartbeat_missed` event (warning) per staleness episode. Its next heartbeat makes it
//! `fresh` again and writes `heartbeat_resumed` (info) with the same correlation id. The table
//! is a pure state machine fed with the time ([`WorkerTable`]); the driver below sleeps until
//! the next deadline and writes the events.
//!
//! The table survives a restart (`state/workers.json`, written when a worker appears, changes
//! interval or health, goes stale or resumes — not on every heartbeat): a worker that died
//! while the agent was down is still reported. A restored worker's silence is counted from the
//! restart, since heartbeats sent while the agent was down were never seen: an alive worker is
//! not reported, a dead one is, one stale period after the restart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sync::{EventStore, NewEvent, Severity};

/// External workers' heartbeats (`POST /v1/heartbeat`); each field's doc says what it trades.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerSettings {
    /// The interval a worker is assumed to use when its heartbeat does not say. Default 30 s.
    pub default_interval: Duration,
    /// A worker is stale after this many intervals without a heartbeat: 1 pages on the first
    /// late beat, more tolerates a busy worker. Default 2.
    pub missed_intervals: u32,
}

pub const SOURCE: &str = "labmesh-workers";
const MAX_ID_LEN: usize = 128;
const MAX_METRICS_BYTES: usize = 16 * 1024;
const MAX_INTERVAL_S: f64 = 86_400.0;

/// A heartbeat as sent, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub worker_id: String,
    pub health_status: String,
    pub metrics: Option<Map<String, Value>>,
    pub interval: Option<Duration>,
}

/// A bad heartbeat body: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: Option<&'static str>,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: Some(field),
        message: format!("`{field}` {}", message.into()),
    }
}

/// Parses and validates a heartbeat body. Unknown fields are ignored (newer workers may send
/// more); known ones must have the right type.
pub fn parse_heartbeat(body: &[u8]) -> Result<Heartbeat, FieldError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| FieldError {
        field: None,
        message: format!("the body is not valid JSON ({e}); send {{\"worker_id\": \"w1\", \"health_status\": \"healthy\"}}"),
    })?;
    let Value::Object(doc) = doc else {
        return Err(FieldError {
            field: None,
            message: "the body must be a JSON object with worker_id and health_status".into(),
        });
    };
    let text = |field: &'static str, max: usize| match doc.get(field) {
        None | Some(Value::Null) => Err(bad(field, "is missing; it is required")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(bad(field, "is empty")),
        Some(Value::String(s)) if s.len() > max => {
            Err(bad(field, format!("is over {max} bytes long")))
        }
        Some(Value::String(s)) if s.chars().any(char::is_control) => {
            Err(bad(field, "contains control characters"))
        }
        Some(Value::String(s)) => Ok(s.trim().to_owned()),
        Some(other) => Err(bad(field, format!("must be a string, not {other}"))),
    };
    let worker_id = text("worker_id", MAX_ID_LEN)?;
    let health_status = text("health_status", 64)?;
    let metrics = match doc.get("metrics") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            let size = serde_json::to_vec(m).map_or(usize::MAX, |v| v.len());
            if size > MAX_METRICS_BYTES {
                return Err(bad(
                    "metrics",
                    format!("is {size} bytes; keep it under {MAX_METRICS_BYTES}"),
                ));
            }
            Some(m.clone())
        }
        Some(_) => return Err(bad("metrics", "must be an object, e.g. {\"queue\": 3}")),
    };
    let interval = match doc.get("interval_s") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(s) if s > 0.0 && s <= MAX_INTERVAL_S => Some(Duration::from_secs_f64(s)),
            _ => {
                return Err(bad(
                    "interval_s",
                    format!(
                        "must be a number of seconds above 0 and at most {MAX_INTERVAL_S}, not {v}"
                    ),
                ));
            }
        },
    };
    Ok(Heartbeat {
        worker_id,
        health_status,
        metrics,
        interval,
    })
}

#[derive(Debug, Clone)]
struct Worker {
    health_status: String,
    metrics: Option<Map<String, Value>>,
    interval: Duration,
    last: Instant,
    last_wall: DateTime<Utc>,
    stale_since: Option<Instant>,
    heartbeats: u64,
}

/// A worker's change worth an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Missed {
        worker_id: String,
        interval: Duration,
        last_wall: DateTime<Utc>,
        silent_for: Duration,
        health_status: String,
    },
    Resumed {
        worker_id: String,
        interval: Duration,
        /// The last heartbeat before the silence (names the episode).
        last_wall: DateTime<Utc>,
        stale_for: Duration,
        health_status: String,
    },
}

/// Every worker seen, and when each one goes stale. Pure: time comes in as arguments.
#[derive(Debug)]
pub struct WorkerTable {
    settings: WorkerSettings,
    workers: BTreeMap<String, Worker>,
    /// A change the saved table does not hold yet.
    dirty: bool,
}

impl WorkerTable {
    pub fn new(settings: WorkerSettings) -> Self {
        WorkerTable {
            settings,
            workers: BTreeMap::new(),
            dirty: false,
        }
    }

    /// True once since the last call when something worth saving changed.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// What `state/workers.json` holds.
    pub fn snapshot(&self) -> Value {
        let workers: Vec<Value> = self
            .workers
            .iter()
            .map(|(id, w)| {
                json!({
                    "worker_id": id,
                    "health_status": w.health_status,
                    "interval_ms": u64::try_from(w.interval.as_millis()).unwrap_or(u64::MAX),
                    "last_heartbeat": sync::event::format_timestamp(w.last_wall),
                    "stale": w.stale_since.is_some(),
                    "heartbeats": w.heartbeats,
                })
            })
            .collect();
        json!({ "v": 1, "workers": workers })
    }

    /// Loads a saved table; each restored worker's silence counts from `now` (see the module
    /// doc). Returns how many were restored and the entries that were skipped, with why.
    pub fn restore(&mut self, doc: &Value, now: Instant) -> (usize, Vec<String>) {
        let mut skipped = Vec::new();
        let Some(list) = doc.get("workers").and_then(Value::as_array) else {
            return (0, vec!["no `workers` list".to_owned()]);
        };
        let mut restored = 0;
        for (i, entry) in list.iter().enumerate() {
            let id = entry.get("worker_id").and_then(Value::as_str);
            let last_wall = entry
                .get("last_heartbeat")
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            let interval = entry
                .get("interval_ms")
                .and_then(Value::as_u64)
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis);
            let (Some(id), Some(last_wall), Some(interval)) = (id, last_wall, interval) else {
                skipped.push(format!(
                    "entry {i}: needs worker_id, last_heartbeat and interval_ms"
                ));
                continue;
            };
            if id.is_empty() || id.len() > MAX_ID_LEN {
                skipped.push(format!("entry {i}: bad worker_id"));
                continue;
            }
            let stale = entry.get("stale").and_then(Value::as_bool).unwrap_or(false);
            self.workers.insert(
                id.to_owned(),
                Worker {
                    health_status: entry
                        .get("health_status")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .to_owned(),
                    metrics: None,
                    interval,
                    last: now,
                    last_wall,
                    stale_since: stale.then_some(now),
                    heartbeats: entry.get("heartbeats").and_then(Value::as_u64).unwrap_or(0),
                },
            );
            restored += 1;
        }
        (restored, skipped)
    }

    fn stale_after(&self, interval: Duration) -> Duration {
        interval.saturating_mul(self.settings.missed_intervals)
    }

    /// Records a heartbeat; a stale worker coming back is a [`Change::Resumed`].
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Option<Change> {
        let interval = hb.interval.unwrap_or(self.settings.default_interval);
        let previous = self.workers.remove(&hb.worker_id);
        self.dirty |= previous.as_ref().is_none_or(|p| {
            p.interval != interval || p.health_status != hb.health_status || p.stale_since.is_some()
        });
        let heartbeats = previous.as_ref().map_or(0, |p| p.heartbeats) + 1;
        let resumed = previous.and_then(|p| {
            p.stale_since.map(|since| Change::Resumed {
                worker_id: hb.worker_id.clone(),
                interval,
                last_wall: p.last_wall,
                stale_for: now.saturating_duration_since(since),
                health_status: hb.health_status.clone(),
            })
        });
        self.workers.insert(
            hb.worker_id,
            Worker {
                health_status: hb.health_status,
                metrics: hb.metrics,
                interval,
                last: now,
                last_wall: wall,
                stale_since: None,
                heartbeats,
            },
        );
        resumed
    }

    /// Marks the workers silent for `missed_intervals` of their interval as stale, once.
    pub fn tick(&mut self, now: Instant) -> Vec<Change> {
        let missed = self.settings.missed_intervals;
        let mut changes = Vec::new();
        for (id, w) in &mut self.workers {
            let silent = now.saturating_duration_since(w.last);
            if w.stale_since.is_none() && silent >= w.interval.saturating_mul(missed) {
                w.stale_since = Some(now);
                self.dirty = true;
                changes.push(Change::Missed {
                    worker_id: id.clone(),
                    interval: w.interval,
                    last_wall: w.last_wall,
                    silent_for: silent,
                    health_status: w.health_status.clone(),
                });
            }
        }
        changes
    }

    /// When the next fresh worker goes stale, if no heartbeat comes first.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.workers
            .values()
            .filter(|w| w.stale_since.is_none())
            .map(|w| w.last + self.stale_after(w.interval))
            .min()
    }

    /// The workers as `GET /v1/workers` shows them.
    pub fn list(&self, now: Instant) -> Vec<Value> {
        self.workers
            .iter()
            .map(|(id, w)| {
                json!({
                    "worker_id": id,
                    "status": if w.stale_since.is_some() { "stale" } else { "fresh" },
                    "last_heartbeat": sync::event::format_timestamp(w.last_wall),
                    "last_heartbeat_age_ms": u64::try_from(now.saturating_duration_since(w.last).as_millis()).unwrap_or(u64::MAX),
                    "interval_s": w.interval.as_secs_f64(),
                    "stale_after_s": self.stale_after(w.interval).as_secs_f64(),
                    "health_status": w.health_status,
                    "metrics": w.metrics,
                    "heartbeats": w.heartbeats,
                })
            })
            .collect()
    }
}

/// The event for a change. The correlation id links a `heartbeat_missed` to its
/// `heartbeat_resumed`: both name the last heartbeat before the silence.
pub fn event_for(change: &Change, missed_intervals: u32) -> NewEvent {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut p = Map::new();
    let (event_type, severity, worker_id, last_wall) = match change {
        Change::Missed {
            worker_id,
            interval,
            last_wall,
            silent_for,
            health_status,
        } => {
            p.insert("interval_s".into(), json!(interval.as_secs_f64()));
            p.insert("missed_intervals".into(), json!(missed_intervals));
            p.insert("silent_for_ms".into(), json!(ms(*silent_for)));
            p.insert("health_status".into(), json!(health_status));
            ("heartbeat_missed", Severity::Warning, worker_id, last_wall)
        }
        Change::Resumed {
            worker_id,
            interval,
            last_wall,
            stale_for,
            health_status,
        } => {
            p.insert("interval_s".into(), json!(interval.as_secs_f64()));
            p.insert("stale_for_ms".into(), json!(ms(*stale_for)));
            p.insert("health_status".into(), json!(health_status));
            ("heartbeat_resumed", Severity::Info, worker_id, last_wall)
        }
    };
    p.insert("worker_id".into(), json!(worker_id));
    p.insert(
        "last_heartbeat".into(),
        json!(sync::event::format_timestamp(*last_wall)),
    );
    let correlation = format!("hb-{worker_id}-{}", last_wall.timestamp_millis());
    NewEvent::new(event_type, severity, SOURCE)
        .service(worker_id)
        .correlation_id(&correlation)
        .payload(p)
}

/// The agent's worker table and the task that watches the deadlines.
pub struct Workers {
    table: Mutex<WorkerTable>,
    store: Arc<EventStore>,
    wake: tokio::sync::Notify,
    missed_intervals: u32,
    /// Workers that went stale, since the agent started (for `labmesh_workers_stale_total`).
    went_stale: std::sync::atomic::AtomicU64,
    /// Where the table is saved; `None` keeps it in memory (tests).
    state_file: Option<PathBuf>,
}

impl Workers {
    /// The table, restored from `state_file` when it exists. A file that cannot be read is
    /// reported and set aside (renamed `.bad`), never fatal: heartbeats rebuild the table.
    pub fn new(
        settings: WorkerSettings,
        store: Arc<EventStore>,
        state_file: Option<PathBuf>,
    ) -> Arc<Workers> {
        let mut table = WorkerTable::new(settings);
        if let Some(path) = &state_file {
            restore_from(&mut table, path);
        }
        Arc::new(Workers {
            table: Mutex::new(table),
            store,
            wake: tokio::sync::Notify::new(),
            missed_intervals: settings.missed_intervals,
            went_stale: std::sync::atomic::AtomicU64::new(0),
            state_file,
        })
    }

    /// Saves the table if it changed since the last save.
    async fn save_if_changed(&self) {
        let Some(path) = self.state_file.clone() else {
            return;
        };
        let snapshot = {
            let mut table = self.table();
            if !table.take_dirty() {
                return;
            }
            table.snapshot()
        };
        let bytes = snapshot.to_string().into_bytes();
        let written = tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            sync::durable::write_file_atomic(&path, &bytes).map_err(|e| e.to_string())
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // Try again with the next change rather than never.
                self.table().dirty = true;
                tracing::error!(error = %e, "cannot save the worker table");
            }
            Err(e) => tracing::error!(error = %e, "worker table task failed"),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, WorkerTable> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a heartbeat (writing `heartbeat_resumed` for a stale worker); returns the
    /// worker as listed.
    pub async fn heartbeat(&self, hb: Heartbeat) -> Value {
        let id = hb.worker_id.clone();
        let now = Instant::now();
        let (change, listed) = {
            let mut table = self.table();
            // Wall time from the store's clock, like the events it leads to.
            let change = table.heartbeat(hb, now, self.store.config().clock.now());
            let listed = table
                .list(now)
                .into_iter()
                .find(|w| w["worker_id"] == id.as_str())
                .unwrap_or(Value::Null);
            (change, listed)
        };
        self.wake.notify_one();
        if let Some(change) = change {
            tracing::info!(worker = %id, "worker heartbeat resumed");
            self.append(event_for(&change, self.missed_intervals)).await;
        }
        self.save_if_changed().await;
        listed
    }

    pub fn list(&self) -> Vec<Value> {
        self.table().list(Instant::now())
    }

    /// How many times a worker went stale since the agent started.
    pub fn went_stale(&self) -> u64 {
        self.went_stale.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sleeps until the next worker would go stale (or a heartbeat moves the deadline) and
    /// writes `heartbeat_missed` for those that did, until `stop` changes.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let deadline = self.table().next_deadline();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                () = self.wake.notified() => continue,
                _ = stop.changed() => return,
            }
            let changes = self.table().tick(Instant::now());
            for change in changes {
                if let Change::Missed { worker_id, .. } = &change {
                    tracing::warn!(worker = %worker_id, "worker missed its heartbeats: stale");
                    self.went_stale
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                self.append(event_for(&change, self.missed_intervals)).await;
            }
            self.save_if_changed().await;
        }
    }

    async fn append(&self, new: NewEvent) {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.append(new)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot record a worker event"),
            Err(e) => tracing::error!(error = %e, "event task failed"),
        }
    }
}

fn restore_from(table: &mut WorkerTable, path: &std::path::Path) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the saved worker table; starting empty");
            return;
        }
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(doc) => {
            let (restored, skipped) = table.restore(&doc, Instant::now());
            for why in skipped {
                tracing::warn!(file = %path.display(), "skipped a saved worker: {why}");
            }
            tracing::info!(workers = restored, "worker table restored");
        }
        Err(e) => {
            let aside = path.with_extension("json.bad");
            tracing::warn!(file = %path.display(), error = %e, moved_to = %aside.display(), "the saved worker table is not JSON; set aside, starting empty");
            let _ = std::fs::rename(path, aside);
        }
    }
}

#[cfg(test)]
#[path = "workers_tests.rs"]
mod tests;
