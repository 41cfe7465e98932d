//! Alerting routes: `GET /v1/alerts`, `GET /v1/silences`, token-protected
//! `POST /v1/silences` and `POST /v1/silences/{id}/clear`, `GET /v1/expectations`, and
//! token-protected `POST /v1/expectations` and `DELETE /v1/expectations/{name}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::api::{ApiError, ApiState, authorize};

fn driver(state: &ApiState) -> Result<&crate::drivers::alerting::AlertingDriver, ApiError> {
    state.alerting.as_deref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "alerting is not running".into(),
        )
    })
}

/// Open alerts (pending and firing) as this node sees them, and who the alerter is.
pub async fn alerts(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let snap = driver(&state)?.snapshot();
    Ok(Json(json!({
        "alerter": snap.alerter,
        "role": snap.role,
        "alerts": snap.open,
    })))
}

pub async fn silences(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let snap = driver(&state)?.snapshot();
    Ok(Json(json!({ "silences": snap.silences })))
}

/// `{"matchers": {"key": "value", ...}, "duration": "2h", "comment": "...", "created_by": "..."}`
pub async fn add_silence(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    Json(doc): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let d = driver(&state)?;
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let matchers: alerting::util::Labels = doc["matchers"]
        .as_object()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("`matchers` must be a non-empty object of key: value".into()))?
        .iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|v| (k.clone(), v.to_owned()))
                .ok_or_else(|| bad(format!("matcher `{k}` must be a string")))
        })
        .collect::<Result<_, _>>()?;
    let duration = doc["duration"]
        .as_str()
        .ok_or_else(|| bad("`duration` is required, e.g. \"2h\"".into()))?;
    let for_ = crate::config::parse_duration(duration).map_err(bad)?;
    let for_ = chrono::Duration::from_std(for_).map_err(|e| bad(e.to_string()))?;
    let now = chrono::Utc::now();
    let silence = alerting::silence::Silence {
        id: uuid::Uuid::new_v4().to_string(),
        matchers,
        starts_at: now,
        ends_at: now + for_,
        comment: doc["comment"].as_str().unwrap_or_default().to_owned(),
        created_by: doc["created_by"]
            .as_str()
            .map_or_else(|| d.node().to_owned(), str::to_owned),
    };
    d.add_silence(&silence)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(json!({ "silence": silence })))
}

pub async fn clear_silence(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    driver(&state)?
        .clear_silence(&id)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(json!({ "cleared": id })))
}

/// Expectations declared at run time (`labmesh expect`), as this node knows them.
pub async fn expectations(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let snap = driver(&state)?.snapshot();
    Ok(Json(json!({ "expectations": snap.expectations })))
}

/// `{"name": "backup.sh", "every": "24h", "grace": "1h"}` (grace optional).
pub async fn add_expectation(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    Json(doc): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let name = doc["name"]
        .as_str()
        .ok_or_else(|| bad("`name` is required (the events' source)".into()))?;
    let every = doc["every"]
        .as_str()
        .ok_or_else(|| bad("`every` is required, e.g. \"24h\"".into()))?;
    let grace = doc["grace"].as_str();
    driver(&state)?
        .add_expectation(name, every, grace)
        .map_err(|e| match e {
            Ok(m) => bad(m),
            Err(m) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, m),
        })?;
    Ok(Json(json!({
        "expectation": { "name": name, "every": every, "grace": grace, "rule": format!("expect:{name}") }
    })))
}

/// Removes the expectation `name` (an `expectation_cleared` event); 404 when none has it.
pub async fn clear_expectation(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let found = driver(&state)?
        .clear_expectation(&name)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    if !found {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no expectation named {name:?}"),
        ));
    }
    Ok(Json(json!({
        "cleared": { "name": name, "rule": alerting::expectations::rule_name(&name) }
    })))
}
