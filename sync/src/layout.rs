//! Where events live on disk: `<data>/events/YYYY-MM-DD/<node>/<TIMESTAMP>_<TYPE>_<UUID>.json`.
//!
//! The file-name timestamp is `20260512T120500.123Z`: UTC, milliseconds, no colons (safe on macOS
//! and Windows shares). With `data_dir = "/opt/homelab"` the paths are exactly the seed's. The
//! date folder, node folder and name are all derived from the event itself, so a file can be
//! checked against its content and every peer stores the same event under the same path.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use uuid::Uuid;

use crate::event::Event;

/// Folder names under the data dir.
pub const EVENTS_DIR: &str = "events";
pub const QUARANTINE_DIR: &str = "quarantine";

const NAME_TIME_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";
const NAME_TIME_LEN: usize = "20260512T120500.123Z".len();

/// The date folder (`YYYY-MM-DD`, UTC) of an instant.
pub fn date_folder(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

/// The file-name timestamp (`20260512T120500.123Z`) of an instant, truncated to milliseconds.
pub fn name_time(at: DateTime<Utc>) -> String {
    at.format(NAME_TIME_FORMAT).to_string()
}

/// The file name an event must have.
pub fn file_name(event: &Event) -> String {
    format!(
        "{}_{}_{}.json",
        name_time(event.timestamp),
        event.event_type,
        event.id.hyphenated()
    )
}

/// The path of an event relative to the `events/` folder.
pub fn relative_path(event: &Event) -> PathBuf {
    let mut path = PathBuf::from(date_folder(event.timestamp));
    path.push(&event.node);
    path.push(file_name(event));
    path
}

/// What an event file's name says about its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName {
    /// The name's time in Unix milliseconds.
    pub millis: i64,
    pub event_type: String,
    pub id: Uuid,
}

/// Why a file name is not an event file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "file name {name:?} {problem}; event files are named <YYYYMMDDTHHMMSS.mmmZ>_<type>_<uuid>.json"
)]
pub struct NameError {
    pub name: String,
    pub problem: &'static str,
}

/// Parses `<TIMESTAMP>_<TYPE>_<UUID>.json`. The type may itself contain underscores.
pub fn parse_file_name(name: &str) -> Result<ParsedName, NameError> {
    let err = |problem| NameError {
        name: name.to_owned(),
        problem,
    };
    let stem = name
        .strip_suffix(".json")
        .ok_or_else(|| err("does not end in .json"))?;
    let (rest, id_text) = stem
        .rsplit_once('_')
        .ok_or_else(|| err("has no _<uuid> part"))?;
    let id = Uuid::parse_str(id_text).map_err(|_| err("does not end in a UUID"))?;
    let (time_text, event_type) = rest
        .split_once('_')
        .ok_or_else(|| err("has no <timestamp>_ prefix"))?;
    if time_text.len() != NAME_TIME_LEN {
        return Err(err(
            "does not start with a timestamp like 20260512T120500.123Z",
        ));
    }
    let naive = NaiveDateTime::parse_from_str(time_text, NAME_TIME_FORMAT)
        .map_err(|_| err("does not start with a timestamp like 20260512T120500.123Z"))?;
    if event_type.is_empty() {
        return Err(err("has an empty type"));
    }
    Ok(ParsedName {
        millis: Utc.from_utc_datetime(&naive).timestamp_millis(),
        event_type: event_type.to_owned(),
        id,
    })
}

/// Parses a `YYYY-MM-DD` date folder name.
pub fn parse_date_folder(name: &str) -> Option<NaiveDate> {
    if name.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(name, "%Y-%m-%d").ok()
}

/// Checks that `rel` (relative to `events/`) is where `event` belongs; on a mismatch returns
/// a sentence naming what differs and the expected path.
pub fn check_placement(rel: &Path, event: &Event) -> Result<(), String> {
    let expected = relative_path(event);
    if rel == expected {
        return Ok(());
    }
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut problems = Vec::new();
    if let [date, node, name] = parts.as_slice() {
        let want_date = date_folder(event.timestamp);
        if *date != want_date {
            problems.push(format!(
                "date folder {date:?} is not the event's UTC date {want_date:?}"
            ));
        }
        if *node != event.node {
            problems.push(format!(
                "node folder {node:?} is not the event's node {:?}",
                event.node
            ));
        }
        match parse_file_name(name) {
            Err(e) => problems.push(e.to_string()),
            Ok(parsed) => {
                if parsed.id != event.id {
                    problems.push(format!(
                        "name has id {} but the event's id is {}",
                        parsed.id, event.id
                    ));
                }
                if parsed.event_type != event.event_type {
                    problems.push(format!(
                        "name has type {:?} but the event's type is {:?}",
                        parsed.event_type, event.event_type
                    ));
                }
                if parsed.millis != event.timestamp.timestamp_millis() {
                    problems.push(format!(
                        "name time is not the event's timestamp {}",
                        crate::event::format_timestamp(event.timestamp)
                    ));
                }
            }
        }
    } else {
        problems.push("is not in an events/<date>/<node>/ folder".to_owned());
    }
    if problems.is_empty() {
        problems.push("path differs".to_owned());
    }
    Err(format!(
        "misplaced: {}; it belongs at events/{}",
        problems.join("; "),
        expected.display()
    ))
}

/// A temp file name in the same folder as `final_name`: dot-prefixed so every reader (the
/// agent, `fsck`, the libraries' `list_events`) ignores it until the rename publishes it.
pub fn temp_name(final_name: &str, nonce: u64) -> String {
    format!(".{final_name}.{nonce:016x}.tmp")
}

/// True for names readers skip: dot files (temp files of any writer, editor swap files).
pub fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{NewEvent, Severity, parse_timestamp};

    #[test]
    fn seed_layout() {
        let at = parse_timestamp("2026-05-12T12:05:00.123Z").unwrap();
        let ev = NewEvent::new("deployment_started", Severity::Info, "deploy.sh")
            .into_event("saturn", at)
            .unwrap();
        let rel = relative_path(&ev);
        let want = format!(
            "2026-05-12/saturn/20260512T120500.123Z_deployment_started_{}.json",
            ev.id
        );
        assert_eq!(rel.to_str().unwrap(), want);
        let parsed = parse_file_name(&file_name(&ev)).unwrap();
        assert_eq!(parsed.id, ev.id);
        assert_eq!(parsed.event_type, "deployment_started");
        assert_eq!(parsed.millis, at.timestamp_millis());
        assert!(check_placement(&rel, &ev).is_ok());
        let wrong = PathBuf::from("2026-05-13/venus").join(file_name(&ev));
        let msg = check_placement(&wrong, &ev).unwrap_err();
        assert!(msg.contains("date folder \"2026-05-13\""), "{msg}");
        assert!(msg.contains("node folder \"venus\""), "{msg}");
    }

    #[test]
    fn bad_names() {
        for name in [
            "x.txt",
            "20260512T120500.123Z_x.json",
            "2026_x_0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e5f.json",
            "20260512T120500.123Z__0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e5f.json",
        ] {
            assert!(parse_file_name(name).is_err(), "{name}");
        }
    }
}
