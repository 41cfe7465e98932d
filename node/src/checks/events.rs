//! Which event a check transition writes, and its payload. Pure: the runner passes in the
//! transition, the probe result and a fresh correlation id, and appends what comes back.
//!
//! Events are about services, checks are how we look at them, and several checks may watch one
//! service (an HTTP and a TCP check of the same database). The incidents view opens an incident
//! per (node, service) on `service_unhealthy` / `healthcheck_failed` and resolves it on
//! `service_recovered`, so the book below keeps, per service, the set of its unhealthy checks:
//! the service is unhealthy while that set is not empty.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sync::{NewEvent, Severity};

use super::config::CheckDef;
use super::machine::{Machine, Status, Transition};
use super::probe::{OUTPUT_CAP, ProbeResult, cap};

/// The `source` of every event the checks write.
pub const SOURCE: &str = "labmesh-checks";
pub const UNHEALTHY: &str = "service_unhealthy";
pub const FAILED: &str = "healthcheck_failed";
pub const RECOVERED: &str = "service_recovered";

/// What to write for one transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub event_type: &'static str,
    pub severity: Severity,
    /// Why this event: `unhealthy`, `another_check_unhealthy`, `status_changed`,
    /// `still_failing`, `recovered`.
    pub reason: &'static str,
    pub correlation_id: String,
    /// The service's checks that are unhealthy after this transition.
    pub unhealthy_checks: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct ServiceEpisode {
    correlation_id: String,
    unhealthy: BTreeSet<String>,
}

/// Per service: which checks are unhealthy, and the correlation id of the episode.
#[derive(Debug, Default)]
pub struct ServiceBook {
    services: HashMap<String, ServiceEpisode>,
}

fn severity(status: Status) -> Severity {
    match status {
        Status::Warning => Severity::Warning,
        Status::Ok | Status::Critical => Severity::Error,
    }
}

impl ServiceBook {
    /// Marks `check` of `service` unhealthy without writing anything (restored at start).
    pub fn restore(&mut self, service: &str, check: &str, correlation_id: &str) {
        let ep = self.services.entry(service.to_owned()).or_default();
        if ep.correlation_id.is_empty() {
            correlation_id.clone_into(&mut ep.correlation_id);
        }
        ep.unhealthy.insert(check.to_owned());
    }

    /// The event (if any) for `transition` of `check`; updates the book.
    pub fn decide(
        &mut self,
        service: &str,
        check: &str,
        transition: &Transition,
        new_correlation_id: impl FnOnce() -> String,
    ) -> Option<Decision> {
        let ep = self.services.entry(service.to_owned()).or_default();
        let (event_type, severity, reason) = match transition {
            Transition::Unhealthy { status } => {
                let first = ep.unhealthy.is_empty();
                if first {
                    ep.correlation_id = new_correlation_id();
                }
                ep.unhealthy.insert(check.to_owned());
                if first {
                    (UNHEALTHY, severity(*status), "unhealthy")
                } else {
                    (FAILED, severity(*status), "another_check_unhealthy")
                }
            }
            Transition::StillUnhealthy { status, why } => {
                if ep.correlation_id.is_empty() {
                    ep.correlation_id = new_correlation_id();
                }
                ep.unhealthy.insert(check.to_owned());
                (FAILED, severity(*status), why.as_str())
            }
            Transition::Recovered => {
                ep.unhealthy.remove(check);
                if !ep.unhealthy.is_empty() {
                    // The service is still unhealthy through another check.
                    return None;
                }
                let ep = self.services.remove(service).unwrap_or_default();
                return Some(Decision {
                    event_type: RECOVERED,
                    severity: Severity::Info,
                    reason: "recovered",
                    correlation_id: ep.correlation_id,
                    unhealthy_checks: Vec::new(),
                });
            }
        };
        Some(Decision {
            event_type,
            severity,
            reason,
            correlation_id: ep.correlation_id.clone(),
            unhealthy_checks: ep.unhealthy.iter().cloned().collect(),
        })
    }
}

/// The event for a decision: payload with the check, its kind and target, the probe's output
/// (capped), latency, consecutive failures and the episode's timing.
pub fn build(
    def: &CheckDef,
    decision: &Decision,
    result: &ProbeResult,
    machine: &Machine,
    episode_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> NewEvent {
    let mut p = Map::new();
    p.insert("check".into(), json!(def.name));
    p.insert("kind".into(), json!(def.probe.kind()));
    p.insert("target".into(), json!(def.probe.target()));
    p.insert("status".into(), json!(result.status.as_str()));
    p.insert("output".into(), json!(cap(&result.output, OUTPUT_CAP)));
    p.insert("latency_ms".into(), json!(result.latency_ms));
    p.insert(
        "consecutive_failures".into(),
        json!(machine.consecutive_failures()),
    );
    if let Some(ep) = machine.episode() {
        p.insert("failures".into(), json!(ep.failures));
    }
    p.insert("fall".into(), json!(def.fall));
    p.insert("rise".into(), json!(def.rise));
    p.insert("reason".into(), json!(decision.reason));
    p.insert("unhealthy_checks".into(), json!(decision.unhealthy_checks));
    if let Some(since) = episode_since {
        p.insert(
            "unhealthy_since".into(),
            json!(sync::event::format_timestamp(since)),
        );
        if decision.event_type == RECOVERED {
            let down = (now - since).num_milliseconds().max(0);
            p.insert("down_for_ms".into(), json!(down));
        }
    }
    NewEvent::new(decision.event_type, decision.severity, SOURCE)
        .service(&def.service)
        .correlation_id(&decision.correlation_id)
        .payload(p)
}

/// What the latest check event of a service says about it after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    pub service: String,
    pub correlation_id: String,
    pub unhealthy_checks: Vec<String>,
    pub since: DateTime<Utc>,
    pub status: Status,
}

