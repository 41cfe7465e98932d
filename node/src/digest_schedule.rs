//! The weekly digest on its schedule: `[alerting] digest = "Mon 08:00"` (local time, the
//! default) or `"off"`. Only the alerter sends it, through every receiver, and records a
//! `digest_sent` event so that a restart or a new alerter does not send the same week twice.
//! A slot missed by more than a day (the mesh was down) is skipped.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, Local, NaiveTime, TimeZone, Utc, Weekday};
use sync::{NewEvent, Query, Severity};

use crate::api::ApiState;

pub const DEFAULT: &str = "Mon 08:00";
pub const EVENT_TYPE: &str = "digest_sent";

/// `"Mon 08:00"` → the weekday and time; `"off"` → `None`.
pub fn parse(text: &str) -> Result<Option<(Weekday, NaiveTime)>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let usage = "write it as \"Mon 08:00\" (weekday and local time) or \"off\"";
    let (day, time) = text
        .split_once(' ')
        .ok_or_else(|| format!("{text:?}: {usage}"))?;
    let day: Weekday = day
        .parse()
        .map_err(|_| format!("{day:?} is not a weekday; {usage}"))?;
    let time = NaiveTime::parse_from_str(time.trim(), "%H:%M")
        .map_err(|_| format!("{time:?} is not a time like 08:00; {usage}"))?;
    Ok(Some((day, time)))
}

/// The latest slot at or before `now`.
pub fn latest_slot<Tz: TimeZone>(
    now: &DateTime<Tz>,
    day: Weekday,
    time: NaiveTime,
) -> Option<DateTime<Utc>> {
    let back = (7 + now.weekday().num_days_from_monday() - day.num_days_from_monday()) % 7;
    let date = now.date_naive() - chrono::Duration::days(i64::from(back));
    let mut slot = date.and_time(time);
    if slot > now.naive_local() {
        slot -= chrono::Duration::days(7);
    }
    now.timezone()
        .from_local_datetime(&slot)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

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
        let digest = crate::digest_build::build(&state, now).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    #[test]
    fn schedules_parse_and_slots_fall_on_the_day() {
        assert_eq!(parse("off"), Ok(None));
        let (day, time) = parse("Mon 08:00").unwrap().unwrap();
        assert_eq!(day, Weekday::Mon);
        assert!(parse("Monday 8").is_err());
        assert!(parse("Xyz 08:00").is_err());
        let tz = FixedOffset::east_opt(3600).unwrap();
        // Wednesday 2026-12-02 10:00 +01:00 → Monday 2026-11-30 08:00 +01:00.
        let now = tz.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap();
        let slot = latest_slot(&now, day, time).unwrap();
        assert_eq!(slot, Utc.with_ymd_and_hms(2026, 11, 30, 7, 0, 0).unwrap());
        // Monday 07:00: last week's slot.
        let now = tz.with_ymd_and_hms(2026, 11, 30, 7, 0, 0).unwrap();
        let slot = latest_slot(&now, day, time).unwrap();
        assert_eq!(slot, Utc.with_ymd_and_hms(2026, 11, 23, 7, 0, 0).unwrap());
    }
}
