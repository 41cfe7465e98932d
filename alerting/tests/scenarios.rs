//! Whole-engine scenarios on a virtual clock: failover, partitions, flapping, silences,
//! maintenance windows, retries, an isolated laptop, determinism.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use alerting::silence::Silence;
use alerting::summary::DiskUsage;
use alerting::{NodeSummary, Role, Status};
use common::World;
use serde_json::json;

const PHONE: &str = "[[receiver]]\nname = \"phone\"\nkind = \"ntfy\"\ntopic = \"lab\"\n";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// a1 (priority 10) and b1, settled, a1 the alerter.
fn pair(config: &str) -> World {
    let mut w = World::new(&[("a1", false, 10), ("b1", false, 0)], config);
    w.gossip();
    w.run_for(secs(15), secs(5), true, &[]);
    assert_eq!(w.nodes[0].engine.role(w.now), Role::Alerter);
    assert!(matches!(
        w.nodes[1].engine.role(w.now),
        Role::Follower { .. }
    ));
    w
}

#[test]
fn failover_after_a_recorded_send_does_not_resend() {
    let mut w = pair(PHONE);
    w.emit("b1", "build_failed", "build.sh", json!({}));
    w.run_for(secs(40), secs(5), true, &[]);
    assert_eq!(w.performed().len(), 1);
    assert_eq!(w.of_type("notification_sent").len(), 1);
    assert_eq!(
        w.of_type("alert_firing").len(),
        1,
        "recorded once, by the alerter"
    );
    w.nodes[0].alive = false;
    w.gossip();
    w.run_for(secs(600), secs(5), true, &[]);
    assert_eq!(w.nodes[1].engine.role(w.now), Role::Alerter);
    assert_eq!(
        w.performed_for("build_failed").len(),
        1,
        "b1 saw the ledger and did not resend"
    );
    // What b1 does send is news: a1 is down.
    let offline = w.performed_for("node_offline");
    assert_eq!(offline.len(), 1);
    assert_eq!(
        (
            offline[0].0,
            offline[0].1.message.alerts[0].subject.as_str()
        ),
        ("b1", "a1")
    );
    let changed = w.of_type("alerter_changed");
    assert_eq!(changed.len(), 2, "a1 at start, b1 at failover");
    assert_eq!(
        (
            changed[1].node.as_str(),
            changed[1].payload["previous"].as_str()
        ),
        ("b1", Some("a1"))
    );
    let firing: Vec<_> = w
        .of_type("alert_firing")
        .into_iter()
        .filter(|e| e.payload["rule"] == "build_failed")
        .collect();
    assert_eq!(firing.len(), 1, "b1 continues a1's episode");
}

#[test]
fn a_restarted_alerter_replays_the_log_and_sends_nothing_again() {
    let mut w = pair(PHONE);
    w.emit("b1", "build_failed", "build.sh", json!({}));
    w.emit("b1", "deployment_failed", "deploy.sh", json!({}));
    w.run_for(secs(60), secs(5), true, &[]);
    let before = w.performed().len();
    assert!(before >= 1);
    let (firing, changed) = (
        w.of_type("alert_firing").len(),
        w.of_type("alerter_changed").len(),
    );
    w.restart("a1", PHONE);
    w.run_for(secs(1800), secs(10), true, &[]);
    assert_eq!(
        w.performed().len(),
        before,
        "the ledger in the log says it was sent"
    );
    assert_eq!(
        w.of_type("alert_firing").len(),
        firing,
        "the episodes are the recorded ones"
    );
    assert_eq!(
        w.of_type("alerter_changed").len(),
        changed,
        "a restart is no change of alerter"
    );
    assert_eq!(w.nodes[0].engine.alerts().count(), 2);
}

#[test]
fn an_alerter_that_dies_mid_send_is_replaced_by_one_send() {
    let mut w = pair(PHONE);
    w.emit("b1", "build_failed", "build.sh", json!({}));
    // a1 records its attempt and performs the send, but dies before the outcome.
    w.run_for(secs(35), secs(5), true, &["a1"]);
    assert_eq!(w.of_type("notification_attempted").len(), 1);
    w.nodes[0].alive = false;
    w.gossip();
    w.run_for(secs(600), secs(5), true, &[]);
    // The attempt of a dead node may or may not have reached the phone: we prefer a duplicate
    // to a miss, so b1 sends once, and only once.
    let builds = w.performed_for("build_failed");
    assert_eq!(builds.len(), 2);
    assert_eq!((builds[0].0, builds[1].0), ("a1", "b1"));
    let sent_build: Vec<_> = w
        .of_type("notification_sent")
        .into_iter()
        .filter(|e| {
            e.payload["group"]
                .as_str()
                .unwrap()
                .contains("build_failed")
        })
        .collect();
    assert_eq!(sent_build.len(), 1);
}

