//! `GET /metrics`: the agent's state in the Prometheus exposition format, built with
//! `prometheus-client` into a fresh registry on every scrape from the current state (the latest
//! host sample, the mesh view, the store, sync, checks and workers). Counters come only from
//! monotonic sources (counters the agent keeps since it started, kernel byte counters); figures
//! that go up and down are gauges. Base units (bytes, seconds, ratios 0–1), the `labmesh_` prefix,
//! low-cardinality labels. Every metric is listed in `docs/metrics.md`.
//!
//! `prometheus-client` writes OpenMetrics; a scraper that asks for it (`Accept:
//! application/openmetrics-text`) gets it as is, anyone else the classic text format 0.0.4
//! (what `promtool check metrics` and older scrapers read), see [`to_prometheus_text`].

pub mod host;
pub mod mesh;
pub mod runs;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::api::ApiState;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(String, String)>;

/// A registry being filled for one scrape. Families with no member are left out.
pub struct Out {
    reg: Registry,
}

pub fn ratio() -> Option<Unit> {
    Some(Unit::Other("ratio".into()))
}

impl Out {
    pub fn new() -> Out {
        Out::with_prefix("labmesh")
    }

    /// A registry whose names start with `prefix_` (the seed's `homelab_` families).
    pub fn with_prefix(prefix: &str) -> Out {
        Out {
            reg: Registry::with_prefix(prefix),
        }
    }

    fn register(&mut self, name: &str, help: &str, unit: Option<Unit>, m: impl Into<Metric>) {
        match (unit, m.into()) {
            (Some(u), Metric::Gauge(f)) => self.reg.register_with_unit(name, help, u, f),
            (None, Metric::Gauge(f)) => self.reg.register(name, help, f),
            (Some(u), Metric::Counter(f)) => self.reg.register_with_unit(name, help, u, f),
            (None, Metric::Counter(f)) => self.reg.register(name, help, f),
        }
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>, v: f64) {
        self.gauges(name, help, unit, [(Vec::new(), v)]);
    }

    /// A gauge family: one value per label set.
    pub fn gauges(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        values: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let mut any = false;
        for (labels, v) in values {
            family.get_or_create(&labels).set(v);
            any = true;
        }
        if any {
            self.register(name, help, unit, Metric::Gauge(family));
        }
    }

    /// A gauge family with one label.
    pub fn gauges_by(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        label: &str,
        values: impl IntoIterator<Item = (String, f64)>,
    ) {
        let values = values
            .into_iter()
            .map(|(l, v)| (vec![(label.to_owned(), l)], v));
        self.gauges(name, help, unit, values);
    }

    /// A counter (`_total` is appended by the encoder): `v` must come from a monotonic source.
    pub fn counters(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        values: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let family = Family::<Labels, Counter<u64>>::default();
        let mut any = false;
        for (labels, v) in values {
            family.get_or_create(&labels).inc_by(v);
            any = true;
        }
        if any {
            self.register(name, help, unit, Metric::Counter(family));
        }
    }

    pub fn counter(&mut self, name: &str, help: &str, unit: Option<Unit>, v: u64) {
        self.counters(name, help, unit, [(Vec::new(), v)]);
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut body = String::with_capacity(16 * 1024);
        encode(&mut body, &self.reg)?;
        Ok(body)
    }
}

impl Default for Out {
    fn default() -> Self {
        Out::new()
    }
}

pub enum Metric {
    Gauge(Family<Labels, Gauge<f64, AtomicU64>>),
    Counter(Family<Labels, Counter<u64>>),
}

pub fn label(k: &str, v: impl Into<String>) -> Labels {
    vec![(k.to_owned(), v.into())]
}

