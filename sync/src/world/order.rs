//! The total order every node agrees on: hybrid logical clock when the event carries one,
//! otherwise its wall-clock `timestamp`, then its id.
//!
//! Both clocks are expressed as NTP64 (upper 32 bits: seconds since the Unix epoch, lower 32:
//! fraction of a second), the representation `uhlc` uses, so events stamped by labmesh (with an
//! `hlc`) and events from external writers (without one) sort on one axis. The key depends on the
//! event alone, never on when or where it arrived, which is what makes the folds in the views
//! independent of arrival order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::Event;

/// The extra top-level field in which the origin stamps its hybrid logical clock.
pub const HLC_FIELD: &str = "hlc";

/// Where an event sits in time. Compared field by field: `time` first, then `id`, so two events
/// of the same instant still have one order, the same on every node.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct OrderKey {
    /// NTP64 time: the event's `hlc` when valid, else its `timestamp`.
    pub time: u64,
    pub id: Uuid,
}

/// The order key of an event (see the module doc).
pub fn order_key(event: &Event) -> OrderKey {
    let time = event
        .extra
        .get(HLC_FIELD)
        .and_then(serde_json::Value::as_str)
        .and_then(parse_hlc)
        .unwrap_or_else(|| ntp64_from_datetime(event.timestamp));
    OrderKey { time, id: event.id }
}

/// The NTP64 time of an `hlc` field: `"<16 lowercase hex digits>/<node-id hex>"`, as `uhlc`
/// prints a timestamp. Anything else is `None`: a malformed clock must not move an event in time,
/// so the caller falls back to `timestamp` (every node makes the same choice).
pub fn parse_hlc(text: &str) -> Option<u64> {
    let (time, node_id) = text.split_once('/')?;
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    // A uhlc ID is at most 16 bytes, so at most 32 hex digits.
    if time.len() != 16
        || !lower_hex(time)
        || node_id.is_empty()
        || node_id.len() > 32
        || !lower_hex(node_id)
    {
        return None;
    }
    u64::from_str_radix(time, 16).ok()
}

const FRAC_PER_SEC: u64 = 1 << 32;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A UTC time as NTP64, the way `uhlc` converts a `Duration` since the epoch (including its
/// `+ 1`, which makes the conversion back give the same nanosecond). Times before 1970 clamp to
/// 0 and times past 2106 to the largest second NTP64 holds.
pub fn ntp64_from_datetime(at: DateTime<Utc>) -> u64 {
    let secs = u64::try_from(at.timestamp())
        .unwrap_or(0)
        .min(u64::from(u32::MAX));
    let nanos = if at.timestamp() < 0 {
        0
    } else {
        u64::from(at.timestamp_subsec_nanos()).min(NANOS_PER_SEC - 1)
    };
    (secs << 32) + (nanos * FRAC_PER_SEC) / NANOS_PER_SEC + 1
}

/// The UTC time of an NTP64 value (to the nanosecond, rounded down).
pub fn datetime_from_ntp64(time: u64) -> DateTime<Utc> {
    let secs = i64::from((time >> 32) as u32);
    let nanos = ((time & (FRAC_PER_SEC - 1)) * NANOS_PER_SEC) / FRAC_PER_SEC;
    // Any u32 of seconds and any fraction below one second is a valid time.
    DateTime::from_timestamp(secs, u32::try_from(nanos).unwrap_or(0)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{NewEvent, Severity, parse_timestamp};

    #[test]
    fn ntp64_round_trips_to_the_nanosecond() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2026-05-12T12:05:00.123456789Z",
            "2026-05-12T12:05:00.999999999Z",
        ] {
            let at = parse_timestamp(text).unwrap();
            let t = ntp64_from_datetime(at);
            assert_eq!(datetime_from_ntp64(t), at, "{text}");
        }
        let at = parse_timestamp("2026-05-12T12:05:00Z").unwrap();
        assert_eq!(ntp64_from_datetime(at) >> 32, 1_778_587_500);
    }

    #[test]
    fn hlc_wins_over_timestamp_when_valid() {
        let at = parse_timestamp("2026-05-12T12:05:00Z").unwrap();
        let mut ev = NewEvent::new("x", Severity::Info, "t")
            .into_event("saturn", at)
            .unwrap();
        assert_eq!(order_key(&ev).time, ntp64_from_datetime(at));
        ev.extra
            .insert(HLC_FIELD.into(), "6a03161c00000000/7f".into());
        assert_eq!(order_key(&ev).time, 0x6a03_161c_0000_0000);
        for bad in [
            "6A03161C00000000/7f",
            "6a03161c0000000/7f",
            "6a03161c00000000/",
            "6a03161c00000000",
            "7f.1",
            "6a03161c00000000/xyz",
        ] {
            ev.extra.insert(HLC_FIELD.into(), bad.into());
            assert_eq!(order_key(&ev).time, ntp64_from_datetime(at), "{bad}");
        }
        ev.extra.insert(HLC_FIELD.into(), 5.into());
        assert_eq!(order_key(&ev).time, ntp64_from_datetime(at));
    }
}
