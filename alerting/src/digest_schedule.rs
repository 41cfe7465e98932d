//! When the weekly digest is due: `[alerting] digest = "Mon 08:00"` (local time, the default)
//! or `"off"`. The node crate's loop asks [`latest_slot`] and sends once per slot, recording a
//! [`EVENT_TYPE`] event so that a restart or a new alerter does not send the same week twice.

use chrono::{DateTime, Datelike, NaiveTime, TimeZone, Utc, Weekday};

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
