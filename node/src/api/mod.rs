//! The agent's HTTP API (loopback by default). Reads are open to local clients; writes (added
//! by later features) need the bearer token in `<data>/api-token`.

pub mod alerts;
pub mod containers;
pub mod digest;
pub mod digest_schedule;
pub mod host;
pub mod metrics;
pub mod runs;
pub mod score;
pub mod status;
pub mod web;

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
    pub peer: Option<Arc<crate::drivers::mesh::PeerRuntime>>,
    pub sync: Option<Arc<crate::drivers::sync::SyncDriver>>,
    pub world: Option<Arc<crate::drivers::world::WorldRuntime>>,
    /// Bearer token required by write requests.
    pub token: Option<String>,
    /// The latest host sample (None when the probes do not run).
    pub host: Option<crate::drivers::probes::LatestSample>,
    /// Admission floors from the settings.
    pub floors: crate::admit::Floors,
    /// Health checks from `[[check]]` tables.
    pub checks: Option<Arc<crate::checks::Checks>>,
    /// External workers' heartbeats.
    pub workers: Option<Arc<crate::drivers::workers::Workers>>,
    /// The event bus: newly stored events for the SSE streams of the web page.
    pub events: Option<Arc<crate::drivers::bus::EventBus>>,
    /// Turns true when the agent begins to stop: endless responses (the event stream) end then,
    /// or the graceful shutdown would wait for them forever.
    pub stopping: Option<tokio::sync::watch::Receiver<bool>>,
    /// The alerting driver (None in commands that run without an agent).
    pub alerting: Option<Arc<crate::drivers::alerting::AlertingDriver>>,
    /// Host names requests may name besides IP literals, `localhost` and the node's name.
    pub allowed_hosts: Vec<String>,
    /// Reads need the token too.
    pub read_token: bool,
    /// The seed's `homelab_*` run metrics folded so far (`api::metrics::runs`).
    pub run_metrics: std::sync::Mutex<crate::runs::metrics::RunMetrics>,
    /// Containers `[remediation] containers` opts in to restarts by name.
    pub remediation_containers: Vec<String>,
}

/// Whether a request's `Host` names this agent: an IP literal (what a browser sends for an
/// address typed in), `localhost`, the node's bare name or a configured name (not the node's
/// name under any domain: `nas1.evil.example` is the attacker's to point anywhere). Anything else is a page elsewhere reaching us through DNS rebinding.
pub(crate) fn host_allowed(state: &ApiState, host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [::1]:7371
        return rest
            .split(']')
            .next()
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host.as_str(), |(name, _)| name)
    };
    let node = state.node.to_ascii_lowercase();
    name.parse::<std::net::IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || name == node
        || state.allowed_hosts.iter().any(|h| *h == name)
}

/// Refuses requests for another host (DNS rebinding) and, with `read_token`, reads from other
/// hosts without the token.
async fn guard(
    State(state): State<Arc<ApiState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    match host {
        Some(h) if host_allowed(&state, &h) => {}
        Some(h) => {
            return ApiError(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this agent does not answer for host {h:?}: use its IP address, localhost or its node name, or add the name to api_allowed_hosts"
                ),
            )
            .into_response();
        }
        None => {
            return ApiError(StatusCode::BAD_REQUEST, "no Host header".into()).into_response();
        }
    }
    let is_read = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    // Local clients (the CLI, a local Prometheus) read without it, as on a loopback API.
    let remote = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_none_or(|c| !c.0.ip().is_loopback());
    if state.read_token
        && is_read
        && remote
        && request.uri().path() != "/healthz"
        && let Err(e) = authorize(&state, request.headers())
    {
        return e.into_response();
    }
    next.run(request).await
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(crate::api::web::index))
        .route("/fragment/status", get(crate::api::web::fragment))
        .route("/v1/events/stream", get(crate::api::web::stream))
        .route("/healthz", get(healthz))
        .route("/v1/events", get(events))
        .route("/v1/nodes", get(nodes))
        .route("/v1/status", get(crate::api::status::status))
        .route("/v1/sync", get(sync_status))
        .route("/v1/world", get(world_all))
        .route("/v1/services", get(|s| world_view(s, "services")))
        .route("/v1/incidents", get(|s| world_view(s, "incidents")))
        .route("/v1/deployments", get(|s| world_view(s, "deployments")))
        .route("/v1/sync/now", axum::routing::post(sync_now))
        .route("/v1/host", get(crate::api::host::host))
        .route("/v1/containers", get(crate::api::containers::containers))
        .route("/v1/admit", get(crate::api::host::admit))
        .route("/v1/checks", get(checks_list))
        .route(
            "/v1/checks/{name}/{verb}",
            axum::routing::post(check_report),
        )
        .route("/v1/heartbeat", axum::routing::post(heartbeat))
        .route("/v1/workers", get(workers_list))
        .route("/v1/runs/{id}/log", get(crate::api::runs::log))
        .route("/metrics", get(crate::api::metrics::handler))
        .route("/v1/alerts", get(crate::api::alerts::alerts))
        .route("/v1/score", get(crate::api::score::handler))
        .route(
            "/v1/digest",
            get(crate::api::digest::handler).post(crate::api::digest::send),
        )
        .route(
            "/v1/silences",
            get(crate::api::alerts::silences).post(crate::api::alerts::add_silence),
        )
        .route(
            "/v1/expectations",
            get(crate::api::alerts::expectations).post(crate::api::alerts::add_expectation),
        )
        .route(
            "/v1/expectations/{name}",
            axum::routing::delete(crate::api::alerts::clear_expectation),
        )
        .route(
            "/v1/silences/{id}/clear",
            axum::routing::post(crate::api::alerts::clear_silence),
        )
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// A JSON error body with a status: every API error looks like `{"error": "..."}`.
pub struct ApiError(pub StatusCode, pub String);

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