#[test]
fn an_alerter_that_dies_before_recording_is_replaced_by_exactly_one_send() {
    let mut w = pair(PHONE);
    w.emit("b1", "build_failed", "build.sh", json!({}));
    w.run_for(secs(20), secs(5), true, &[]); // inside group_wait: nothing sent yet
    assert!(w.performed().is_empty());
    w.nodes[0].alive = false;
    w.gossip();
    w.run_for(secs(900), secs(5), true, &[]);
    let builds = w.performed_for("build_failed");
    assert_eq!(builds.len(), 1);
    assert_eq!(builds[0].0, "b1");
}

#[test]
fn a_healed_partition_does_not_send_again() {
    let mut w = pair(PHONE);
    w.emit("b1", "build_failed", "build.sh", json!({}));
    w.cut.insert((0, 1));
    w.gossip();
    w.run_for(secs(120), secs(5), true, &[]);
    // Each side elected its own alerter and paged: the accepted duplicate of a partition
    // (and each reports the other offline).
    assert_eq!(w.performed_for("build_failed").len(), 2);
    w.cut.clear();
    w.resync();
    w.gossip();
    w.run_for(secs(3 * 3600), secs(30), true, &[]);
    assert_eq!(
        w.performed_for("build_failed").len(),
        2,
        "nothing more after the heal"
    );
    // One reminder after the repeat interval, from the one alerter.
    w.run_for(secs(3600 + 600), secs(30), true, &[]);
    let mut all = w.performed_for("build_failed");
    all.sort_by_key(|(_, n)| n.message.sent_at);
    let reminders: Vec<_> = all.into_iter().skip(2).collect();
    assert_eq!(reminders.len(), 1);
    assert_eq!(reminders[0].0, "a1");
    assert!(reminders[0].1.message.repeat);
}

#[test]
fn flapping_gives_at_most_one_notification_per_group_interval() {
    let mut w = pair(PHONE);
    for i in 0..60 {
        let kind = if i % 2 == 0 {
            "build_failed"
        } else {
            "build_completed"
        };
        w.emit("b1", kind, "build.sh", json!({}));
        w.run_for(secs(60), secs(10), true, &[]);
    }
    let times: Vec<_> = w
        .performed()
        .iter()
        .map(|(_, n)| n.message.sent_at)
        .collect();
    assert!(times.len() >= 5, "it still reports: {}", times.len());
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= chrono::Duration::seconds(300),
            "{pair:?}"
        );
    }
}

#[test]
fn a_silence_mutes_until_it_expires_then_the_alert_is_sent_once() {
    let mut w = pair(PHONE);
    let s = Silence {
        id: "quiet-builds".into(),
        matchers: [("rule".to_string(), "build_failed".to_string())].into(),
        starts_at: w.now,
        ends_at: w.now + chrono::Duration::hours(1),
        comment: "rebuilding the toolchain".into(),
        created_by: "alice".into(),
    };
    let i = w.idx("b1");
    w.nodes[i].rt.events.push(s.to_event());
    w.flush();
    w.emit("b1", "build_failed", "build.sh", json!({}));
    // Another alert fires and resolves inside the silence: it is never sent.
    w.emit("b1", "build_failed", "other.sh", json!({}));
    w.run_for(secs(600), secs(10), true, &[]);
    w.emit("b1", "build_completed", "other.sh", json!({}));
    w.run_for(secs(2900), secs(10), true, &[]);
    assert!(
        w.performed().is_empty(),
        "muted: {:#?}",
        w.performed()
            .iter()
            .map(|p| &p.1.message.text)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        w.of_type("alert_firing").len(),
        2,
        "muted alerts still fire and are recorded"
    );
    w.run_for(secs(200), secs(10), true, &[]);
    let sent = w.performed();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].1.message.sent_at >= w.now - chrono::Duration::seconds(100),
        "sent when the silence ended"
    );
    let subjects: Vec<&str> = sent[0]
        .1
        .message
        .alerts
        .iter()
        .map(|a| a.subject.as_str())
        .collect();
    assert_eq!(subjects, ["b1/build.sh"]);
    w.run_for(secs(1800), secs(30), true, &[]);
    assert_eq!(w.performed().len(), 1);
}

