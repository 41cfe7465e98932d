//! A hostile member of the mesh: it holds a real certificate of the mesh CA (so TLS lets it
//! in) and sends, over the real QUIC transport, sync messages that a well-behaved peer never
//! would: garbage frames, malformed events, events over the size limit, an event that
//! reuses another event's id with other content, a world snapshot that is not one, and a
//! message over the transport's limit. The agent must refuse each with a reason it reports,
//! store the good event and the conflicting copy (with an `event_conflict` record), and stay
//! up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use labmesh_tests::{
    Agent, free_udp_addr, free_udp_port, labmesh, member_identity, member_transport, run, stderr,
    wait_until,
};
use serde_json::{Value, json};
use sync::reconcile::SyncMessage;
use sync::signature::{EventSigner, KeyId, SignatureError};

/// Mallory's own signing key: a member may sign what it writes itself, nothing else.
struct Key(certs::EventKey);

impl EventSigner for Key {
    fn key_id(&self) -> KeyId {
        self.0.key_id()
    }
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], SignatureError> {
        self.0.sign(message).map_err(SignatureError::Signing)
    }
}

/// `files` signed with `identity`'s key as events of `node` (which a peer accepts only when
/// the certificate names `node`).
fn signed(identity: &certs::NodeIdentity, node: &str, files: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let key = Key(certs::EventKey::from_identity(identity).unwrap());
    sync::signature::sign_files(&key, node, files)
        .unwrap()
        .into_iter()
        .map(|(bytes, _)| bytes)
        .collect()
}

fn event(id: &str, ty: &str, severity: &str, payload: Value) -> Vec<u8> {
    let doc = json!({
        "id": id,
        "timestamp": "2026-05-12T12:05:00.123Z",
        "node": "mallory",
        "type": ty,
        "severity": severity,
        "source": "mallory",
        "service": "svc",
        "correlation_id": "",
        "payload": payload,
    });
    let mut bytes = serde_json::to_vec(&doc).unwrap();
    bytes.push(b'\n');
    bytes
}

/// The honest agent `alpha` (a new mesh and its CA) with fast gossip: the agent, its data dir
/// and its gossip address.
fn start_alpha(dir: &std::path::Path) -> (Agent, std::path::PathBuf, String) {
    let data = dir.join("alpha");
    let gossip = format!("127.0.0.1:{}", free_udp_port());
    let alpha = Agent::start(
        &data,
        &[
            "--name",
            "alpha",
            "--gossip-addr",
            &gossip,
            "--gossip-interval",
            "100ms",
        ],
    );
    (alpha, data, gossip)
}

