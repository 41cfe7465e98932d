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
