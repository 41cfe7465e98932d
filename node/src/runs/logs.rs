//! Run logs (`<data>/logs/runs/<run-id>.jsonl`) are kept as long as events are: the agent's
//! retention pass drops the ones last written before the window, with the event folders.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// Removes run logs (and leftover phase files) last modified more than `days` days before
/// `now`. Links and folders are left alone (nothing outside the folder is ever touched).
/// Returns how many files went.
pub fn prune(dir: &Path, now: SystemTime, days: u32) -> std::io::Result<usize> {
    let keep_from = now
        .checked_sub(Duration::from_secs(u64::from(days) * 86_400))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
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
        if meta.modified().is_ok_and(|m| m < keep_from) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

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
}
