//! The secure mesh with real processes: real QUIC, real certificates, real signals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use labmesh_tests::{Agent, Peer, free_udp_port, labmesh, run, stderr, wait_until};
use rustix::process::Signal;
use serde_json::Value;

/// Fast timers so the tests take seconds: gossip every 100 ms, offline after 3 s dead.
const FAST: [&str; 4] = ["--gossip-interval", "100ms", "--offline-after", "3s"];

fn start_node(dir: &Path, name: &str, extra: &[&str]) -> Peer {
    Peer::start(dir, name, &[&FAST[..], extra].concat())
}

fn join(dir: &Path, ca_node: &Peer, name: &str) -> Peer {
    Peer::join(dir, ca_node, name, &FAST)
}

fn liveness(observer: &Agent, node: &str) -> Option<String> {
    let nodes = observer.get_json("/v1/nodes");
    nodes
        .as_array()?
        .iter()
        .find(|n| n["node"] == node)
        .and_then(|n| n["liveness"].as_str().map(str::to_owned))
}

fn wait_liveness(observer: &Peer, node: &str, want: &[&str], secs: u64) {
    wait_until(
        &format!("{} to see {node} {want:?}", observer.name),
        Duration::from_secs(secs),
        || liveness(observer.agent(), node).is_some_and(|l| want.contains(&l.as_str())),
    );
}

fn events_of(data: &Path, ty: &str) -> Vec<Value> {
    let out = run(labmesh(data).args(["events", "list", "--json", "--type", ty]));
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn rejections(agent: &Agent) -> Value {
    agent.get_json("/v1/status")["rejections"].clone()
}

#[test]
fn three_nodes_converge_crash_restart_and_leave() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_node(dir.path(), "alpha", &[]);
    let b = join(dir.path(), &a, "bravo");
    let mut c = join(dir.path(), &a, "charlie");
    for (obs, n) in [
        (&a, "bravo"),
        (&a, "charlie"),
        (&b, "alpha"),
        (&b, "charlie"),
        (&c, "alpha"),
        (&c, "bravo"),
    ] {
        wait_liveness(obs, n, &["alive"], 20);
    }
    // `labmesh status` from any node prints every node.
    for node in [&a, &b, &c] {
        let out =
            run(labmesh(&node.data).args(["status", "--api-addr", &node.agent().api.to_string()]));
        let text = String::from_utf8_lossy(&out.stdout);
        for name in ["alpha", "bravo", "charlie"] {
            assert!(text.contains(name), "{text}");
        }
        assert!(
            text.contains("alive") && text.contains("HEARTBEAT"),
            "{text}"
        );
    }
    let status = a.agent().get_json("/v1/status");
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3);
    let bravo = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "bravo")
        .unwrap()
        .clone();
    assert_eq!(bravo["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(bravo["gossip_addr"], b.gossip);
    assert_eq!(bravo["role"], "peer");

    // SIGKILL charlie: dead, then offline, on both survivors.
    c.agent.as_mut().unwrap().stop_with(Signal::KILL);
    wait_liveness(&a, "charlie", &["dead", "offline"], 20);
    wait_liveness(&a, "charlie", &["offline"], 20);
    wait_liveness(&b, "charlie", &["offline"], 20);
    // Exactly one node_offline for charlie across the mesh, written by alpha, the smallest
    // live name (sync copies it to bravo, so count distinct ids).
    std::thread::sleep(Duration::from_millis(500));
    let offline_a = events_of(&a.data, "node_offline");
    let offline_b = events_of(&b.data, "node_offline");
    let ids: std::collections::BTreeSet<String> = offline_a
        .iter()
        .chain(&offline_b)
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "{offline_a:?} {offline_b:?}");
    assert_eq!(offline_a[0]["node"], "alpha");
    assert_eq!(offline_a[0]["payload"]["peer"], "charlie");
    assert_eq!(offline_a[0]["severity"], "warning");

    // Restart charlie from its data dir: same identity, alive again, a node_online event.
    let gossip = c.gossip.clone();
    let mut args: Vec<&str> = vec![
        "--name",
        "charlie",
        "--gossip-addr",
        &gossip,
        "--seed",
        &a.gossip,
    ];
    args.extend_from_slice(&FAST);
    c.agent = Some(Agent::start(&c.data, &args));
    wait_liveness(&a, "charlie", &["alive"], 20);
    wait_liveness(&b, "charlie", &["alive"], 20);
    assert_eq!(c.agent().get_json("/v1/status")["node"], "charlie");
    wait_until("node_online", Duration::from_secs(5), || {
        !events_of(&a.data, "node_online").is_empty()
    });

    // Graceful stop of bravo: `left`, not dead.
    let mut b = b;
    assert_eq!(
        b.agent.as_mut().unwrap().stop_with(Signal::TERM).code(),
        Some(0)
    );
    wait_liveness(&a, "bravo", &["left"], 10);
    wait_liveness(&c, "bravo", &["left"], 10);
    let left = events_of(&a.data, "node_left");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(rejections(a.agent()), serde_json::json!({}));
}

