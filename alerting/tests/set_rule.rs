//! `Engine::set_rule`: an expect rule added at run time counts its first window from its
//! declaration, raises when the job misses it, and clears when the job reports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use alerting::rules::{Expect, Rule, RuleKind};
use alerting::{Config, Engine, Status};
use common::{Rec, member, t0};
use sync::{NewEvent, Severity};

#[test]
fn an_expectation_added_at_run_time_raises_and_clears() {
    let mut engine = Engine::new("a", false, 0, Config::default(), t0());
    let mut rt = Rec::default();
    engine.on_membership(vec![member("a", true, false, 0)], t0(), &mut rt);
    let declared = t0() + chrono::Duration::hours(1);
    let rule = Rule {
        name: "expect:backup.sh".into(),
        kind: RuleKind::Expect(Expect {
            source: "backup.sh".into(),
            every: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            types: Vec::new(),
        }),
        severity: None,
        summary: None,
        labels: Default::default(),
    };
    engine.set_rule(rule.clone(), declared);
    engine.set_rule(rule, declared); // replacing keeps one rule
    assert_eq!(
        engine
            .rules()
            .rules
            .iter()
            .filter(|r| r.name == "expect:backup.sh")
            .count(),
        1
    );
    let open = |e: &Engine| {
        e.open_alerts()
            .filter(|a| a.rule == "expect:backup.sh" && a.status == Status::Firing)
            .count()
    };
    // Within its first window (counted from the declaration, not the engine's start): quiet.
    engine.tick(declared + chrono::Duration::seconds(65), &mut rt);
    assert_eq!(open(&engine), 0);
    engine.tick(declared + chrono::Duration::seconds(71), &mut rt);
    assert_eq!(open(&engine), 1);
    let at = declared + chrono::Duration::seconds(80);
    let report = NewEvent::new("backup_done", Severity::Info, "backup.sh")
        .into_event("a", at)
        .unwrap();
    engine.on_event(&report, at, &mut rt);
    assert_eq!(open(&engine), 0);
}

fn backup_rule() -> Rule {
    Rule {
        name: "expect:backup.sh".into(),
        kind: RuleKind::Expect(Expect {
            source: "backup.sh".into(),
            every: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            types: Vec::new(),
        }),
        severity: None,
        summary: None,
        labels: Default::default(),
    }
}

#[test]
fn removing_an_expectation_resolves_its_alert_and_a_replay_does_not_reopen_it() {
    let mut engine = Engine::new("a", false, 0, Config::default(), t0());
    let mut rt = Rec::default();
    engine.on_membership(vec![member("a", true, false, 0)], t0(), &mut rt);
    engine.set_rule(backup_rule(), t0());
    let firing = |e: &Engine| {
        e.open_alerts()
            .filter(|a| a.rule == "expect:backup.sh")
            .count()
    };
    let at = |s: i64| t0() + chrono::Duration::seconds(s);
    engine.tick(at(75), &mut rt);
    assert_eq!(firing(&engine), 1);
    let recorded = |rt: &Rec, kind: &str| {
        rt.events
            .iter()
            .filter(|e| e.event_type == kind && e.payload["rule"] == "expect:backup.sh")
            .count()
    };
    assert_eq!(recorded(&rt, "alert_firing"), 1);

    assert!(engine.remove_rule("expect:backup.sh", at(80)));
    engine.tick(at(80), &mut rt);
    assert_eq!(firing(&engine), 0);
    assert_eq!(
        recorded(&rt, "alert_resolved"),
        1,
        "the removal resolves it"
    );
    assert!(
        !engine
            .rules()
            .rules
            .iter()
            .any(|r| r.name == "expect:backup.sh")
    );
    // Windows keep passing: nothing raises again.
    engine.tick(at(400), &mut rt);
    assert_eq!(firing(&engine), 0);
    assert_eq!(recorded(&rt, "alert_firing"), 1);

    // A restart replays the log after the declaration and its removal: nothing reopens.
    let log: Vec<sync::Event> = rt
        .events
        .iter()
        .cloned()
        .map(|e| e.into_event("a", at(80)).unwrap())
        .collect();
    let mut again = Engine::new("a", false, 0, Config::default(), at(500));
    let mut rt2 = Rec::default();
    again.set_rule(backup_rule(), t0());
    again.remove_rule("expect:backup.sh", at(80));
    again.on_events(log.iter(), at(500), &mut rt2);
    again.on_membership(vec![member("a", true, false, 0)], at(500), &mut rt2);
    again.tick(at(600), &mut rt2);
    assert_eq!(firing(&again), 0);
    assert_eq!(
        recorded(&rt2, "alert_firing") + recorded(&rt2, "alert_resolved"),
        0
    );
}
