//! Run logs (`<data>/logs/runs/<run-id>.jsonl`): reading one as it grows
//! ([`LogFollower`], for `GET /v1/runs/{id}/log?follow=1` and `labmesh runs log -f`), and
//! retention (the agent's retention pass drops the ones last written before the window, with
//! the event folders).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::schema::RUN_LOG_DIR;

/// The log of run `id` under `data_dir`; `None` when `id` is not a run id (a UUID), so that no
/// request can name a path outside the folder.
pub fn log_path(data_dir: &Path, id: &str) -> Option<PathBuf> {
    let id = uuid::Uuid::parse_str(id).ok()?;
    Some(
        data_dir
            .join(RUN_LOG_DIR)
            .join(format!("{}.jsonl", id.hyphenated())),
    )
}

/// Whether a log line is the wrapper's last record (`build_complete`, `test_fail`,
/// `deployment_cancel`, ...): nothing follows it.
pub fn is_end_record(line: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    v.get("stream").is_none()
        && v.get("event")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|e| {
                e.ends_with("_complete") || e.ends_with("_fail") || e.ends_with("_cancel")
            })
}

/// Reads a run log from the start and then what is appended to it, whole lines only.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    offset: u64,
    pending: Vec<u8>,
    ended: bool,
}

/// At most this much is read per poll (a slow reader catches up over several).
const READ_PER_POLL: u64 = 1 << 20;

impl LogFollower {
    pub fn new(path: PathBuf) -> Self {
        LogFollower {
            path,
            offset: 0,
            pending: Vec::new(),
            ended: false,
        }
    }

    /// The complete lines appended since the last poll (none when the file does not exist
    /// yet).
    pub fn poll(&mut self) -> std::io::Result<Vec<String>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut chunk = Vec::new();
        let n = file.take(READ_PER_POLL).read_to_end(&mut chunk)?;
        self.offset += n as u64;
        self.pending.extend_from_slice(&chunk);
        let mut lines = Vec::new();
        while let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            if is_end_record(&text) {
                self.ended = true;
            }
            lines.push(text);
        }
        Ok(lines)
    }

    /// Whether the wrapper's last record has been read.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

/// Most bytes of output one run's log keeps (64 MiB): a build that prints without end must not
/// fill the disk. Past it, lines still pass through and count in the summary and the tail, but
/// the log keeps one `log_truncated` record instead of them.
pub const MAX_RUN_LOG_BYTES: u64 = 64 << 20;

/// The cap of one run's log: [`MAX_RUN_LOG_BYTES`], or `LABMESH_RUN_LOG_MAX_BYTES` when set to
/// a number (smaller for a Raspberry Pi's SD card, larger to keep a whole verbose build).
pub fn run_log_cap() -> u64 {
    std::env::var("LABMESH_RUN_LOG_MAX_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(MAX_RUN_LOG_BYTES)
}

/// Most bytes all run logs together keep (1 GiB): past it, the oldest logs go first, even
/// within the retention window.
pub const MAX_RUN_LOGS_BYTES: u64 = 1 << 30;

/// Removes run logs (and leftover phase files) last modified more than `days` days before
/// `now`, then the oldest ones while all together exceed [`MAX_RUN_LOGS_BYTES`]. Links and
/// folders are left alone (nothing outside the folder is ever touched). Returns how many
/// files went.
pub fn prune(dir: &Path, now: SystemTime, days: u32) -> std::io::Result<usize> {
    prune_to(dir, now, days, MAX_RUN_LOGS_BYTES)
}

fn prune_to(dir: &Path, now: SystemTime, days: u32, max_total: u64) -> std::io::Result<usize> {
    let keep_from = now
        .checked_sub(Duration::from_secs(u64::from(days) * 86_400))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    let mut kept: Vec<(SystemTime, u64, std::path::PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_run_file = path
            .extension()
            .is_some_and(|x| x == "jsonl" || x == "phases");
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !is_run_file || !meta.file_type().is_file() {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if modified < keep_from {
            if std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        } else {
            kept.push((modified, meta.len(), path));
        }
    }
    let mut total: u64 = kept.iter().map(|(_, len, _)| len).sum();
    kept.sort();
    for (_, len, path) in kept {
        if total <= max_total {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            removed += 1;
            total -= len;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_follower_reads_whole_lines_as_they_come_and_sees_the_end() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let id = "01a25247-3e89-7550-8ed8-602769146e71";
        let path = log_path(dir.path(), id).unwrap();
        assert_eq!(log_path(dir.path(), "../../etc/passwd"), None);
        let mut f = LogFollower::new(path.clone());
        assert!(f.poll().unwrap().is_empty(), "no file yet");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut w = std::fs::File::create(&path).unwrap();
        write!(w, "{{\"stream\":\"stdout\",\"line\":\"a\"}}\n{{\"stream\":").unwrap();
        assert_eq!(f.poll().unwrap().len(), 1);
        assert!(!f.ended());
        writeln!(w, "\"stderr\",\"line\":\"b\"}}").unwrap();
        writeln!(w, "{{\"event\":\"build_complete\",\"level\":\"INFO\"}}").unwrap();
        let lines = f.poll().unwrap();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("\"b\""));
        assert!(f.ended());
        assert!(!is_end_record(
            "{\"stream\":\"stdout\",\"event\":\"x_complete\"}"
        ));
    }

    #[test]
    fn logs_past_the_window_go_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["old.jsonl", "new.jsonl", "old.phases", "notes.txt"] {
            std::fs::write(d.join(name), "x").unwrap();
        }
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim.jsonl"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim.jsonl"), d.join("link.jsonl"))
            .unwrap();
        let now = SystemTime::now();
        // Seen from 40 days on, everything written now is old; from now, nothing is.
        assert_eq!(prune(d, now, 30).unwrap(), 0);
        let later = now + Duration::from_secs(40 * 86_400);
        assert_eq!(prune(d, later, 30).unwrap(), 3);
        assert!(d.join("notes.txt").exists());
        assert!(outside.path().join("victim.jsonl").exists());
        assert_eq!(prune(&d.join("missing"), later, 30).unwrap(), 0);
    }

    #[test]
    fn past_the_size_cap_the_oldest_logs_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        for (name, age_s) in [("old.jsonl", 300), ("mid.jsonl", 200), ("new.jsonl", 100)] {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![b'x'; 100]).unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(now - Duration::from_secs(age_s)).unwrap();
        }
        assert_eq!(prune_to(dir.path(), now, 30, 250).unwrap(), 1);
        assert!(!dir.path().join("old.jsonl").exists());
        assert!(dir.path().join("mid.jsonl").exists() && dir.path().join("new.jsonl").exists());
        assert_eq!(prune_to(dir.path(), now, 30, 250).unwrap(), 0);
    }
}
