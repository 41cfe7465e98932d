//! The agent's HTTP API (loopback by default). Reads are open to local clients; writes (added
//! by later features) need the bearer token in `<data>/api-token`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Query as UrlQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use sync::{EventStore, Order, Query};

pub struct ApiState {
    pub store: Arc<EventStore>,
    pub node: String,
    pub started: Instant,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/events", get(events))
        .with_state(state)
}

/// A JSON error body with a status: every API error looks like `{"error": "..."}`.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

async fn healthz(State(state): State<Arc<ApiState>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "node": state.node,
        "version": env!("CARGO_PKG_VERSION"),
        "events": state.store.len(),
        "uptime_s": state.started.elapsed().as_secs(),
    }))
}

fn list(params: &HashMap<String, String>, key: &str) -> Vec<String> {
    params
        .get(key)
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /v1/events?since=&until=&node=a,b&type=&severity=&min_severity=&service=&source=&correlation_id=&limit=&order=`
async fn events(
    State(state): State<Arc<ApiState>>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let bad = |msg: String| ApiError(StatusCode::BAD_REQUEST, msg);
    let now = chrono::Utc::now();
    let time = |key: &str| {
        params
            .get(key)
            .map(|t| crate::timespec::parse(key, t, now).map_err(|e| bad(e.0)))
            .transpose()
    };
    let sev = |s: &str| s.parse().map_err(|e: sync::EventError| bad(e.to_string()));
    let query = Query {
        since: time("since")?,
        until: time("until")?,
        nodes: list(&params, "node"),
        types: list(&params, "type"),
        severities: list(&params, "severity")
            .iter()
            .map(|s| sev(s))
            .collect::<Result<_, _>>()?,
        min_severity: params.get("min_severity").map(|s| sev(s)).transpose()?,
        services: list(&params, "service"),
        sources: list(&params, "source"),
        correlation_id: params.get("correlation_id").cloned(),
        limit: params
            .get("limit")
            .map(|l| {
                l.parse()
                    .map_err(|_| bad(format!("limit {l:?} is not a number")))
            })
            .transpose()?,
        order: match params.get("order").map(String::as_str) {
            None | Some("asc") => Order::Asc,
            Some("desc") => Order::Desc,
            Some(o) => return Err(bad(format!("order {o:?}: use asc or desc"))),
        },
    };
    let store = state.store.clone();
    let docs = tokio::task::spawn_blocking(move || {
        store
            .query(&query)
            .iter()
            .filter_map(|e| store.read_bytes(e).ok())
            .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(docs))
}
