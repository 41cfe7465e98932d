//! The five-field cron subset that recurring maintenance windows need, without a dependency.
//!
//! `minute hour day-of-month month day-of-week`, each a comma list of `*`, `N`, `A-B`, with an
//! optional `/STEP`; month and weekday names (`jan`, `sun`); `7` is Sunday too; and the macros
//! `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. As in Vixie cron, when both day fields
//! are restricted a day matches if *either* does. Times are wall-clock times of a time zone;
//! the caller converts (see [`crate::silence`]).

use chrono::{Datelike, Duration as ChronoDuration, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cron expression {expr:?}: {problem}")]
pub struct CronError {
    pub expr: String,
    pub problem: String,
}

/// A parsed expression: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_star: bool,
    weekdays_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(text: &str, names: &[&str], first: u32) -> Option<u32> {
    text.parse().ok().or_else(|| {
        let lower = text.to_ascii_lowercase();
        names
            .iter()
            .position(|n| *n == lower)
            .map(|i| i as u32 + first)
    })
}

/// Parses one field into a bit set over `min..=max`.
fn field(text: &str, min: u32, max: u32, names: &[&str], name_first: u32) -> Result<u64, String> {
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("step {s:?} is not a number"))?;
                if step == 0 {
                    return Err("a step of 0 never matches".into());
                }
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let lo = value(a, names, name_first).ok_or_else(|| format!("{a:?} is not a value"))?;
            let hi = value(b, names, name_first).ok_or_else(|| format!("{b:?} is not a value"))?;
            (lo, hi)
        } else {
            let v = value(range, names, name_first)
                .ok_or_else(|| format!("{range:?} is not a value"))?;
            // `N/STEP` means from N to the end, as in Vixie cron.
            (v, if step > 1 { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{range:?} is outside {min}-{max}"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Cron {
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        let err = |problem: String| CronError {
            expr: expr.to_owned(),
            problem,
        };
        let expanded = match expr.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let [mi, h, dom, mo, dow] = parts.as_slice() else {
            return Err(err(format!(
                "has {} fields; write five: minute hour day-of-month month day-of-week, e.g. \"0 3 * * sun\"",
                parts.len()
            )));
        };
        let mut weekdays =
            field(dow, 0, 7, &WEEKDAYS, 0).map_err(|p| err(format!("day-of-week: {p}")))?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        Ok(Cron {
            minutes: field(mi, 0, 59, &[], 0).map_err(|p| err(format!("minute: {p}")))?,
            hours: field(h, 0, 23, &[], 0).map_err(|p| err(format!("hour: {p}")))? as u32,
            days: field(dom, 1, 31, &[], 0).map_err(|p| err(format!("day-of-month: {p}")))? as u32,
            months: field(mo, 1, 12, &MONTHS, 1).map_err(|p| err(format!("month: {p}")))? as u16,
            weekdays: weekdays as u8,
            days_star: dom.starts_with('*'),
            weekdays_star: dow.starts_with('*'),
        })
    }

    fn date_matches(&self, d: NaiveDate) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    pub fn matches(&self, t: NaiveDateTime) -> bool {
        self.date_matches(t.date())
            && self.hours & (1 << t.hour()) != 0
            && self.minutes & (1 << t.minute()) != 0
    }

    /// The latest matching minute at or before `t`, looking back no further than `lookback`.
    /// Walks days, then hours, then minutes, so a week back costs a few dozen steps.
    pub fn latest_at_or_before(
        &self,
        t: NaiveDateTime,
        lookback: ChronoDuration,
    ) -> Option<NaiveDateTime> {
        let floor = t - lookback;
        let mut date = t.date();
        while date >= floor.date() {
            if self.date_matches(date) {
                let top_hour = if date == t.date() { t.hour() } else { 23 };
                for h in (0..=top_hour).rev() {
                    if self.hours & (1 << h) == 0 {
                        continue;
                    }
                    let top_min = if date == t.date() && h == t.hour() {
                        t.minute()
                    } else {
                        59
                    };
                    for m in (0..=top_min).rev() {
                        if self.minutes & (1 << m) != 0 {
                            let at = date.and_time(NaiveTime::from_hms_opt(h, m, 0)?);
                            return (at >= floor).then_some(at);
                        }
                    }
                }
            }
            date = date.pred_opt()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn fields_ranges_steps_names() {
        let c = Cron::parse("*/15 2-4 * * mon-fri").unwrap();
        assert!(c.matches(dt("2026-06-01 02:45"))); // a Monday
        assert!(!c.matches(dt("2026-06-01 02:44")));
        assert!(!c.matches(dt("2026-05-31 03:00"))); // Sunday
        let sun = Cron::parse("0 3 * * 7").unwrap();
        assert!(sun.matches(dt("2026-05-31 03:00")));
        assert_eq!(
            Cron::parse("@weekly").unwrap(),
            Cron::parse("0 0 * * sun").unwrap()
        );
        let either = Cron::parse("0 0 1 * mon").unwrap();
        assert!(either.matches(dt("2026-06-01 00:00")) && either.matches(dt("2026-06-08 00:00")));
        assert!(
            Cron::parse("0 0 * jan,jul *")
                .unwrap()
                .matches(dt("2026-07-09 00:00"))
        );
    }

    #[test]
    fn mistakes_say_which_field() {
        assert!(
            Cron::parse("0 3 * *")
                .unwrap_err()
                .to_string()
                .contains("has 4 fields")
        );
        assert!(
            Cron::parse("61 * * * *")
                .unwrap_err()
                .to_string()
                .contains("minute")
        );
        assert!(
            Cron::parse("0 0 * * funday")
                .unwrap_err()
                .to_string()
                .contains("day-of-week")
        );
        assert!(Cron::parse("*/0 * * * *").is_err());
    }

    #[test]
    fn latest_start() {
        let c = Cron::parse("30 3 * * sun").unwrap();
        let week = ChronoDuration::days(8);
        assert_eq!(
            c.latest_at_or_before(dt("2026-05-31 04:00"), week),
            Some(dt("2026-05-31 03:30"))
        );
        assert_eq!(
            c.latest_at_or_before(dt("2026-05-31 03:29"), week),
            Some(dt("2026-05-24 03:30"))
        );
        assert_eq!(
            c.latest_at_or_before(dt("2026-05-31 03:29"), ChronoDuration::hours(2)),
            None
        );
    }
}
