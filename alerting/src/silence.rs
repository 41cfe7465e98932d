//! What mutes notifications: silences (one-off, replicated as events) and recurring maintenance
//! windows (from config, evaluated in the operator's time zone).
//!
//! A silence is an event (`silence_set`, ended early by `silence_cleared`), so it syncs to every
//! node like any event and a failover alerter honours it without extra machinery. Matchers are
//! label globs (`service = "ollama"`, `node = "vm1"`); every matcher must match. A muted alert
//! still fires and is recorded; only its notifications wait. When the mute ends and the alert
//! is still firing (and was never sent), it is sent at the next flush.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};
use sync::event::format_timestamp;
use sync::{Event, NewEvent, Severity};

use crate::cron::Cron;
use crate::util::{
    Labels, after, chrono_dur, glob_match, parse_duration, payload_str, payload_time,
};
use crate::{EVENT_SERVICE, EVENT_SOURCE};

pub const SILENCE_SET: &str = "silence_set";
pub const SILENCE_CLEARED: &str = "silence_cleared";

/// Does every matcher match the labels? (No matchers: everything.)
pub fn labels_match(matchers: &Labels, labels: &Labels) -> bool {
    matchers
        .iter()
        .all(|(k, pat)| labels.get(k).is_some_and(|v| glob_match(pat, v)))
}

/// A one-off mute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Labels,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub comment: String,
    pub created_by: String,
}

impl Silence {
    /// The `silence_set` event that creates it on every node (for the CLI and API to write).
    pub fn to_event(&self) -> NewEvent {
        let mut p = Map::new();
        p.insert("id".into(), json!(self.id));
        p.insert("matchers".into(), json!(self.matchers));
        p.insert("starts_at".into(), json!(format_timestamp(self.starts_at)));
        p.insert("ends_at".into(), json!(format_timestamp(self.ends_at)));
        p.insert("comment".into(), json!(self.comment));
        p.insert("created_by".into(), json!(self.created_by));
        NewEvent::new(SILENCE_SET, Severity::Info, EVENT_SOURCE)
            .service(EVENT_SERVICE)
            .correlation_id(&self.id)
            .payload(p)
    }

    /// Reads a `silence_set` event. `ends_at` may be given as `duration` ("2h") from the event's
    /// time; without `id` the event id is the silence id; `starts_at` defaults to the event time.
    pub fn from_event(e: &Event) -> Option<Silence> {
        let p = &e.payload;
        let starts_at = payload_time(p, "starts_at").unwrap_or(e.timestamp);
        let ends_at = payload_time(p, "ends_at").or_else(|| {
            let d = parse_duration(payload_str(p, "duration")?).ok()?;
            Some(after(starts_at, d))
        })?;
        let matchers = p
            .get("matchers")?
            .as_object()?
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
            .collect();
        Some(Silence {
            id: payload_str(p, "id").map_or_else(|| e.id.to_string(), str::to_owned),
            matchers,
            starts_at,
            ends_at,
            comment: payload_str(p, "comment").unwrap_or_default().to_owned(),
            created_by: payload_str(p, "created_by").unwrap_or(&e.node).to_owned(),
        })
    }
}

/// The event that ends a silence early.
pub fn clear_event(id: &str) -> NewEvent {
    let mut p = Map::new();
    p.insert("id".into(), json!(id));
    NewEvent::new(SILENCE_CLEARED, Severity::Info, EVENT_SOURCE)
        .service(EVENT_SERVICE)
        .correlation_id(id)
        .payload(p)
}

/// `[[maintenance]]` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceToml {
    pub name: String,
    /// Five-field cron of the window's start, e.g. `"0 3 * * sun"`.
    pub cron: String,
    /// How long each window lasts, e.g. `"2h"`.
    pub duration: String,
    /// IANA zone the cron reads in (`Europe/Berlin`); default UTC. Daylight saving moves the
    /// window with the wall clock, which is what "Sunday 03:00 updates" means.
    pub time_zone: Option<String>,
    /// Label globs; none mutes everything.
    #[serde(default)]
    pub matchers: Labels,
}

/// A recurring maintenance window.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceWindow {
    pub name: String,
    pub cron: Cron,
    pub duration: Duration,
    pub tz: Tz,
    pub matchers: Labels,
}

/// Why a maintenance window was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("maintenance window `{name}`: {problem}")]
pub struct MaintenanceError {
    pub name: String,
    pub problem: String,
}