/// Reads a stored event (the latest of its service from this node and [`SOURCE`]); `None`
/// when it leaves the service healthy.
pub fn restore_from(doc: &Value) -> Option<Restored> {
    let kind = doc["type"].as_str()?;
    if kind == RECOVERED || !matches!(kind, UNHEALTHY | FAILED) {
        return None;
    }
    let payload = &doc["payload"];
    let unhealthy_checks: Vec<String> = payload["unhealthy_checks"]
        .as_array()?
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    let time = |v: &Value| {
        v.as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let since = time(&payload["unhealthy_since"]).or_else(|| time(&doc["timestamp"]))?;
    Some(Restored {
        service: doc["service"].as_str()?.to_owned(),
        correlation_id: doc["correlation_id"].as_str().unwrap_or("").to_owned(),
        unhealthy_checks,
        since,
        status: match payload["status"].as_str() {
            Some("warning") => Status::Warning,
            _ => Status::Critical,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::machine::Repeat;

    fn id(n: u32) -> impl FnOnce() -> String {
        move || format!("hc-{n}")
    }

    const DOWN: Transition = Transition::Unhealthy {
        status: Status::Critical,
    };

    #[test]
    fn one_check_writes_unhealthy_then_recovered_with_one_correlation_id() {
        let mut book = ServiceBook::default();
        let d = book.decide("web", "web-http", &DOWN, id(1)).unwrap();
        assert_eq!(
            (d.event_type, d.severity, d.reason),
            (UNHEALTHY, Severity::Error, "unhealthy")
        );
        assert_eq!(d.unhealthy_checks, ["web-http"]);
        let r = Transition::StillUnhealthy {
            status: Status::Critical,
            why: Repeat::Reminder,
        };
        let d = book.decide("web", "web-http", &r, id(2)).unwrap();
        assert_eq!((d.event_type, d.reason), (FAILED, "still_failing"));
        assert_eq!(d.correlation_id, "hc-1");
        let d = book
            .decide("web", "web-http", &Transition::Recovered, id(3))
            .unwrap();
        assert_eq!((d.event_type, d.severity), (RECOVERED, Severity::Info));
        assert_eq!(d.correlation_id, "hc-1");
    }

    #[test]
    fn a_warning_is_a_warning() {
        let mut book = ServiceBook::default();
        let warn = Transition::Unhealthy {
            status: Status::Warning,
        };
        let d = book.decide("db", "db-cmd", &warn, id(1)).unwrap();
        assert_eq!(d.severity, Severity::Warning);
    }

    #[test]
    fn the_service_recovers_when_its_last_unhealthy_check_does() {
        let mut book = ServiceBook::default();
        book.decide("db", "db-tcp", &DOWN, id(1)).unwrap();
        let d = book.decide("db", "db-query", &DOWN, id(2)).unwrap();
        assert_eq!(
            (d.event_type, d.reason),
            (FAILED, "another_check_unhealthy")
        );
        assert_eq!(d.correlation_id, "hc-1");
        assert_eq!(d.unhealthy_checks, ["db-query", "db-tcp"]);
        assert_eq!(
            book.decide("db", "db-tcp", &Transition::Recovered, id(3)),
            None
        );
        let d = book
            .decide("db", "db-query", &Transition::Recovered, id(4))
            .unwrap();
        assert_eq!(d.event_type, RECOVERED);
        // The next episode gets a new id.
        let d = book.decide("db", "db-tcp", &DOWN, id(5)).unwrap();
        assert_eq!(
            (d.event_type, d.correlation_id.as_str()),
            (UNHEALTHY, "hc-5")
        );
    }

    #[test]
    fn restored_services_recover_without_a_new_unhealthy_event() {
        let doc = json!({
            "type": "healthcheck_failed", "service": "web", "correlation_id": "hc-9",
            "timestamp": "2026-05-12T12:06:00Z",
            "payload": {"unhealthy_checks": ["web-http"], "status": "warning",
                        "unhealthy_since": "2026-05-12T12:05:00Z"}
        });
        let r = restore_from(&doc).unwrap();
        assert_eq!(r.unhealthy_checks, ["web-http"]);
        assert_eq!(r.status, Status::Warning);
        assert_eq!(r.since.to_rfc3339(), "2026-05-12T12:05:00+00:00");
        let mut book = ServiceBook::default();
        book.restore(&r.service, "web-http", &r.correlation_id);
        let d = book
            .decide("web", "web-http", &Transition::Recovered, id(1))
            .unwrap();
        assert_eq!(
            (d.event_type, d.correlation_id.as_str()),
            (RECOVERED, "hc-9")
        );
        let healthy = json!({"type": "service_recovered", "service": "web", "payload": {}});
        assert_eq!(restore_from(&healthy), None);
    }
}