#[test]
fn a_maintenance_window_mutes_and_its_end_restores() {
    // t0 is Thursday 2026-05-28 20:26:40 UTC; the window is Thursdays 20:00-21:00 Berlin-free UTC.
    let cfg = format!(
        "{PHONE}[[maintenance]]\nname = \"thursday\"\ncron = \"0 20 * * thu\"\nduration = \"1h\"\nmatchers = {{ node = \"b1\" }}\n"
    );
    let mut w = pair(&cfg);
    w.emit("b1", "build_failed", "build.sh", json!({}));
    w.run_for(secs(1800), secs(10), true, &[]);
    assert!(w.performed().is_empty());
    w.run_for(secs(600), secs(10), true, &[]);
    let sent = w.performed();
    assert_eq!(sent.len(), 1);
    let at = sent[0].1.message.sent_at;
    assert!(
        at >= sync::event::parse_timestamp("2026-05-28T21:00:00Z").unwrap(),
        "{at}"
    );
    assert!(
        at <= sync::event::parse_timestamp("2026-05-28T21:00:40Z").unwrap(),
        "{at}"
    );
}

#[test]
fn a_failing_receiver_is_retried_with_backoff_recording_each_attempt_first() {
    let mut w = pair(PHONE);
    w.emit("b1", "build_failed", "build.sh", json!({}));
    w.run_for(secs(300), secs(5), false, &[]);
    w.run_for(secs(600), secs(5), true, &[]);
    assert_eq!(w.of_type("notification_sent").len(), 1);
    let ledger: Vec<(String, u64)> = w
        .log
        .iter()
        .filter(|e| e.event_type.starts_with("notification_"))
        .map(|e| (e.event_type.clone(), e.payload["attempt"].as_u64().unwrap()))
        .collect();
    // attempted(n) always precedes the outcome of attempt n.
    for (i, (kind, n)) in ledger.iter().enumerate() {
        if kind != "notification_attempted" {
            assert!(
                ledger[..i].contains(&("notification_attempted".into(), *n)),
                "{ledger:?}"
            );
        }
    }
    let failed: Vec<_> = w.of_type("notification_failed");
    assert!(failed.len() >= 4, "{}", failed.len());
    let gaps: Vec<i64> = failed
        .windows(2)
        .map(|p| (p[1].timestamp - p[0].timestamp).num_seconds())
        .collect();
    assert!(
        gaps.windows(2).all(|g| g[1] >= g[0]),
        "backoff grows: {gaps:?}"
    );
    let performed = w.performed();
    assert!(
        performed.iter().all(|(_, n)| n.id == performed[0].1.id),
        "one notification, retried"
    );
}

#[test]
fn a_firing_that_never_got_through_is_told_as_resolved_after_a_failover() {
    let mut w = pair(PHONE);
    w.emit("b1", "build_failed", "build.sh", json!({}));
    // The phone is down: a1's attempts fail and it keeps a retry pending.
    w.run_for(secs(120), secs(5), false, &[]);
    assert!(!w.of_type("notification_failed").is_empty());
    assert!(w.of_type("notification_sent").is_empty());
    // a1 dies with its retry, and the build is fixed before anyone got through.
    w.nodes[0].alive = false;
    w.emit("b1", "build_completed", "build.sh", json!({}));
    w.gossip();
    w.run_for(secs(900), secs(5), true, &[]);
    // The phone was never told it fired: b1 tells it that it fired and ended, once.
    let from_b1: Vec<_> = w
        .performed_for("build_failed")
        .into_iter()
        .filter(|(node, _)| *node == "b1")
        .collect();
    assert_eq!(from_b1.len(), 1, "{from_b1:?}");
    assert_eq!(from_b1[0].1.message.alerts[0].status, Status::Resolved);
}