#[test]
fn strangers_garbage_and_revoked_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_node(dir.path(), "alpha", &[]);
    let b = join(dir.path(), &a, "bravo");
    let c = join(dir.path(), &a, "charlie");
    wait_liveness(&a, "bravo", &["alive"], 20);
    wait_liveness(&c, "bravo", &["alive"], 20);

    // A node of another mesh (its own CA) that seeds to alpha never becomes a member.
    let x = start_node(dir.path(), "xray", &["--seed", &a.gossip]);
    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until("the stranger refused", Duration::from_secs(30), || {
            x.agent().get_json("/v1/status")["rejections"]["unknown_ca"]
                .as_u64()
                .unwrap_or(0)
                > 0
        })
    }));
    if refused.is_err() {
        panic!(
            "the stranger was not refused.\nxray status: {}\nalpha status: {}\nxray log:\n{}\nalpha log:\n{}",
            x.agent().get_json("/v1/status"),
            a.agent().get_json("/v1/status"),
            x.agent().log_text(),
            a.agent().log_text()
        );
    }
    assert_eq!(liveness(a.agent(), "xray"), None);
    assert_eq!(liveness(x.agent(), "alpha"), None);

    // An expired certificate from the right CA is refused by alpha.
    let ca = certs::MeshCa::load(&a.data.join("certs")).unwrap().unwrap();
    let now = chrono::Utc::now();
    let expired = ca
        .issue_with_validity(
            "echo",
            &[],
            now - chrono::Duration::days(10),
            now - chrono::Duration::days(1),
        )
        .unwrap();
    let expired_dir = dir.path().join("echo");
    expired.save(&expired_dir.join("certs")).unwrap();
    let e = start_node(dir.path(), "echo", &["--seed", &a.gossip]);
    wait_until(
        "the expired certificate refused",
        Duration::from_secs(20),
        || rejections(a.agent())["expired"].as_u64().unwrap_or(0) > 0,
    );
    assert_eq!(liveness(a.agent(), "echo"), None);
    drop(e);

    // Garbage datagrams to the QUIC port: counted, logged once, the agent carries on.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..(10 + i % 90))
            .map(|j| (i.wrapping_mul(31).wrapping_add(j * 7) & 0x3f) as u8)
            .collect();
        sock.send_to(&junk, &a.gossip).unwrap();
    }
    wait_until("garbage counted", Duration::from_secs(10), || {
        rejections(a.agent())["garbage_datagram"]
            .as_u64()
            .unwrap_or(0)
            >= 150
    });
    let from = sock.local_addr().unwrap().to_string();
    let logged = a
        .agent()
        .log_text()
        .lines()
        .filter(|l| l.contains("garbage_datagram") && l.contains(&from))
        .count();
    assert_eq!(
        logged, 1,
        "garbage must be logged once per peer per minute, not per packet"
    );
    assert_eq!(liveness(a.agent(), "bravo").as_deref(), Some("alive"));

    // Revoke bravo on the CA node: the record spreads by gossip to charlie (which has no CA
    // key), and both refuse bravo from then on.
    let res = run(labmesh(&a.data).args(["--name", "alpha", "certs", "revoke", "bravo"]));
    assert!(res.status.success(), "{}", stderr(&res));
    wait_until(
        "charlie stores the revocation",
        Duration::from_secs(15),
        || !events_of(&c.data, "cert_revoked").is_empty(),
    );
    assert!(!c.data.join("certs/ca.key").exists());
    wait_liveness(&a, "bravo", &["dead", "offline"], 20);
    wait_liveness(&c, "bravo", &["dead", "offline"], 20);
    wait_until("the revocation counted", Duration::from_secs(10), || {
        rejections(a.agent())["revoked"].as_u64().unwrap_or(0) > 0
            && rejections(c.agent())["revoked"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(liveness(a.agent(), "charlie").as_deref(), Some("alive"));
    drop(b);
    let list = run(labmesh(&a.data).args(["--name", "alpha", "certs", "list", "--json"]));
    let certs: Vec<Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert!(
        certs
            .iter()
            .any(|c| c["node"] == "bravo" && c["state"] == "revoked"),
        "{certs:?}"
    );
    drop(x);
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_node(dir.path(), "alpha", &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A TLS client that presents no certificate and trusts anything.
        #[derive(Debug)]
        struct AcceptAll(std::sync::Arc<rustls::crypto::CryptoProvider>);
        impl rustls::client::danger::ServerCertVerifier for AcceptAll {
            fn verify_server_cert(
                &self,
                _: &rustls::pki_types::CertificateDer<'_>,
                _: &[rustls::pki_types::CertificateDer<'_>],
                _: &rustls::pki_types::ServerName<'_>,
                _: &[u8],
                _: rustls::pki_types::UnixTime,
            ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            fn verify_tls12_signature(
                &self,
                m: &[u8],
                c: &rustls::pki_types::CertificateDer<'_>,
                d: &rustls::DigitallySignedStruct,
            ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>
            {
                rustls::crypto::verify_tls12_signature(
                    m,
                    c,
                    d,
                    &self.0.signature_verification_algorithms,
                )
            }
            fn verify_tls13_signature(
                &self,
                m: &[u8],
                c: &rustls::pki_types::CertificateDer<'_>,
                d: &rustls::DigitallySignedStruct,
            ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>
            {
                rustls::crypto::verify_tls13_signature(
                    m,
                    c,
                    d,
                    &self.0.signature_verification_algorithms,
                )
            }
            fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
                self.0.signature_verification_algorithms.supported_schemes()
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(AcceptAll(provider)))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"labmesh/1".to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
        let target = a.gossip.parse().unwrap();
        if let Ok(connecting) = endpoint.connect(target, "labmesh") {
            // The handshake may "succeed" client-side; the refusal shows on the first stream.
            if let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(3), connecting).await
                && let Ok(mut s) = conn.open_uni().await
            {
                let _ = s.write_all(b"hello").await;
                let _ = s.finish();
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            }
        }
    });
    wait_until("no_certificate counted", Duration::from_secs(10), || {
        rejections(a.agent())["no_certificate"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
}

#[test]
fn a_certificate_near_expiry_raises_a_warning_and_renew_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_node(dir.path(), "alpha", &[]);
    // A node whose certificate has 10 days left.
    let out = dir.path().join("delta.json");
    let res = run(labmesh(&a.data)
        .args([
            "--name", "alpha", "certs", "issue", "delta", "--days", "10", "--out",
        ])
        .arg(&out));
    assert!(res.status.success(), "{}", stderr(&res));
    let d_data = dir.path().join("delta");
    let gossip = format!("127.0.0.1:{}", free_udp_port());
    let bundle = out.display().to_string();
    let d = Agent::start(
        &d_data,
        &[
            "--name",
            "delta",
            "--join",
            &bundle,
            "--seed",
            &a.gossip,
            "--gossip-addr",
            &gossip,
        ],
    );
    wait_until("certificate_expiring", Duration::from_secs(10), || {
        !events_of(&d_data, "certificate_expiring").is_empty()
    });
    let ev = &events_of(&d_data, "certificate_expiring")[0];
    assert_eq!(ev["severity"], "warning");
    assert!(ev["payload"]["days_left"].as_i64().unwrap() <= 10);
    assert!(
        ev["payload"]["fix"]
            .as_str()
            .unwrap()
            .contains("labmesh certs renew delta")
    );
    drop(d);
    // Renewing on the CA node gives a new bundle with a year of validity; list shows both.
    let renewed = dir.path().join("delta-renewed.json");
    let res = run(labmesh(&a.data)
        .args(["--name", "alpha", "certs", "renew", "delta", "--out"])
        .arg(&renewed));
    assert!(res.status.success(), "{}", stderr(&res));
    let (bundle, _) = certs::JoinBundle::read(&renewed).unwrap();
    let id = bundle.identity().unwrap();
    assert!(id.not_after() - chrono::Utc::now() > chrono::Duration::days(300));
    let list = run(labmesh(&a.data).args(["--name", "alpha", "certs", "list", "--json"]));
    let certs: Vec<Value> = serde_json::from_slice(&list.stdout).unwrap();
    let states: Vec<&str> = certs
        .iter()
        .filter(|c| c["node"] == "delta")
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert!(
        states.contains(&"expiring") && states.contains(&"valid"),
        "{states:?}"
    );
    // Issuing again over an existing file needs --force.
    let res = run(labmesh(&a.data)
        .args(["--name", "alpha", "certs", "issue", "delta", "--out"])
        .arg(&renewed));
    assert_eq!(res.status.code(), Some(2));
    assert!(stderr(&res).contains("--force"), "{}", stderr(&res));
}

#[test]
fn a_revocation_outlives_the_pruning_of_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = start_node(dir.path(), "alpha", &[]);
    let mut b = join(dir.path(), &a, "bravo");
    wait_liveness(&a, "bravo", &["alive"], 20);
    let res = run(labmesh(&a.data).args(["--name", "alpha", "certs", "revoke", "bravo"]));
    assert!(res.status.success(), "{}", stderr(&res));
    wait_liveness(&a, "bravo", &["dead", "offline"], 20);
    wait_until("the list kept on disk", Duration::from_secs(10), || {
        std::fs::read_to_string(a.data.join("state/revocations.json"))
            .is_ok_and(|t| t.contains("\"bravo\""))
    });
    a.agent.take().unwrap().stop_with(Signal::TERM);
    b.agent.take().unwrap().stop_with(Signal::TERM);
    // A month later retention has deleted the day that held the `cert_revoked` event (a
    // certificate stays valid for 825 days).
    std::fs::remove_dir_all(a.data.join("events")).unwrap();
    let restart = |p: &Peer, extra: &[&str]| {
        let mut args = vec![
            "--name",
            p.name.as_str(),
            "--gossip-addr",
            p.gossip.as_str(),
        ];
        args.extend_from_slice(&FAST);
        args.extend_from_slice(extra);
        Agent::start(&p.data, &args)
    };
    a.agent = Some(restart(&a, &[]));
    b.agent = Some(restart(&b, &["--seed", a.gossip.as_str()]));
    wait_until("bravo refused again", Duration::from_secs(20), || {
        rejections(a.agent())["revoked"].as_u64().unwrap_or(0) > 0
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(liveness(a.agent(), "bravo").as_deref(), Some("alive"));
}
