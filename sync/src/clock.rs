//! The hybrid logical clock stamped into the events a node writes (extra field `hlc`).
//!
//! `timestamp` stays the wall-clock time the seed asks for; `hlc` (uhlc) orders events across
//! nodes whose clocks disagree: it never goes backwards on a node and moves past every `hlc`
//! the node has seen from others. Format: `<NTP64 as 16 lowercase hex digits>/<uhlc node id>`;
//! the world state orders by it (`world::order`), falling back to `timestamp` for events
//! written without one.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use uhlc::{HLC, HLCBuilder, NTP64, Timestamp};

use chrono::{DateTime, Utc};

/// Milliseconds added to the system clock (tests of clock skew; `LABMESH_CLOCK_OFFSET_MS`).
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Shifts this process's clock (for clock-skew tests and the simulator).
pub fn set_offset_ms(ms: i64) {
    OFFSET_MS.store(ms, Ordering::Relaxed);
}

/// Where time comes from. The agent uses the system clock; tests and the simulator inject
/// skewed or virtual clocks through this.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock, optionally shifted (for clock-skew tests: `LABMESH_CLOCK_OFFSET_MS`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock {
    pub offset_ms: i64,
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms)
    }
}

thread_local! {
    /// The reading of a node's own [`Clock`] while its HLC is being consulted (see
    /// [`HybridClock::with_clock`]): uhlc takes a plain `fn` as its clock, so a per-node clock
    /// can only reach it through the thread, for the length of one synchronous call.
    static READING: Cell<Option<NTP64>> = const { Cell::new(None) };
}

fn skewed_clock() -> NTP64 {
    if let Some(now) = READING.with(Cell::get) {
        return now;
    }
    let now = uhlc::system_time_clock();
    let offset = OFFSET_MS.load(Ordering::Relaxed);
    let delta = NTP64::from(std::time::Duration::from_millis(offset.unsigned_abs()));
    if offset >= 0 {
        now + delta
    } else {
        NTP64(now.as_u64().saturating_sub(delta.as_u64()))
    }
}

fn to_ntp64(time: chrono::DateTime<chrono::Utc>) -> NTP64 {
    let ms = u64::try_from(time.timestamp_millis()).unwrap_or(0);
    NTP64::from(std::time::Duration::from_millis(ms))
}

/// One node's hybrid logical clock.
pub struct HybridClock {
    hlc: HLC,
    /// The node's own clock, when it is not the process's (the simulator runs many nodes, each
    /// with its own offset and drift, in one process).
    clock: Option<Arc<dyn Clock>>,
}

impl Default for HybridClock {
    fn default() -> Self {
        Self::new()
    }
}

impl HybridClock {
    pub fn new() -> Self {
        HybridClock {
            hlc: HLCBuilder::new()
                .with_clock(skewed_clock)
                // Accept peers' clocks up to 10 minutes ahead before refusing to follow them.
                .with_max_delta(std::time::Duration::from_secs(600))
                .build(),
            clock: None,
        }
    }

