//! EventStore behaviour on a real file system: durability paths, index, quarantine, conflicts,
//! pick-up of dropped-in files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sync::event::{Event, NewEvent, Severity, parse_timestamp};
use sync::layout;
use sync::pickup::{self, PickupConfig, PickupNotice};
use sync::store::{AppendOutcome, EventStore, Ingest, StoreConfig};
use sync::{Order, Query};

fn config(dir: &Path) -> StoreConfig {
    let mut cfg = StoreConfig::new(dir, "saturn");
    cfg.settle = Duration::ZERO;
    cfg
}

fn open(dir: &Path) -> EventStore {
    EventStore::open(config(dir)).unwrap().0
}

fn event(at: &str, ty: &str) -> Event {
    NewEvent::new(ty, Severity::Info, "test.sh")
        .service("mosquitto")
        .into_event("saturn", parse_timestamp(at).unwrap())
        .unwrap()
}

fn quarantined(store: &EventStore) -> Vec<String> {
    store
        .query(&Query {
            types: vec!["event_quarantined".into()],
            ..Query::default()
        })
        .iter()
        .map(|e| {
            let doc: Value = serde_json::from_slice(&store.read_bytes(e).unwrap()).unwrap();
            doc["payload"]["reason"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn append_lands_at_the_seed_path_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ev = event("2026-05-12T12:05:00.123Z", "deployment_started");
    let out = store.append_batch(std::slice::from_ref(&ev)).unwrap();
    let want = dir.path().join(format!(
        "events/2026-05-12/saturn/20260512T120500.123Z_deployment_started_{}.json",
        ev.id
    ));
    assert_eq!(out[0].path, want);
    assert_eq!(fs::read(&want).unwrap(), ev.to_file_bytes());
    drop(store);
    let (store, report) = EventStore::open(config(dir.path())).unwrap();
    assert_eq!(report.indexed, 1);
    assert_eq!(store.len(), 1);
    // Appending the same event again is idempotent.
    let again = store.append_batch(&[ev]).unwrap();
    assert_eq!(again[0].outcome, AppendOutcome::Duplicate);
    assert_eq!(store.len(), 1);
}

#[test]
fn batch_append_and_query() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let events: Vec<Event> = (0..500)
        .map(|i| {
            let at = format!("2026-05-{:02}T10:00:{:02}.{:03}Z", 10 + i % 3, i % 60, i);
            event(
                &at,
                if i % 2 == 0 {
                    "build_started"
                } else {
                    "build_completed"
                },
            )
        })
        .collect();
    store.append_batch(&events).unwrap();
    assert_eq!(store.len(), 500);
    let q = Query {
        types: vec!["build_started".into()],
        since: Some(parse_timestamp("2026-05-11T00:00:00Z").unwrap()),
        order: Order::Desc,
        limit: Some(5),
        ..Query::default()
    };
    let got = store.query(&q);
    assert_eq!(got.len(), 5);
    assert!(got.windows(2).all(|w| w[0].millis >= w[1].millis));
    assert!(got.iter().all(|e| &*e.event_type == "build_started"));
    // No temp files remain after a batch.
    for e in store.query(&Query::default()) {
        let folder = store.path_of(&e).parent().unwrap().to_owned();
        for f in fs::read_dir(folder).unwrap() {
            assert!(!f.unwrap().file_name().to_string_lossy().starts_with('.'));
        }
    }
}

#[test]
fn unknown_fields_survive_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ev = event("2026-05-12T12:05:00.123Z", "custom_thing");
    // A hand-written file: other spacing, extra fields, a different field order.
    let text = format!(
        "{{ \"zzz\": {{\"nested\": [1, 2.50, \"x\"]}}, \"id\": \"{}\", \"timestamp\": \"2026-05-12T12:05:00.123Z\",\n  \"node\": \"saturn\", \"type\": \"custom_thing\", \"severity\": \"info\", \"source\": \"vim\",\n  \"service\": \"all\", \"correlation_id\": \"\", \"payload\": {{}}, \"hlc\": \"7f.1\" }}\n",
        ev.id
    );
    let path = store.events_dir().join(layout::relative_path(&ev));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, &text).unwrap();
    match store.ingest_path(&path).unwrap() {
        Ingest::Added(_) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
    let entry = &store.query(&Query::default())[0];
    assert_eq!(store.read_bytes(entry).unwrap(), text.as_bytes());
}

/// Every kind of bad input is quarantined with a precise reason and an event; none crashes.
#[test]
fn bad_files_are_quarantined_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let good = event("2026-05-12T12:05:00.123Z", "deployment_started");
    let folder = dir.path().join("events/2026-05-12/saturn");
    fs::create_dir_all(&folder).unwrap();
    let name = layout::file_name(&good);
    let doc: Map<String, Value> = serde_json::from_slice(&good.to_file_bytes()).unwrap();
    let with = |key: &str, v: Value| {
        let mut d = doc.clone();
        d.insert(key.into(), v);
        serde_json::to_vec(&d).unwrap()
    };
    let id = |n: u8| format!("0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e{n:02x}");
    let named = |n: u8| format!("20260512T120500.123Z_deployment_started_{}.json", id(n));
    let mut huge = doc.clone();
    huge.insert("payload".into(), json!({"blob": "x".repeat(70_000)}));
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        (named(1), b"{\"timestamp\": ".to_vec(), "not valid JSON"),
        (
            named(2),
            with("severity", json!("urgent")),
            "field `severity`: \"urgent\" is not a severity",
        ),
        (
            named(3),
            with("payload", json!("text")),
            "field `payload`: expected an object, found a string",
        ),
        (
            named(4),
            with("timestamp", json!(12)),
            "field `timestamp`: expected a string, found a number",
        ),
        (
            named(5),
            serde_json::to_vec(&huge).unwrap(),
            "over the 65536-byte limit",
        ),
        (
            named(6),
            vec![0x00, 0xff, 0x13, 0x37, 0xde, 0xad],
            "not UTF-8",
        ),
        (named(7), Vec::new(), "the file is empty"),
        ("notes.txt".into(), b"hello".to_vec(), "not valid JSON"),
        (
            "20260512T130000.000Z_deployment_started_".to_string() + &good.id.to_string() + ".json",
            good.to_file_bytes(),
            "name time is not the event's timestamp",
        ),
        (
            name.replace("deployment_started", "deployment_failed"),
            good.to_file_bytes(),
            "name has type \"deployment_failed\"",
        ),
        (
            named(8),
            with("type", json!("Deploy Started")),
            "field `type`: \"Deploy Started\" is not snake_case",
        ),
        (
            named(9),
            with("node", json!("bad_host!")),
            "field `node`: \"bad_host!\" is not a valid host name",
        ),
    ];
    for (file, bytes, _) in &cases {
        fs::write(folder.join(file), bytes).unwrap();
    }
    std::os::unix::fs::symlink("/etc/hostname", folder.join(named(10))).unwrap();
    // A valid event in the wrong node folder.
    let other = dir.path().join("events/2026-05-12/venus");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join(&name), good.to_file_bytes()).unwrap();

    let (store, report) = EventStore::open(config(dir.path())).unwrap();
    assert_eq!(report.quarantined.len(), cases.len() + 2, "{report:#?}");
    let reasons = quarantined(&store);
    assert_eq!(reasons.len(), cases.len() + 2);
    for (file, _, want) in &cases {
        let reason_file = dir.path().join("quarantine").join(format!("{file}.reason"));
        let text = fs::read_to_string(&reason_file)
            .unwrap_or_else(|_| panic!("no {}", reason_file.display()));
        assert!(text.contains(want), "{file}: {text}");
        assert!(
            text.contains(&format!("file: events/2026-05-12/saturn/{file}")),
            "{text}"
        );
        assert!(dir.path().join("quarantine").join(file).exists());
        assert!(!folder.join(file).exists());
    }
    assert!(reasons.iter().any(|r| r.contains("symbolic link")));
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("node folder \"venus\" is not the event's node \"saturn\""))
    );
    // Only the store's own events remain in events/, and fsck agrees they are all fine.
    let fsck = sync::fsck::check(dir.path(), 65536, None, |_| {}).unwrap();
    assert!(fsck.is_clean(), "{fsck:#?}");
    assert_eq!(fsck.ok, store.len());
}

