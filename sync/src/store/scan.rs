//! Walking `events/`: the full scan at open, the cheaper rescans (folders whose modification
//! time has not changed are skipped), and retention.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::ingest::Checked;
use super::{EventStore, Ingest, QuarantineRecord, ScanReport, StoreError, lock};
use crate::durable::{self, IoError};
use crate::index::ContentHash;
use crate::layout::{self, EVENTS_DIR};

impl EventStore {
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
            // A linked date folder is not the store's to archive or delete (the scan
            // quarantines the link).
            if day >= cutoff || !date.symlink_metadata().is_ok_and(|m| m.is_dir()) {
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

    /// Walks `events/` for files the index does not know. A full scan (`full`) reads every
    /// folder; otherwise node folders whose modification time has not changed since the last
    /// scan are skipped.
    pub fn rescan(&self) -> Result<ScanReport, StoreError> {
        self.scan(false)
    }

    pub(super) fn scan(&self, full: bool) -> Result<ScanReport, StoreError> {
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
            if let Ok((event, ..)) = &checked.result {
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
pub(super) fn quarantined_hashes(dir: &Path) -> HashSet<ContentHash> {
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