#[test]
fn a_hostile_member_is_refused_with_reasons_and_the_agent_lives() {
    let dir = tempfile::tempdir().unwrap();
    let (alpha, data, gossip) = start_alpha(dir.path());
    let identity = member_identity(dir.path(), &data, "alpha", "mallory");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let alpha_addr: SocketAddr = gossip.parse().unwrap();
    rt.block_on(async {
        let mallory = {
            let a = free_udp_addr();
            member_transport(&identity, a, a)
        };
        let send = |bytes: Vec<u8>| {
            let m = &mallory;
            async move { m.send_app(alpha_addr, &bytes).await }
        };
        let good_id = "0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e5f";
        // 1. Not a sync message at all.
        send(b"\xff\xfe garbage".to_vec()).await.unwrap();
        // 2. A batch of bad events around one good one.
        let huge = json!({ "blob": "x".repeat(70 * 1024) });
        let push = SyncMessage::Push {
            events: vec![
                b"{\"half\": ".to_vec(),
                event(
                    "0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e60",
                    "bad_severity",
                    "catastrophic",
                    json!({}),
                ),
                event(
                    "0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e61",
                    "too_big",
                    "info",
                    huge,
                ),
                event(
                    "0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e62",
                    "NotSnake",
                    "info",
                    json!({}),
                ),
                signed(
                    &identity,
                    "mallory",
                    &[event(good_id, "good_one", "info", json!({"n": 1}))],
                )
                .remove(0),
            ],
            signers: vec![identity.cert_der().to_vec()],
        };
        send(push.encode()).await.unwrap();
        // 3. The same id with other content: kept, and reported as a conflict.
        let conflict = SyncMessage::Push {
            events: signed(
                &identity,
                "mallory",
                &[event(good_id, "good_one", "info", json!({"n": 2}))],
            ),
            signers: vec![identity.cert_der().to_vec()],
        };
        send(conflict.encode()).await.unwrap();
        // 4. A world snapshot that is not one.
        let world = SyncMessage::World {
            state: b"[1,2,3]".to_vec(),
            reply: false,
        };
        send(world.encode()).await.unwrap();
        // 5. Over the transport's 4 MiB limit: refused before it is read.
        let big = vec![0u8; 5 * 1024 * 1024];
        assert!(
            send(big).await.is_err(),
            "the sender itself refuses an oversized message"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        mallory.close().await;
    });

    wait_until("the good event stored", Duration::from_secs(10), || {
        alpha
            .get_json("/v1/events?type=good_one")
            .as_array()
            .is_some_and(|v| v.len() == 1)
    });
    wait_until("the conflict recorded", Duration::from_secs(10), || {
        alpha
            .get_json("/v1/events?type=event_conflict")
            .as_array()
            .is_some_and(|v| v.len() == 1)
    });
    let status = alpha.get_json("/v1/sync");
    assert_eq!(status["refused"]["mallory"], 6, "{status:#}");
    let reasons: Vec<String> = status["latest_refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}: {}", r["what"], r["reason"]))
        .collect();
    let all = reasons.join("\n");
    assert!(all.contains("sync message"), "{all}");
    assert!(all.contains("world snapshot"), "{all}");
    assert!(all.contains("events"), "{all}");
    for bad in ["bad_severity", "too_big", "NotSnake"] {
        assert!(
            alpha
                .get_json(&format!("/v1/events?type={bad}"))
                .as_array()
                .unwrap()
                .is_empty(),
            "{bad} was stored"
        );
    }
    // Of the two copies, one is in quarantine with its reason; refused input left no file.
    let quarantine: Vec<String> = std::fs::read_dir(data.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(quarantine.len(), 2, "{quarantine:?}");
    assert!(
        quarantine
            .iter()
            .any(|n| n.ends_with("good_one_0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e5f.json.reason"))
    );
    assert_eq!(alpha.get_json("/healthz")["status"], "ok");
    let api = alpha.api.to_string();
    let text = run(labmesh(&data).args(["--name", "alpha", "--api-addr", &api, "sync", "status"]));
    assert!(text.status.success(), "{}", stderr(&text));
    let text = labmesh_tests::stdout(&text);
    assert!(
        text.contains("from mallory: world snapshot x1: bad world snapshot"),
        "{text}"
    );
}

fn event_of(node: &str, id: &str, ty: &str, payload: Value) -> Vec<u8> {
    let doc: Value = serde_json::from_slice(&event(id, ty, "warning", payload)).unwrap();
    let mut doc = doc.as_object().unwrap().clone();
    doc.insert("node".into(), json!(node));
    let mut bytes = serde_json::to_vec(&doc).unwrap();
    bytes.push(b'\n');
    bytes
}

/// One file the agent wrote itself (its own, signed events), once there is one.
fn own_event_file(data: &std::path::Path, node: &str) -> std::path::PathBuf {
    let mut found = None;
    wait_until("the agent wrote an event", Duration::from_secs(10), || {
        found = std::fs::read_dir(data.join("events"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|day| std::fs::read_dir(day.path().join(node)).ok())
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "json"));
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn a_member_cannot_write_as_another_node_nor_replace_a_genuine_event() {
    let dir = tempfile::tempdir().unwrap();
    let (alpha, data, gossip) = start_alpha(dir.path());
    let identity = member_identity(dir.path(), &data, "alpha", "mallory");
    // A certificate of another mesh that happens to use the same names.
    let elsewhere = certs::MeshCa::generate("home", 30)
        .unwrap()
        .issue("mallory", &[], 30)
        .unwrap();

    let genuine_path = own_event_file(&data, "alpha");
    let genuine = std::fs::read(&genuine_path).unwrap();
    let genuine_text = String::from_utf8(genuine.clone()).unwrap();
    assert!(genuine_text.contains(",\"sig\":\"1."), "{genuine_text}");
    // Same id and time, other content: with alpha's signature left on, and without one.
    let (unsigned, _) = sync::signature::split(&genuine).unwrap();
    let unsigned_text = String::from_utf8(unsigned.clone()).unwrap();
    let altered = unsigned_text.replacen("\"severity\":\"info\"", "\"severity\":\"critical\"", 1);
    let altered = if altered == unsigned_text {
        unsigned_text.replacen("\"payload\":{", "\"payload\":{\"forged\":true,", 1)
    } else {
        altered
    };
    let sig_tail = &genuine_text[genuine_text.rfind(",\"sig\":").unwrap()..];
    let replaced_with_old_sig =
        format!("{}{}", altered.trim_end().trim_end_matches('}'), sig_tail).into_bytes();

    let silence = event_of(
        "alpha",
        "0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4f01",
        "silence_set",
        json!({"matchers": {}, "ends_at": "9999-12-31T00:00:00Z", "comment": "shh"}),
    );
    let offline = event_of(
        "beta",
        "0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4f02",
        "node_offline",
        json!({"peer": "beta"}),
    );
    let from_elsewhere = event_of(
        "mallory",
        "0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4f03",
        "from_elsewhere",
        json!({}),
    );
    // Mallory's own event, honestly signed, with a clock stamp that would win every
    // last-writer-wins register forever.
    let pinned = {
        let doc: Value = serde_json::from_slice(&event(
            "0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4f04",
            "pinned_clock",
            "info",
            json!({}),
        ))
        .unwrap();
        let mut doc = doc.as_object().unwrap().clone();
        doc.insert("hlc".into(), json!("ffffffffffffffff/1"));
        let mut bytes = serde_json::to_vec(&doc).unwrap();
        bytes.push(b'\n');
        bytes
    };
    let ours = vec![identity.cert_der().to_vec()];
    // (what, event files, signer certificates)
    type Attack<'a> = (&'a str, Vec<Vec<u8>>, Vec<Vec<u8>>);
    let attacks: Vec<Attack> = vec![
        ("unsigned silence as alpha", vec![silence.clone()], vec![]),
        (
            "silence as alpha signed by mallory",
            signed(&identity, "alpha", std::slice::from_ref(&silence)),
            ours.clone(),
        ),
        (
            "node_offline as beta signed by mallory",
            signed(&identity, "beta", &[offline]),
            ours.clone(),
        ),
        (
            "alpha's event altered, its signature kept",
            vec![replaced_with_old_sig],
            vec![],
        ),
        (
            "alpha's event altered, unsigned",
            vec![altered.into_bytes()],
            vec![],
        ),
        (
            "its own event with an hlc in 2106",
            signed(&identity, "mallory", &[pinned]),
            ours.clone(),
        ),
        (
            "signed by another mesh's certificate",
            signed(&elsewhere, "mallory", &[from_elsewhere]),
            vec![elsewhere.cert_der().to_vec()],
        ),
    ];

    let rt = tokio::runtime::Runtime::new().unwrap();
    let alpha_addr: SocketAddr = gossip.parse().unwrap();
    rt.block_on(async {
        let mallory = {
            let a = free_udp_addr();
            member_transport(&identity, a, a)
        };
        for (_, events, signers) in &attacks {
            let push = SyncMessage::Push {
                events: events.clone(),
                signers: signers.clone(),
            };
            mallory.send_app(alpha_addr, &push.encode()).await.unwrap();
        }
        // A world snapshot whose registers are dated 2106: it would outrank every real event.
        let mut pinned_world = sync::world::WorldState::default();
        let mut doc: serde_json::Map<String, Value> = serde_json::from_slice(&event_of(
            "alpha",
            "0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4f05",
            "node_offline",
            json!({"peer": "alpha"}),
        ))
        .unwrap();
        doc.insert("hlc".into(), json!("ffffffffffffffff/1"));
        pinned_world.apply(&sync::Event::from_document(doc, None).unwrap());
        let world = SyncMessage::World {
            state: pinned_world.canonical_bytes(),
            reply: false,
        };
        mallory.send_app(alpha_addr, &world.encode()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        mallory.close().await;
    });

    // 7 forged files, the foreign certificate and the pinned world, each refused and counted
    // against mallory.
    wait_until("every forgery refused", Duration::from_secs(10), || {
        alpha.get_json("/v1/sync")["refused"]["mallory"].as_u64() == Some(9)
    });
    let status = alpha.get_json("/v1/sync");
    let all: String = status["latest_refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}: {}\n", r["what"], r["reason"]))
        .collect();
    let (_, metrics) = alpha.get("/metrics");
    assert!(
        metrics.lines().any(|l| l == "labmesh_sync_refused_total 9"),
        "{metrics}"
    );
    for reason in [
        "carries no `sig`",
        "signed with the certificate of mallory, but the event names node alpha",
        "signature does not verify",
        "not issued by this mesh's CA",
        "field `hlc`",
        "more than store.max_clock_ahead past this node's clock",
    ] {
        assert!(all.contains(reason), "no refusal says {reason:?}:\n{all}");
    }
    for ty in [
        "silence_set",
        "node_offline",
        "from_elsewhere",
        "event_conflict",
        "pinned_clock",
    ] {
        assert!(
            alpha
                .get_json(&format!("/v1/events?type={ty}"))
                .as_array()
                .unwrap()
                .is_empty(),
            "a forged {ty} was stored"
        );
    }
    assert_eq!(
        std::fs::read(&genuine_path).unwrap(),
        genuine,
        "the genuine event is untouched"
    );
    assert!(
        !data.join("quarantine").exists()
            || std::fs::read_dir(data.join("quarantine")).unwrap().count() == 0,
        "nothing genuine was quarantined"
    );
    let fsck = run(labmesh(&data).args(["fsck", "--verify", "--json"]));
    assert!(fsck.status.success(), "{}", stderr(&fsck));
}