#[test]
fn same_id_different_content_keeps_both_and_reports_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = event("2026-05-12T12:05:00.123Z", "deployment_started");
    store.append_batch(std::slice::from_ref(&a)).unwrap();
    // Same id, another type and time: a different file name, both kept.
    let mut b = a.clone();
    b.event_type = "deployment_failed".into();
    b.timestamp = parse_timestamp("2026-05-12T12:06:00Z").unwrap();
    let path_b = store.events_dir().join(layout::relative_path(&b));
    fs::write(&path_b, b.to_file_bytes()).unwrap();
    assert!(matches!(
        store.ingest_path(&path_b).unwrap(),
        Ingest::Added(_)
    ));
    // Same id and name, different bytes (from a peer): the copy with the smaller content hash
    // keeps the name, the other is kept in quarantine.
    let mut c = a.clone();
    c.payload.insert("tampered".into(), json!(true));
    let sha = |b: &[u8]| sync::store::content_hash(b);
    let (a_bytes, c_bytes) = (a.to_file_bytes(), c.to_file_bytes());
    let winner = if sha(&a_bytes) < sha(&c_bytes) {
        &a_bytes
    } else {
        &c_bytes
    };
    let res = store
        .store_bytes_batch(std::slice::from_ref(&c_bytes))
        .unwrap();
    let appended = res[0].as_ref().unwrap();
    assert!(
        matches!(appended.outcome, AppendOutcome::Conflict { .. }),
        "{appended:?}"
    );
    let slot = store.events_dir().join(layout::relative_path(&a));
    assert_eq!(&fs::read(&slot).unwrap(), winner);
    let quarantined = || {
        fs::read_dir(store.quarantine_dir())
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".reason")
            })
            .count()
    };
    assert_eq!(quarantined(), 1);
    // Either copy coming back (peers trade them) changes nothing: no loop, no new files.
    for bytes in [&a_bytes, &c_bytes] {
        store
            .store_bytes_batch(std::slice::from_ref(bytes))
            .unwrap();
    }
    assert_eq!(&fs::read(&slot).unwrap(), winner);
    assert_eq!(quarantined(), 1);
    assert_eq!(store.fingerprint().count as usize, store.len());
    // A second store that sees the copies in the other order ends with the same set.
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path());
    other
        .store_bytes_batch(std::slice::from_ref(&c_bytes))
        .unwrap();
    other
        .store_bytes_batch(std::slice::from_ref(&a_bytes))
        .unwrap();
    assert_eq!(
        &fs::read(other.events_dir().join(layout::relative_path(&a))).unwrap(),
        winner
    );
    assert!(other.read_by_hash(&sha(winner)).is_some());
    assert!(
        other
            .read_by_hash(&sha(if winner == &a_bytes {
                &c_bytes
            } else {
                &a_bytes
            }))
            .is_none()
    );
    // a~b, a~c, and b~c when c won a's slot (which copy wins depends on the random id).
    let conflicts = store.query(&Query {
        types: vec!["event_conflict".into()],
        ..Query::default()
    });
    let reported = conflicts.len();
    assert!(reported == 2 || reported == 3, "{conflicts:?}");
    drop(store);
    // Reopening finds the conflict again but does not report it twice.
    let store = open(dir.path());
    let conflicts = store.query(&Query {
        types: vec!["event_conflict".into()],
        ..Query::default()
    });
    assert_eq!(conflicts.len(), reported);
    assert_eq!(
        store
            .query(&Query {
                types: vec!["deployment_started".into(), "deployment_failed".into()],
                ..Query::default()
            })
            .len(),
        2
    );
}

