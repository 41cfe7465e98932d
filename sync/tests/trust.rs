//! The store with origin signatures: what it writes and adopts is signed, what peers send must be
//! signed by the node it names, and nothing reached through a symbolic link is moved.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sync::event::{NewEvent, Severity, parse_timestamp};
use sync::signature::test_keys::TestMesh;
use sync::signature::{EventSigner, SignatureError};
use sync::store::{AppendOutcome, EventStore, Ingest, StoreConfig};
use sync::{EventError, EventTrust, Query};

fn store(dir: &Path, node: &str, mesh: &TestMesh) -> EventStore {
    let (signer, _) = mesh.issue(node);
    store_with(dir, node, mesh, Some(signer))
}

fn store_with(
    dir: &Path,
    node: &str,
    mesh: &TestMesh,
    signer: Option<Arc<sync::signature::test_keys::TestSigner>>,
) -> EventStore {
    let mut cfg = StoreConfig::new(dir, node);
    cfg.settle = Duration::ZERO;
    let signer = signer.map(|s| s as Arc<dyn EventSigner>);
    cfg.trust = Some(Arc::new(EventTrust::new(signer, Arc::new(mesh.clone()))));
    EventStore::open(cfg).unwrap().0
}

fn all_bytes(store: &EventStore) -> Vec<Vec<u8>> {
    store
        .query(&Query::default())
        .iter()
        .map(|e| store.read_bytes(e).unwrap())
        .collect()
}

#[test]
fn what_a_node_writes_is_signed_and_another_node_takes_it_byte_for_byte() {
    let mesh = TestMesh::new();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ws = store(a.path(), "ws", &mesh);
    let nas = store(b.path(), "nas", &mesh);
    let events: Vec<_> = (0..70)
        .map(|i| {
            NewEvent::new("build_completed", Severity::Info, "ci.sh")
                .into_event(
                    "ws",
                    parse_timestamp("2026-05-12T12:00:00Z").unwrap() + chrono::Duration::seconds(i),
                )
                .unwrap()
        })
        .collect();
    ws.append_batch(&events).unwrap();
    let files = all_bytes(&ws);
    assert_eq!(files.len(), 70);
    assert!(files.iter().all(|f| sync::signature::split(f).is_some()));
    let stored = nas.store_bytes_batch(&files).unwrap();
    assert!(stored.iter().all(Result::is_ok), "{stored:?}");
    assert_eq!(all_bytes(&nas), files, "kept byte for byte");
    // Appending the same event again stays a duplicate (signatures are randomised).
    let again = ws.append_batch(&events[..1]).unwrap();
    assert_eq!(again[0].outcome, AppendOutcome::Duplicate);
    assert_eq!(ws.len(), 70);
    // A store only signs for its own node.
    let foreign = NewEvent::new("x_y", Severity::Info, "t")
        .into_event("nas", parse_timestamp("2026-05-12T12:00:00Z").unwrap())
        .unwrap();
    assert!(ws.append_batch(&[foreign]).is_err());
}

#[test]
fn files_from_a_peer_must_be_signed_by_the_node_they_name() {
    let mesh = TestMesh::new();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ws = store(a.path(), "ws", &mesh);
    let nas = store(b.path(), "nas", &mesh);
    ws.append(NewEvent::new("silence_set", Severity::Info, "cli"))
        .unwrap();
    let genuine = all_bytes(&ws).remove(0);
    let (unsigned, _) = sync::signature::split(&genuine).unwrap();
    let text = String::from_utf8(genuine.clone()).unwrap();
    let altered = text.replacen("\"cli\"", "\"cla\"", 1).into_bytes();
    // Mallory, a member, signs an event that names ws.
    let (mallory, _) = mesh.issue("mallory");
    let forged = sync::signature::sign_files(&*mallory, "ws", std::slice::from_ref(&unsigned))
        .unwrap()
        .remove(0)
        .0;
    let results = nas
        .store_bytes_batch(&[unsigned.clone(), altered, forged])
        .unwrap();
    let errors: Vec<_> = results.into_iter().map(|r| r.unwrap_err()).collect();
    assert_eq!(errors[0], EventError::Signature(SignatureError::Unsigned));
    assert_eq!(
        errors[1],
        EventError::Signature(SignatureError::BadSignature)
    );
    assert!(matches!(
        errors[2],
        EventError::Signature(SignatureError::WrongNode { .. })
    ));
    assert_eq!(nas.len(), 0, "nothing stored");
    // The genuine copy still goes in, and is not displaced by any of them.
    assert!(
        nas.store_bytes_batch(std::slice::from_ref(&genuine))
            .unwrap()[0]
            .is_ok()
    );
    assert_eq!(all_bytes(&nas), vec![genuine]);
}

