//! Unit tests of `state.rs` (kept apart so the module reads as one idea).
use super::*;
use chrono::TimeZone;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + s, 0).unwrap()
}

fn obs(cond: Condition, at: i64, for_s: u64) -> Observation {
    let mut labels = Labels::new();
    labels.insert("node".into(), "vm1".into());
    Observation {
        rule: "disk_used".into(),
        subject: "vm1:/".into(),
        labels,
        condition: cond,
        summary: "full".into(),
        at: t(at),
        for_: Duration::from_secs(for_s),
        start_key: None,
    }
}

fn statuses(book: &AlertBook) -> Vec<Status> {
    book.open().map(|a| a.status).collect()
}

#[test]
fn pending_for_then_firing_then_resolved() {
    let mut b = AlertBook::new("vm1");
    b.observe(obs(Condition::Raise(Severity::Warning), 0, 300), None, t(0));
    assert_eq!(statuses(&b), [Status::Pending]);
    assert_eq!(b.next_deadline(), Some(t(300)));
    b.observe(
        obs(Condition::Raise(Severity::Warning), 200, 300),
        None,
        t(200),
    );
    assert_eq!(statuses(&b), [Status::Pending]);
    b.tick(t(300));
    assert_eq!(statuses(&b), [Status::Firing]);
    let recs = b.take_records(|_| true);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].event_type, ALERT_FIRING);
    assert_eq!(recs[0].payload["started_at"], "2026-05-28T20:31:40.000Z");
    assert!(b.take_records(|_| true).is_empty(), "recorded once");
    b.observe(obs(Condition::Clear, 400, 300), None, t(400));
    assert!(statuses(&b).is_empty());
    let recs = b.take_records(|_| true);
    assert_eq!(recs[0].event_type, ALERT_RESOLVED);
    assert_eq!(recs[0].payload["resolved_at"], "2026-05-28T20:33:20.000Z");
}

#[test]
fn a_short_spike_and_the_hysteresis_band_never_fire() {
    let mut b = AlertBook::new("vm1");
    b.observe(obs(Condition::Raise(Severity::Warning), 0, 300), None, t(0));
    b.observe(obs(Condition::Clear, 60, 300), None, t(60));
    b.tick(t(1000));
    assert!(b.alerts().next().is_none());
    // Firing, then values in the band between clear and raise keep it firing.
    b.observe(
        obs(Condition::Raise(Severity::Warning), 2000, 0),
        None,
        t(2000),
    );
    for s in 1..10 {
        b.observe(
            obs(Condition::Hold, 2000 + s * 60, 0),
            None,
            t(2000 + s * 60),
        );
    }
    assert_eq!(statuses(&b), [Status::Firing]);
}

#[test]
fn escalation_stays_in_the_episode_and_is_recorded_again() {
    let mut b = AlertBook::new("vm1");
    b.observe(obs(Condition::Raise(Severity::Warning), 0, 0), None, t(0));
    let first = b.take_records(|_| true);
    b.observe(
        obs(Condition::Raise(Severity::Critical), 60, 0),
        None,
        t(60),
    );
    b.observe(
        obs(Condition::Raise(Severity::Warning), 120, 0),
        None,
        t(120),
    );
    let second = b.take_records(|_| true);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].severity, Severity::Critical);
    assert_eq!(first[0].correlation_id, second[0].correlation_id);
}

#[test]
fn late_inputs_are_ignored_and_event_alerts_resolve_when_quiet() {
    let mut b = AlertBook::new("vm1");
    let mut o = obs(Condition::Raise(Severity::Error), 100, 0);
    o.start_key = Some("event-1".into());
    b.observe(o, Some(Duration::from_secs(3600)), t(100));
    b.observe(
        obs(Condition::Clear, 50, 0),
        Some(Duration::from_secs(3600)),
        t(101),
    );
    assert_eq!(statuses(&b), [Status::Firing]);
    assert_eq!(b.next_deadline(), Some(t(3700)));
    b.tick(t(3700));
    assert!(statuses(&b).is_empty());
    assert_eq!(b.alerts().next().unwrap().status, Status::Resolved);
}

