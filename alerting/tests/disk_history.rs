//! The disk-full projection learns from `host_sample` events: a restarted engine that replays
//! the log projects at once, and a node with samples is not projected twice from its summary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alerting::summary::DiskUsage;
use alerting::{Config, Engine, NodeSummary, Status};
use common::{Rec, member, t0};
use serde_json::json;
use sync::{Event, NewEvent, Severity};

const GIB: u64 = 1 << 30;

fn at(hours: i64) -> chrono::DateTime<chrono::Utc> {
    t0() + chrono::Duration::hours(hours)
}

/// Two days of hourly samples of `/` on vm1, growing 2 GiB a day with 16 GiB left at the start.
fn samples() -> Vec<Event> {
    (0..=48)
        .map(|h| {
            let used = 84 * GIB + (h as u64) * 2 * GIB / 24;
            NewEvent::new("host_sample", Severity::Info, "labmesh-probe")
                .payload(
                    json!({"disks": [{"mount": "/", "used_percent": 0.0, "used_bytes": used, "total_bytes": 100 * GIB}]})
                        .as_object()
                        .unwrap()
                        .clone(),
                )
                .into_event("vm1", at(h))
                .unwrap()
        })
        .collect()
}

fn disk_alerts(e: &Engine) -> Vec<String> {
    e.open_alerts()
        .filter(|a| a.rule == "disk_full_soon" && a.status == Status::Firing)
        .map(|a| a.subject.clone())
        .collect()
}

#[test]
fn host_samples_drive_the_projection_and_survive_a_restart() {
    let log = samples();
    // A restart two days in: the fresh engine gets only the replayed log.
    let now = at(48);
    let mut engine = Engine::new("vm1", false, 0, Config::default(), now);
    let mut rt = Rec::default();
    engine.on_events(log.iter(), now, &mut rt);
    engine.on_membership(vec![member("vm1", true, false, 0)], now, &mut rt);
    assert_eq!(disk_alerts(&engine), ["vm1:/"], "projected at once");
    let alert = engine
        .open_alerts()
        .find(|a| a.rule == "disk_full_soon")
        .unwrap();
    assert_eq!(
        alert.summary,
        "/ on vm1 will be full in 6 days (growing 2.0 GiB/day)"
    );

    // Its gossiped summary (the fullest disk, in basis points) does not add a second
    // projection of the same disk, however fast it seems to grow.
    for m in 0..=30 {
        let mut s = NodeSummary::new("vm1", now + chrono::Duration::hours(m));
        s.disks = vec![DiskUsage {
            mount: "fullest".into(),
            used_bytes: 5_000 + m as u64 * 100,
            total_bytes: 10_000,
        }];
        engine.on_summary(&s, s.at, &mut rt);
    }
    assert_eq!(disk_alerts(&engine), ["vm1:/"]);
}
