//! Per-node wall clocks over the simulation's virtual time (turmoil has no per-host skew).
//!
//! A node's clock reads `epoch + virtual time + offset + drift`, and goes into its event store
//! ([`sync::StoreConfig::clock`]) so that both event timestamps and HLC stamps carry the skew.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use chrono::{DateTime, Utc};

/// Milliseconds of virtual time since the start of the run; the driver loop advances it after
/// every simulation step, so every node and the workload read the same value.
#[derive(Debug, Default)]
pub struct VirtualTime(AtomicU64);

impl VirtualTime {
    pub fn set_ms(&self, ms: u64) {
        self.0.store(ms, Ordering::Relaxed);
    }

    pub fn ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One node's wall clock.
#[derive(Debug)]
pub struct NodeClock {
    time: Arc<VirtualTime>,
    epoch: DateTime<Utc>,
    offset_ms: AtomicI64,
    /// Parts per million the clock gains (negative: loses) over virtual time.
    drift_ppm: i64,
}

impl NodeClock {
    pub fn new(
        time: Arc<VirtualTime>,
        epoch: DateTime<Utc>,
        offset_ms: i64,
        drift_ppm: i64,
    ) -> Self {
        NodeClock {
            time,
            epoch,
            offset_ms: AtomicI64::new(offset_ms),
            drift_ppm,
        }
    }

    /// Steps the clock by `ms` (an NTP correction, a VM resumed from suspend).
    pub fn jump(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

impl sync::Clock for NodeClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = i64::try_from(self.time.ms()).unwrap_or(i64::MAX / 2);
        let drift = elapsed.saturating_mul(self.drift_ppm) / 1_000_000;
        self.epoch + chrono::Duration::milliseconds(elapsed + self.offset_ms() + drift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync::Clock;

    #[test]
    fn offset_drift_and_jumps_add_up() {
        let time = Arc::new(VirtualTime::default());
        let epoch = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        let clock = NodeClock::new(time.clone(), epoch, -5_000, 100);
        assert_eq!(clock.now(), epoch - chrono::Duration::seconds(5));
        time.set_ms(1_000_000);
        // 1000 s of virtual time, 100 ppm fast: 100 ms gained.
        assert_eq!(
            clock.now(),
            epoch + chrono::Duration::milliseconds(1_000_000 - 5_000 + 100)
        );
        clock.jump(3_600_000);
        assert_eq!(
            clock.now(),
            epoch + chrono::Duration::milliseconds(1_000_000 - 5_000 + 100 + 3_600_000)
        );
    }
}
