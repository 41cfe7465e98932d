//! Small shared pieces: human durations in config, labels, stable hashes, payload helpers.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Labels of an alert (`rule`, `node`, `service`, `severity`, `mount`, ...): what routes,
/// groups and silences match on. A `BTreeMap` so that every node iterates them in one order.
pub type Labels = BTreeMap<String, String>;

/// Parses `250ms`, `30s`, `5m`, `2h`, `7d` (or a plain number of seconds), the same units as
/// the rest of the labmesh config.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; use e.g. 250ms, 30s, 5m, 2h, 7d"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        "w" => value * 7.0 * 86400.0,
        other => {
            return Err(format!(
                "{text:?} has an unknown unit {other:?}; use ms, s, m, h, d or w"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{text:?} must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Short human form of a duration for messages: `45s`, `12m`, `3h`, `6d`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s}s")
    } else if s < 2 * 3600 {
        format!("{}m", s / 60)
    } else if s < 2 * 86400 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86400)
    }
}

/// `std` duration to `chrono` duration, saturating (config values are far below the limit).
pub fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `at + d`, saturating at the far future instead of overflowing.
pub fn after(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    at.checked_add_signed(chrono_dur(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// How long from `now` until `at` (zero when `at` is past).
pub fn until(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO)
}

/// First 16 hex digits of SHA-256 over the parts, separated by NUL bytes. Stable across nodes,
/// versions and restarts, which is what fingerprints, episode and notification ids need.
pub fn stable_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..8])
}

/// A number from an event payload: JSON numbers, or strings holding one.
pub fn payload_number(payload: &Map<String, Value>, field: &str) -> Option<f64> {
    match payload.get(field)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A string from an event payload.
pub fn payload_str<'a>(payload: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    payload.get(field).and_then(Value::as_str)
}

/// A timestamp from an event payload (RFC 3339).
pub fn payload_time(payload: &Map<String, Value>, field: &str) -> Option<DateTime<Utc>> {
    payload_str(payload, field).and_then(|s| sync::event::parse_timestamp(s).ok())
}

/// Does `value` match `pattern`? `*` matches any run of characters; everything else is
/// literal. Enough for `service = "ollama*"` without a regex engine in the hot path.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == value;
    };
    let Some(mut remaining) = value.strip_prefix(first) else {
        return false;
    };
    let mut pieces: Vec<&str> = rest.split('*').collect();
    let last = pieces.pop().unwrap_or("");
    for piece in pieces {
        match remaining.find(piece) {
            Some(pos) => remaining = &remaining[pos + piece.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// Renders bytes as `1.4 GiB`, `257 MiB`, `12 KiB`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.abs() >= 100.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_the_rest_of_the_config() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(
            parse_duration("5 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("-1s").is_err());
        assert_eq!(human_duration(Duration::from_secs(6 * 86400 + 5)), "6d");
    }

    #[test]
    fn globs() {
        assert!(glob_match("ollama", "ollama"));
        assert!(!glob_match("ollama", "ollama2"));
        assert!(glob_match("ollama*", "ollama-gpu"));
        assert!(glob_match("*-build.sh", "mac-build.sh"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("a*b*c", "a-x-c"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("ab*ab", "ab"));
    }

    #[test]
    fn hashes_are_stable_and_separated() {
        assert_eq!(stable_hash(&["a", "b"]), stable_hash(&["a", "b"]));
        assert_ne!(stable_hash(&["ab", ""]), stable_hash(&["a", "b"]));
        assert_eq!(stable_hash(&["x"]).len(), 16);
    }

    #[test]
    fn bytes_read_well() {
        assert_eq!(human_bytes(1.4 * 1024.0 * 1024.0 * 1024.0), "1.4 GiB");
        assert_eq!(human_bytes(257.0 * 1024.0 * 1024.0), "257 MiB");
        assert_eq!(human_bytes(12.0), "12 B");
    }
}