/// OpenMetrics to the classic text format 0.0.4: a counter family `x` whose samples are
/// `x_total` is described as `x_total` there, and `# UNIT` and `# EOF` lines do not exist.
pub fn to_prometheus_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len() + counters.len() * 12);
    for line in open.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = described {
            let name = rest.split(' ').next().unwrap_or("");
            if counters.contains(name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `GET /metrics`.
pub async fn handler(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    let open = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let mut out = Out::new();
    fill(&state, &mut out).await;
    let mut homelab = Out::with_prefix("homelab");
    runs::refresh(&state, &state.run_metrics);
    runs::write(&state.run_metrics, &mut homelab);
    let encoded = out.encode().and_then(|ours| {
        // One exposition: ours without its `# EOF`, then the seed's families, then the one EOF.
        let theirs = homelab.encode()?;
        Ok(format!(
            "{}{theirs}",
            ours.strip_suffix("# EOF\n").unwrap_or(&ours)
        ))
    });
    match encoded {
        Ok(body) if open => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Ok(body) => (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            to_prometheus_text(&body),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn fill(state: &ApiState, out: &mut Out) {
    let sample = state.host.as_ref().and_then(|rx| rx.borrow().clone());
    if let Some(s) = &sample {
        crate::api::metrics::host::host(out, s);
    }
    crate::api::metrics::host::probes(out, sample.as_deref());
    out.gauge(
        "agent_uptime",
        "Time since this agent started",
        Some(Unit::Seconds),
        state.started.elapsed().as_secs_f64(),
    );
    crate::api::metrics::mesh::mesh(state, out, sample.as_deref()).await;
    scores(state, out).await;
    store_and_sync(state, out);
    checks_and_workers(state, out);
}

/// `labmesh_node_score_ratio{node}`: each node's score card, 0–1.
async fn scores(state: &ApiState, out: &mut Out) {
    let cards = crate::api::score::cards(state).await;
    out.gauges_by(
        "node_score",
        "A node's score card (0-100 divided by 100) over CPU steal, memory, disk, services, maintenance and LLM headroom",
        ratio(),
        "node",
        cards.into_iter().map(|c| (c.node, f64::from(c.score) / 100.0)),
    );
}

fn store_and_sync(state: &ApiState, out: &mut Out) {
    out.gauge(
        "events",
        "Events held in the local store",
        None,
        state.store.len() as f64,
    );
    out.counter(
        "events_quarantined",
        "Event files moved to quarantine (unreadable, invalid or conflicting) since the agent opened its store",
        None,
        state.store.quarantined_since_open(),
    );
    let Some(sync) = &state.sync else {
        return;
    };
    let t = sync.totals();
    let dir = |v: &str| label("direction", v);
    out.counters(
        "sync_events",
        "Events sent to and received from peers by sync, since the agent started",
        None,
        [
            (dir("sent"), t.events_sent),
            (dir("received"), t.events_received),
        ],
    );
    out.counters(
        "sync",
        "Event bytes sent to and received from peers by sync, since the agent started",
        Some(Unit::Bytes),
        [
            (dir("sent"), t.bytes_sent),
            (dir("received"), t.bytes_received),
        ],
    );
    out.counter(
        "sync_refused",
        "Events and signer certificates from peers refused by sync (invalid, oversized, unsigned, signed by another node than they name, revoked), since the agent started",
        None,
        t.events_refused,
    );
    out.counter(
        "sync_sessions",
        "Sync reconciliation sessions completed, since the agent started",
        None,
        t.sessions_completed,
    );
    out.counter(
        "sync_sessions_abandoned",
        "Sync reconciliation sessions dropped because the peer restarted or stopped being live, since the agent started",
        None,
        t.sessions_abandoned,
    );
    let reason = |v: &str| label("reason", v);
    out.counters(
        "sync_messages_unsent",
        "Sync messages given up: the peer's queue was full, the message was over the mesh's size limit, or the transport failed to deliver it, since the agent started",
        None,
        [
            (reason("queue_full"), t.unsent_queue_full),
            (reason("too_large"), t.unsent_too_large),
            (reason("failed"), t.unsent_failed),
        ],
    );
}

fn checks_and_workers(state: &ApiState, out: &mut Out) {
    if let Some(checks) = &state.checks {
        let snap = checks.snapshot();
        let name = |c: &serde_json::Value| c["name"].as_str().unwrap_or("").to_owned();
        out.gauges_by(
            "check_up",
            "1 when the health check is healthy (ok, or failing fewer than `fall` times), 0 when unhealthy or recovering",
            None,
            "check",
            snap.iter().map(|c| {
                let up = matches!(c["state"].as_str(), Some("ok" | "failing"));
                (name(c), f64::from(u8::from(up)))
            }),
        );
        out.counters(
            "check_failures",
            "Health check results that were not ok (warning or critical), since the agent started",
            None,
            snap.iter()
                .map(|c| (label("check", name(c)), c["failures"].as_u64().unwrap_or(0))),
        );
    }
    if let Some(workers) = &state.workers {
        let list = workers.list();
        let count = |s: &str| list.iter().filter(|w| w["status"] == s).count() as f64;
        out.gauges_by(
            "workers",
            "External workers by heartbeat state (fresh, stale)",
            None,
            "state",
            ["fresh", "stale"].map(|s| (s.to_owned(), count(s))),
        );
        out.counter(
            "workers_stale",
            "Times a worker missed its heartbeats and went stale, since the agent started",
            None,
            workers.went_stale(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_described_by_their_sample_name_in_the_classic_format() {
        let mut out = Out::new();
        out.counter("gossip", "Gossip bytes", Some(Unit::Bytes), 5);
        out.gauge("node_cpu", "CPU busy", ratio(), 0.25);
        let open = out.encode().unwrap();
        assert!(
            open.contains("# TYPE labmesh_gossip_bytes counter"),
            "{open}"
        );
        assert!(open.contains("labmesh_gossip_bytes_total 5"), "{open}");
        assert!(open.ends_with("# EOF\n"), "{open}");
        let text = to_prometheus_text(&open);
        assert!(
            text.contains("# HELP labmesh_gossip_bytes_total Gossip bytes."),
            "{text}"
        );
        assert!(
            text.contains("# TYPE labmesh_gossip_bytes_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE labmesh_node_cpu_ratio gauge"),
            "{text}"
        );
        assert!(text.contains("labmesh_node_cpu_ratio 0.25"), "{text}");
        assert!(
            !text.contains("# UNIT") && !text.contains("# EOF"),
            "{text}"
        );
    }

    #[test]
    fn empty_families_are_left_out() {
        let mut out = Out::new();
        out.gauges_by("workers", "x", None, "state", std::iter::empty());
        assert_eq!(out.encode().unwrap(), "# EOF\n");
    }
}