#[test]
fn read_only_readers_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("events/2026-05-12/saturn");
    fs::create_dir_all(&folder).unwrap();
    fs::write(folder.join("junk.json"), b"{").unwrap();
    let mut cfg = config(dir.path());
    cfg.read_only = true;
    let (store, report) = EventStore::open(cfg).unwrap();
    assert_eq!(report.needs_attention, 1);
    assert!(store.is_empty());
    assert!(folder.join("junk.json").exists());
    assert!(!dir.path().join("quarantine").exists());
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pickup_adopts_dropped_files_and_quarantines_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.settle = Duration::from_millis(300);
    let store = Arc::new(EventStore::open(cfg).unwrap().0);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            pickup::run(
                store,
                PickupConfig {
                    rescan_interval: Duration::from_secs(3600),
                    ..PickupConfig::default()
                },
                stop,
                move |n| {
                    let _ = tx.send(n);
                },
            )
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    // A new date and node folder appear with a file in them (as another tool would make them).
    let ev = event("2026-06-01T08:00:00Z", "backup_completed");
    let path = store.events_dir().join(layout::relative_path(&ev));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_file_name(".x.tmp");
    fs::write(&tmp, ev.to_file_bytes()).unwrap();
    fs::rename(&tmp, &path).unwrap();
    wait_for("the dropped event", || store.len() == 1);
    // A file written in place, slowly: not quarantined while it is still being written.
    let slow = event("2026-06-01T08:00:01Z", "backup_started");
    let slow_path = store.events_dir().join(layout::relative_path(&slow));
    let bytes = slow.to_file_bytes();
    fs::write(&slow_path, &bytes[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    fs::write(&slow_path, &bytes).unwrap();
    wait_for("the slow event", || store.len() == 2);
    // A broken file is quarantined once it has settled.
    let broken = path.with_file_name("broken.json");
    fs::write(&broken, b"{\"half\": ").unwrap();
    wait_for("quarantine", || {
        dir.path().join("quarantine/broken.json.reason").exists()
    });
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
    let notices: Vec<PickupNotice> = rx.try_iter().collect();
    assert!(
        notices
            .iter()
            .any(|n| matches!(n, PickupNotice::Quarantined { .. }))
    );
    assert_eq!(quarantined(&store).len(), 1);
    assert!(
        !dir.path()
            .join("quarantine")
            .join(slow_path.file_name().unwrap())
            .exists()
    );
}

#[test]
fn rescan_finds_files_without_notifications() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ev = event("2026-06-01T08:00:00Z", "backup_completed");
    let path: PathBuf = store.events_dir().join(layout::relative_path(&ev));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, ev.to_file_bytes()).unwrap();
    let report = store.rescan().unwrap();
    assert_eq!(report.added.len(), 1);
    assert_eq!(store.len(), 1);
    assert!(store.rescan().unwrap().added.is_empty());
}

