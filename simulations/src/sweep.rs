//! The scaling sweep: one partition-and-heal scenario at growing N.

use crate::scenario::{Fault, LinkSpec, Rates, Scenario};

/// Sizes the sweep runs by default.
pub const SIZES: [usize; 4] = [10, 100, 300, 1000];

/// 10 virtual minutes of workload at `n` nodes: halves split at 2 min, healed at 5 min, then a
/// 2 min quiet tail. `alerting: false` runs sync and the world only. Per node per hour: 0.5 incidents, 0.5 deployments, 2 metric samples.
pub fn scenario(n: usize, alerting: bool) -> Scenario {
    let half: Vec<usize> = (0..n / 2).collect();
    Scenario {
        name: format!("sweep-{n}"),
        nodes: n,
        duration_s: 600,
        quiet_s: 120,
        rates: Rates {
            incidents_per_hour: 0.5,
            deployments_per_hour: 0.5,
            metrics_per_hour: 2.0,
            incident_s: 300,
        },
        link: LinkSpec {
            latency_ms: 2,
            jitter_ms: 3,
            loss: 0.001,
        },
        node_links: Vec::new(),
        clock_offsets: Vec::new(),
        transient: Vec::new(),
        faults: vec![
            Fault::Partition {
                at_s: 120,
                groups: vec![half],
            },
            Fault::Heal { at_s: 300 },
        ],
        tick_ms: 1000,
        alerting,
        detect_ms: 10_000,
        receiver_outages: Vec::new(),
        notify_ms: 200,
        max_sessions: crate::scenario::default_max_sessions(),
        loss_model: Default::default(),
    }
}