    /// A clock whose physical part is read from `clock` instead of the process's clock.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        HybridClock {
            clock: Some(clock),
            ..Self::new()
        }
    }

    /// Runs `f` with the HLC reading this node's clock.
    fn read<R>(&self, f: impl FnOnce(&HLC) -> R) -> R {
        let Some(clock) = &self.clock else {
            return f(&self.hlc);
        };
        let previous = READING.with(|r| r.replace(Some(to_ntp64(clock.now()))));
        let out = f(&self.hlc);
        READING.with(|r| r.set(previous));
        out
    }

    /// A node's clock, reading `clock` for its physical part and starting past the hint the
    /// node leaves in `<data>/state/hlc` (the latest stamp it made or followed), if any: the
    /// store's, and a short-lived writer's (`labmesh emit`) on the same node.
    pub fn for_writer(data_dir: &std::path::Path, clock: Arc<dyn Clock>) -> Self {
        let hlc = Self::with_clock(clock);
        if let Ok(hint) = std::fs::read_to_string(data_dir.join("state/hlc")) {
            hlc.observe(hint.trim());
        }
        hlc
    }

    /// The wall-clock time this clock reads.
    pub fn wall_now(&self) -> DateTime<Utc> {
        match &self.clock {
            Some(clock) => clock.now(),
            None => SystemClock {
                offset_ms: OFFSET_MS.load(Ordering::Relaxed),
            }
            .now(),
        }
    }

    /// Turns a new event into one written by `node` now: the one place where an event gets
    /// its `timestamp` (this clock's wall time) and its `hlc` stamp, for the store's appends
    /// and for `labmesh emit` alike.
    pub fn stamp_event(
        &self,
        new: crate::event::NewEvent,
        node: &str,
    ) -> Result<crate::event::Event, crate::event::EventError> {
        let mut event = new.into_event(node, self.wall_now())?;
        event
            .extra
            .insert("hlc".into(), serde_json::Value::String(self.stamp()));
        Ok(event)
    }

    /// A fresh stamp, later than every stamp this clock produced or observed.
    pub fn stamp(&self) -> String {
        self.read(|hlc| format_hlc(&hlc.new_timestamp()))
    }

    /// Moves the clock past a stamp seen on an event from another node. Malformed or far-future
    /// stamps are ignored (the event is still stored; it just does not drag our clock along).
    pub fn observe(&self, text: &str) {
        if let Some(ts) = parse_hlc(text) {
            let _ = self.read(|hlc| hlc.update_with_timestamp(&ts));
        }
    }
}

pub fn format_hlc(ts: &Timestamp) -> String {
    format!("{:016x}/{}", ts.get_time().as_u64(), ts.get_id())
}

/// Parses `<16 hex>/<id>`, exactly the stamps the world's order accepts
/// ([`crate::world::order::parse_hlc`]): a stamp that may move the clock also orders events.
pub fn parse_hlc(text: &str) -> Option<Timestamp> {
    let time = crate::world::order::parse_hlc(text)?;
    let (_, id) = text.split_once('/')?;
    let id: uhlc::ID = id.parse().ok()?;
    Some(Timestamp::new(NTP64(time), id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_and_round_trip() {
        let c = HybridClock::new();
        let a = c.stamp();
        let b = c.stamp();
        assert!(b > a, "{a} {b}");
        let parsed = parse_hlc(&a).unwrap();
        assert_eq!(format_hlc(&parsed), a);
        assert!(parse_hlc("nope").is_none());
        // Observing a later stamp moves the clock past it.
        let later = format!(
            "{:016x}/{}",
            parsed.get_time().as_u64() + (1 << 32),
            parsed.get_id()
        );
        c.observe(&later);
        assert!(c.stamp() > later);
    }

    struct Fixed(chrono::DateTime<chrono::Utc>);

    impl Clock for Fixed {
        fn now(&self) -> chrono::DateTime<chrono::Utc> {
            self.0
        }
    }

    #[test]
    fn each_clock_reads_its_own_time() {
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let ahead = HybridClock::with_clock(Arc::new(Fixed(at("2040-01-01T00:00:00Z"))));
        let behind = HybridClock::with_clock(Arc::new(Fixed(at("2030-01-01T00:00:00Z"))));
        let system = HybridClock::new();
        let secs = |c: &HybridClock| u64::from(parse_hlc(&c.stamp()).unwrap().get_time().as_secs());
        assert_eq!(secs(&ahead), at("2040-01-01T00:00:00Z").timestamp() as u64);
        assert_eq!(secs(&behind), at("2030-01-01T00:00:00Z").timestamp() as u64);
        let now = chrono::Utc::now().timestamp() as u64;
        assert!(secs(&system).abs_diff(now) < 60);
    }
}