fn recorded(book_of: &str, at: i64) -> (AlertBook, Vec<Event>) {
    let mut b = AlertBook::new(book_of);
    b.observe(obs(Condition::Raise(Severity::Warning), at, 0), None, t(at));
    let evs = b
        .take_records(|_| true)
        .into_iter()
        .map(|n| n.into_event(book_of, t(at)).unwrap())
        .collect();
    (b, evs)
}

#[test]
fn a_follower_adopts_the_recorded_episode() {
    let (a, events) = recorded("vm1", 0);
    let mut b = AlertBook::new("vm2");
    b.observe(obs(Condition::Raise(Severity::Warning), 3, 0), None, t(3));
    assert_ne!(
        b.open().next().unwrap().episode,
        a.open().next().unwrap().episode
    );
    b.on_event(&events[0], |_| true);
    assert_eq!(
        b.open().next().unwrap().episode,
        a.open().next().unwrap().episode
    );
    assert!(
        b.take_records(|_| true).is_empty(),
        "already recorded by vm1"
    );
    // A node that saw nothing itself adopts it as firing.
    let mut c = AlertBook::new("vm3");
    c.on_event(&events[0], |_| true);
    assert_eq!(c.alerts().count(), 1);
    c.observe(obs(Condition::Clear, 10, 0), None, t(10));
    let recs = c.take_records(|_| true);
    assert_eq!(recs[0].event_type, ALERT_RESOLVED);
    assert_eq!(recs[0].correlation_id, events[0].correlation_id);
}

#[test]
fn partition_episodes_resolve_together_and_late_firing_is_ignored() {
    let (_, ev_a) = recorded("vm1", 0);
    let (mut b, ev_b) = recorded("vm2", 1);
    b.on_event(&ev_a[0], |_| true);
    assert_eq!(b.open().count(), 2);
    b.observe(obs(Condition::Clear, 100, 0), None, t(100));
    let recs = b.take_records(|_| true);
    assert_eq!(recs.len(), 2, "both episodes get their alert_resolved");
    let resolved: Vec<Event> = recs
        .into_iter()
        .map(|n| n.into_event("vm2", t(100)).unwrap())
        .collect();
    let mut c = AlertBook::new("vm3");
    for e in resolved.iter().chain(&ev_b) {
        c.on_event(e, |_| true);
    }
    assert_eq!(
        c.open().count(),
        0,
        "a firing event after its resolution is stale"
    );
}

#[test]
fn a_resolution_that_arrives_before_its_firing_still_shows_the_resolved_episode() {
    let (mut a, firing) = recorded("vm1", 0);
    a.observe(obs(Condition::Clear, 100, 0), None, t(100));
    let resolved: Vec<Event> = a
        .take_records(|_| true)
        .into_iter()
        .map(|n| n.into_event("vm1", t(100)).unwrap())
        .collect();
    // A node back from a crash gets both in one sync, in hash order: resolution first.
    let mut late = AlertBook::new("vm2");
    for e in resolved.iter().chain(&firing) {
        late.on_event(e, |_| true);
    }
    let mut in_order = AlertBook::new("vm3");
    for e in firing.iter().chain(&resolved) {
        in_order.on_event(e, |_| true);
    }
    let seen = |b: &AlertBook| -> Vec<(String, Status, Option<DateTime<Utc>>)> {
        b.alerts()
            .map(|a| (a.episode.clone(), a.status, a.resolved_at))
            .collect()
    };
    assert_eq!(seen(&in_order).len(), 1);
    assert_eq!(seen(&late), seen(&in_order));
    assert_eq!(late.alerts().next().unwrap().labels["node"], "vm1");
    assert!(late.take_records(|_| true).is_empty(), "already recorded");
}
