//! A receiver that is down for ten virtual minutes — first answering 500, then hanging past the
//! send timeout — while alerts fire and resolve, then comes back: every (episode, receiver,
//! stage) reaches it exactly once, firing before resolved, and the retries back off and cap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use alerting::Notification;
use alerting::Role;
use chrono::{DateTime, Utc};
use common::World;
use serde_json::json;

const PHONE: &str = "[[receiver]]\nname = \"phone\"\nkind = \"ntfy\"\ntopic = \"lab\"\n";

/// What the receiver does with a request that arrives at a given time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    /// `500 Internal Server Error` at once.
    Error,
    /// No answer: the driver gives up at the notification's deadline.
    Hang,
    Ok,
}

/// A request the receiver is working on: the driver reports it at `report_at`.
struct InFlight {
    node: usize,
    note: Notification,
    answer: Answer,
    report_at: DateTime<Utc>,
}

struct Outage {
    w: World,
    start: DateTime<Utc>,
    in_flight: Vec<InFlight>,
    /// (when, notification) for every request the receiver accepted.
    delivered: Vec<(DateTime<Utc>, Notification)>,
}

impl Outage {
    fn at(&self, s: i64) -> DateTime<Utc> {
        self.start + chrono::Duration::seconds(s)
    }

    /// 500s for the first five minutes, hangs for the next five, then healthy.
    fn answer(&self, now: DateTime<Utc>) -> Answer {
        let s = (now - self.start).num_seconds();
        match s {
            ..300 => Answer::Error,
            300..600 => Answer::Hang,
            _ => Answer::Ok,
        }
    }

    /// Hands the notifications the engines asked for to the receiver.
    fn take_new(&mut self) {
        let now = self.w.now;
        let answer = self.answer(now);
        for (i, n) in self.w.nodes.iter_mut().enumerate() {
            for note in std::mem::take(&mut n.pending) {
                let report_at = if answer == Answer::Hang {
                    note.deadline
                } else {
                    now
                };
                self.in_flight.push(InFlight {
                    node: i,
                    note,
                    answer,
                    report_at,
                });
            }
        }
    }

    /// Reports what is due, as the driver would; what that triggers is handed on at once.
    fn report_due(&mut self) {
        loop {
            self.take_new();
            let now = self.w.now;
            let (due, rest): (Vec<InFlight>, Vec<InFlight>) = std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(|f| f.report_at <= now);
            self.in_flight = rest;
            if due.is_empty() {
                return;
            }
            for f in due {
                let result = match f.answer {
                    Answer::Ok => {
                        self.delivered.push((now, f.note.clone()));
                        Ok(())
                    }
                    Answer::Error => Err("HTTP 500 Internal Server Error".to_owned()),
                    Answer::Hang => Err("timed out".to_owned()),
                };
                let n = &mut self.w.nodes[f.node];
                n.engine.on_delivery(&f.note.id, result, now, &mut n.rt);
            }
            self.w.flush();
        }
    }

    /// Ticks every live engine once a second until `s` seconds after the outage started.
    fn run_until(&mut self, s: i64) {
        let end = self.at(s);
        while self.w.now < end {
            self.w.now += chrono::Duration::seconds(1);
            let now = self.w.now;
            for n in self.w.nodes.iter_mut().filter(|n| n.alive) {
                n.engine.tick(now, &mut n.rt);
            }
            self.w.flush();
            self.report_due();
        }
    }

    fn emit(&mut self, s: i64, kind: &str, source: &str) {
        self.run_until(s);
        self.w.emit("b1", kind, source, json!({}));
        self.report_due();
    }
}

