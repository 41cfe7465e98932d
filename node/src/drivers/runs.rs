//! Abandoned runs: a `labmesh run` wrapper killed hard (SIGKILL, a crash, the host rebooting)
//! leaves a `<kind>_started` with no end. The agent of the host it ran on notices the wrapper
//! is gone and records `<kind>_abandoned`, so every node shows the run as abandoned instead of
//! running forever.
//!
//! It looks when it starts and then every [`CHECK_EVERY`], reading only the index (in memory)
//! and the few unfinished runs' files: an idle agent with no runs touches nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use sync::{EventStore, NewEvent, Query, Severity};

use crate::runs::context::process_alive;
use crate::runs::history::Outcome;
use crate::runs::records::{self, ABANDON_AFTER};
use crate::runs::schema::{self, RunEnd, RunPayload, Stage};

/// How often the unfinished runs are checked: an abandoned run is told within this.
pub const CHECK_EVERY: Duration = Duration::from_secs(300);

/// Run event types of every kind and stage.
fn run_types() -> Vec<String> {
    use crate::runs::history::RunKind::*;
    [Build, Test, Deploy, Maintenance]
        .into_iter()
        .flat_map(|k| {
            [
                Stage::Started,
                Stage::Completed,
                Stage::Failed,
                Stage::Cancelled,
                Stage::Abandoned,
            ]
            .into_iter()
            .map(move |s| schema::event_type(k, s))
        })
        .collect()
}

/// Records an abandoned end for each run of `node` whose wrapper is gone. Returns how many.
pub fn record_abandoned(store: &EventStore, node: &str) -> usize {
    let now = Utc::now();
    let since = now - ABANDON_AFTER - chrono::TimeDelta::days(1);
    let entries = store.query(&Query {
        since: Some(since),
        nodes: vec![node.to_owned()],
        types: run_types(),
        ..Query::default()
    });
    let events: Vec<_> = entries
        .iter()
        .filter_map(|e| store.read_event(e).ok())
        .collect();
    let folded = records::fold(&events, now, |n, pid| {
        (n == node).then(|| process_alive(pid)).flatten()
    });
    let mut recorded = 0;
    for run in folded
        .runs
        .iter()
        .filter(|r| r.record.outcome == Outcome::Abandoned)
    {
        // Already recorded (by this node before a restart, say): nothing more to say.
        if run.end_event.is_some() {
            continue;
        }
        let payload = RunPayload {
            context: run.payload.context.clone(),
            end: RunEnd {
                started: Some(run.record.started),
                ..RunEnd::default()
            },
        };
        let Ok(Value::Object(map)) = serde_json::to_value(&payload) else {
            continue;
        };
        let new = NewEvent::new(
            &schema::event_type(run.record.kind, Stage::Abandoned),
            Severity::Warning,
            &payload.context.script,
        )
        .service(&payload.context.service)
        .correlation_id(&run.record.id)
        .payload(map);
        match store.append(new) {
            Ok(_) => {
                recorded += 1;
                tracing::info!(run = %run.record.id, pid = payload.context.wrapper_pid, "recorded an abandoned run (its wrapper is gone)");
            }
            Err(e) => {
                tracing::warn!(run = %run.record.id, error = %e, "cannot record an abandoned run")
            }
        }
    }
    recorded
}

/// Checks at start and every [`CHECK_EVERY`] until `stop`.
pub async fn run(
    store: Arc<EventStore>,
    node: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (s, n) = (store.clone(), node.clone());
        let _ = tokio::task::spawn_blocking(move || record_abandoned(&s, &n)).await;
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
    }
}
