//! The mesh series: peers by liveness, transport counters, refusals, and every node's gossiped
//! summary (this one's included) under a `node` label, so that one scrape of any node shows the
//! whole mesh.
//!
//! Test only: `LABMESH_BENCH_FAKE_PEERS=N` (read once) adds N synthetic nodes `bench-000`… with
//! a copy of this node's summary to the `labmesh_mesh_node_*` series, so that the benchmark can
//! time a scrape with a large mesh's worth of series. Never set it in production.

use std::sync::OnceLock;

use prometheus_client::registry::Unit;

use crate::api::ApiState;
use crate::api::metrics::{Out, label, ratio};
use crate::probes::HostSample;
use mesh::summary::Summary;

pub const FAKE_PEERS_ENV: &str = "LABMESH_BENCH_FAKE_PEERS";

const LIVENESS: [&str; 5] = ["alive", "suspect", "dead", "offline", "left"];

fn fake_peers() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        std::env::var(FAKE_PEERS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

pub async fn mesh(state: &ApiState, out: &mut Out, sample: Option<&HostSample>) {
    // (node, liveness is alive, summary)
    let mut nodes: Vec<(String, bool, Option<Summary>)> = Vec::new();
    match &state.peer {
        Some(peer) => {
            let view = peer.mesh.view().await;
            let own = Summary::from_key_values(&view.key_values)
                .or_else(|| sample.map(crate::probes::summary::from_sample));
            nodes.push((view.node.clone(), true, own));
            for p in &view.peers {
                let alive = p.liveness.as_str() == "alive";
                nodes.push((
                    p.node.clone(),
                    alive,
                    Summary::from_key_values(&p.key_values),
                ));
            }
            out.gauges_by(
                "peers",
                "Other nodes of the mesh by liveness as this node sees them",
                None,
                "state",
                LIVENESS.map(|l| {
                    let n = view
                        .peers
                        .iter()
                        .filter(|p| p.liveness.as_str() == l)
                        .count();
                    (l.to_owned(), n as f64)
                }),
            );
            let t = &view.transport;
            let dir = |d: &str| label("direction", d);
            out.counters(
                "gossip",
                "Mesh message bytes (gossip and sync payloads) sent and received, since the agent started",
                Some(Unit::Bytes),
                [(dir("sent"), t.bytes_sent), (dir("received"), t.bytes_received)],
            );
            out.counters(
                "gossip_messages",
                "Mesh messages sent and received, since the agent started",
                None,
                [
                    (dir("sent"), t.messages_sent),
                    (dir("received"), t.messages_received),
                ],
            );
            out.counter(
                "gossip_messages_dropped",
                "Mesh messages dropped because a peer's send queue was full or its connection backing off",
                None,
                t.messages_dropped,
            );
            out.counters(
                "transport_udp",
                "Bytes that crossed the mesh's UDP socket (QUIC headers, handshakes and acks included)",
                Some(Unit::Bytes),
                [(dir("sent"), t.udp_bytes_sent), (dir("received"), t.udp_bytes_received)],
            );
            let mut rejections = t.rejections.clone();
            for (k, v) in peer.tls_rejections.snapshot() {
                *rejections.entry(k).or_default() += v;
            }
            out.counters(
                "peer_rejections",
                "Peers and messages refused by the transport and TLS, by reason, since the agent started",
                None,
                rejections.into_iter().map(|(r, v)| (label("reason", r), v)),
            );
            out.gauge(
                "revoked_certificates",
                "Certificates on this node's revocation list",
                None,
                peer.revocations.len() as f64,
            );
        }
        None => nodes.push((
            state.node.clone(),
            true,
            sample.map(crate::probes::summary::from_sample),
        )),
    }
    let fakes = fake_peers();
    if fakes > 0 {
        let template = nodes.first().and_then(|n| n.2.clone());
        for i in 0..fakes {
            nodes.push((format!("bench-{i:03}"), true, template.clone()));
        }
    }
    summaries(out, &nodes);
}

fn summaries(out: &mut Out, nodes: &[(String, bool, Option<Summary>)]) {
    out.gauges_by(
        "mesh_node_up",
        "1 when the node is alive as this node sees it (this node is always 1)",
        None,
        "node",
        nodes
            .iter()
            .map(|(n, alive, _)| (n.clone(), f64::from(u8::from(*alive)))),
    );
    let with: Vec<(&str, &Summary)> = nodes
        .iter()
        .filter_map(|(n, _, s)| s.as_ref().map(|s| (n.as_str(), s)))
        .collect();
    let mut each = |name: &str, help: &str, unit: Option<Unit>, f: fn(&Summary) -> Option<f64>| {
        let values: Vec<(String, f64)> = with
            .iter()
            .filter_map(|(n, s)| f(s).map(|v| ((*n).to_owned(), v)))
            .collect();
        out.gauges_by(name, help, unit, "node", values);
    };
    let bytes = || Some(Unit::Bytes);
    each(
        "mesh_node_cpu",
        "A node's gossiped CPU busy share",
        ratio(),
        |s| s.cpu.map(|v| v / 100.0),
    );
    each(
        "mesh_node_cpu_steal",
        "A node's gossiped CPU steal share",
        ratio(),
        |s| s.steal.map(|v| v / 100.0),
    );
    each(
        "mesh_node_load1",
        "A node's gossiped 1-minute load average",
        None,
        |s| s.load,
    );
    each(
        "mesh_node_memory_available",
        "A node's gossiped available memory",
        bytes(),
        |s| s.mem_avail.map(|v| v as f64),
    );
    each(
        "mesh_node_memory_total",
        "A node's gossiped physical memory",
        bytes(),
        |s| s.mem_total.map(|v| v as f64),
    );
    each(
        "mesh_node_swap_used",
        "A node's gossiped swap in use",
        bytes(),
        |s| s.swap.map(|v| v as f64),
    );
    each(
        "mesh_node_disk_used",
        "A node's gossiped used share of its fullest real filesystem",
        ratio(),
        |s| s.disk.map(|v| v / 100.0),
    );
    each(
        "mesh_node_disk_available",
        "A node's gossiped most space available on any one real filesystem",
        bytes(),
        |s| s.disk_free.map(|v| v as f64),
    );
    each(
        "mesh_node_gpus",
        "A node's gossiped number of NVIDIA GPUs",
        None,
        |s| Some(f64::from(s.gpus)),
    );
    each(
        "mesh_node_gpu_memory_used",
        "A node's gossiped VRAM in use, all GPUs together",
        bytes(),
        |s| s.vram_used.map(|v| v as f64),
    );
    each(
        "mesh_node_gpu_memory_total",
        "A node's gossiped VRAM, all GPUs together",
        bytes(),
        |s| s.vram_total.map(|v| v as f64),
    );
    each(
        "mesh_node_unhealthy_services",
        "A node's gossiped number of unhealthy services",
        None,
        |s| Some(f64::from(s.unhealthy)),
    );
    each(
        "mesh_node_score",
        "A node's gossiped health score (0-100 divided by 100: higher has more room)",
        ratio(),
        |s| Some(f64::from(s.score) / 100.0),
    );
    each(
        "mesh_node_sample_timestamp",
        "When a node took the sample its gossiped summary comes from (Unix time)",
        Some(Unit::Seconds),
        |s| Some(s.t as f64),
    );
}