impl TryFrom<MaintenanceToml> for MaintenanceWindow {
    type Error = MaintenanceError;
    fn try_from(t: MaintenanceToml) -> Result<Self, MaintenanceError> {
        let err = |problem: String| MaintenanceError {
            name: t.name.clone(),
            problem,
        };
        let cron = Cron::parse(&t.cron).map_err(|e| err(e.to_string()))?;
        let duration =
            parse_duration(&t.duration).map_err(|e| err(format!("field `duration`: {e}")))?;
        if duration.is_zero() || duration > Duration::from_secs(31 * 86400) {
            return Err(err("`duration` must be between 1s and 31d".into()));
        }
        let tz = match t.time_zone.as_deref() {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                err(format!("`time_zone = \"{name}\"` is not an IANA zone; use e.g. \"Europe/Berlin\" or \"UTC\""))
            })?,
        };
        Ok(MaintenanceWindow {
            name: t.name.clone(),
            cron,
            duration,
            tz,
            matchers: t.matchers.clone(),
        })
    }
}

impl MaintenanceWindow {
    /// When the window covering `now` ends, if one does.
    pub fn active_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.tz).naive_local();
        // A day of slack covers a daylight-saving shift between start and now.
        let lookback = chrono_dur(self.duration) + chrono::Duration::days(1);
        let mut probe = local;
        // The latest start may fall in a DST gap (no such local time): try the one before.
        for _ in 0..3 {
            let start_local = self.cron.latest_at_or_before(probe, lookback)?;
            if let Some(start) = self.tz.from_local_datetime(&start_local).earliest() {
                let start = start.with_timezone(&Utc);
                let end = after(start, self.duration);
                return (start <= now && now < end).then_some(end);
            }
            probe = start_local - chrono::Duration::minutes(1);
        }
        None
    }
}

/// Silences and windows in force on this node.
#[derive(Debug, Clone, Default)]
pub struct Suppressions {
    silences: BTreeMap<String, Silence>,
    /// Cleared silence ids, with when (a clear may arrive before its set).
    cleared: BTreeMap<String, DateTime<Utc>>,
    windows: Vec<MaintenanceWindow>,
}

impl Suppressions {
    pub fn new(windows: Vec<MaintenanceWindow>) -> Self {
        Suppressions {
            windows,
            ..Suppressions::default()
        }
    }

    /// Learns from `silence_set` / `silence_cleared` events.
    pub fn on_event(&mut self, e: &Event) {
        match e.event_type.as_str() {
            SILENCE_SET => {
                if let Some(s) = Silence::from_event(e)
                    && !self.cleared.contains_key(&s.id)
                {
                    self.silences.insert(s.id.clone(), s);
                }
            }
            SILENCE_CLEARED => {
                if let Some(id) = payload_str(&e.payload, "id") {
                    self.silences.remove(id);
                    self.cleared.insert(id.to_owned(), e.timestamp);
                }
            }
            _ => {}
        }
    }

    /// If the labels are muted at `now`: why, and until when (the latest end among the mutes).
    pub fn muted(&self, labels: &Labels, now: DateTime<Utc>) -> Option<(String, DateTime<Utc>)> {
        let silences = self
            .silences
            .values()
            .filter(|s| s.starts_at <= now && now < s.ends_at && labels_match(&s.matchers, labels))
            .map(|s| (format!("silence {}", s.id), s.ends_at));
        let windows = self.windows.iter().filter_map(|w| {
            let end = w.active_until(now)?;
            labels_match(&w.matchers, labels).then(|| (format!("maintenance {}", w.name), end))
        });
        silences.chain(windows).max_by_key(|(_, end)| *end)
    }

