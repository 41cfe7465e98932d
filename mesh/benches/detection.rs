//! Failure detection and gossip bandwidth: our QUIC transport against chitchat's own UDP
//! transport, same settings, same run. `cargo bench -p mesh --bench detection`.
//!
//! - Detection: 5 peers; one is dropped (its transport closed, as a SIGKILL looks to the others);
//!   the time until every survivor's chitchat marks it dead. p50 and p90 over the trials
//!   (`LABMESH_BENCH_TRIALS`, default 10); the dropped peer rejoins between trials.
//! - Bandwidth at rest: bytes each node sends per second over 10 s with 5 and with 10 nodes,
//!   counted as UDP payload plus 28 bytes of IPv4+UDP header per datagram, for both transports
//!   (ours includes QUIC's headers, handshakes, acks and keep-alives).
//!
//! Defaults as shipped: gossip every 300 ms, phi threshold 8.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use certs::{MeshCa, NodeIdentity, Rejections, RevocationList};
use chitchat::transport::{Socket, Transport, UdpTransport};
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, ChitchatMessage, FailureDetectorConfig,
    Serializable, spawn_chitchat,
};
use mesh::keys::NodeInfo;
use mesh::{Liveness, Mesh, MeshConfig, MeshStats, QuicTransport, TransportConfig};