/// The (episode, stage) items a ledger record of `kind` covers, with the attempt it names.
fn ledger_items(w: &World, kind: &str, id: &str) -> Vec<(u64, Vec<(String, String)>)> {
    w.of_type(kind)
        .into_iter()
        .filter(|e| e.payload["notification"] == id)
        .map(|e| {
            let items = e.payload["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    (
                        i["episode"].as_str().unwrap().to_owned(),
                        i["stage"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            (e.payload["attempt"].as_u64().unwrap(), items)
        })
        .collect()
}

#[test]
fn a_receiver_down_for_ten_minutes_gets_every_notification_once_when_it_returns() {
    let mut w = World::new(&[("a1", false, 10), ("b1", false, 0)], PHONE);
    w.gossip();
    w.run_for(Duration::from_secs(15), Duration::from_secs(5), true, &[]);
    assert_eq!(w.nodes[0].engine.role(w.now), Role::Alerter);
    let start = w.now;
    let mut o = Outage {
        w,
        start,
        in_flight: Vec::new(),
        delivered: Vec::new(),
    };
    o.emit(0, "build_failed", "a.sh");
    o.emit(10, "build_failed", "b.sh");
    o.emit(60, "test_failed", "c.sh");
    // Resolved while its firing message is still being retried.
    o.emit(150, "build_completed", "a.sh");
    // Fires while the receiver hangs; its group's first message is still being retried.
    o.emit(320, "test_failed", "d.sh");
    o.emit(400, "test_completed", "c.sh");
    // Back up at 600 s.
    o.emit(700, "build_completed", "b.sh");
    o.run_until(2400);
    assert!(o.in_flight.is_empty());
    let w = &o.w;

    // What should have reached the receiver: every recorded episode's firing, and the
    // resolution of those that ended.
    let mut expected: BTreeMap<(String, String), String> = BTreeMap::new();
    for e in w.of_type("alert_firing") {
        let ep = e.payload["episode"].as_str().unwrap().to_owned();
        let subject = e.payload["subject"].as_str().unwrap().to_owned();
        expected.insert((ep, format!("firing:{}", e.severity)), subject);
    }
    for e in w.of_type("alert_resolved") {
        let ep = e.payload["episode"].as_str().unwrap().to_owned();
        let subject = e.payload["subject"].as_str().unwrap().to_owned();
        expected.insert((ep, "resolved".into()), subject);
    }
    let subjects: Vec<&String> = expected.values().collect();
    assert_eq!(expected.len(), 7, "4 firing and 3 resolved: {subjects:?}");

    // What did: the items of each accepted request, by its ledger record.
    let mut got: BTreeMap<(String, String), Vec<DateTime<Utc>>> = BTreeMap::new();
    for (at, note) in &o.delivered {
        let attempted = ledger_items(w, "notification_attempted", &note.id);
        let items = &attempted
            .iter()
            .find(|(a, _)| *a == u64::from(note.attempt))
            .expect("an attempt is recorded before it is sent")
            .1;
        for item in items {
            got.entry(item.clone()).or_default().push(*at);
        }
    }
    for (key, subject) in &expected {
        let times = got.get(key).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(times.len(), 1, "{subject} {}: delivered {times:?}", key.1);
    }
    assert_eq!(
        got.keys().filter(|k| !expected.contains_key(*k)).count(),
        0,
        "nothing unexpected: {:?}",
        got.keys().collect::<Vec<_>>()
    );
    for ((ep, stage), subject) in &expected {
        if stage == "resolved" {
            let fired = expected
                .keys()
                .find(|(e, s)| e == ep && s.starts_with("firing"))
                .unwrap();
            assert!(
                got[fired][0] < got[&(ep.clone(), stage.clone())][0],
                "{subject}: firing before resolved"
            );
        }
    }
    assert_eq!(
        w.of_type("notification_sent").len(),
        o.delivered.len(),
        "each accepted request is in the ledger once"
    );
    assert!(
        o.delivered.iter().all(|(at, _)| *at >= o.at(600)),
        "nothing gets through an outage"
    );
    assert!(
        w.nodes[1].performed.is_empty(),
        "the follower never sends while the alerter is live"
    );

    // Retries: each failure is recorded once per attempt, and the next attempt starts the
    // backoff after it: 10 s doubling, capped at 5 min.
    let ids: Vec<String> = w.nodes[0].performed.iter().map(|n| n.id.clone()).collect();
    let mut chains = Vec::new();
    for id in ids.iter().collect::<std::collections::BTreeSet<_>>() {
        let attempts: BTreeMap<u64, DateTime<Utc>> = w
            .of_type("notification_attempted")
            .into_iter()
            .filter(|e| e.payload["notification"] == id.as_str())
            .map(|e| (e.payload["attempt"].as_u64().unwrap(), e.timestamp))
            .collect();
        let failures: Vec<_> = w
            .of_type("notification_failed")
            .into_iter()
            .filter(|e| e.payload["notification"] == id.as_str())
            .collect();
        let mut per_attempt: BTreeMap<u64, usize> = BTreeMap::new();
        for f in &failures {
            *per_attempt
                .entry(f.payload["attempt"].as_u64().unwrap())
                .or_default() += 1;
        }
        assert!(
            per_attempt.values().all(|n| *n == 1),
            "one failure record per attempt: {per_attempt:?}"
        );
        let mut gaps = Vec::new();
        for f in &failures {
            let n = f.payload["attempt"].as_u64().unwrap();
            assert_eq!(
                f.payload["final"], false,
                "nobody gives up within 10 minutes"
            );
            let next = attempts[&(n + 1)];
            gaps.push((next - f.timestamp).num_seconds());
        }
        let backoff: Vec<i64> = (0..gaps.len())
            .map(|i| (10 * 2_i64.pow(i as u32)).min(300))
            .collect();
        assert_eq!(gaps, backoff, "backoff after each failure of {id}");
        chains.push(attempts.len());
    }
    // The first message (a.sh and b.sh firing) went out at 30 s and was tried at 30, 40, 60,
    // 100, 180, 340 (hung until 370), then 670: seven attempts, the last after the outage.
    assert!(chains.contains(&7), "attempts per notification: {chains:?}");
    assert!(chains.iter().all(|n| *n <= 7), "{chains:?}");
}
