//! The weekly digest of the mesh (`labmesh digest --now`, `GET /v1/digest`): the last 7 days'
//! builds, tests and cleanups from the event store, incidents from the world view, and each
//! node's week from its `host_sample` events (steal and RAM averages, swap peak, disk use now,
//! space freed), or its current gossiped figures while it has none; written by
//! [`alerting::digest`].

use std::sync::Arc;

use alerting::digest::{Digest, DigestInput, NodeWeek, RunKind, SampledWeek, run_record};
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sync::{Event, EventStore, Query};

use crate::api::ApiState;
use mesh::summary::Summary;

const WEEK: Duration = Duration::days(7);

fn events(store: &EventStore, since: DateTime<Utc>, types: &[&str]) -> Vec<Event> {
    let query = Query {
        since: Some(since),
        types: types.iter().map(|t| (*t).to_owned()).collect(),
        ..Default::default()
    };
    store
        .query(&query)
        .iter()
        .filter_map(|entry| store.read_event(entry).ok())
        .collect()
}

fn at(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Incidents started and resolved since `since`, from the incidents view.
fn incidents(view: &Value, since: DateTime<Utc>) -> (u32, u32) {
    let all: Vec<&Value> = view
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .collect();
    let count = |key: &str| {
        all.iter()
            .filter(|i| at(&i[key]).is_some_and(|t| t >= since))
            .count() as u32
    };
    (count("started_at"), count("resolved_at"))
}

/// Gathers the week ending `now` and writes the digest.
pub async fn build(state: &ApiState, now: DateTime<Utc>) -> Digest {
    let since = now - WEEK;
    let gossip = crate::api::status::gossip_keys(state).await;
    let views = state.world.as_ref().and_then(|w| w.views());
    let services = views.as_ref().map(|v| &v.services);
    let store = state.store.clone();
    let runs = events(
        &store,
        since,
        &[
            "build_completed",
            "build_failed",
            "test_completed",
            "test_failed",
        ],
    );
    let cleanups = events(&store, since, &crate::score::MAINTENANCE_TYPES);
    let mut samples: std::collections::BTreeMap<String, Vec<alerting::digest::HostSample>> =
        Default::default();
    for s in events(&store, since, &[alerting::digest::HOST_SAMPLE])
        .iter()
        .filter_map(alerting::digest::host_sample)
    {
        samples.entry(s.node.clone()).or_default().push(s);
    }
    // A node that sampled this week but is gone from the gossip now still had a week.
    let mut names: Vec<String> = gossip.keys().chain(samples.keys()).cloned().collect();
    names.push(state.node.clone());
    names.sort();
    names.dedup();
    let nodes = names
        .iter()
        .map(|n| {
            let summary = gossip.get(n).and_then(Summary::from_key_values);
            let s = summary.as_ref();
            let m = crate::score::maintenance(&store, n);
            let unhealthy = services
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|m| m.values())
                .filter(|v| v["node"] == n.as_str() && v["status"] == "unhealthy")
                .filter_map(|v| v["service"].as_str().map(str::to_owned))
                .collect();
            let cleaned: u64 = cleanups
                .iter()
                .filter(|e| e.node == *n)
                .filter_map(|e| e.payload.get("freed_bytes").and_then(Value::as_u64))
                .sum();
            let week = samples
                .get(n)
                .and_then(|v| alerting::digest::sampled_week(v));
            node_week(
                crate::score::input(n, s, crate::score::unhealthy_services(n, services), m),
                s,
                week,
                cleaned,
                unhealthy,
            )
        })
        .collect();
    let (mut builds, mut tests) = (Vec::new(), Vec::new());
    for (kind, record) in runs.iter().filter_map(run_record) {
        match kind {
            RunKind::Build => builds.push(record),
            RunKind::Test => tests.push(record),
        }
    }
    let (opened, resolved) = views
        .as_ref()
        .map(|v| incidents(&v.incidents, since))
        .unwrap_or_default();
    alerting::digest::weekly_digest(&DigestInput {
        week_ending: now.with_timezone(&chrono::Local).date_naive(),
        generated_at: now,
        nodes,
        builds,
        tests,
        incidents_opened: opened,
        incidents_resolved: resolved,
    })
}

