//! The one node score (0–100): [`alerting::score`]'s six dimensions of the VM roadmap (CPU
//! steal, memory, disk, services, maintenance, LLM/GPU headroom), each with its reason. Every
//! place that shows a score uses [`card`]: the gossiped summary (the node scores itself every
//! probe interval), `labmesh status` and `--score`, the web page, `/metrics` and the digest
//! (with the week's averages for steal and memory).

use alerting::score::{Maintenance, ScoreCard, ScoreInput};
use chrono::{DateTime, Utc};
use mesh::summary::Summary;
use serde_json::Value;
use sync::{Order, Query};

/// Event types that say a node's cleanup ran (with `freed_bytes` in the payload).
pub const MAINTENANCE_TYPES: [&str; 2] = ["cleanup_done", "maintenance_done"];

/// Unhealthy services of `node` in the world's services view (`None` while it is not ready).
pub fn unhealthy_services(node: &str, services: Option<&Value>) -> Option<u32> {
    services.map(|v| {
        v.as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|s| s["node"] == node && s["status"] == "unhealthy")
            .count() as u32
    })
}

/// The score's inputs for `node`: its host summary, its unhealthy services (the more of the
/// containers its summary counts and the services the world view holds unhealthy), its last
/// cleanup.
pub fn input(
    node: &str,
    summary: Option<&Summary>,
    world_unhealthy: Option<u32>,
    maintenance: Maintenance,
) -> ScoreInput {
    let containers = summary.map(|s| s.unhealthy);
    let unhealthy = match (containers, world_unhealthy) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
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

/// `node`'s score card at `now`.
pub fn card(
    node: &str,
    summary: Option<&Summary>,
    world_unhealthy: Option<u32>,
    maintenance: Maintenance,
    now: DateTime<Utc>,
) -> ScoreCard {
    alerting::score::score(&input(node, summary, world_unhealthy, maintenance), now)
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
    match store.read_event(&entry) {
        Ok(e) => Maintenance::Last {
            at: e.timestamp,
            freed_bytes: e
                .payload
                .get("freed_bytes")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        },
        Err(_) => Maintenance::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_come_from_the_summary_and_the_services_view() {
        let s = Summary {
            steal: Some(1.0),
            mem_avail: Some(8 << 30),
            disk: Some(30.0),
            gpus: 0,
            vram_free: Some(1),
            unhealthy: 0,
            ..Default::default()
        };
        let services = json!({
            "a/web": {"node": "a", "service": "web", "status": "unhealthy"},
            "b/db": {"node": "b", "service": "db", "status": "unhealthy"},
        });
        let world = unhealthy_services("a", Some(&services));
        let i = input("a", Some(&s), world, Maintenance::Unknown);
        assert_eq!(i.unhealthy_services, Some(1));
        assert_eq!(i.gpu_vram_free_bytes, None);
        let containers = Summary { unhealthy: 3, ..s };
        assert_eq!(
            input("a", Some(&containers), world, Maintenance::Unknown).unhealthy_services,
            Some(3)
        );
        assert_eq!(
            input("a", None, None, Maintenance::Never).unhealthy_services,
            None
        );
    }
}
