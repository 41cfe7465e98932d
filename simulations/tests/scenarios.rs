//! The shipped scenarios and the simulator's own guarantees, at sizes that run in seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use simulations::scenario::{CrashMoment, Fault, Window, scenarios_dir};
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
        "alerter-crash-mid-notification",
        "flaky-wifi-laptop",
        "receiver-outage",
        "rolling-restarts",
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

/// The alerter-crash scenario with one crash, at `moment`, at minute 20.
fn crash_at(moment: CrashMoment) -> Scenario {
    let mut s = shipped("alerter-crash-mid-notification");
    s.duration_s = 1800;
    s.quiet_s = 600;
    s.faults = vec![Fault::CrashNotifier {
        at_s: 1200,
        moment,
        down_s: Some(180),
    }];
    s
}

#[test]
fn an_alerter_dying_without_an_outcome_costs_at_most_one_duplicate() {
    // Seed 1 crashes mid-send on a firing that is still firing when the next alerter
    // takes over: the ledger's one accepted duplicate, and no violation.
    let r = assert_ok(&crash_at(CrashMoment::BeforeOutcome), 1);
    assert!(r.duplicate_notifications >= 1, "{r:?}");
    // Without the crash, the same run sends nothing twice.
    let mut calm = crash_at(CrashMoment::BeforeOutcome);
    calm.faults.clear();
    assert_eq!(assert_ok(&calm, 1).duplicate_notifications, 0);
}

#[test]
fn an_alerter_dying_after_the_attempt_or_the_outcome_sends_nothing_twice() {
    for moment in [CrashMoment::BeforeSend, CrashMoment::AfterOutcome] {
        for seed in 1..=3 {
            let r = assert_ok(&crash_at(moment), seed);
            assert_eq!(
                r.duplicate_notifications, 0,
                "{moment:?} seed {seed}: {r:?}"
            );
            // The crash is detected by its peers.
            assert_eq!(r.detection_p50_ms, Some(10_000), "{r:?}");
        }
    }
}

#[test]
fn a_receiver_outage_delays_notifications_but_loses_none() {
    let mut s = shipped("receiver-outage");
    s.duration_s = 1800;
    s.receiver_outages = vec![Window {
        from_s: 300,
        until_s: 1500,
    }];
    s.faults.clear();
    let r = assert_ok(&s, 2);
    assert!(r.notifications_refused > 0, "{r:?}");
    assert!(r.notifications > 0, "{r:?}");
}

#[test]
fn a_receiver_that_never_returns_is_reported_as_lost_notifications() {
    let mut s = shipped("receiver-outage");
    s.duration_s = 1200;
    s.receiver_outages = vec![Window {
        from_s: 0,
        until_s: 1_000_000,
    }];
    s.faults.clear();
    let r = run_seed(&s, 1).unwrap();
    assert_eq!(r.notifications, 0);
    let failure = r.failure().expect("nothing can arrive");
    assert!(failure.contains("never arrived"), "{failure}");
    assert!(failure.contains("--seeds 1"), "{failure}");
}

#[test]
fn rolling_restarts_with_a_clock_step_converge() {
    let mut s = shipped("rolling-restarts");
    s.duration_s = 1500;
    s.faults.retain(|f| f.at_s() < 1300);
    let r = assert_ok(&s, 4);
    assert_eq!(r.events_not_everywhere, 0, "{r:?}");
    assert!(r.convergence_after_heal_ms.is_some(), "{r:?}");
}

#[test]
fn a_partition_that_never_heals_names_a_missing_acknowledged_event() {
    let mut s = short_split();
    s.faults.truncate(1);
    let r = run_seed(&s, 5).unwrap();
    assert!(
        r.violations
            .iter()
            .any(|v| v.contains("acknowledged event")),
        "{:?}",
        r.violations
    );
}

#[test]
fn the_session_cap_shrinks_the_heal_herd() {
    let mut capped = sweep::scenario(40, false);
    capped.duration_s = 400;
    let mut herd = capped.clone();
    herd.max_sessions = 0;
    let (a, b) = (assert_ok(&capped, 1), assert_ok(&herd, 1));
    assert!(
        a.sessions * 2 < b.sessions,
        "capped {} vs uncapped {} sessions",
        a.sessions,
        b.sessions
    );
}

/// Checks that `text` is one well-formed XML element tree (tags balanced and nested).
fn well_formed(text: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = text;
    let mut roots = 0;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let top = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
            if top != name.trim() {
                return Err(format!("</{name}> closes <{top}>"));
            }
            continue;
        }
        let name = tag
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches('/');
        if stack.is_empty() {
            roots += 1;
        }
        if !tag.ends_with('/') {
            stack.push(name.to_owned());
        }
    }
    match (stack.is_empty(), roots) {
        (true, 1) => Ok(()),
        _ => Err(format!("open at the end: {stack:?}, {roots} root elements")),
    }
}

#[test]
fn the_convergence_plot_is_a_well_formed_svg() {
    let r = assert_ok(&short_split(), 1);
    assert!(r.series.len() > 10, "{} samples", r.series.len());
    let path = std::env::temp_dir().join(format!("sim-plot-{}.svg", std::process::id()));
    simulations::plot::write_svg(&path, "split-brain-5", &[r]).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert!(
        text.trim_start().starts_with("<svg"),
        "{}",
        &text[..80.min(text.len())]
    );
    well_formed(&text).unwrap();
    assert!(
        text.contains("<polyline") || text.contains("<path"),
        "no line drawn"
    );
    assert!(text.contains("event copies missing"));
    assert!(well_formed("<svg><g></svg>").is_err());
}

#[test]
fn every_send_without_an_outcome_at_a_crash_may_be_sent_once_more() {
    // Seed 276: the alerter sends two groups at once and dies after the first one's
    // outcome, before the second's; the next alerter's copy of the second is the ledger's
    // allowed duplicate, not a violation.
    let r = assert_ok(&shipped("alerter-crash-mid-notification"), 276);
    assert!(r.duplicate_notifications >= 1, "{r:?}");
}

/// lossy-100 at 20 nodes: QUIC resending lost packets (the agent's streams) against whole
/// messages dropped. Resent packets make pushes late by probe timeouts; dropped messages
/// leave events to a fingerprint-triggered session, seconds later.
#[test]
fn packet_loss_disseminates_in_probe_timeouts_message_loss_in_sessions() {
    let mut packet = shipped("lossy-100");
    packet.nodes = 20;
    packet.duration_s = 300;
    packet.rates.metrics_per_hour = 60.0;
    let mut message = shipped("lossy-100-message-loss");
    message.nodes = 20;
    message.duration_s = 300;
    message.rates.metrics_per_hour = 60.0;
    assert_eq!(packet.loss_model, simulations::scenario::LossModel::Packet);
    assert_eq!(
        message.loss_model,
        simulations::scenario::LossModel::Message
    );
    let p = assert_ok(&packet, 1);
    let m = assert_ok(&message, 1);
    let (p99p, p99m) = (
        p.dissemination_p99_ms.unwrap(),
        m.dissemination_p99_ms.unwrap(),
    );
    assert!(p99p < 1_000, "packet loss p99 {p99p} ms");
    assert!(p99m > 2_000, "message loss p99 {p99m} ms");
    assert!(
        p.sessions < m.sessions,
        "{} vs {} sessions",
        p.sessions,
        m.sessions
    );
}
