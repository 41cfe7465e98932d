//! The weekly digest of the mesh (`labmesh digest --now`, `GET /v1/digest`): the last 7 days'
//! builds, tests and cleanups from the event store, incidents from the world view, and each
//! node's current gossiped figures and score card, written by [`alerting::digest`].

use std::sync::Arc;

use alerting::digest::{Digest, DigestInput, NodeWeek, RunKind, run_record};
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sync::{Event, EventStore, Query};

use crate::api::ApiState;
use crate::probes::summary::Summary;

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
        .filter_map(|entry| {
            let bytes = store.read_bytes(entry).ok()?;
            Event::from_file_bytes(&bytes, store.config().max_event_bytes, Some(entry.id)).ok()
        })
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
    let gossip = crate::api_status::gossip_keys(state).await;
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
    let cleanups = events(&store, since, &crate::score_card::MAINTENANCE_TYPES);
    let mut names: Vec<String> = gossip.keys().cloned().collect();
    if !names.contains(&state.node) {
        names.push(state.node.clone());
    }
    names.sort();
    let nodes = names
        .iter()
        .map(|n| {
            let summary = gossip
                .get(n)
                .and_then(|kv| kv.get(mesh::keys::SUMMARY))
                .and_then(|t| Summary::parse(t));
            let s = summary.as_ref();
            let m = crate::score_card::maintenance(&store, n);
            let unhealthy = services
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|m| m.values())
                .filter(|v| v["node"] == n.as_str() && v["status"] == "unhealthy")
                .filter_map(|v| v["service"].as_str().map(str::to_owned))
                .collect();
            NodeWeek {
                score: crate::score_card::input(n, s, services, m),
                steal_avg_percent: s.and_then(|s| s.steal),
                disks: s
                    .and_then(|s| s.disk)
                    .map(|d| vec![("fullest".to_owned(), d)])
                    .unwrap_or_default(),
                freed_bytes: cleanups
                    .iter()
                    .filter(|e| e.node == *n)
                    .filter_map(|e| e.payload.get("freed_bytes").and_then(Value::as_u64))
                    .sum(),
                mem_available_avg_bytes: s.and_then(|s| s.mem_avail),
                swap_peak_bytes: s.and_then(|s| s.swap),
                unhealthy_containers: unhealthy,
            }
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

/// `GET /v1/digest`: `{"text", "top_action", "cards"}`.
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
}
