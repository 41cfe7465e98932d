//! `GET /v1/score` (`labmesh status --score`): every node's score card, from [`crate::score`]
//! over its gossiped summary, its unhealthy services in the world view, and its last cleanup
//! (the newest `cleanup_done` or `maintenance_done` event it wrote).

use std::sync::Arc;

use alerting::score::ScoreCard;
use axum::Json;
use axum::extract::State;
use mesh::summary::Summary;
use serde_json::{Value, json};

use crate::api::ApiState;

/// Every node's card (gossip members, this node included), by name.
pub async fn cards(state: &ApiState) -> Vec<ScoreCard> {
    let gossip = crate::api::status::gossip_keys(state).await;
    let views = state.world.as_ref().and_then(|w| w.views());
    let services = views.as_ref().map(|v| &v.services);
    let now = chrono::Utc::now();
    let mut names: Vec<String> = gossip.keys().cloned().collect();
    if !names.contains(&state.node) {
        names.push(state.node.clone());
    }
    names.sort();
    names
        .iter()
        .map(|n| {
            let summary = gossip.get(n).and_then(Summary::from_key_values);
            let maintenance = crate::score::maintenance(&state.store, n);
            let unhealthy = crate::score::unhealthy_services(n, services);
            crate::score::card(n, summary.as_ref(), unhealthy, maintenance, now)
        })
        .collect()
}

/// `GET /v1/score`: `{"node": ..., "cards": [ScoreCard...]}`.
pub async fn handler(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let cards = cards(&state).await;
    Json(json!({ "node": state.node, "cards": cards }))
}
