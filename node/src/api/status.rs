//! `GET /v1/status`: the one document behind `labmesh status` and the web page. Every node with
//! its liveness and gossiped host summary, the alerter mark, unhealthy services, open incidents
//! and the latest deployments. Any node answers for the whole mesh.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::ApiState;
use mesh::summary::Summary;

/// Gossip key naming the node that sends alerts (published by the alerter, added later).
pub use crate::drivers::alerting::ALERTER_KEY;
/// How many deployments `deployments_recent` lists, newest first.
pub const RECENT_DEPLOYMENTS: usize = 10;

pub async fn status(State(state): State<Arc<ApiState>>) -> Json<Value> {
    Json(build(&state).await)
}

/// The status document (see the module doc).
pub async fn build(state: &ApiState) -> Value {
    let (mut nodes, transport) = crate::api::node_list(state).await;
    let gossip = gossip_keys(state).await;
    // This node's own election first; else what a peer publishes under `alerter` (every node
    // publishes its view; they agree once the membership view is stable).
    let alerter = state
        .alerting
        .as_ref()
        .and_then(|a| a.snapshot().alerter)
        .or_else(|| {
            gossip
                .values()
                .filter_map(|kv| kv.get(ALERTER_KEY))
                .find(|v| !v.is_empty())
                .cloned()
        });
    for n in &mut nodes {
        let name = n["node"].as_str().unwrap_or_default().to_owned();
        let summary = gossip
            .get(&name)
            .and_then(Summary::from_key_values)
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null);
        if let Value::Object(map) = n {
            map.insert("summary".into(), summary);
            map.insert(
                "alerter".into(),
                Value::Bool(alerter.as_deref() == Some(name.as_str())),
            );
        }
    }
    let views = state.world.as_ref().and_then(|w| w.views());
    let (services, incidents, deployments) = match &views {
        Some(v) => (
            unhealthy_services(&v.services),
            open_incidents(&v.incidents),
            recent_deployments(&v.deployments),
        ),
        None => (Vec::new(), Vec::new(), Vec::new()),
    };
    json!({
        "node": state.node,
        "mesh": transport["mesh"],
        "mesh_id": transport["mesh_id"],
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "events": state.store.len(),
        "alerter": alerter,
        "nodes": nodes,
        "services_unhealthy": services,
        "incidents_open": incidents,
        "deployments_recent": deployments,
        "world_ready": views.is_some(),
        "rejections": transport["rejections"],
        "transport": transport,
    })
}

/// Every node's published key-values, this node's included.
pub(crate) async fn gossip_keys(state: &ApiState) -> BTreeMap<String, BTreeMap<String, String>> {
    let Some(peer) = &state.peer else {
        return BTreeMap::new();
    };
    let view = peer.mesh.view().await;
    let mut out = BTreeMap::new();
    for p in view.peers {
        out.insert(p.node, p.key_values);
    }
    out.insert(view.node, view.key_values);
    out
}

fn entries(view: &Value) -> impl Iterator<Item = &Value> {
    view.as_object().into_iter().flat_map(|m| m.values())
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn unhealthy_services(services: &Value) -> Vec<Value> {
    entries(services)
        .filter(|s| text(s, "status") == "unhealthy")
        .cloned()
        .collect()
}

/// Open incidents, newest first; without the per-occurrence timestamps (the incident view has
/// them all).
fn open_incidents(incidents: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = entries(incidents)
        .filter(|i| text(i, "status") == "open")
        .cloned()
        .collect();
    for i in &mut out {
        if let Value::Object(map) = i {
            map.remove("events");
        }
    }
    out.sort_by(|a, b| text(b, "last_occurrence").cmp(text(a, "last_occurrence")));
    out
}

/// The latest deployments, newest start first; without their event lists.
fn recent_deployments(deployments: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = entries(deployments).cloned().collect();
    out.sort_by(|a, b| text(b, "started_at").cmp(text(a, "started_at")));
    out.truncate(RECENT_DEPLOYMENTS);
    for d in &mut out {
        if let Value::Object(map) = d {
            map.remove("events");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_filtered_and_ordered() {
        let services = json!({
            "a/web": {"node": "a", "service": "web", "status": "healthy"},
            "b/db": {"node": "b", "service": "db", "status": "unhealthy"},
        });
        assert_eq!(unhealthy_services(&services).len(), 1);
        let incidents = json!({
            "i1": {"status": "open", "last_occurrence": "2026-01-01T00:00:00Z", "events": []},
            "i2": {"status": "resolved", "last_occurrence": "2026-01-03T00:00:00Z"},
            "i3": {"status": "open", "last_occurrence": "2026-01-02T00:00:00Z"},
        });
        let open = open_incidents(&incidents);
        assert_eq!(open.len(), 2);
        assert_eq!(open[0]["last_occurrence"], "2026-01-02T00:00:00Z");
        assert!(open[1].get("events").is_none());
        let many: serde_json::Map<String, Value> = (0..15)
            .map(|i| {
                (
                    format!("d{i}"),
                    json!({"started_at": format!("2026-01-{:02}", i + 1)}),
                )
            })
            .collect();
        let recent = recent_deployments(&Value::Object(many));
        assert_eq!(recent.len(), RECENT_DEPLOYMENTS);
        assert_eq!(recent[0]["started_at"], "2026-01-15");
        assert_eq!(unhealthy_services(&Value::Null).len(), 0);
    }
}
