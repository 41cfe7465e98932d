//! Real QUIC with real certificates on loopback, several meshes in one process: convergence,
//! failure detection, graceful leave, and refusal of strangers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certs::{MeshCa, NodeIdentity, Rejections, RevocationList};
use mesh::keys::NodeInfo;
use mesh::{Liveness, Mesh, MeshConfig, MeshStats, QuicTransport, TransportConfig};

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Node {
    mesh: Mesh,
    addr: SocketAddr,
    tls_rejections: Rejections,
}

async fn start(identity: &NodeIdentity, seeds: Vec<String>, mesh_id: &str) -> Node {
    let addr = free_udp();
    let revoked = RevocationList::new();
    let tls_rejections = Rejections::new();
    let server = certs::server_config(identity, revoked.clone(), tls_rejections.clone()).unwrap();
    let client = certs::client_config(identity, revoked.clone(), tls_rejections.clone()).unwrap();
    let transport = QuicTransport::bind(
        TransportConfig::new(addr, addr, server, client),
        Arc::new(MeshStats::default()),
        Box::new(move |fp| revoked.is_revoked(fp)),
    )
    .unwrap();
    let info = NodeInfo {
        role: "test".into(),
        version: "0.0.0".into(),
        os: "linux".into(),
        gossip_addr: addr.to_string(),
        api_addr: String::new(),
        transient: false,
        alerter_priority: 0,
        backend: "cpu".into(),
    };
    let mut cfg = MeshConfig::new(identity.node(), mesh_id, addr, info);
    cfg.gossip_interval = Duration::from_millis(100);
    cfg.liveness.offline_after = Duration::from_secs(2);
    cfg.seeds = seeds;
    let mesh = Mesh::start(cfg, transport).await.unwrap();
    Node {
        mesh,
        addr,
        tls_rejections,
    }
}

async fn liveness_of(observer: &Node, node: &str) -> Option<Liveness> {
    observer.mesh.observe().await;
    observer
        .mesh
        .view()
        .await
        .peers
        .iter()
        .find(|p| p.node == node)
        .map(|p| p.liveness)
}

async fn wait_for(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_detect_death_and_see_a_leave() {
    let ca = MeshCa::generate("test", 30).unwrap();
    let ids: Vec<NodeIdentity> = ["alpha", "bravo", "charlie"]
        .iter()
        .map(|n| ca.issue(n, &[], 30).unwrap())
        .collect();
    let a = start(&ids[0], vec![], "test-1").await;
    let seed = vec![a.addr.to_string()];
    let b = start(&ids[1], seed.clone(), "test-1").await;
    let c = start(&ids[2], seed, "test-1").await;
    for (observer, name) in [
        (&a, "bravo"),
        (&a, "charlie"),
        (&b, "charlie"),
        (&c, "alpha"),
        (&c, "bravo"),
    ] {
        wait_for(&format!("{name} alive"), 10, async || {
            liveness_of(observer, name).await == Some(Liveness::Alive)
        })
        .await;
    }
    let view = a.mesh.view().await;
    let bravo = view.peers.iter().find(|p| p.node == "bravo").unwrap();
    assert_eq!(
        bravo.key_values.get("role").map(String::as_str),
        Some("test")
    );
    assert!(view.transport.messages_received > 0 && view.transport.bytes_sent > 0);

    // A crash (no leave): the others see it dead, then offline.
    let started = Instant::now();
    c.mesh.abort().await;
    wait_for("charlie dead", 15, async || {
        matches!(
            liveness_of(&a, "charlie").await,
            Some(Liveness::Dead | Liveness::Offline)
        )
    })
    .await;
    eprintln!("charlie declared dead after {:?}", started.elapsed());
    wait_for("charlie offline", 15, async || {
        liveness_of(&b, "charlie").await == Some(Liveness::Offline)
    })
    .await;

    // A graceful leave: seen as left, not dead.
    b.mesh.leave().await;
    wait_for("bravo left", 10, async || {
        liveness_of(&a, "bravo").await == Some(Liveness::Left)
    })
    .await;
    a.mesh.abort().await;
    assert_eq!(a.tls_rejections.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_mesh_ca_is_refused() {
    let ca = MeshCa::generate("test", 30).unwrap();
    let stranger_ca = MeshCa::generate("test", 30).unwrap();
    let a = start(&ca.issue("alpha", &[], 30).unwrap(), vec![], "test-2").await;
    let x = start(
        &stranger_ca.issue("mallory", &[], 30).unwrap(),
        vec![a.addr.to_string()],
        "test-2",
    )
    .await;
    wait_for("the stranger refused", 10, async || {
        a.tls_rejections.total() > 0 || x.tls_rejections.total() > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        liveness_of(&a, "mallory").await,
        None,
        "a stranger must never become a member"
    );
    // The stranger dialled us: its client refused our certificate (the server's is checked
    // first in TLS 1.3, so it never got to present its own).
    assert!(
        x.tls_rejections.get(certs::RejectReason::UnknownCa) > 0,
        "{:?}",
        x.tls_rejections.snapshot()
    );
    a.mesh.abort().await;
    x.mesh.abort().await;
}

fn transport(identity: &NodeIdentity, stats: Arc<MeshStats>) -> QuicTransport {
    let addr = free_udp();
    let revoked = RevocationList::new();
    let rejections = Rejections::new();
    let server = certs::server_config(identity, revoked.clone(), rejections.clone()).unwrap();
    let client = certs::client_config(identity, revoked.clone(), rejections).unwrap();
    QuicTransport::bind(
        TransportConfig::new(addr, addr, server, client),
        stats,
        Box::new(move |fp| revoked.is_revoked(fp)),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_certificate_holds_a_bounded_number_of_connections() {
    let ca = MeshCa::generate("home", 30).unwrap();
    let nas = ca.issue("nas", &[], 30).unwrap();
    let mallory = ca.issue("mallory", &[], 30).unwrap();
    let ws = ca.issue("ws", &[], 30).unwrap();
    let stats = Arc::new(MeshStats::default());
    let server = transport(&nas, stats.clone());
    let mut inbox = server.take_app_receiver().unwrap();
    let to = server.advertise_addr();
    // Mallory opens one endpoint after another with the same certificate, keeping each open.
    let mut held = Vec::new();
    for i in 0..12u8 {
        let t = transport(&mallory, Arc::new(MeshStats::default()));
        let _ = t.send_app(to, &[i]).await;
        held.push(t);
    }
    let mut delivered = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), inbox.recv()).await {
        delivered += 1;
    }
    assert_eq!(
        delivered, 8,
        "only max_connections_per_peer (8) connections are served"
    );
    let refused = stats
        .snapshot()
        .rejections
        .get("too_many_connections")
        .copied();
    assert_eq!(refused, Some(4), "{:?}", stats.snapshot().rejections);
    // Another member is still served.
    let honest = transport(&ws, Arc::new(MeshStats::default()));
    honest.send_app(to, b"hello").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.from.node, "ws");
    drop(held);
}
