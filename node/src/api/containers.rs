//! `GET /v1/containers`: this node's Docker containers from the latest host sample, each with
//! whether the watchdog may restart it and its last remediation (from this node's own
//! `remediation_*` events), for `labmesh containers`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use sync::Query;

use crate::api::{ApiError, ApiState};
use crate::drivers::remediation::{COMPLETED, FAILED, STARTED};

pub async fn containers(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let Some(rx) = &state.host else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the host probes are not running".into(),
        ));
    };
    let Some(sample) = rx.borrow().clone() else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no host sample yet (the first is taken 200 ms after the agent starts)".into(),
        ));
    };
    let (store, node) = (state.store.clone(), state.node.clone());
    let last = tokio::task::spawn_blocking(move || last_remediations(&store, &node))
        .await
        .unwrap_or_default();
    let docker = &sample.docker;
    let list: Vec<Value> = docker.ok().map_or_else(Vec::new, |d| {
        d.containers
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
                v["restart_on_unhealthy"] =
                    json!(c.restart_on_unhealthy || state.remediation_containers.contains(&c.name));
                v["last_remediation"] = last.get(&c.name).cloned().unwrap_or(Value::Null);
                v
            })
            .collect()
    });
    Ok(Json(json!({
        "node": state.node,
        "taken_at": sample.taken_at,
        "docker": {
            "status": docker.status(),
            "reason": docker.reason(),
            "host": docker.ok().map(|d| d.host.clone()),
        },
        "containers": list,
    })))
}

/// Per container, the newest remediation: when, its outcome (`started` while it runs), the
/// failing streak that caused it and the error of a failed one.
fn last_remediations(store: &sync::EventStore, node: &str) -> BTreeMap<String, Value> {
    let query = Query {
        nodes: vec![node.to_owned()],
        types: vec![STARTED.into(), COMPLETED.into(), FAILED.into()],
        ..Query::default()
    };
    let mut out: BTreeMap<String, (i64, Value)> = BTreeMap::new();
    for entry in store.query(&query) {
        let Ok(event) = store.read_event(&entry) else {
            continue;
        };
        let outcome = match event.event_type.as_str() {
            COMPLETED => "completed",
            FAILED => "failed",
            _ => "started",
        };
        let newer = out
            .get(&event.service)
            .is_none_or(|(millis, _)| entry.millis >= *millis);
        if newer {
            out.insert(
                event.service.clone(),
                (
                    entry.millis,
                    json!({
                        "at": event.timestamp.to_rfc3339(),
                        "outcome": outcome,
                        "failing_streak": event.payload.get("failing_streak"),
                        "error": event.payload.get("error"),
                        "id": event.correlation_id,
                    }),
                ),
            );
        }
    }
    out.into_iter().map(|(k, (_, v))| (k, v)).collect()
}
