//! Times on the command line: RFC 3339, a UTC date, or an age ("15m" means 15 minutes ago).

use chrono::{DateTime, NaiveDate, Utc};

use crate::error::UsageError;

pub fn parse(flag: &str, text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, UsageError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    match crate::config::parse_duration(text) {
        Ok(age) => Ok(now - chrono::Duration::from_std(age).unwrap_or_default()),
        Err(_) => Err(UsageError(format!(
            "{flag} {text:?}: not a time; use RFC 3339 (2026-05-12T12:05:00Z), a date (2026-05-12) or an age (15m, 2h, 7d)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let now = DateTime::parse_from_rfc3339("2026-05-12T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse("--since", "2h", now).unwrap().to_rfc3339(),
            "2026-05-12T10:00:00+00:00"
        );
        assert_eq!(
            parse("--since", "2026-05-11", now).unwrap().to_rfc3339(),
            "2026-05-11T00:00:00+00:00"
        );
        assert!(parse("--since", "last tuesday", now).is_err());
    }
}
