//! The simulations run the code that ships, not a copy of it: the discrete simulator
//! schedules reconciliation with the agent's `sync::schedule::Scheduler` at the agent's
//! settings, and every full-stack node runs the agent's own drivers (mesh, sync, world,
//! alerting) from the `labmesh` library. A setting changed in the agent's defaults changes
//! both simulations; these tests fail if either grows its own copy again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use simulations::fullstack::{FullScenario, FullstackConfig, run};
use simulations::{Scenario, Sim};
use sync::schedule::ScheduleConfig;

#[test]
fn the_discrete_simulator_schedules_with_the_agents_defaults() {
    let s = Scenario::load("split-brain-5").unwrap();
    let sim = Sim::new(&s, 1).unwrap();
    let agent = ScheduleConfig::default();
    for node in &sim.nodes {
        let cfg = node.schedule.config();
        // What the scenario varies (its sweep axes) ...
        assert_eq!(cfg.tick, Duration::from_millis(s.tick_ms));
        assert_eq!(cfg.differ_delay, Duration::from_millis(s.differ_delay_ms));
        assert_eq!(cfg.max_sessions, s.max_sessions);
        // ... and everything else is the agent's.
        assert_eq!(cfg.anti_entropy_interval, agent.anti_entropy_interval);
        assert_eq!(cfg.session_timeout, agent.session_timeout);
        assert_eq!(cfg.world_resend_min, agent.world_resend_min);
        assert_eq!(cfg.world_resend_max, agent.world_resend_max);
    }
}

#[test]
fn the_full_stack_schedules_with_the_agents_defaults_but_a_shorter_anti_entropy() {
    let cfg = FullstackConfig::new(3, 1, FullScenario::Steady);
    let agent = ScheduleConfig::default();
    assert_eq!(
        cfg.sync,
        ScheduleConfig {
            anti_entropy_interval: cfg.sync.anti_entropy_interval,
            ..agent
        }
    );
}

/// A crash in the full stack is seen, recorded and alerted on by the agent's own drivers:
/// the mesh driver writes the liveness transitions (`labmesh-mesh`), the alerting driver the
/// alert and its ledger (`labmesh-alerting`), and the world driver's state agrees on every
/// node (an invariant of every run).
#[test]
fn full_stack_nodes_run_the_agents_drivers() {
    let o = run(&FullstackConfig::new(5, 5, FullScenario::Crash)).unwrap();
    assert!(o.ok(), "{o:#?}");
    let count = |source: &str| o.events_by_source.get(source).copied().unwrap_or(0);
    assert!(count("labmesh-mesh") > 0, "{:?}", o.events_by_source);
    assert!(count("labmesh-alerting") > 0, "{:?}", o.events_by_source);
    assert!(count("fullstack") > 0, "{:?}", o.events_by_source);
}