#[test]
fn a_file_without_an_id_gets_it_from_its_name_and_keeps_every_other_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // As the seed's shell scripts write it: no `id`, odd spacing, a number written as 1.50.
    let id = "0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e5f";
    let body = r#"{ "timestamp": "2026-05-12T12:05:00.123Z", "node": "saturn", "type": "backup_completed", "severity": "info", "source": "backup.sh", "service": "nas", "correlation_id": "", "payload": {"gb": 1.50}, "x_extra": [1, 2] }"#;
    let folder = store.events_dir().join("2026-05-12/saturn");
    fs::create_dir_all(&folder).unwrap();
    let path = folder.join(format!("20260512T120500.123Z_backup_completed_{id}.json"));
    fs::write(&path, format!("{body}\n")).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert!(matches!(
        store.ingest_path(&path).unwrap(),
        Ingest::Added(_)
    ));
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text, format!("{{\"id\":\"{id}\",{}\n", &body[1..]));
    // What a peer is sent carries the id, and its hash is the file's.
    let hash = sync::store::content_hash(text.as_bytes());
    let sent = store.read_by_hash(&hash).unwrap();
    let doc: Value = serde_json::from_slice(&sent).unwrap();
    assert_eq!(doc["id"], id);
    assert_eq!(doc["payload"]["gb"].to_string(), "1.5");
    assert!(String::from_utf8(sent).unwrap().contains(r#""gb": 1.50"#));
}

/// A node clock fixed at one instant.
struct FixedClock(chrono::DateTime<chrono::Utc>);

impl sync::Clock for FixedClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.0
    }
}

fn stamp_time(stamp: &str) -> u64 {
    u64::from_str_radix(&stamp[..16], 16).unwrap()
}

#[test]
fn a_reopened_store_stamps_after_everything_it_stamped_or_followed_before() {
    let dir = tempfile::tempdir().unwrap();
    let now = parse_timestamp("2026-05-12T12:00:00Z").unwrap();
    let open_at = |dir: &Path| {
        let mut cfg = config(dir);
        cfg.clock = Arc::new(FixedClock(now));
        EventStore::open(cfg).unwrap().0
    };
    let store = open_at(dir.path());
    // A peer whose clock runs 5 minutes ahead (within the HLC's tolerance): the HLC follows
    // it, so this node's own next stamp is after it too.
    let ahead = sync::world::ntp64_from_datetime(now + chrono::Duration::minutes(5));
    let mut peer = NewEvent::new("deployment_started", Severity::Info, "deploy.sh")
        .into_event("jupiter", now)
        .unwrap();
    peer.extra
        .insert("hlc".into(), format!("{ahead:016x}/1f2e").into());
    store.store_bytes_batch(&[peer.to_file_bytes()]).unwrap();
    // Its own event, stamped as a writer does, after the peer's.
    let own = store.stamp_hlc();
    assert!(stamp_time(&own) > ahead);
    let mut mine = NewEvent::new("backup_completed", Severity::Info, "restic")
        .into_event("saturn", now)
        .unwrap();
    mine.extra.insert("hlc".into(), own.clone().into());
    store.append_batch(std::slice::from_ref(&mine)).unwrap();
    drop(store);
    // Restarted with the same wall clock: still after what it followed and what it stamped.
    // (Before, a fresh HLC read the wall clock and stamped 5 minutes before both.)
    let store = open_at(dir.path());
    let next = store.stamp_hlc();
    assert!(stamp_time(&next) > stamp_time(&own), "{next} after {own}");
}
