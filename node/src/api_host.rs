//! `GET /v1/host`: the latest host sample.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use crate::api::{ApiError, ApiState};

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
