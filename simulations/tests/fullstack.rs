//! The shipping mesh and sync code on turmoil (see `simulations::fullstack`): every run checks
//! its invariants (equal event sets, every acknowledged event everywhere, no reachable peer
//! declared dead) and these tests add what each scenario must show.

use simulations::fullstack::{FullScenario, FullstackConfig, Outcome, run};

fn run_ok(cfg: &FullstackConfig) -> Outcome {
    let outcome = match run(cfg) {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    assert!(outcome.ok(), "{:#?}", outcome);
    outcome
}

#[test]
fn five_nodes_converge() {
    let o = run_ok(&FullstackConfig::new(5, 7, FullScenario::Steady));
    assert_eq!(o.events_acknowledged, 25);
    assert!(o.join_ms.is_some_and(|j| j <= 10_000), "{o:?}");
    // Bytes went over the simulated QUIC connections.
    assert!(o.bytes_per_node_per_s > 0.0);
}

#[test]
fn split_two_three_with_writes_on_both_sides_heals_to_equal_sets() {
    let o = run_ok(&FullstackConfig::new(5, 11, FullScenario::Split));
    // 5 rounds by everyone, and the build_failed written before the split.
    assert_eq!(o.events_acknowledged, 26);
    // Each side saw the other go down, and the sets converged only through sessions after
    // the heal (the partition outlived the QUIC connections across it).
    assert!(o.detection_ms.is_some(), "{o:?}");
    assert!(o.convergence_ms.is_some_and(|c| c > 0), "{o:?}");
    assert!(o.sessions_completed > 0, "{o:?}");
}

#[test]
fn crashed_node_restarts_with_its_data_and_catches_up() {
    let o = run_ok(&FullstackConfig::new(5, 5, FullScenario::Crash));
    // One round by everyone, then the four survivors wrote while the fifth was down; it
    // holds them all at the end.
    assert_eq!(o.events_acknowledged, 25);
    // It restarted on its data dir: the store it reopened held what it had before the crash
    // (at least its own event of the first round).
    let starts = &o.opened_with["n4"];
    assert_eq!(starts.len(), 2, "{o:?}");
    assert!(starts[1] >= 1, "{o:?}");
    assert!(o.detection_ms.is_some(), "{o:?}");
    assert!(o.convergence_ms.is_some_and(|c| c > 0), "{o:?}");
}

#[test]
fn lossy_links_declare_no_reachable_peer_dead() {
    let mut cfg = FullstackConfig::new(5, 3, FullScenario::Steady);
    cfg.loss = 0.05;
    let o = run_ok(&cfg);
    assert!(o.datagrams_lost > 0, "{o:?}");
    assert_eq!(o.false_dead, 0);
    // QUIC resends what the loss took: every event still reaches every node within the
    // issue's 2 s (about 1 s at worst here: one probe timeout).
    assert!(o.dissemination_p99_ms.is_some_and(|p| p <= 2_000), "{o:?}");
}

#[test]
fn a_quiet_mesh_spreads_each_write_in_milliseconds() {
    let o = run_ok(&FullstackConfig::new(5, 4, FullScenario::Steady));
    // 25 writes, all while the mesh is whole: each reaches the four peers by eager push.
    assert!(o.dissemination_p99_ms.is_some_and(|p| p < 200), "{o:?}");
}

#[test]
fn skewed_clocks_and_a_clock_jump_still_converge() {
    let o = run_ok(&FullstackConfig::new(5, 9, FullScenario::Skew));
    assert_eq!(o.events_acknowledged, 25);
}

#[test]
fn same_seed_gives_the_same_trace() {
    let cfg = FullstackConfig::new(5, 21, FullScenario::Split);
    let a = run_ok(&cfg);
    let b = run_ok(&cfg);
    assert_eq!(a.trace_hash, b.trace_hash);
    let other = run_ok(&FullstackConfig::new(5, 22, FullScenario::Split));
    assert_ne!(a.trace_hash, other.trace_hash);
}

#[test]
fn restart_within_the_idle_timeout_catches_up_at_once() {
    // The victim is back 3 s after its crash, while its peers' QUIC connections to the old
    // process still look alive (idle timeout 10 s). Until they stop using those connections,
    // everything they send it is dropped by its new endpoint; so convergence measures how fast
    // they switch to the restarted process. Without the switch it took 9.8-13.6 s (seeds
    // 1-6); with it 3.3 s, or 7.1 s where a session a peer began during the crash waited for
    // its timeout and the restarted node started its own. Dropping sessions with a peer whose
    // process changed (as the agent does) removed the 7.1 s (seeds 1-20: 3.3-3.5 s).
    for seed in [1, 2, 3, 4, 5, 6] {
        let o = run_ok(&FullstackConfig::new(5, seed, FullScenario::Restart));
        assert_eq!(o.events_acknowledged, 9, "{o:?}");
        assert_eq!(o.opened_with["n4"].len(), 2, "{o:?}");
        assert!(o.convergence_ms.is_some_and(|c| c <= 5_000), "{o:?}");
    }
}

fn build_failed_sends(o: &Outcome) -> Vec<&simulations::fullstack::node::Delivered> {
    o.notifications
        .iter()
        .filter(|d| d.rule == "build_failed" && d.accepted)
        .collect()
}

#[test]
fn split_has_one_alerter_per_side_and_one_after_heal() {
    let o = run_ok(&FullstackConfig::new(5, 11, FullScenario::Split));
    // Checked while every view was stable, during the split and after the heal.
    assert!(o.alerter_checks > 0, "{o:?}");
    let during = o.alerters_during_fault.clone().unwrap_or_default();
    assert_eq!(
        during,
        [vec!["n0".to_owned()], vec!["n2".to_owned()]],
        "{o:?}"
    );
    assert_eq!(
        o.alerters_at_end,
        Some(vec![vec!["n0".to_owned()]]),
        "{o:?}"
    );
}

#[test]
fn split_pages_the_alert_written_before_it_once_on_each_side() {
    let o = run_ok(&FullstackConfig::new(5, 13, FullScenario::Split));
    let sends = build_failed_sends(&o);
    assert_eq!(sends.len(), 2, "{o:#?}");
    // One episode, told once by each side's alerter (allowed: neither could see the other's
    // ledger), and not again after the heal.
    assert_eq!(sends[0].episode, sends[1].episode, "{o:#?}");
    let mut senders: Vec<&str> = sends.iter().map(|d| d.sender.as_str()).collect();
    senders.sort_unstable();
    assert_eq!(senders, ["n0", "n2"], "{o:#?}");
}

#[test]
fn the_next_alerter_sends_an_alert_the_crashed_alerter_held_exactly_once() {
    for seed in [1, 2, 3] {
        let o = run_ok(&FullstackConfig::new(5, seed, FullScenario::AlerterCrash));
        // n0 was the alerter and crashed inside the group wait; n1 took over and sent it.
        assert_eq!(
            o.alerters_during_fault,
            Some(vec![vec!["n1".to_owned()]]),
            "{o:?}"
        );
        let sends = build_failed_sends(&o);
        assert_eq!(sends.len(), 1, "{o:#?}");
        assert_eq!(sends[0].sender, "n1", "{o:#?}");
        // Nothing else was told twice either (checked by the run's invariant), and the
        // restarted n0 did not send it again from its replayed log.
        assert_eq!(o.opened_with["n0"].len(), 2, "{o:?}");
    }
}

#[test]
fn a_refused_notification_is_retried_by_the_next_alerter_and_told_once() {
    // The receiver refuses everything for the first 51 s: the next alerter's first attempt
    // (at the end of the group wait, about 46 s in) fails, its retry after the 10 s backoff
    // is accepted.
    let mut cfg = FullstackConfig::new(5, 4, FullScenario::AlerterCrash);
    cfg.receiver_down_until = std::time::Duration::from_secs(51);
    let o = run_ok(&cfg);
    let all: Vec<_> = o
        .notifications
        .iter()
        .filter(|d| d.rule == "build_failed")
        .collect();
    let refused: Vec<_> = all.iter().filter(|d| !d.accepted).collect();
    let accepted = build_failed_sends(&o);
    assert!(!refused.is_empty(), "{o:#?}");
    assert_eq!(accepted.len(), 1, "{o:#?}");
    assert_eq!(accepted[0].sender, "n1", "{o:#?}");
    assert!(
        refused.iter().all(|r| r.at_ms < accepted[0].at_ms),
        "{o:#?}"
    );
}

#[test]
fn a_laptop_back_after_three_days_away_catches_up_on_every_day() {
    let o = run_ok(&FullstackConfig::new(5, 17, FullScenario::OfflineDays));
    // Day 0 by everyone, one more by the laptop that nobody got before it went down, 5 a day
    // by the four others for 3 days, a round by everyone once the laptop is back.
    assert_eq!(o.events_acknowledged, 5 + 1 + 4 * 5 * 3 + 5, "{o:?}");
    // The events span the absence, and at the agent's default window (30 days) none has left
    // it: every acknowledged event was compared, and is everywhere (the run's invariant),
    // the laptop's last one included.
    assert!(o.clock_span_ms >= 3 * 86_400_000, "{o:?}");
    assert_eq!(o.outside_window, 0, "{o:?}");
    // It restarted on its data dir, holding day 0 and its unsent event.
    let starts = &o.opened_with["n4"];
    assert_eq!(starts.len(), 2, "{o:?}");
    assert!(starts[1] >= 6, "{o:?}");
    assert!(o.detection_ms.is_some(), "{o:?}");
    assert!(o.convergence_ms.is_some_and(|c| c > 0), "{o:?}");
    assert_eq!(o.false_dead, 0, "{o:?}");
}

#[test]
fn an_absence_longer_than_the_window_leaves_the_laptops_old_event_behind() {
    // A 2-day window (retention) against 3 days away: when the laptop is back, its unsent
    // day-0 event is older than every node's reconciled range, so no session carries it and
    // the sets are equal only from the window's start, which is what the run compares.
    let mut cfg = FullstackConfig::new(5, 17, FullScenario::OfflineDays);
    cfg.sync.window = std::time::Duration::from_secs(2 * 86_400);
    let o = run_ok(&cfg);
    // Day 0: the round by everyone and the laptop's unsent event.
    assert_eq!(o.outside_window, 6, "{o:?}");
    assert_eq!(o.window_start_ms, EPOCH_MS + 86_400_000, "{o:?}");
    // Every node pruned day 0 as the agent does when its date moves (the laptop when it
    // started again), so the fingerprints, which cover whole stores, agree again.
    assert!(o.oldest_held_ms >= Some(o.window_start_ms), "{o:?}");
}

const EPOCH_MS: i64 = simulations::fullstack::run::EPOCH_SECS * 1000;
