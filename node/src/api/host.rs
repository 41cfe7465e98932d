//! `GET /v1/host` (the latest host sample) and `GET /v1/admit` (resource admission, here or
//! mesh-wide).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query as UrlQuery, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::admit::{self, Request, gather};
use crate::api::{ApiError, ApiState};
use crate::config::{AdmitSection, resolve_floors};
use crate::probes::Probe;

fn unavailable(msg: &str) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, msg.to_owned())
}

/// The latest full sample, as `labmesh probe --json` prints it.
pub async fn host(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let Some(rx) = &state.host else {
        return Err(unavailable("the host probes are not running"));
    };
    let latest = rx.borrow().clone();
    match latest {
        Some(sample) => serde_json::to_value(&*sample)
            .map(Json)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        None => Err(unavailable(
            "no host sample yet (the first is taken 200 ms after the agent starts)",
        )),
    }
}

/// `GET /v1/admit?mem=8G&vram=6G&disk=20G&path=/srv&anywhere=true&min_free_mem=1G...`
pub async fn admit(
    State(state): State<Arc<ApiState>>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let bad = |msg: String| ApiError(StatusCode::BAD_REQUEST, msg);
    let size = |key: &str| {
        params
            .get(key)
            .map(|t| admit::parse_size(t).map_err(|e| bad(format!("{key}: {e}"))))
            .transpose()
    };
    let req = Request {
        mem: size("mem")?,
        vram: size("vram")?,
        disk: size("disk")?,
    };
    if req.is_empty() {
        return Err(bad(
            "give at least one of mem, vram or disk (e.g. /v1/admit?mem=8G)".into(),
        ));
    }
    let overrides = AdmitSection {
        min_free_mem: params.get("min_free_mem").cloned(),
        min_free_vram: params.get("min_free_vram").cloned(),
        min_free_disk: params.get("min_free_disk").cloned(),
    };
    let floors = resolve_floors(None, &overrides, state.floors, &|k| k.replace("admit.", ""))
        .map_err(|e| bad(e.0))?;
    let anywhere = params
        .get("anywhere")
        .is_some_and(|v| matches!(v.as_str(), "" | "1" | "true" | "yes"));
    if anywhere {
        let Some(peer) = &state.peer else {
            return Err(unavailable("the mesh is not running"));
        };
        let view = peer.mesh.view().await;
        let now_s = chrono::Utc::now().timestamp();
        let candidates = gather::candidates(&view.node, &view.key_values, &view.peers, now_s);
        let ranked = admit::rank(&candidates, &req, &floors);
        let best = ranked
            .iter()
            .find(|r| r.decision.admit)
            .map(|r| r.node.clone());
        return Ok(Json(json!({
            "anywhere": true,
            "asked": state.node,
            "admit": best.is_some(),
            "best": best,
            "floors": floors,
            "nodes": ranked,
        })));
    }
    let path = PathBuf::from(params.get("path").map_or("/", String::as_str));
    let gpu = match &state.host {
        Some(rx) => rx
            .borrow()
            .as_ref()
            .map(|s| s.gpu.clone())
            .unwrap_or_else(|| Probe::absent("no host sample yet (the agent just started)")),
        None => Probe::absent("the host probes are not running"),
    };
    let node = state.node.clone();
    let answer =
        tokio::task::spawn_blocking(move || gather::answer_here(&node, &req, &floors, &gpu, &path))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(answer))
}
