//! This host's figures over time: every history interval (1 h by default) the latest probe
//! sample becomes a `host_sample` event. Events replicate, so every node can build anyone's
//! week (the digest's steal average, RAM average, swap peak, disk use and space freed) from
//! its own store, and the history survives restarts, unlike the gossiped summary, which only
//! says what a node looks like now.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use sync::{EventStore, NewEvent, Severity};
use tokio::sync::watch;

use crate::drivers::probes::LatestSample;
use crate::probes::HostSample;

/// The `source` of `host_sample` events.
pub const SOURCE: &str = "labmesh-probe";

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The payload of a `host_sample` event; figures a probe could not measure are left out.
pub fn payload(s: &HostSample) -> Map<String, Value> {
    let mut p = Map::new();
    if let Some(steal) = s.steal.ok() {
        p.insert("steal_percent".into(), json!(round1(steal.pct)));
    }
    if let Some(m) = s.memory.ok() {
        p.insert("mem_available_bytes".into(), json!(m.available_bytes));
        p.insert("mem_total_bytes".into(), json!(m.total_bytes));
        if m.total_bytes > 0 {
            let pct = m.available_bytes as f64 * 100.0 / m.total_bytes as f64;
            p.insert("mem_available_percent".into(), json!(round1(pct)));
        }
        p.insert("swap_used_bytes".into(), json!(m.swap_used_bytes));
    }
    if let Some(d) = s.disks.ok() {
        if let Some(root) = d.mounts.iter().find(|m| m.mount == "/") {
            p.insert("root_free_bytes".into(), json!(root.available_bytes));
        }
        let disks: Vec<Value> = d
            .mounts
            .iter()
            .map(|m| {
                json!({
                    "mount": m.mount,
                    "used_percent": round1(m.used_pct),
                    "used_bytes": m.used_bytes,
                    "total_bytes": m.total_bytes,
                })
            })
            .collect();
        p.insert("disks".into(), Value::Array(disks));
    }
    p
}

fn record(store: &EventStore, sample: &HostSample) {
    let event = NewEvent::new(alerting::digest::HOST_SAMPLE, Severity::Info, SOURCE)
        .service("labmesh")
        .payload(payload(sample));
    if let Err(e) = store.append(event) {
        tracing::warn!(error = %e, "cannot record the host sample");
    }
}

/// How long until the next sample is due: one interval after this node's newest recorded one,
/// so restarts neither add samples nor, when frequent, starve the history; a node that has
/// none records its first one interval after it starts (the digest shows its current figures
/// until then).
fn first_delay(store: &EventStore, node: &str, every: Duration) -> Duration {
    let query = sync::Query {
        nodes: vec![node.to_owned()],
        types: vec![alerting::digest::HOST_SAMPLE.to_owned()],
        order: sync::Order::Desc,
        limit: Some(1),
        ..Default::default()
    };
    let now_ms = store.config().clock.now().timestamp_millis();
    match store.query(&query).first() {
        Some(last) => {
            let due = last.millis.saturating_add(every.as_millis() as i64);
            Duration::from_millis(due.saturating_sub(now_ms).max(0) as u64)
        }
        None => every,
    }
}

/// Records a sample every `every`, the first as [`first_delay`] says, until `stop` turns true.
pub fn start(
    store: Arc<EventStore>,
    node: String,
    host: LatestSample,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let delay = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || first_delay(&store, &node, every))
                .await
                .unwrap_or(every)
        };
        let start = tokio::time::Instant::now() + delay;
        let mut tick = tokio::time::interval_at(start, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let Some(sample) = host.borrow().clone() else {
                continue;
            };
            let store = store.clone();
            let _ = tokio::task::spawn_blocking(move || record(&store, &sample)).await;
        }
    })
}
