//! Unit tests of `pipeline.rs`.
use super::*;
use std::time::Duration;

#[test]
fn backoff_doubles_and_caps() {
    let r = RetryPolicy::default();
    let secs: Vec<u64> = (1..=7).map(|a| r.backoff(a).as_secs()).collect();
    assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(r.backoff(1000), Duration::from_secs(300));
}

use crate::rules::{Condition, Observation};
use crate::runtime::{Notification, Timer};
use crate::state::AlertBook;
use chrono::TimeZone;
use sync::NewEvent;

#[derive(Default)]
struct Rec {
    events: Vec<NewEvent>,
    notes: Vec<Notification>,
}

impl Runtime for Rec {
    fn write_event(&mut self, e: NewEvent) {
        self.events.push(e);
    }
    fn notify(&mut self, n: Notification) {
        self.notes.push(n);
    }
    fn submit_after(&mut self, _: Timer, _: Duration) {}
}

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + s, 0).unwrap()
}

fn setup() -> (AlertBook, Pipeline) {
    let cfg =
        crate::Config::from_toml_str("[[receiver]]\nkind = \"ntfy\"\ntopic = \"lab\"\n").unwrap();
    (
        AlertBook::new("vm1"),
        Pipeline::new("vm1", cfg.pipeline, Suppressions::default()),
    )
}

fn raise(book: &mut AlertBook, subject: &str, cond: Condition, at: i64) {
    let mut labels = Labels::new();
    labels.insert("node".into(), "vm1".into());
    labels.insert("rule".into(), "disk_used".into());
    let obs = Observation {
        rule: "disk_used".into(),
        subject: subject.into(),
        labels,
        condition: cond,
        summary: format!("{subject} full"),
        at: t(at),
        for_: Duration::ZERO,
        start_key: None,
    };
    book.observe(obs, None, t(at));
}

#[test]
fn group_wait_then_group_interval_then_resolved() {
    let (mut book, mut p) = setup();
    let mut rt = Rec::default();
    raise(&mut book, "vm1:/", Condition::Raise(Severity::Warning), 0);
    let live = |_: &str| true;
    assert_eq!(
        p.advance(book.alerts(), Mode::Send, &live, t(0), &mut rt),
        Some(t(30))
    );
    assert!(rt.notes.is_empty());
    // A second alert of the same group joins the first message.
    raise(
        &mut book,
        "vm1:/data",
        Condition::Raise(Severity::Warning),
        10,
    );
    p.advance(book.alerts(), Mode::Send, &live, t(30), &mut rt);
    assert_eq!(rt.notes.len(), 1);
    assert_eq!(rt.notes[0].message.title, "[FIRING:2] disk_used");
    let kinds: Vec<&str> = rt.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        ["notification_attempted"],
        "the attempt is recorded before the send"
    );
    let id = rt.notes[0].id.clone();
    assert!(p.on_result(&id, Ok(()), t(31), &mut rt));
    // It resolves: news, but not before group_interval after the last send.
    raise(&mut book, "vm1:/", Condition::Clear, 40);
    assert_eq!(
        p.advance(book.alerts(), Mode::Send, &live, t(40), &mut rt),
        Some(t(331))
    );
    p.advance(book.alerts(), Mode::Send, &live, t(331), &mut rt);
    assert_eq!(rt.notes.len(), 2);
    let m = &rt.notes[1].message;
    assert_eq!(m.title, "[FIRING:1] disk_used");
    let new: Vec<(&str, bool)> = m
        .alerts
        .iter()
        .map(|a| (a.subject.as_str(), a.new))
        .collect();
    assert_eq!(new, [("vm1:/data", false), ("vm1:/", true)]);
}

#[test]
fn settling_keeps_retries_and_a_follower_hands_them_over() {
    let (mut book, mut p) = setup();
    let mut rt = Rec::default();
    let live = |_: &str| true;
    raise(&mut book, "vm1:/", Condition::Raise(Severity::Warning), 0);
    p.advance(book.alerts(), Mode::Send, &live, t(0), &mut rt);
    p.advance(book.alerts(), Mode::Send, &live, t(30), &mut rt);
    let id = rt.notes[0].id.clone();
    p.on_result(&id, Err("503".into()), t(31), &mut rt);
    // Settling: the retry waits, and no wake-up is asked for it.
    let wake = p.advance(book.alerts(), Mode::Hold, &live, t(60), &mut rt);
    assert!(wake.is_none_or(|w| w > t(60)));
    assert_eq!(rt.notes.len(), 1);
    // Alerter again: the retry goes out as attempt 2.
    p.advance(book.alerts(), Mode::Send, &live, t(61), &mut rt);
    assert_eq!((rt.notes.len(), rt.notes[1].attempt), (2, 2));
    p.on_result(&id, Err("503".into()), t(62), &mut rt);
    // Follower: handed over, so the alerter need not wait for it to go stale.
    p.advance(book.alerts(), Mode::HandOver, &live, t(63), &mut rt);
    let last = rt.events.last().unwrap();
    assert_eq!(last.event_type, "notification_failed");
    assert_eq!(last.payload["handed_over"], true);
    assert_eq!(
        p.ledger.busy_until(
            "x",
            "ntfy",
            Stage::Resolved,
            Duration::from_secs(120),
            &live,
            t(63)
        ),
        None
    );
}

#[test]
fn a_late_report_of_an_earlier_attempt_is_ignored() {
    let (mut book, mut p) = setup();
    let mut rt = Rec::default();
    let live = |_: &str| true;
    raise(&mut book, "vm1:/", Condition::Raise(Severity::Warning), 0);
    p.advance(book.alerts(), Mode::Send, &live, t(0), &mut rt);
    p.advance(book.alerts(), Mode::Send, &live, t(30), &mut rt);
    let id = rt.notes[0].id.clone();
    let count = |rt: &Rec, kind: &str| rt.events.iter().filter(|e| e.event_type == kind).count();
    // Attempt 1 hangs: the core gives it up at its deadline (30 s) and retries 10 s later.
    p.advance(book.alerts(), Mode::Send, &live, t(60), &mut rt);
    assert_eq!(count(&rt, "notification_failed"), 1);
    // The driver's own timeout of it comes a moment later: no second failure for attempt 1.
    assert!(!p.on_result(&id, Err("timed out".into()), t(61), &mut rt));
    assert_eq!(count(&rt, "notification_failed"), 1);
    p.advance(book.alerts(), Mode::Send, &live, t(70), &mut rt);
    assert_eq!((rt.notes.len(), rt.notes[1].attempt), (2, 2));
    // A report of attempt 1 arriving while attempt 2 is under way does not fail attempt 2.
    assert!(!p.on_attempt_result(&id, Some(1), Err("timed out".into()), t(71), &mut rt));
    assert_eq!(count(&rt, "notification_failed"), 1);
    assert!(p.on_attempt_result(&id, Some(2), Ok(()), t(72), &mut rt));
    assert_eq!(count(&rt, "notification_sent"), 1);
    assert_eq!(rt.notes.len(), 2, "no third attempt");
}
