//! The shipped scenario files played on the full stack (`fullstack::scenario_play`): each must
//! end with zero violations (the run's invariants: equal sets, acknowledged events everywhere,
//! one alerter per component, no duplicate notification unless a partition or an orphaned send
//! explains it, no false death on links at <= 5 % loss, HLC stamps), and these tests add what
//! each file is about. Speeds are chosen so each run stays near a minute of wall time in a
//! debug build; `docs/simulation.md` has the figures at the default speed.

use simulations::Scenario;
use simulations::fullstack::scenario_play::{self, FileOutcome};

fn play(name: &str, seed: u64, speed: u64) -> FileOutcome {
    let s = match scenario_play::load(name) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let o = match scenario_play::play(&s, seed, Some(speed)) {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    eprintln!(
        "{name} seed {seed} speed {speed}: virtual {} ms, wall {} ms, detection {:?}, convergence {:?}, {} events, {} notifications, {:?}",
        o.outcome.virtual_ms,
        o.outcome.wall_ms,
        o.outcome.detection_ms,
        o.outcome.convergence_ms,
        o.outcome.events_acknowledged,
        o.outcome
            .notifications
            .iter()
            .filter(|n| n.accepted)
            .count(),
        o.notifier_crashes
    );
    assert!(o.ok(), "{:#?}", o);
    o
}

fn alerters(o: &FileOutcome) -> Vec<String> {
    let mut all: Vec<String> = o
        .outcome
        .alerters_during_fault
        .iter()
        .chain(&o.outcome.alerters_at_end)
        .flatten()
        .flatten()
        .cloned()
        .collect();
    all.sort();
    all.dedup();
    all
}

#[test]
fn split_brain_5_has_an_alerter_per_side_and_converges_after_heal() {
    let o = play("split-brain-5", 1, 10);
    // Two sides, each with its own alerter, while the 2 | 3 split was stable.
    let during = o.outcome.alerters_during_fault.clone().unwrap_or_default();
    assert_eq!(during.len(), 2, "{o:?}");
    assert!(o.outcome.detection_ms.is_some(), "{o:?}");
    assert!(o.outcome.convergence_ms.is_some(), "{o:?}");
}

#[test]
fn rolling_restarts_bring_every_node_back_on_its_data() {
    let o = play("rolling-restarts", 1, 6);
    for (node, starts) in &o.outcome.opened_with {
        assert_eq!(starts.len(), 2, "{node}: {o:?}");
        assert!(starts[1] > 0, "{node} restarted on an empty store: {o:?}");
    }
}

#[test]
fn skewed_clocks_with_a_one_way_cut_converge() {
    let o = play("skewed-clocks", 1, 10);
    // The ±10 min offsets show in the events' own timestamps.
    assert!(o.outcome.clock_span_ms >= 1_200_000, "{o:?}");
}

#[test]
fn the_flaky_wifi_laptop_is_never_the_alerter() {
    let o = play("flaky-wifi-laptop", 1, 10);
    assert!(!alerters(&o).contains(&"n5".to_owned()), "{o:?}");
    assert!(o.outcome.datagrams_lost > 0, "{o:?}");
}

#[test]
fn alerter_crashes_mid_notification_tell_each_alert_at_most_once_more() {
    let o = play("alerter-crash-mid-notification", 1, 3);
    // The three traps fired, each on the node that was sending, and each came back.
    let stopped = o
        .notifier_crashes
        .iter()
        .filter(|n| n.contains("stopped"))
        .count();
    assert_eq!(stopped, 3, "{o:?}");
    assert!(o.outcome.notifications.iter().any(|n| n.accepted), "{o:?}");
}

#[test]
fn a_receiver_outage_delays_notifications_but_loses_none() {
    let o = play("receiver-outage", 1, 10);
    let refused = o
        .outcome
        .notifications
        .iter()
        .filter(|n| !n.accepted)
        .count();
    assert!(refused > 0, "{o:?}");
    assert_eq!(o.outcome.opened_with["n0"].len(), 2, "{o:?}");
}

#[test]
fn steady_state_ten_nodes_agree() {
    let o = play("steady-state", 1, 20);
    assert_eq!(o.outcome.nodes, 10);
    assert_eq!(o.outcome.false_dead, 0, "{o:?}");
}

#[test]
fn offline_week_laptop_catches_up_after_its_absence() {
    let o = play("offline-week", 1, 4000);
    let starts = &o.outcome.opened_with["n4"];
    assert_eq!(starts.len(), 2, "{o:?}");
    assert!(o.outcome.detection_ms.is_some(), "{o:?}");
    assert!(o.outcome.convergence_ms.is_some(), "{o:?}");
}

#[test]
fn a_hundred_node_file_is_refused() {
    let err = scenario_play::load("lossy-100").unwrap_err();
    assert!(err.contains("100 nodes"), "{err}");
    assert!(err.contains("lossy-100"), "{err}");
}

const SHORT: &str = r#"
name = "short-split"
nodes = 4
duration_s = 60
quiet_s = 20

[rates]
incidents_per_hour = 60.0
deployments_per_hour = 60.0
metrics_per_hour = 240.0
incident_s = 40

[[faults]]
kind = "partition"
at_s = 15
groups = [[0]]

[[faults]]
kind = "heal"
at_s = 40
"#;

#[test]
fn a_file_replays_the_same_trace_for_the_same_seed() {
    let s = Scenario::from_toml(SHORT).unwrap();
    let run = |seed| scenario_play::play(&s, seed, None).unwrap();
    let a = run(3);
    let b = run(3);
    assert!(a.ok() && b.ok(), "{a:#?}\n{b:#?}");
    assert_eq!(a.speed, 1);
    assert!(a.outcome.events_acknowledged > 20, "{a:?}");
    assert_eq!(a.outcome.trace_hash, b.outcome.trace_hash);
    let other = run(4);
    assert_ne!(a.outcome.trace_hash, other.outcome.trace_hash);
}