/// Every node of the mesh as this node sees it, itself first.
pub(crate) async fn node_list(state: &ApiState) -> (Vec<Value>, Value) {
    let Some(peer) = &state.peer else {
        return (
            vec![json!({"node": state.node, "self": true, "liveness": "alive"})],
            json!({}),
        );
    };
    let view = peer.mesh.view().await;
    let info =
        |kv: &std::collections::BTreeMap<String, String>| mesh::keys::NodeInfo::from_key_values(kv);
    let me = info(&view.key_values);
    let mut nodes = vec![json!({
        "node": view.node,
        "self": true,
        "liveness": "alive",
        "last_heartbeat_age_ms": 0,
        "role": me.role,
        "version": me.version,
        "os": me.os,
        "backend": me.backend,
        "transient": me.transient,
        "alerter_priority": me.alerter_priority,
        "gossip_addr": me.gossip_addr,
        "api_addr": me.api_addr,
    })];
    for p in &view.peers {
        let i = info(&p.key_values);
        nodes.push(json!({
            "node": p.node,
            "self": false,
            "liveness": p.liveness,
            "last_heartbeat_age_ms": p.last_heartbeat_age_ms,
            "in_state_ms": p.since_ms,
            "generation": p.generation,
            "role": i.role,
            "version": i.version,
            "os": i.os,
            "backend": i.backend,
            "transient": i.transient,
            "alerter_priority": i.alerter_priority,
            "gossip_addr": if i.gossip_addr.is_empty() { p.gossip_addr.to_string() } else { i.gossip_addr },
            "api_addr": i.api_addr,
        }));
    }
    let mut rejections = view.transport.rejections.clone();
    for (k, v) in peer.tls_rejections.snapshot() {
        if v > 0 {
            *rejections.entry(k).or_default() += v;
        }
    }
    let transport = json!({
        "bytes_sent": view.transport.bytes_sent,
        "bytes_received": view.transport.bytes_received,
        "messages_sent": view.transport.messages_sent,
        "messages_received": view.transport.messages_received,
        "messages_dropped": view.transport.messages_dropped,
        "rejections": rejections,
        "revoked_certificates": peer.revocations.len(),
        "mesh_id": view.mesh_id,
        "mesh": peer.mesh_name,
    });
    (nodes, transport)
}

async fn nodes(State(state): State<Arc<ApiState>>) -> Json<Vec<Value>> {
    Json(node_list(&state).await.0)
}

/// Compares two secrets in time that depends only on their lengths, so a caller cannot find
/// the token byte by byte from response times.
pub(crate) fn same_secret(want: &[u8], got: &[u8]) -> bool {
    if want.len() != got.len() {
        return false;
    }
    let diff = want
        .iter()
        .zip(got)
        .fold(0u8, |acc, (a, b)| acc | std::hint::black_box(a ^ b));
    std::hint::black_box(diff) == 0
}