#[test]
fn thresholds_escalate_and_resolve_with_one_message_each() {
    let mut w = pair(PHONE);
    let disk = |used: u64| {
        let mut s = NodeSummary::new("b1", chrono::Utc::now());
        s.disks = vec![DiskUsage {
            mount: "/".into(),
            used_bytes: used,
            total_bytes: 100,
        }];
        s
    };
    let feed = |w: &mut World, used: u64, minutes: u64| {
        for _ in 0..minutes {
            let mut s = disk(used);
            s.at = w.now;
            let now = w.now;
            for n in w.nodes.iter_mut() {
                n.engine.on_summary(&s, now, &mut n.rt);
            }
            w.flush();
            w.run_for(secs(60), secs(10), true, &[]);
        }
    };
    feed(&mut w, 90, 10);
    feed(&mut w, 97, 10);
    feed(&mut w, 84, 10); // inside the band (clear 83): still firing
    feed(&mut w, 70, 10);
    let msgs: Vec<String> = w
        .performed()
        .iter()
        .map(|(_, n)| n.message.title.clone())
        .collect();
    assert_eq!(
        msgs,
        [
            "[FIRING:1] disk_used",
            "[FIRING:1] disk_used",
            "[RESOLVED] disk_used"
        ]
    );
    let severities: Vec<_> = w
        .performed()
        .iter()
        .map(|(_, n)| n.message.severity())
        .collect();
    assert_eq!(
        severities[..2],
        [sync::Severity::Warning, sync::Severity::Critical]
    );
    let episodes: std::collections::BTreeSet<_> = w
        .of_type("alert_firing")
        .iter()
        .map(|e| e.correlation_id.clone())
        .collect();
    assert_eq!(episodes.len(), 1, "escalation stays in the episode");
}

#[test]
fn an_isolated_laptop_records_its_own_alerts_and_never_pages() {
    let mut w = World::new(&[("laptop1", true, 0), ("vm1", false, 0)], PHONE);
    w.cut.insert((0, 1));
    w.gossip();
    w.run_for(secs(60), secs(10), true, &[]);
    assert_eq!(w.nodes[0].engine.role(w.now), Role::Isolated);
    for _ in 0..8 {
        let mut s = NodeSummary::new("laptop1", w.now);
        s.disks = vec![DiskUsage {
            mount: "/".into(),
            used_bytes: 99,
            total_bytes: 100,
        }];
        let now = w.now;
        let n = &mut w.nodes[0];
        n.engine.on_summary(&s, now, &mut n.rt);
        w.flush();
        w.run_for(secs(60), secs(10), true, &[]);
    }
    w.run_for(secs(600), secs(30), true, &[]);
    let laptop_alerts: Vec<_> = w
        .of_type("alert_firing")
        .into_iter()
        .filter(|e| e.node == "laptop1")
        .collect();
    assert_eq!(laptop_alerts.len(), 1);
    assert_eq!(laptop_alerts[0].payload["subject"], "laptop1:/");
    assert!(
        w.nodes[0].performed.is_empty(),
        "a laptop on a train never pages"
    );
    assert!(
        w.nodes[0]
            .engine
            .open_alerts()
            .all(|a| a.rule != "node_offline"),
        "and says nothing about vm1 being down"
    );
}

#[test]
fn the_same_inputs_give_the_same_outputs() {
    let at = common::t0() + chrono::Duration::seconds(15);
    let make = |node: &str, kind: &str, source: &str| {
        sync::NewEvent::new(kind, sync::Severity::Error, source)
            .into_event(node, at)
            .unwrap()
    };
    let inputs = [
        make("b1", "build_failed", "build.sh"),
        make("a1", "service_unhealthy", "health"),
    ];
    let run = || {
        let mut w = pair(PHONE);
        w.inject(&inputs[0]);
        w.run_for(secs(200), secs(5), false, &[]);
        w.inject(&inputs[1]);
        w.run_for(secs(600), secs(5), true, &[]);
        w.log
            .iter()
            .filter(|e| e.source == alerting::EVENT_SOURCE)
            .map(|e| {
                let payload = serde_json::Value::Object(e.payload.clone());
                format!(
                    "{} {} {} {} {payload}",
                    e.timestamp, e.node, e.event_type, e.correlation_id
                )
            })
            .collect::<Vec<_>>()
    };
    let first = run();
    assert!(first.len() > 10);
    assert_eq!(first, run());
}
