//! The shipped scenarios and the simulator's own guarantees, at sizes that run in seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use simulations::scenario::{Fault, scenarios_dir};
use simulations::{Scenario, run_seed, sweep};

fn shipped(name: &str) -> Scenario {
    Scenario::load(name).unwrap()
}

fn assert_ok(s: &Scenario, seed: u64) -> simulations::Report {
    let r = run_seed(s, seed).unwrap();
    assert!(r.ok(), "{}", r.failure().unwrap_or_default());
    r
}

/// A shortened split-brain: 10 min of workload, split 2|3 from minute 2 to minute 6.
fn short_split() -> Scenario {
    let mut s = shipped("split-brain-5");
    s.duration_s = 600;
    s.quiet_s = 60;
    s.faults = vec![
        Fault::Partition {
            at_s: 120,
            groups: vec![vec![0, 1], vec![2, 3, 4]],
        },
        Fault::Heal { at_s: 360 },
    ];
    s
}

#[test]
fn every_shipped_scenario_parses() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(scenarios_dir()).unwrap() {
        let path = entry.unwrap().path();
        let s = Scenario::load(path.to_str().unwrap()).unwrap();
        names.push(s.name);
    }
    names.sort();
    for want in [
        "flaky-wifi-laptop",
        "offline-week",
        "skewed-clocks",
        "split-brain-5",
        "steady-state",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    let s = short_split();
    let a = run_seed(&s, 7).unwrap();
    let b = run_seed(&s, 7).unwrap();
    let c = run_seed(&s, 8).unwrap();
    assert!(a.messages_delivered > 0);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.messages_delivered, b.messages_delivered);
    assert_eq!(a.notifications, b.notifications);
    assert_ne!(a.trace_hash, c.trace_hash);
}

#[test]
fn split_brain_heals_to_equal_sets_and_worlds() {
    let r = assert_ok(&short_split(), 1);
    assert!(r.convergence_after_heal_ms.is_some(), "{r:?}");
    assert_eq!(r.events_not_everywhere, 0);
}

#[test]
fn skewed_clocks_converge() {
    let mut s = shipped("skewed-clocks");
    s.duration_s = 900;
    s.faults = vec![
        Fault::OneWay {
            at_s: 200,
            from: vec![0, 1],
            to: vec![4, 5],
        },
        Fault::Heal { at_s: 500 },
    ];
    assert_ok(&s, 3);
}

#[test]
fn flaky_laptop_catches_up() {
    let mut s = shipped("flaky-wifi-laptop");
    s.duration_s = 900;
    s.quiet_s = 300;
    s.faults = vec![
        Fault::Partition {
            at_s: 200,
            groups: vec![vec![5]],
        },
        Fault::Heal { at_s: 500 },
    ];
    assert_ok(&s, 2);
}

#[test]
fn a_node_back_after_hours_offline_catches_up() {
    let mut s = shipped("offline-week");
    s.duration_s = 6 * 3600;
    s.faults = vec![
        Fault::Crash { at_s: 600, node: 4 },
        Fault::Restart {
            at_s: 5 * 3600,
            node: 4,
        },
    ];
    let r = assert_ok(&s, 1);
    // Everything written while it was away reached it after the restart.
    assert!(
        r.convergence_after_heal_ms.is_some_and(|ms| ms < 120_000),
        "{r:?}"
    );
}

#[test]
fn an_unhealed_partition_is_reported_with_its_seed() {
    let mut s = short_split();
    s.faults.truncate(1);
    let r = run_seed(&s, 5).unwrap();
    let failure = r.failure().expect("sets cannot agree across a partition");
    assert!(failure.contains("seed 5"), "{failure}");
    assert!(failure.contains("event sets differ"), "{failure}");
}

#[test]
fn sweep_scenario_runs_at_small_n() {
    let mut s = sweep::scenario(10, true);
    s.duration_s = 400;
    assert_ok(&s, 1);
}
