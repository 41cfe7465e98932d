//! Unit tests of the heartbeat parser and the staleness table (no clock: times are given).

use super::*;

fn settings() -> WorkerSettings {
    WorkerSettings {
        default_interval: Duration::from_secs(30),
        missed_intervals: 2,
    }
}

fn hb(id: &str, interval_s: Option<u64>) -> Heartbeat {
    Heartbeat {
        worker_id: id.into(),
        health_status: "healthy".into(),
        metrics: None,
        interval: interval_s.map(Duration::from_secs),
    }
}

fn wall(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

#[test]
fn parse_accepts_the_documented_body() {
    let got = parse_heartbeat(
        br#"{"worker_id": "gpu-1", "health_status": "healthy", "metrics": {"queue": 3}, "interval_s": 10, "extra": true}"#,
    )
    .unwrap();
    assert_eq!(got.worker_id, "gpu-1");
    assert_eq!(got.interval, Some(Duration::from_secs(10)));
    assert_eq!(got.metrics.unwrap()["queue"], 3);
    let fractional =
        parse_heartbeat(br#"{"worker_id": "w", "health_status": "ok", "interval_s": 0.5}"#)
            .unwrap();
    assert_eq!(fractional.interval, Some(Duration::from_millis(500)));
}

#[test]
fn parse_errors_name_the_field() {
    let field = |body: &str| parse_heartbeat(body.as_bytes()).unwrap_err();
    let e = field("{not json");
    assert_eq!(e.field, None);
    assert!(e.message.contains("not valid JSON"), "{}", e.message);
    assert_eq!(field("[1]").field, None);
    let e = field(r#"{"health_status": "ok"}"#);
    assert_eq!(e.field, Some("worker_id"));
    assert!(e.message.contains("missing"), "{}", e.message);
    assert_eq!(
        field(r#"{"worker_id": 5, "health_status": "ok"}"#).field,
        Some("worker_id")
    );
    assert_eq!(field(r#"{"worker_id": "w"}"#).field, Some("health_status"));
    let e = field(r#"{"worker_id": "w", "health_status": "ok", "interval_s": -1}"#);
    assert_eq!(e.field, Some("interval_s"));
    let e = field(r#"{"worker_id": "w", "health_status": "ok", "interval_s": "10"}"#);
    assert_eq!(e.field, Some("interval_s"));
    let e = field(r#"{"worker_id": "w", "health_status": "ok", "metrics": [1]}"#);
    assert_eq!(e.field, Some("metrics"));
    let long = format!(
        r#"{{"worker_id": "{}", "health_status": "ok"}}"#,
        "w".repeat(200)
    );
    assert_eq!(field(&long).field, Some("worker_id"));
}

#[test]
fn stale_after_two_intervals_once_then_resumed() {
    let t0 = Instant::now();
    let mut table = WorkerTable::new(settings());
    assert_eq!(table.heartbeat(hb("w1", Some(10)), t0, wall(0)), None);
    assert_eq!(table.next_deadline(), Some(t0 + Duration::from_secs(20)));
    assert!(table.tick(t0 + Duration::from_secs(19)).is_empty());
    let missed = table.tick(t0 + Duration::from_secs(20));
    assert_eq!(
        missed,
        vec![Change::Missed {
            worker_id: "w1".into(),
            interval: Duration::from_secs(10),
            last_wall: wall(0),
            silent_for: Duration::from_secs(20),
            health_status: "healthy".into(),
        }]
    );
    // Once per episode.
    assert!(table.tick(t0 + Duration::from_secs(300)).is_empty());
    assert_eq!(table.next_deadline(), None);
    assert_eq!(
        table.list(t0 + Duration::from_secs(300))[0]["status"],
        "stale"
    );
    let back = table.heartbeat(hb("w1", Some(10)), t0 + Duration::from_secs(320), wall(320));
    assert_eq!(
        back,
        Some(Change::Resumed {
            worker_id: "w1".into(),
            interval: Duration::from_secs(10),
            last_wall: wall(0),
            stale_for: Duration::from_secs(300),
            health_status: "healthy".into(),
        })
    );
    let listed = table.list(t0 + Duration::from_secs(321));
    assert_eq!(listed[0]["status"], "fresh");
    assert_eq!(listed[0]["heartbeats"], 2);
    assert_eq!(listed[0]["last_heartbeat_age_ms"], 1000);
    // A fresh heartbeat moves the deadline; a second episode is reported again.
    assert!(table.tick(t0 + Duration::from_secs(339)).is_empty());
    assert_eq!(table.tick(t0 + Duration::from_secs(340)).len(), 1);
}

#[test]
fn default_interval_and_one_deadline_per_worker() {
    let t0 = Instant::now();
    let mut table = WorkerTable::new(settings());
    table.heartbeat(hb("slow", None), t0, wall(0));
    table.heartbeat(hb("fast", Some(1)), t0, wall(0));
    assert_eq!(table.next_deadline(), Some(t0 + Duration::from_secs(2)));
    let missed = table.tick(t0 + Duration::from_secs(2));
    assert!(matches!(&missed[..], [Change::Missed { worker_id, .. }] if worker_id == "fast"));
    assert_eq!(table.next_deadline(), Some(t0 + Duration::from_secs(60)));
}

#[test]
fn events_pair_by_correlation_id() {
    let missed = Change::Missed {
        worker_id: "w1".into(),
        interval: Duration::from_secs(1),
        last_wall: wall(0),
        silent_for: Duration::from_secs(2),
        health_status: "healthy".into(),
    };
    let resumed = Change::Resumed {
        worker_id: "w1".into(),
        interval: Duration::from_secs(1),
        last_wall: wall(0),
        stale_for: Duration::from_secs(5),
        health_status: "healthy".into(),
    };
    let a = event_for(&missed, 2);
    let b = event_for(&resumed, 2);
    assert_eq!(
        (a.event_type.as_str(), a.severity),
        ("heartbeat_missed", Severity::Warning)
    );
    assert_eq!(
        (b.event_type.as_str(), b.severity),
        ("heartbeat_resumed", Severity::Info)
    );
    assert_eq!(a.correlation_id, b.correlation_id);
    assert_eq!(a.service, "w1");
    assert_eq!(a.payload["silent_for_ms"], 2000);
    assert_eq!(b.payload["stale_for_ms"], 5000);
}

#[test]
fn a_saved_table_comes_back_and_counts_silence_from_the_restart() {
    let t0 = Instant::now();
    let mut table = WorkerTable::new(settings());
    assert!(
        table
            .heartbeat(hb("alive", Some(10)), t0, wall(0))
            .is_none()
    );
    assert!(table.heartbeat(hb("dead", Some(10)), t0, wall(0)).is_none());
    assert!(table.take_dirty(), "new workers are worth saving");
    // A plain heartbeat of a known worker is not.
    table.heartbeat(hb("alive", Some(10)), t0 + Duration::from_secs(5), wall(5));
    assert!(!table.take_dirty());
    let missed = table.tick(t0 + Duration::from_secs(21));
    assert_eq!(missed.len(), 1);
    assert!(table.take_dirty(), "going stale is worth saving");
    let saved = table.snapshot();

    // Restart much later: the stale one stays stale (no second heartbeat_missed), the other
    // gets one stale period from the restart.
    let t1 = t0 + Duration::from_secs(3600);
    let mut back = WorkerTable::new(settings());
    let (restored, skipped) = back.restore(&saved, t1);
    assert_eq!((restored, skipped.len()), (2, 0));
    assert!(back.tick(t1).is_empty());
    assert_eq!(back.next_deadline(), Some(t1 + Duration::from_secs(20)));
    let changes = back.tick(t1 + Duration::from_secs(20));
    assert!(
        matches!(&changes[..], [Change::Missed { worker_id, last_wall, .. }] if worker_id == "alive" && *last_wall == wall(5)),
        "{changes:?}"
    );
    // The dead one resuming names the episode of the heartbeat before its silence.
    let resumed = back.heartbeat(
        hb("dead", Some(10)),
        t1 + Duration::from_secs(21),
        wall(3621),
    );
    assert!(
        matches!(resumed, Some(Change::Resumed { last_wall, .. }) if last_wall == wall(0)),
        "{resumed:?}"
    );
}

#[test]
fn a_damaged_saved_table_skips_what_it_cannot_read() {
    let doc = serde_json::json!({"v": 1, "workers": [
        {"worker_id": "ok", "interval_ms": 1000, "last_heartbeat": "2026-11-30T10:00:00Z"},
        {"worker_id": "no-interval", "last_heartbeat": "2026-11-30T10:00:00Z"},
        {"worker_id": 7},
        "garbage"
    ]});
    let mut table = WorkerTable::new(settings());
    let (restored, skipped) = table.restore(&doc, Instant::now());
    assert_eq!(restored, 1);
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    let (restored, skipped) = table.restore(&serde_json::json!([1, 2]), Instant::now());
    assert_eq!((restored, skipped.len()), (0, 1));
}