const GOSSIP: Duration = Duration::from_millis(300);
const HEADER: u64 = 28;

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn detector() -> FailureDetectorConfig {
    FailureDetectorConfig {
        phi_threshold: 8.0,
        initial_interval: GOSSIP * 2,
        dead_node_grace_period: Duration::from_secs(3600),
        ..FailureDetectorConfig::default()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ---------- our QUIC transport ----------

struct QuicNode {
    mesh: Mesh,
    stats: Arc<MeshStats>,
}

async fn quic_node(id: &NodeIdentity, seed: Option<SocketAddr>) -> (QuicNode, SocketAddr) {
    let addr = free_udp();
    let revoked = RevocationList::new();
    let rej = Rejections::new();
    let server = certs::server_config(id, revoked.clone(), rej.clone()).unwrap();
    let client = certs::client_config(id, revoked.clone(), rej).unwrap();
    let stats = Arc::new(MeshStats::default());
    let transport = QuicTransport::bind(
        TransportConfig::new(addr, addr, server, client),
        stats.clone(),
        Box::new(move |fp| revoked.is_revoked(fp)),
    )
    .unwrap();
    let info = NodeInfo {
        role: "bench".into(),
        version: "0".into(),
        os: "linux".into(),
        gossip_addr: addr.to_string(),
        api_addr: String::new(),
        transient: false,
        alerter_priority: 0,
        backend: "cpu".into(),
    };
    let mut cfg = MeshConfig::new(id.node(), "bench", addr, info);
    cfg.gossip_interval = GOSSIP;
    cfg.seeds = seed.map(|s| vec![s.to_string()]).unwrap_or_default();
    let mesh = Mesh::start(cfg, transport).await.unwrap();
    (QuicNode { mesh, stats }, addr)
}

async fn quic_sees(n: &QuicNode, node: &str, want: &[Liveness]) -> bool {
    n.mesh.observe().await;
    n.mesh
        .view()
        .await
        .peers
        .iter()
        .any(|p| p.node == node && want.contains(&p.liveness))
}

async fn quic_all_alive(nodes: &[QuicNode], names: &[String]) -> bool {
    for (i, n) in nodes.iter().enumerate() {
        for (j, name) in names.iter().enumerate() {
            if i != j && !quic_sees(n, name, &[Liveness::Alive, Liveness::Suspect]).await {
                return false;
            }
        }
    }
    true
}

/// Bandwidth at rest of a fresh QUIC mesh of `n` nodes (fresh: no dead generations of
/// restarted nodes in the digests).
async fn quic_rest(ids: &[NodeIdentity], names: &[String], n: usize) -> f64 {
    let (first, seed) = quic_node(&ids[0], None).await;
    let mut nodes = vec![first];
    for id in &ids[1..n] {
        nodes.push(quic_node(id, Some(seed)).await.0);
    }
    wait("QUIC mesh to converge", 60, async || {
        quic_all_alive(&nodes, &names[..n]).await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bw = quic_bandwidth(&nodes).await;
    for node in nodes {
        node.mesh.abort().await;
    }
    bw
}

async fn bench_quic(trials: usize) -> (Vec<f64>, f64, f64) {
    let ca = MeshCa::generate("bench", 30).unwrap();
    let names: Vec<String> = (0..10).map(|i| format!("node{i}")).collect();
    let ids: Vec<NodeIdentity> = names
        .iter()
        .map(|n| ca.issue(n, &[], 30).unwrap())
        .collect();
    let bw5 = quic_rest(&ids, &names, 5).await;
    let bw10 = quic_rest(&ids, &names, 10).await;
    let (first, seed) = quic_node(&ids[0], None).await;
    let mut nodes = vec![first];
    for id in &ids[1..5] {
        nodes.push(quic_node(id, Some(seed)).await.0);
    }
    wait("QUIC mesh of 5 to converge", 30, async || {
        quic_all_alive(&nodes, &names[..5]).await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut times = Vec::new();
    for t in 0..trials {
        let victim = nodes.pop().unwrap();
        let start = Instant::now();
        victim.mesh.abort().await;
        drop(victim);
        let mut done = false;
        while !done {
            tokio::time::sleep(Duration::from_millis(20)).await;
            done = true;
            for n in &nodes {
                if !quic_sees(n, "node4", &[Liveness::Dead, Liveness::Offline]).await {
                    done = false;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "QUIC trial {t}: no detection in 60 s"
            );
        }
        times.push(start.elapsed().as_secs_f64());
        eprintln!("  QUIC trial {t}: {:.2} s", times[t]);
        nodes.push(quic_node(&ids[4], Some(seed)).await.0);
        wait("the dropped peer to rejoin", 30, async || {
            quic_all_alive(&nodes, &names[..5]).await
        })
        .await;
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    for n in nodes {
        n.mesh.abort().await;
    }
    times.sort_by(f64::total_cmp);
    (times, bw5, bw10)
}

async fn quic_bandwidth(nodes: &[QuicNode]) -> f64 {
    let before: Vec<(u64, u64)> = nodes
        .iter()
        .map(|n| {
            let s = n.stats.snapshot();
            (s.udp_bytes_sent, s.udp_datagrams_sent)
        })
        .collect();
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let total: u64 = nodes
        .iter()
        .zip(&before)
        .map(|(n, (b, d))| {
            let s = n.stats.snapshot();
            (s.udp_bytes_sent - b) + HEADER * (s.udp_datagrams_sent - d)
        })
        .sum();
    total as f64 / nodes.len() as f64 / window.as_secs_f64()
}

// ---------- chitchat's UDP transport ----------

#[derive(Default)]
struct Counter {
    bytes: AtomicU64,
}

struct CountingUdp(Arc<Counter>);

struct CountingSocket {
    inner: Box<dyn Socket>,
    counter: Arc<Counter>,
}

#[async_trait::async_trait]
impl Transport for CountingUdp {
    async fn open(&self, addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(CountingSocket {
            inner: UdpTransport.open(addr).await?,
            counter: self.0.clone(),
        }))
    }
}

#[async_trait::async_trait]
impl Socket for CountingSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        self.counter
            .bytes
            .fetch_add(msg.serialized_len() as u64 + HEADER, Ordering::Relaxed);
        self.inner.send(to, msg).await
    }
    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        self.inner.recv().await
    }
}

struct UdpNode {
    handle: ChitchatHandle,
    counter: Arc<Counter>,
}

async fn udp_node(name: &str, seed: Option<SocketAddr>) -> UdpNode {
    let addr = free_udp();
    let generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let cfg = ChitchatConfig {
        chitchat_id: ChitchatId::new(name.to_owned(), generation, addr),
        cluster_id: "bench".into(),
        gossip_interval: GOSSIP,
        listen_addr: addr,
        seed_nodes: seed.map(|s| vec![s.to_string()]).unwrap_or_default(),
        failure_detector_config: detector(),
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
    };
    let info = NodeInfo {
        role: "bench".into(),
        version: "0".into(),
        os: "linux".into(),
        gossip_addr: addr.to_string(),
        api_addr: String::new(),
        transient: false,
        alerter_priority: 0,
        backend: "cpu".into(),
    };
    let counter = Arc::new(Counter::default());
    let handle = spawn_chitchat(cfg, info.key_values(), &CountingUdp(counter.clone()))
        .await
        .unwrap();
    UdpNode { handle, counter }
}

async fn udp_sees_alive(n: &UdpNode, name: &str) -> bool {
    let c = n.handle.chitchat();
    let g = c.lock().await;
    let newest = g
        .node_states()
        .keys()
        .filter(|id| &*id.node_id == name)
        .max_by_key(|id| id.generation_id)
        .cloned();
    newest.is_some_and(|id| g.live_nodes().any(|l| *l == id))
}

async fn udp_sees_dead(n: &UdpNode, name: &str) -> bool {
    let c = n.handle.chitchat();
    let g = c.lock().await;
    let live = g.live_nodes().any(|id| &*id.node_id == name);
    !live
}

async fn udp_all_alive(nodes: &[UdpNode], names: &[String]) -> bool {
    for (i, n) in nodes.iter().enumerate() {
        for (j, name) in names.iter().enumerate() {
            if i != j && !udp_sees_alive(n, name).await {
                return false;
            }
        }
    }
    true
}

async fn udp_bandwidth(nodes: &[UdpNode]) -> f64 {
    let before: Vec<u64> = nodes
        .iter()
        .map(|n| n.counter.bytes.load(Ordering::Relaxed))
        .collect();
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let total: u64 = nodes
        .iter()
        .zip(&before)
        .map(|(n, b)| n.counter.bytes.load(Ordering::Relaxed) - b)
        .sum();
    total as f64 / nodes.len() as f64 / window.as_secs_f64()
}

/// Bandwidth at rest of a fresh chitchat-UDP mesh of `n` nodes.
async fn udp_rest(names: &[String], n: usize) -> f64 {
    let first = udp_node(&names[0], None).await;
    let seed = first.handle.chitchat_id().gossip_advertise_addr;
    let mut nodes = vec![first];
    for name in &names[1..n] {
        nodes.push(udp_node(name, Some(seed)).await);
    }
    wait("UDP mesh to converge", 60, async || {
        udp_all_alive(&nodes, &names[..n]).await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bw = udp_bandwidth(&nodes).await;
    for node in nodes {
        let _ = node.handle.shutdown().await;
    }
    bw
}

async fn bench_udp(trials: usize) -> (Vec<f64>, f64, f64) {
    let names: Vec<String> = (0..10).map(|i| format!("node{i}")).collect();
    let bw5 = udp_rest(&names, 5).await;
    let bw10 = udp_rest(&names, 10).await;
    let first = udp_node(&names[0], None).await;
    let seed = first.handle.chitchat_id().gossip_advertise_addr;
    let mut nodes = vec![first];
    for n in &names[1..5] {
        nodes.push(udp_node(n, Some(seed)).await);
    }
    wait("UDP mesh of 5 to converge", 30, async || {
        udp_all_alive(&nodes, &names[..5]).await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut times = Vec::new();
    for t in 0..trials {
        let victim = nodes.pop().unwrap();
        let start = Instant::now();
        let _ = victim.handle.shutdown().await;
        let mut done = false;
        while !done {
            tokio::time::sleep(Duration::from_millis(20)).await;
            done = true;
            for n in &nodes {
                if !udp_sees_dead(n, "node4").await {
                    done = false;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "UDP trial {t}: no detection in 60 s"
            );
        }
        times.push(start.elapsed().as_secs_f64());
        eprintln!("  UDP trial {t}: {:.2} s", times[t]);
        nodes.push(udp_node("node4", Some(seed)).await);
        wait("the dropped peer to rejoin", 30, async || {
            udp_all_alive(&nodes, &names[..5]).await
        })
        .await;
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    for n in nodes {
        let _ = n.handle.shutdown().await;
    }
    times.sort_by(f64::total_cmp);
    (times, bw5, bw10)
}

async fn wait(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn main() {
    let trials: usize = std::env::var("LABMESH_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("== failure detection and gossip bandwidth: QUIC (ours) vs chitchat UDP ==");
    println!(
        "settings: gossip {GOSSIP:?}, phi 8, 5 peers, {trials} trials; bandwidth over 10 s at rest"
    );
    let (quic, q5, q10) = rt.block_on(bench_quic(trials));
    let (udp, u5, u10) = rt.block_on(bench_udp(trials));
    let (qp50, qp90, up50, up90) = (
        percentile(&quic, 0.5),
        percentile(&quic, 0.9),
        percentile(&udp, 0.5),
        percentile(&udp, 0.9),
    );
    println!();
    println!("detection (drop to every survivor marking it dead):");
    println!("  QUIC p50 {qp50:.2} s  p90 {qp90:.2} s   (goal p50 <= 3 s)");
    println!("  UDP  p50 {up50:.2} s  p90 {up90:.2} s");
    println!(
        "  ratio QUIC/UDP: p50 {:.2}x  p90 {:.2}x   (goal <= 1.1x)",
        qp50 / up50,
        qp90 / up90
    );
    println!("gossip bandwidth at rest, bytes sent per node per second:");
    println!(
        "   5 nodes: QUIC {:.0} B/s  UDP {:.0} B/s  ratio {:.2}x",
        q5,
        u5,
        q5 / u5
    );
    println!(
        "  10 nodes: QUIC {:.0} B/s  UDP {:.0} B/s  ratio {:.2}x   (goal <= 10 KB/s/node)",
        q10,
        u10,
        q10 / u10
    );
}