/// Checks `Authorization: Bearer <token>` against the agent's token.
pub(crate) fn authorize(state: &ApiState, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match (&state.token, given) {
        (Some(want), Some(got)) if same_secret(want.as_bytes(), got.as_bytes()) => Ok(()),
        _ => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "this request changes the agent: send `Authorization: Bearer <token>` with the token from <data>/api-token".into(),
        )),
    }
}

async fn sync_status(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    match &state.sync {
        Some(sync) => Ok(Json(sync.status().await)),
        None => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "sync is not running".into(),
        )),
    }
}

async fn sync_now(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let Some(sync) = &state.sync else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "sync is not running".into(),
        ));
    };
    let peer = params.get("peer").map(String::as_str);
    sync.request_now(peer);
    Ok(Json(json!({"requested": true, "peer": peer})))
}

fn views(state: &ApiState) -> Result<sync::world::Views, ApiError> {
    state.world.as_ref().and_then(|w| w.views()).ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the world state is not ready yet".into(),
        )
    })
}

async fn world_all(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let v = views(&state)?;
    Ok(Json(json!({
        "nodes": v.nodes,
        "services": v.services,
        "deployments": v.deployments,
        "incidents": v.incidents,
        "runtime_summary": v.runtime_summary,
    })))
}

async fn world_view(
    State(state): State<Arc<ApiState>>,
    which: &'static str,
) -> Result<Json<Value>, ApiError> {
    let v = views(&state)?;
    Ok(Json(match which {
        "services" => v.services,
        "incidents" => v.incidents,
        _ => v.deployments,
    }))
}

async fn checks_list(State(state): State<Arc<ApiState>>) -> Json<Value> {
    Json(Value::Array(
        state
            .checks
            .as_ref()
            .map(|c| c.snapshot())
            .unwrap_or_default(),
    ))
}

/// `POST /v1/checks/{name}/pass|warn|fail` with an optional body `{"note": "..."}`: a report
/// for a ttl check. Answers with the check's state after it.
async fn check_report(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    axum::extract::Path((name, verb)): axum::extract::Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    use crate::checks::machine::Status;
    authorize(&state, &headers)?;
    let status = match verb.as_str() {
        "pass" => Status::Ok,
        "warn" => Status::Warning,
        "fail" => Status::Critical,
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("{other:?} is not a report; use /v1/checks/{name}/pass, /warn or /fail"),
            ));
        }
    };
    let note = if body.iter().all(u8::is_ascii_whitespace) {
        String::new()
    } else {
        let doc: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("the body is not valid JSON ({e}); send {{\"note\": \"...\"}} or nothing"),
            )
        })?;
        match &doc["note"] {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("`note` must be a string, not {other}"),
                ));
            }
        }
    };
    let Some(checks) = &state.checks else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no check named {name:?}: this agent has no checks"),
        ));
    };
    use crate::checks::ReportError;
    checks
        .report(&name, status, note)
        .await
        .map(Json)
        .map_err(|e| match e {
            ReportError::NoSuchCheck => ApiError(
                StatusCode::NOT_FOUND,
                format!("no check named {name:?}; `labmesh check list` shows the checks"),
            ),
            ReportError::NotTtl(kind) => ApiError(
                StatusCode::BAD_REQUEST,
                format!("{name:?} is a {kind} check: only ttl checks take reports"),
            ),
            ReportError::Stopped => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the checks are stopping".into(),
            ),
        })
}

/// `POST /v1/heartbeat`: `{worker_id, health_status, metrics?, interval_s?}`.
async fn heartbeat(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, Response> {
    authorize(&state, &headers).map_err(IntoResponse::into_response)?;
    let Some(workers) = &state.workers else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "heartbeats are not accepted here".into(),
        )
        .into_response());
    };
    let hb = crate::drivers::workers::parse_heartbeat(&body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": e.message, "field": e.field })),
        )
            .into_response()
    })?;
    Ok(Json(workers.heartbeat(hb).await))
}

async fn workers_list(State(state): State<Arc<ApiState>>) -> Json<Value> {
    Json(Value::Array(
        state.workers.as_ref().map(|w| w.list()).unwrap_or_default(),
    ))
}

#[cfg(test)]
mod secret_tests {
    use super::same_secret;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_secret(b"abc123", b"abc123"));
        assert!(!same_secret(b"abc123", b"abc124"));
        assert!(!same_secret(b"abc123", b"abc12"));
        assert!(!same_secret(b"", b"x"));
    }
}
