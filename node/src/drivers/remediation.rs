//! The unhealthy-container watchdog on the node that owns the containers: after each host
//! sample, [`Watchdog::step`] says what to restart; this restarts it through the Docker engine
//! and records `remediation_started`, then `remediation_completed` or `remediation_failed`
//! (container, image, failing streak, last health-check lines). The alerter pages once per
//! remediation through the shipped `container_remediated` rule.
//!
//! Restarts of the last hour are read back from this node's own events at start, so a
//! restarted agent keeps the cooldown and the hourly cap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sync::{EventStore, NewEvent, Query, Severity};
use tokio::sync::watch;

use crate::drivers::probes::LatestSample;
use crate::remediation::{Held, RemediationSettings, Restart, Watchdog};

pub const STARTED: &str = "remediation_started";
pub const COMPLETED: &str = "remediation_completed";
pub const FAILED: &str = "remediation_failed";
/// The events' `source`.
pub const SOURCE: &str = "labmesh-watchdog";

/// How long the engine lets a container stop before it kills it, and how long the restart may
/// take on top of that.
const STOP_GRACE: Duration = Duration::from_secs(10);
const RESTART_LIMIT: Duration = Duration::from_secs(60);

/// Runs until `stop`; does nothing (and wakes only on samples) while no container opts in.
pub async fn run(
    settings: RemediationSettings,
    store: Arc<EventStore>,
    node: String,
    mut samples: LatestSample,
    mut stop: watch::Receiver<bool>,
) {
    if !settings.enabled {
        return;
    }
    let mut watchdog = Watchdog::new(settings);
    {
        let (store, node) = (store.clone(), node.clone());
        let past = crate::util::blocking(move || past_restarts(&store, &node));
        for (container, at) in past {
            watchdog.record(&container, at);
        }
    }
    // Held containers already logged, so a hold is said once, not every sample.
    let mut said: BTreeMap<String, Held> = BTreeMap::new();
    loop {
        tokio::select! {
            changed = samples.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
        let sample = samples.borrow_and_update().clone();
        let Some(docker) = sample.as_ref().and_then(|s| s.docker.ok()) else {
            continue;
        };
        let decisions = watchdog.step(chrono::Utc::now(), &docker.containers);
        said.retain(|name, _| decisions.held.iter().any(|(n, _)| n == name));
        for (name, held) in decisions.held {
            if said.get(&name) != Some(&held) {
                match &held {
                    Held::Cooldown { until } => {
                        tracing::warn!(container = %name, until = %until, "unhealthy again, but restarted within the cooldown: not restarting before {until}")
                    }
                    Held::HourlyCap { until } => {
                        tracing::warn!(container = %name, until = %until, max_per_hour = watchdog.settings().max_per_hour, "unhealthy again, but restarted the most times allowed in an hour: not restarting before {until}")
                    }
                }
                said.insert(name, held);
            }
        }
        for restart in decisions.restart {
            remediate(&store, &restart).await;
        }
    }
}

/// Restarts one container and records what happened.
async fn remediate(store: &Arc<EventStore>, r: &Restart) {
    let id = format!("remediation-{:016x}", rand::random::<u64>());
    let mut payload = Map::new();
    payload.insert("container".into(), json!(r.container));
    payload.insert("image".into(), json!(r.image));
    payload.insert("action".into(), json!("restart"));
    payload.insert("failing_streak".into(), json!(r.streak));
    payload.insert("health_log".into(), json!(r.health_log));
    payload.insert("opted_in_by".into(), json!(r.opted_in_by));
    tracing::warn!(container = %r.container, streak = r.streak, last = ?r.health_log.last(), "restarting an unhealthy container");
    record(store, STARTED, Severity::Warning, r, &id, payload.clone());
    let started = Instant::now();
    let result = crate::probes::docker::restart(&r.container, STOP_GRACE, RESTART_LIMIT).await;
    payload.insert(
        "duration_ms".into(),
        json!(started.elapsed().as_millis() as u64),
    );
    match result {
        Ok(()) => {
            tracing::info!(container = %r.container, "restarted");
            record(store, COMPLETED, Severity::Warning, r, &id, payload);
        }
        Err(e) => {
            tracing::error!(container = %r.container, error = %e, "could not restart");
            payload.insert("error".into(), json!(e));
            record(store, FAILED, Severity::Error, r, &id, payload);
        }
    }
}

fn record(
    store: &EventStore,
    event_type: &str,
    severity: Severity,
    r: &Restart,
    id: &str,
    payload: Map<String, Value>,
) {
    let new = NewEvent::new(event_type, severity, SOURCE)
        .service(&r.container)
        .correlation_id(id)
        .payload(payload);
    if let Err(e) = crate::util::blocking(|| store.append(new)) {
        tracing::error!(container = %r.container, event = event_type, error = %e, "cannot record the remediation");
    }
}

/// This node's restarts of the last hour, from its `remediation_started` events.
fn past_restarts(store: &EventStore, node: &str) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    let query = Query {
        since: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
        nodes: vec![node.to_owned()],
        types: vec![STARTED.to_owned()],
        ..Query::default()
    };
    store
        .query(&query)
        .into_iter()
        .filter(|e| !e.service.is_empty())
        .map(|e| (e.service.to_string(), e.timestamp()))
        .collect()
}
