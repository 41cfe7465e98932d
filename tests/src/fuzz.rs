//! The bodies of the fuzz targets: one function per parser of untrusted bytes, each fed
//! arbitrary input. They must return (an error is fine) and never panic, hang or allocate
//! without bound. `fuzz/` runs them under libFuzzer (`cargo fuzz run NAME`, see
//! docs/benchmarks.md); `tests/tests/fuzz_corpus.rs` replays the seed corpus in CI.

use std::sync::OnceLock;

use sync::signature::test_keys::TestMesh;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name its `fuzz/fuzz_targets/<name>.rs` and corpus folder use.
pub const TARGETS: [(&str, Target); 7] = [
    ("event_file", event_file),
    ("sync_message", sync_message),
    ("mesh_frame", mesh_frame),
    ("gossip_payload", gossip_payload),
    ("join_bundle", join_bundle),
    ("revocation", revocation),
    ("config_toml", config_toml),
];

fn mesh() -> &'static TestMesh {
    static MESH: OnceLock<TestMesh> = OnceLock::new();
    MESH.get_or_init(|| {
        let mesh = TestMesh::new();
        let _ = mesh.issue("ws");
        mesh
    })
}

/// An event file as a peer or a script hands it over: parsed, its signature located, parsed
/// and checked.
pub fn event_file(data: &[u8]) {
    if let Ok(event) = sync::Event::from_file_bytes(data, 65536, None) {
        let sig = event
            .extra
            .get(sync::signature::SIG_FIELD)
            .and_then(serde_json::Value::as_str);
        let roots = sync::signature::VerifiedRoots::with_capacity(4);
        let _ = sync::signature::verify(data, &event.node, sig, mesh(), &roots);
        let _ = event.to_file_bytes();
    }
    if let Some((_, text)) = sync::signature::split(data)
        && let Ok(field) = sync::signature::SigField::parse(text)
    {
        assert_eq!(field.to_text(), text, "one spelling per signature field");
        let _ = sync::signature::root_from_path([0; 16], &field);
    }
    let _ = sync::signature::key_of(data);
}

/// A sync message off the wire (version byte, postcard).
pub fn sync_message(data: &[u8]) {
    if let Ok(msg) = sync::reconcile::SyncMessage::decode(data) {
        let again = msg.encode();
        assert_eq!(
            sync::reconcile::SyncMessage::decode(&again).ok(),
            Some(msg),
            "a decoded message encodes back to itself"
        );
    }
}

/// The envelope of every QUIC stream.
pub fn mesh_frame(data: &[u8]) {
    if let Ok(frame) = mesh::frame::decode(data) {
        let again = mesh::frame::encode(frame.kind, frame.sender, frame.payload);
        assert!(mesh::frame::decode(&again).is_ok());
    }
}

/// A gossip frame's payload: chitchat's decoder behind our wrapper.
pub fn gossip_payload(data: &[u8]) {
    use mesh::gossip_trust::{GossipMessage, GossipTrust, Sender};
    let _ = mesh::frame::decode_gossip(data);
    // The certificate filter parses first in the agent; what it admits must re-encode to the
    // same message and decode in chitchat.
    if let Ok(msg) = GossipMessage::parse(data) {
        let again = GossipMessage::parse(&msg.encode());
        assert_eq!(
            again.as_ref(),
            Ok(&msg),
            "the gossip filter's encoding round-trips"
        );
    }
    let sender: std::net::SocketAddr = ([127, 0, 0, 1], 7001).into();
    let mut trust = GossipTrust::new(([127, 0, 0, 1], 7000).into());
    trust.set_gossip_interval(300);
    if let Ok(admitted) = trust.inbound(Sender::new("ws", sender), data, 0) {
        assert!(
            mesh::frame::decode_gossip(&admitted.payload).is_ok(),
            "chitchat decodes what the filter admits"
        );
    }
}

/// A join bundle file.
pub fn join_bundle(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(bundle) = certs::JoinBundle::from_json(text, std::path::Path::new("fuzz.json"))
    {
        let _ = bundle.identity();
    }
}

/// A revocation record as it travels in gossip and events.
pub fn revocation(data: &[u8]) {
    static CA: OnceLock<Option<String>> = OnceLock::new();
    let ca = CA.get_or_init(|| {
        certs::MeshCa::generate("fuzz", 30)
            .ok()
            .and_then(|ca| ca.issue("ws", &[], 30).ok())
            .map(|id| id.ca_pem().to_owned())
    });
    if let Ok(record) = serde_json::from_slice::<certs::SignedRevocation>(data) {
        let _ = record.canonical_bytes();
        let _ = record.fingerprint_bytes();
        if let Some(ca) = ca {
            let _ = record.verify(ca);
        }
    }
}

