//! The node score card (`labmesh status --score`, `GET /v1/score`, `labmesh_node_score_ratio`):
//! [`alerting::score`] over each node's gossiped summary, its unhealthy services in the world
//! view, and its last cleanup (the newest `cleanup_done` or `maintenance_done` event it wrote,
//! with `freed_bytes` in the payload).

use std::sync::Arc;

use alerting::score::{Maintenance, ScoreCard, ScoreInput};
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use sync::{Event, Order, Query};

use crate::api::ApiState;
use mesh::summary::Summary;

/// Event types that say a node's cleanup ran.
pub const MAINTENANCE_TYPES: [&str; 2] = ["cleanup_done", "maintenance_done"];

/// The score's inputs for `node`. `services` is the world's services view (`None` while it is
/// not ready: the services dimension is then unknown).
pub fn input(
    node: &str,
    summary: Option<&Summary>,
    services: Option<&Value>,
    maintenance: Maintenance,
) -> ScoreInput {
    let unhealthy = services.map(|v| {
        v.as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|s| s["node"] == node && s["status"] == "unhealthy")
            .count() as u32
    });
    ScoreInput {
        node: node.to_owned(),
        cpu_steal_percent: summary.and_then(|s| s.steal),
        mem_available_bytes: summary.and_then(|s| s.mem_avail),
        disk_used_percent: summary.and_then(|s| s.disk),
        unhealthy_services: unhealthy,
        maintenance,
        gpu_vram_free_bytes: summary.filter(|s| s.gpus > 0).and_then(|s| s.vram_free),
    }
}

/// When `node` last reported a cleanup, from the store.
pub fn maintenance(store: &sync::EventStore, node: &str) -> Maintenance {
    let query = Query {
        nodes: vec![node.to_owned()],
        types: MAINTENANCE_TYPES.map(str::to_owned).to_vec(),
        order: Order::Desc,
        limit: Some(1),
        ..Default::default()
    };
    let Some(entry) = store.query(&query).into_iter().next() else {
        return Maintenance::Unknown;
    };
    let event = store.read_bytes(&entry).ok().and_then(|b| {
        Event::from_file_bytes(&b, store.config().max_event_bytes, Some(entry.id)).ok()
    });
    match event {
        Some(e) => Maintenance::Last {
            at: e.timestamp,
            freed_bytes: e
                .payload
                .get("freed_bytes")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        },
        None => Maintenance::Unknown,
    }
}

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
            let summary = gossip
                .get(n)
                .and_then(|kv| kv.get(mesh::keys::SUMMARY))
                .and_then(|t| Summary::parse(t));
            let m = maintenance(&state.store, n);
            alerting::score::score(&input(n, summary.as_ref(), services, m), now)
        })
        .collect()
}

/// `GET /v1/score`: `{"node": ..., "cards": [ScoreCard...]}`.
pub async fn handler(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let cards = cards(&state).await;
    Json(json!({ "node": state.node, "cards": cards }))
}

/// `labmesh_node_score_ratio{node}`: each node's score card, 0–1.
pub async fn metrics(state: &ApiState, out: &mut crate::api::metrics::Out) {
    let cards = cards(state).await;
    out.gauges_by(
        "node_score",
        "A node's score card (0-100 divided by 100) over CPU steal, memory, disk, services, maintenance and LLM headroom",
        crate::api::metrics::ratio(),
        "node",
        cards.into_iter().map(|c| (c.node, f64::from(c.score) / 100.0)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_come_from_the_summary_and_the_services_view() {
        let s = Summary {
            steal: Some(1.0),
            mem_avail: Some(8 << 30),
            disk: Some(30.0),
            gpus: 0,
            vram_free: Some(1),
            ..Default::default()
        };
        let services = json!({
            "a/web": {"node": "a", "service": "web", "status": "unhealthy"},
            "b/db": {"node": "b", "service": "db", "status": "unhealthy"},
        });
        let i = input("a", Some(&s), Some(&services), Maintenance::Unknown);
        assert_eq!(i.unhealthy_services, Some(1));
        assert_eq!(i.gpu_vram_free_bytes, None);
        assert_eq!(
            input("a", None, None, Maintenance::Never).unhealthy_services,
            None
        );
    }
}