/// One node's block: the week's samples where there are any, else the current summary.
/// Space freed is the larger of what cleanups reported and what the samples saw disappear
/// (a cleanup's space shows in both; adding them would count it twice).
fn node_week(
    mut score: alerting::score::ScoreInput,
    now: Option<&Summary>,
    week: Option<SampledWeek>,
    cleaned: u64,
    unhealthy_containers: Vec<String>,
) -> NodeWeek {
    let current_disks = now
        .and_then(|s| s.disk)
        .map(|d| vec![("fullest".to_owned(), d)])
        .unwrap_or_default();
    let Some(w) = week else {
        return NodeWeek {
            score,
            steal_avg_percent: now.and_then(|s| s.steal),
            disks: current_disks,
            freed_bytes: cleaned,
            mem_available_avg_bytes: now.and_then(|s| s.mem_avail),
            swap_peak_bytes: now.and_then(|s| s.swap),
            unhealthy_containers,
            samples: 0,
        };
    };
    // The score card's steal and memory dimensions judge the week, not the last minute.
    score.cpu_steal_percent = w.steal_avg_percent.or(score.cpu_steal_percent);
    score.mem_available_bytes = w.mem_available_avg_bytes.or(score.mem_available_bytes);
    NodeWeek {
        score,
        steal_avg_percent: w.steal_avg_percent.or(now.and_then(|s| s.steal)),
        disks: if w.disks_now.is_empty() {
            current_disks
        } else {
            w.disks_now
        },
        freed_bytes: cleaned.max(w.freed_bytes),
        mem_available_avg_bytes: w.mem_available_avg_bytes.or(now.and_then(|s| s.mem_avail)),
        swap_peak_bytes: w.swap_peak_bytes.or(now.and_then(|s| s.swap)),
        unhealthy_containers,
        samples: w.samples,
    }
}

/// `GET /v1/digest`: `{"text", "top_action", "cards", "nodes"}`.
pub async fn handler(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let digest = build(&state, Utc::now()).await;
    Json(json!(digest))
}

/// Token-protected `POST /v1/digest` `{"receiver": "NAME"}`: sends the digest now.
pub async fn send(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    Json(doc): Json<Value>,
) -> Result<Json<Value>, crate::api::ApiError> {
    use axum::http::StatusCode;
    crate::api::authorize(&state, &headers)?;
    let bad = |m: String| crate::api::ApiError(StatusCode::BAD_REQUEST, m);
    let receiver = doc["receiver"]
        .as_str()
        .ok_or_else(|| bad("`receiver` is required".into()))?;
    let driver = state.alerting.as_deref().ok_or_else(|| {
        crate::api::ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "alerting is not running".into(),
        )
    })?;
    let digest = build(&state, Utc::now()).await;
    let title = digest.text.lines().next().unwrap_or("Weekly mesh digest");
    driver
        .send_text(receiver, title, &digest.text)
        .await
        .map_err(|e| match e {
            Ok(m) => bad(m),
            Err(m) => crate::api::ApiError(StatusCode::BAD_GATEWAY, m),
        })?;
    Ok(Json(json!({ "sent": receiver, "digest": digest })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incidents_of_the_week_are_counted() {
        let now = Utc::now();
        let old = (now - Duration::days(9)).to_rfc3339();
        let new = (now - Duration::days(1)).to_rfc3339();
        let view = json!({
            "a": {"started_at": old, "resolved_at": new},
            "b": {"started_at": new, "resolved_at": null},
            "c": {"started_at": old, "resolved_at": old},
        });
        assert_eq!(incidents(&view, now - WEEK), (1, 1));
    }

    #[test]
    fn a_node_without_samples_shows_its_current_figures_and_samples_win_when_there_are() {
        let now = Summary {
            steal: Some(1.0),
            mem_avail: Some(100),
            swap: Some(7),
            disk: Some(42.0),
            ..Summary::default()
        };
        let score = crate::score::input(
            "vm1",
            Some(&now),
            None,
            alerting::score::Maintenance::Unknown,
        );
        let current = node_week(score.clone(), Some(&now), None, 5, Vec::new());
        assert_eq!(current.samples, 0);
        assert_eq!(current.steal_avg_percent, Some(1.0));
        assert_eq!(current.swap_peak_bytes, Some(7));
        assert_eq!(current.disks, [("fullest".to_owned(), 42.0)]);
        assert_eq!(current.freed_bytes, 5);
        let week = SampledWeek {
            samples: 3,
            steal_avg_percent: Some(9.0),
            mem_available_avg_bytes: Some(50),
            mem_available_avg_percent: None,
            swap_peak_bytes: Some(70),
            disks_now: vec![("/".into(), 60.0)],
            freed_bytes: 500,
        };
        let w = node_week(score, Some(&now), Some(week), 5, Vec::new());
        assert_eq!(w.samples, 3);
        assert_eq!(w.steal_avg_percent, Some(9.0));
        assert_eq!(
            w.score.cpu_steal_percent,
            Some(9.0),
            "the score judges the week"
        );
        assert_eq!(w.mem_available_avg_bytes, Some(50));
        assert_eq!(w.swap_peak_bytes, Some(70));
        assert_eq!(w.disks, [("/".to_owned(), 60.0)]);
        assert_eq!(
            w.freed_bytes, 500,
            "the larger of cleanups and sampled drops"
        );
    }
}
