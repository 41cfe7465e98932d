//! Picking up event files that other tools drop into `events/` while the agent runs.
//!
//! The shell and Python libraries, cron jobs and hand-written files all write straight into the
//! store's folders. A `notify` watcher (inotify on Linux, FSEvents on macOS) reports new names at
//! once; a periodic rescan catches whatever the watcher missed (an overflowed inotify queue, a
//! network file system that sends no notifications, files written while the watcher was being
//! set up on a new folder). Files that do not parse yet but changed moments ago are retried until
//! they settle, so a tool that writes in place is not quarantined mid-write.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};

use crate::index::IndexEntry;
use crate::store::{EventStore, Ingest};

/// Pick-up settings.
#[derive(Debug, Clone)]
pub struct PickupConfig {
    /// How often to walk the store for files the watcher missed. The walk skips folders whose
    /// modification time did not change, so it is cheap; shorter finds missed files sooner on
    /// file systems without notifications. Default 30 s.
    pub rescan_interval: Duration,
    /// How often to retry files that were still being written. Default 1 s.
    pub retry_interval: Duration,
}

impl Default for PickupConfig {
    fn default() -> Self {
        PickupConfig {
            rescan_interval: Duration::from_secs(30),
            retry_interval: Duration::from_secs(1),
        }
    }
}

/// What the pick-up loop reports to its owner.
#[derive(Debug, Clone)]
pub enum PickupNotice {
    /// A new event entered the index (a dropped-in file, or one this node wrote).
    Added(IndexEntry),
    /// A file was moved to quarantine.
    Quarantined { to: PathBuf, reason: String },
    /// Something went wrong that the operator should see; the loop keeps going.
    Error(String),
}

/// Runs the pick-up loop on the calling thread until `stop` is set. Blocking: the agent runs it
/// on a dedicated thread.
pub fn run(
    store: Arc<EventStore>,
    cfg: PickupConfig,
    stop: Arc<AtomicBool>,
    mut notify_owner: impl FnMut(PickupNotice),
) {
    let (tx, rx) = mpsc::channel();
    let watcher = notify::recommended_watcher(move |res| {
        let _ = tx.send(res);
    })
    .and_then(|mut w| {
        w.watch(store.events_dir(), RecursiveMode::Recursive)?;
        Ok(w)
    });
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            notify_owner(PickupNotice::Error(format!(
                "cannot watch {} ({e}); new files are found by rescans every {:?}",
                store.events_dir().display(),
                cfg.rescan_interval
            )));
            None
        }
    };
    let mut last_rescan = Instant::now();
    let mut last_retry = Instant::now();
    let report = |res: Result<Ingest, crate::store::StoreError>,
                  notify_owner: &mut dyn FnMut(PickupNotice)| match res {
        Ok(Ingest::Added(entry)) => notify_owner(PickupNotice::Added(entry)),
        Ok(Ingest::Quarantined { to, reason }) => {
            notify_owner(PickupNotice::Quarantined { to, reason })
        }
        Ok(_) => {}
        Err(e) => notify_owner(PickupNotice::Error(e.to_string())),
    };
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(Ok(event)) => {
                if wants(&event.kind) {
                    for path in &event.paths {
                        // Not `is_dir`: a linked folder is not walked (its files are elsewhere).
                        if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                            for file in files_under(path) {
                                report(store.ingest_path(&file), &mut notify_owner);
                            }
                        } else {
                            report(store.ingest_path(path), &mut notify_owner);
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                // Typically an overflowed queue: fall back to a full walk now.
                notify_owner(PickupNotice::Error(format!(
                    "file watcher: {e}; rescanning"
                )));
                last_rescan = Instant::now() - cfg.rescan_interval;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(250)),
        }
        if last_retry.elapsed() >= cfg.retry_interval {
            last_retry = Instant::now();
            for path in store.unsettled() {
                report(store.ingest_path(&path), &mut notify_owner);
            }
        }
        if last_rescan.elapsed() >= cfg.rescan_interval {
            last_rescan = Instant::now();
            let before = store.len();
            match store.rescan() {
                Ok(r) => {
                    for q in r.quarantined {
                        notify_owner(PickupNotice::Quarantined {
                            to: q.quarantined_to,
                            reason: q.reason,
                        });
                    }
                    if store.len() > before {
                        tracing::info!(
                            found = store.len() - before,
                            "rescan found files the watcher missed"
                        );
                    }
                }
                Err(e) => notify_owner(PickupNotice::Error(format!("rescan: {e}"))),
            }
        }
    }
}

fn wants(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(
            CreateKind::File | CreateKind::Folder | CreateKind::Any | CreateKind::Other
        ) | EventKind::Modify(ModifyKind::Name(_) | ModifyKind::Data(_) | ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Any
    )
}

/// Every file in a folder and its sub-folders (a date or node folder that appeared at once).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in rd.flatten() {
            let p = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