/// The config file.
pub fn config_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = labmesh::config::parse_config(text);
    }
}

/// Seed inputs for `target`: one of each shape the parser takes when all is well (the fuzzer
/// mutates from there). `scripts/fuzz` writes them to `fuzz/corpus/<target>/`.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let event = |node: &str| {
        sync::NewEvent::new("backup_completed", sync::Severity::Info, "backup.sh")
            .service("nas")
            .into_event(node, chrono::Utc::now())
            .map(|e| e.to_file_bytes())
            .unwrap_or_default()
    };
    match target {
        "event_file" => {
            let mut out = vec![event("ws"), event("nas")];
            let (signer, _) = mesh().issue("ws");
            if let Ok(signed) = sync::signature::sign_files(&*signer, "ws", &[event("ws"), event("ws"), event("ws")]) {
                out.extend(signed.into_iter().map(|(b, _)| b));
            }
            out.push(br#"{"timestamp":"2026-05-12T12:05:00Z","node":"ws","type":"x_y","severity":"info","source":"s","service":"all","correlation_id":"","payload":{}}"#.to_vec());
            out
        }
        "sync_message" => {
            use sync::reconcile::SyncMessage;
            [
                SyncMessage::Push { events: vec![event("ws")], signers: vec![vec![1, 2, 3]] },
                SyncMessage::Reconcile { session: 7, since_ms: 1_700_000_000_000, negentropy: vec![0x61, 0, 1] },
                SyncMessage::Reply { session: 7, negentropy: vec![0x61] },
                SyncMessage::Continue { session: 7, since_ms: 0, negentropy: vec![] },
                SyncMessage::Fetch { session: 7, hashes: vec![[9; 32]] },
                SyncMessage::Events { session: 7, events: vec![event("nas")], signers: vec![] },
                SyncMessage::World { state: b"{}".to_vec(), reply: true },
            ]
            .iter()
            .map(SyncMessage::encode)
            .collect()
        }
        "mesh_frame" => vec![
            mesh::frame::encode(mesh::frame::Kind::App, "127.0.0.1:7946".parse().unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 7946))), b"payload"),
            mesh::frame::encode(mesh::frame::Kind::Gossip, std::net::SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], 7946)), &[0, 1, 2]),
        ],
        "gossip_payload" => {
            use mesh::gossip_trust::{DigestEntry, GossipMessage, KeyValue, NodeDelta};
            let id = chitchat::ChitchatId::new("ws", 1, ([127, 0, 0, 1], 7001).into());
            let entry = DigestEntry {
                id: id.clone(),
                heartbeat: 3,
                last_gc_version: 0,
                max_version: 2,
            };
            let delta = NodeDelta {
                id,
                last_gc_version: 0,
                from_version_excluded: 0,
                key_values: vec![KeyValue {
                    key: "status".into(),
                    value: "up".into(),
                    version: 1,
                    status: 0,
                }],
                set_max_version: None,
            };
            vec![
                vec![0],
                vec![1, 0, 0, 0],
                vec![2, 4, 0, 0, 0, 0, 0, 0, 0],
                GossipMessage::Syn {
                    cluster_id: "m".into(),
                    digest: vec![entry.clone()],
                }
                .encode(),
                GossipMessage::SynAck {
                    digest: vec![entry],
                    delta: vec![delta],
                }
                .encode(),
            ]
        }
        "join_bundle" | "revocation" => {
            let Ok(ca) = certs::MeshCa::generate("fuzz", 30) else {
                return Vec::new();
            };
            let Ok(id) = ca.issue("ws", &[], 30) else {
                return Vec::new();
            };
            if target == "join_bundle" {
                certs::JoinBundle::new("fuzz", &id)
                    .to_json()
                    .map(|t| vec![t.into_bytes()])
                    .unwrap_or_default()
            } else {
                ca.sign_revocation(id.cert_pem(), "lost", chrono::Utc::now())
                    .ok()
                    .and_then(|r| serde_json::to_vec(&r).ok())
                    .map(|b| vec![b])
                    .unwrap_or_default()
            }
        }
        "config_toml" => vec![
            include_bytes!("../../deploy/labmesh.example.toml").to_vec(),
            b"name = \"ws\"\n[store]\nsettle = \"5s\"\n[alerting]\nalerters = [\"ws\"]\n[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1/\"\n".to_vec(),
        ],
        _ => Vec::new(),
    }
}