#[test]
fn a_dropped_file_is_signed_when_it_is_ours_and_quarantined_when_it_is_not() {
    let mesh = TestMesh::new();
    let dir = tempfile::tempdir().unwrap();
    let ws = store(dir.path(), "ws", &mesh);
    let day = dir.path().join("events/2026-05-12");
    let mine =
        day.join("ws/20260512T120000.000Z_backup_done_0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e5f.json");
    let theirs =
        day.join("nas/20260512T120000.000Z_backup_done_0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e60.json");
    for (path, node) in [(&mine, "ws"), (&theirs, "nas")] {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(
            path,
            format!(
                "{{\"timestamp\":\"2026-05-12T12:00:00.000Z\",\"node\":\"{node}\",\"type\":\"backup_done\",\"severity\":\"info\",\"source\":\"backup.sh\",\"service\":\"all\",\"correlation_id\":\"\",\"payload\":{{}}}}\n"
            ),
        )
        .unwrap();
    }
    assert!(matches!(ws.ingest_path(&mine).unwrap(), Ingest::Added(_)));
    let signed = fs::read(&mine).unwrap();
    let (unsigned, _) = sync::signature::split(&signed).expect("signed in place");
    assert!(
        String::from_utf8(unsigned)
            .unwrap()
            .starts_with("{\"id\":\"0196c2a4")
    );
    match ws.ingest_path(&theirs).unwrap() {
        Ingest::Quarantined { reason, .. } => {
            assert!(reason.contains("unsigned event of node nas"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // A checking-only store (fsck) verifies what the signing one wrote.
    let report = sync::fsck::check(dir.path(), 65536, Some(&mesh), |_| {}).unwrap();
    assert_eq!(report.bad_signatures, 0, "{report:?}");
    assert!(report.signatures_checked >= 2, "{report:?}");
    let text = String::from_utf8(signed).unwrap();
    fs::write(&mine, text.replacen("backup.sh", "backup.sx", 1)).unwrap();
    let report = sync::fsck::check(dir.path(), 65536, Some(&mesh), |_| {}).unwrap();
    assert_eq!(report.bad_signatures, 1, "{report:?}");
    assert!(!report.is_clean());
}

#[test]
fn nothing_reached_through_a_linked_folder_is_moved_or_archived() {
    let mesh = TestMesh::new();
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("ws");
    fs::create_dir_all(&victim).unwrap();
    let target = victim.join("20200101T000000.000Z_x_0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e5f.json");
    fs::write(&target, b"not an event, and not ours").unwrap();
    let ws = store(dir.path(), "ws", &mesh);
    let events = dir.path().join("events");
    fs::create_dir_all(&events).unwrap();
    std::os::unix::fs::symlink(outside.path(), events.join("2020-01-01")).unwrap();
    let through = events
        .join("2020-01-01/ws")
        .join(target.file_name().unwrap());
    assert!(matches!(
        ws.ingest_path(&through).unwrap(),
        Ingest::Refused(_)
    ));
    ws.prune(
        chrono::NaiveDate::from_ymd_opt(2026, 5, 12).unwrap(),
        30,
        true,
    )
    .unwrap();
    ws.rescan().unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"not an event, and not ours");
    assert!(
        !events.join("2020-01-01").exists(),
        "the link itself went to quarantine"
    );
    assert!(
        !dir.path()
            .join("events-archive/2020-01-01.tar.zst")
            .exists()
    );
}

#[test]
fn events_dated_far_ahead_of_the_receivers_clock_are_refused() {
    let mesh = TestMesh::new();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ws = store(a.path(), "ws", &mesh);
    let nas = store(b.path(), "nas", &mesh);
    let now = chrono::Utc::now();
    let at = |t| {
        NewEvent::new("silence_set", Severity::Info, "cli")
            .into_event("ws", t)
            .unwrap()
    };
    let in_2099 = at(parse_timestamp("2099-01-01T00:00:00Z").unwrap());
    let mut pinned = at(now);
    pinned
        .extra
        .insert("hlc".into(), "ffffffffffffffff/1".into());
    let soon = at(now + chrono::Duration::minutes(30));
    ws.append_batch(&[in_2099, pinned, soon]).unwrap();
    let files = all_bytes(&ws);
    let results = nas.store_bytes_batch(&files).unwrap();
    let refused: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused
            .iter()
            .any(|r| r.contains("field `timestamp`") && r.contains("ahead"))
    );
    assert!(refused.iter().any(|r| r.contains("field `hlc`")));
    assert_eq!(
        nas.len(),
        1,
        "half an hour ahead is within the default skew"
    );
}