    /// Silences that have not ended.
    pub fn silences(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Silence> {
        self.silences.values().filter(move |s| now < s.ends_at)
    }

    /// The next start of a known future silence (to re-check a group then).
    pub fn next_silence_start(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.silences
            .values()
            .map(|s| s.starts_at)
            .filter(|t| *t > now)
            .min()
    }

    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.silences.retain(|_, s| s.ends_at > now);
        let keep = Duration::from_secs(40 * 86400);
        self.cleared.retain(|_, t| after(*t, keep) > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        sync::event::parse_timestamp(s).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn silences_replicate_as_events_and_expire() {
        let s = Silence {
            id: "s1".into(),
            matchers: labels(&[("service", "ollama"), ("node", "vm*")]),
            starts_at: t("2026-06-01T10:00:00Z"),
            ends_at: t("2026-06-01T12:00:00Z"),
            comment: "model upgrade".into(),
            created_by: "alice".into(),
        };
        let ev = s
            .to_event()
            .into_event("vm1", t("2026-06-01T09:59:00Z"))
            .unwrap();
        assert_eq!(Silence::from_event(&ev).unwrap(), s);
        let mut sup = Suppressions::new(Vec::new());
        sup.on_event(&ev);
        let alert = labels(&[("service", "ollama"), ("node", "vm1"), ("rule", "x")]);
        assert!(
            sup.muted(&alert, t("2026-06-01T09:00:00Z")).is_none(),
            "not started"
        );
        let (why, until) = sup.muted(&alert, t("2026-06-01T11:00:00Z")).unwrap();
        assert_eq!(
            (why.as_str(), until),
            ("silence s1", t("2026-06-01T12:00:00Z"))
        );
        assert!(
            sup.muted(&labels(&[("service", "ollama")]), t("2026-06-01T11:00:00Z"))
                .is_none(),
            "node missing"
        );
        assert!(
            sup.muted(&alert, t("2026-06-01T12:00:00Z")).is_none(),
            "expired"
        );
        let clear = clear_event("s1")
            .into_event("vm1", t("2026-06-01T10:30:00Z"))
            .unwrap();
        sup.on_event(&clear);
        assert!(
            sup.muted(&alert, t("2026-06-01T11:00:00Z")).is_none(),
            "cleared early"
        );
        sup.on_event(&ev);
        assert!(
            sup.muted(&alert, t("2026-06-01T11:00:00Z")).is_none(),
            "a late copy of the set stays cleared"
        );
    }

    #[test]
    fn a_duration_may_stand_for_ends_at() {
        let p = serde_json::json!({"matchers": {"node": "vm1"}, "duration": "2h"});
        let ev = NewEvent::new(SILENCE_SET, Severity::Info, "cli")
            .payload(p.as_object().unwrap().clone())
            .into_event("vm1", t("2026-06-01T10:00:00Z"))
            .unwrap();
        let s = Silence::from_event(&ev).unwrap();
        assert_eq!(s.ends_at, t("2026-06-01T12:00:00Z"));
        assert_eq!(s.id, ev.id.to_string());
    }

    #[test]
    fn maintenance_windows_follow_the_wall_clock_of_their_zone() {
        let w = MaintenanceWindow::try_from(MaintenanceToml {
            name: "updates".into(),
            cron: "0 3 * * sun".into(),
            duration: "2h".into(),
            time_zone: Some("Europe/Berlin".into()),
            matchers: labels(&[("node", "vm1")]),
        })
        .unwrap();
        // Summer (CEST, UTC+2): 03:00 Berlin is 01:00 UTC.
        assert_eq!(
            w.active_until(t("2026-05-31T01:30:00Z")),
            Some(t("2026-05-31T03:00:00Z"))
        );
        assert_eq!(w.active_until(t("2026-05-31T03:00:00Z")), None);
        assert_eq!(w.active_until(t("2026-05-31T00:59:00Z")), None);
        // Winter (CET, UTC+1): 02:00 UTC.
        assert_eq!(
            w.active_until(t("2026-12-06T02:10:00Z")),
            Some(t("2026-12-06T04:00:00Z"))
        );
        let sup = Suppressions::new(vec![w]);
        let (why, _) = sup
            .muted(&labels(&[("node", "vm1")]), t("2026-05-31T01:30:00Z"))
            .unwrap();
        assert_eq!(why, "maintenance updates");
        assert!(
            sup.muted(&labels(&[("node", "vm2")]), t("2026-05-31T01:30:00Z"))
                .is_none()
        );
        let bad = MaintenanceWindow::try_from(MaintenanceToml {
            name: "x".into(),
            cron: "0 3 * * sun".into(),
            duration: "2h".into(),
            time_zone: Some("Mars/Olympus".into()),
            matchers: Labels::new(),
        });
        assert!(bad.unwrap_err().to_string().contains("not an IANA zone"));
    }

    #[test]
    fn a_start_in_the_spring_forward_gap_uses_the_one_before() {
        // 02:30 does not exist in Berlin on 2026-03-29; the window then started the day before.
        let w = MaintenanceWindow::try_from(MaintenanceToml {
            name: "nightly".into(),
            cron: "30 2 * * *".into(),
            duration: "30h".into(),
            time_zone: Some("Europe/Berlin".into()),
            matchers: Labels::new(),
        })
        .unwrap();
        assert!(w.active_until(t("2026-03-29T01:45:00Z")).is_some());
    }
}
