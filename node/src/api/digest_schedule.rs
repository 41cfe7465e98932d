//! The weekly digest on its schedule: `[alerting] digest = "Mon 08:00"` (local time, the
//! default) or `"off"`. Only the alerter sends it, through every receiver, and records a
//! `digest_sent` event so that a restart or a new alerter does not send the same week twice.
//! A slot missed by more than a day (the mesh was down) is skipped.

use std::sync::Arc;
use std::time::Duration;

use alerting::digest_schedule::{DEFAULT, EVENT_TYPE, latest_slot, parse};
use chrono::{DateTime, Local, Utc};
use sync::{NewEvent, Query, Severity};

use crate::api::ApiState;

fn sent_since(state: &ApiState, slot: DateTime<Utc>) -> bool {
    let query = Query {
        since: Some(slot),
        types: vec![EVENT_TYPE.to_owned()],
        limit: Some(1),
        ..Default::default()
    };
    !state.store.query(&query).is_empty()
}

/// Checks the schedule every 10 seconds until the process ends.
pub async fn run(state: Arc<ApiState>, spec: Option<String>) {
    let Ok(Some((day, time))) = parse(spec.as_deref().unwrap_or(DEFAULT)) else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let Some(driver) = state.alerting.as_deref() else {
            return;
        };
        let receivers = driver.receiver_names();
        let now = Utc::now();
        let Some(slot) = latest_slot(&now.with_timezone(&Local), day, time) else {
            continue;
        };
        if receivers.is_empty()
            || now - slot > chrono::Duration::days(1)
            || !matches!(driver.snapshot().role, Some(alerting::Role::Alerter))
            || sent_since(&state, slot)
        {
            continue;
        }
        let digest = crate::api::digest::build(&state, now).await;
        let title = digest.text.lines().next().unwrap_or("Weekly mesh digest");
        let mut sent = Vec::new();
        for r in &receivers {
            match driver.send_text(r, title, &digest.text).await {
                Ok(()) => sent.push(r.clone()),
                Err(e) => {
                    let e = e.unwrap_or_else(|e| e);
                    tracing::warn!(receiver = %r, error = %e, "digest not sent");
                }
            }
        }
        let mut event = NewEvent::new(EVENT_TYPE, Severity::Info, "labmesh-digest");
        event
            .payload
            .insert("slot".into(), slot.to_rfc3339().into());
        event.payload.insert("receivers".into(), sent.into());
        event
            .payload
            .insert("top_action".into(), digest.top_action.into());
        if let Err(e) = state.store.append(event) {
            tracing::error!(error = %e, "cannot record the digest");
        }
    }
}
