//! A hostile member's gossip, over the real QUIC transport between real agents: it holds a
//! genuine certificate of the mesh and sends chitchat messages that speak for other nodes. It
//! tries to keep a dead node alive (ever-higher heartbeats for it), to mark a live node `left`,
//! to invent a node, and to announce a live node's newer generation at its own address. Every
//! one must fail, be counted (`speaks_for_another_node`), and leave the honest nodes' view true.
//! And a revoked member with an old connection beside its newest: both are closed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chitchat::ChitchatId;
use labmesh_tests::{Agent, Peer, free_udp_addr, member_identity, member_transport, wait_until};
use mesh::QuicTransport;
use mesh::gossip_trust::{DigestEntry, GossipMessage, KeyValue, NodeDelta};
use rustix::process::Signal;
use serde_json::Value;

const FAST: [&str; 4] = ["--gossip-interval", "100ms", "--offline-after", "3s"];

fn node<'a>(nodes: &'a Value, name: &str) -> Option<&'a Value> {
    nodes.as_array()?.iter().find(|n| n["node"] == name)
}

fn liveness(agent: &Agent, name: &str) -> Option<String> {
    node(&agent.get_json("/v1/nodes"), name).and_then(|n| n["liveness"].as_str().map(str::to_owned))
}

/// A node's chitchat id as an observer reports it.
fn chitchat_id(agent: &Agent, name: &str) -> ChitchatId {
    let nodes = agent.get_json("/v1/nodes");
    let n = node(&nodes, name).unwrap();
    ChitchatId::new(
        name,
        n["generation"].as_u64().unwrap(),
        n["gossip_addr"].as_str().unwrap().parse().unwrap(),
    )
}

fn entry(id: &ChitchatId, heartbeat: u64) -> DigestEntry {
    DigestEntry {
        id: id.clone(),
        heartbeat,
        last_gc_version: 0,
        max_version: 1_000_000 + heartbeat,
    }
}

fn state(id: &ChitchatId, round: u64, kvs: &[(&str, &str)]) -> NodeDelta {
    NodeDelta {
        id: id.clone(),
        last_gc_version: 0,
        from_version_excluded: 0,
        key_values: kvs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| KeyValue {
                key: (*k).into(),
                value: (*v).into(),
                version: 1_000_000 + round * 10 + i as u64,
                status: 0,
            })
            .collect(),
        set_max_version: None,
    }
}

fn mallory_transport(dir: &std::path::Path, ca: &Peer) -> (QuicTransport, SocketAddr) {
    let identity = member_identity(dir, &ca.data, &ca.name, "mallory");
    let bind = free_udp_addr();
    (member_transport(&identity, bind, bind), bind)
}

#[test]
fn a_member_cannot_keep_a_dead_node_alive_mark_one_left_invent_one_or_take_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = Peer::start(dir.path(), "alpha", &FAST);
    let bravo = Peer::join(dir.path(), &alpha, "bravo", &FAST);
    let mut charlie = Peer::join(dir.path(), &alpha, "charlie", &FAST);
    for (observer, subject) in [(&alpha, "bravo"), (&alpha, "charlie"), (&bravo, "charlie")] {
        wait_until(
            &format!("{} to see {subject} alive", observer.name),
            Duration::from_secs(20),
            || liveness(observer.agent(), subject).as_deref() == Some("alive"),
        );
    }
    let bravo_id = chitchat_id(alpha.agent(), "bravo");
    let charlie_id = chitchat_id(alpha.agent(), "charlie");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mallory, mallory_addr) = rt.block_on(async { mallory_transport(dir.path(), &alpha) });
    let mallory_id = ChitchatId::new("mallory", 1, mallory_addr);
    let ghost_id = ChitchatId::new("ghost", 1, "127.0.0.1:9".parse().unwrap());
    // bravo "restarted" at mallory's address: the takeover.
    let stolen_id = ChitchatId::new("bravo", bravo_id.generation_id + 1, mallory_addr);
    let victims: Vec<SocketAddr> = [&alpha, &bravo]
        .iter()
        .map(|p| p.gossip.parse().unwrap())
        .collect();

    charlie.agent.as_mut().unwrap().stop_with(Signal::KILL);
    charlie.agent = None;

    // Ten seconds of lies, ten times a second, to both honest nodes: more than enough for
    // charlie to go offline (3 s) if nothing kept it alive.
    let attack = |round: u64| {
        GossipMessage::SynAck {
            digest: vec![
                entry(&mallory_id, round),
                entry(&charlie_id, 1_000 + round),
                entry(&ghost_id, round),
                entry(&bravo_id, 1_000 + round),
                entry(&stolen_id, round),
            ],
            delta: vec![
                // It also claims, in its own name (which it may), to hear charlie and ghost: one
                // witness of the two others alpha and bravo hear, not a majority.
                state(
                    &mallory_id,
                    round,
                    &[("reach", "alpha,bravo,charlie,ghost"), ("status", "up")],
                ),
                state(&charlie_id, round, &[("status", "up")]),
                state(&bravo_id, round, &[("status", "left")]),
                state(&ghost_id, round, &[("status", "up")]),
                state(&stolen_id, round, &[("status", "up")]),
            ],
        }
        .encode()
    };
    rt.block_on(async {
        let start = Instant::now();
        let mut round = 0;
        while start.elapsed() < Duration::from_secs(10) {
            round += 1;
            for to in &victims {
                mallory.send_gossip_bytes(*to, &attack(round));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    for observer in [&alpha, &bravo] {
        let a = observer.agent();
        assert_eq!(
            liveness(a, "charlie").as_deref(),
            Some("offline"),
            "{}: a dead node kept alive by another's heartbeats",
            observer.name
        );
        let nodes = a.get_json("/v1/nodes");
        assert!(
            node(&nodes, "ghost").is_none(),
            "{}: an invented node was believed: {nodes:#}",
            observer.name
        );
        let m = node(&nodes, "mallory").expect("mallory itself is a member");
        assert_eq!(m["liveness"], "alive", "{m:#}");
    }
    let nodes = alpha.agent().get_json("/v1/nodes");
    let b = node(&nodes, "bravo").unwrap();
    assert_eq!(
        b["liveness"], "alive",
        "bravo marked left by mallory: {b:#}"
    );
    assert_eq!(
        b["gossip_addr"], bravo.gossip,
        "bravo's address taken: {b:#}"
    );
    assert_eq!(b["generation"], bravo_id.generation_id, "{b:#}");
    assert_ne!(b["key_values"]["status"], "left", "{b:#}");

    // Refused and counted on both, in /v1/status and in /metrics.
    for observer in [&alpha, &bravo] {
        let a = observer.agent();
        let status = a.get_json("/v1/status");
        let refused = status["rejections"]["speaks_for_another_node"]
            .as_u64()
            .unwrap_or(0);
        assert!(refused >= 10, "{}: {status:#}", observer.name);
        let (code, metrics) = a.get("/metrics");
        assert_eq!(code, 200);
        assert!(
            metrics
                .lines()
                .any(|l| l.contains("reason=\"speaks_for_another_node\"")),
            "{metrics}"
        );
    }
    // The honest record: charlie's death is written once, by alpha (the smallest observer).
    wait_until("node_offline for charlie", Duration::from_secs(10), || {
        labmesh_tests::events(&alpha.data, "node_offline")
            .iter()
            .any(|e| e["payload"]["peer"] == "charlie")
    });
    rt.block_on(mallory.close());
}

#[test]
fn a_revocation_closes_a_connection_that_a_newer_one_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = Peer::start(dir.path(), "alpha", &FAST);
    let alpha_addr: SocketAddr = alpha.gossip.parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let identity = member_identity(dir.path(), &alpha.data, "alpha", "mallory");
    let hello = GossipMessage::BadCluster.encode();
    let (first, second) = rt.block_on(async {
        let first_addr = free_udp_addr();
        let first = member_transport(&identity, first_addr, first_addr);
        first.send_gossip_bytes(alpha_addr, &hello);
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A second endpoint of the same certificate, claiming the first one's address: alpha
        // takes it as a restart and sends on it, the first connection stays open beside it.
        let second = member_transport(&identity, free_udp_addr(), first_addr);
        second.send_gossip_bytes(alpha_addr, &hello);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            first.connected_peers().len(),
            1,
            "the first connection is open"
        );
        assert_eq!(second.connected_peers().len(), 1);
        (first, second)
    });
    let res = labmesh_tests::run(
        labmesh_tests::labmesh(&alpha.data).args(["--name", "alpha", "certs", "revoke", "mallory"]),
    );
    assert!(res.status.success(), "{}", labmesh_tests::stderr(&res));
    // Neither endpoint sends anything more: only alpha closing them can end them (keep-alives
    // would hold them open for ever).
    rt.block_on(async {
        let start = Instant::now();
        while !(first.connected_peers().is_empty() && second.connected_peers().is_empty()) {
            assert!(
                start.elapsed() < Duration::from_secs(8),
                "still open after the revocation: first {:?}, second {:?}",
                first.connected_peers(),
                second.connected_peers()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        first.close().await;
        second.close().await;
    });
}

#[test]
fn a_member_cannot_make_itself_the_alerter_by_claiming_a_priority() {
    // No `[alerting] alerters` list: the default election, where each node's priority ranks.
    let dir = tempfile::tempdir().unwrap();
    let alpha = Peer::start(dir.path(), "alpha", &FAST);
    let bravo = Peer::join(dir.path(), &alpha, "bravo", &FAST);
    wait_until("alpha to see bravo alive", Duration::from_secs(20), || {
        liveness(alpha.agent(), "bravo").as_deref() == Some("alive")
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    // mallory's certificate grants nothing (a plain `certs issue`), yet it claims the most.
    let (mallory, mallory_addr) = rt.block_on(async { mallory_transport(dir.path(), &alpha) });
    let mallory_id = ChitchatId::new("mallory", 1, mallory_addr);
    let claim = i64::MAX.to_string();
    let hello = |round: u64| {
        GossipMessage::SynAck {
            digest: vec![entry(&mallory_id, round)],
            delta: vec![state(
                &mallory_id,
                0,
                &[
                    ("status", "up"),
                    ("transient", "false"),
                    ("alerter_priority", &claim),
                ],
            )],
        }
        .encode()
    };
    let victims: Vec<SocketAddr> = [&alpha, &bravo]
        .iter()
        .map(|p| p.gossip.parse().unwrap())
        .collect();
    let alerters = |a: &Agent| {
        let status = a.get_json("/v1/status");
        (status["alerter"].clone(), status)
    };
    rt.block_on(async {
        let start = Instant::now();
        let mut round = 0;
        // Long enough for both to hear mallory and for the election to settle on the result.
        while start.elapsed() < Duration::from_secs(14) {
            round += 1;
            for to in &victims {
                mallory.send_gossip_bytes(*to, &hello(round));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    for observer in [&alpha, &bravo] {
        let a = observer.agent();
        let nodes = a.get_json("/v1/nodes");
        let m = node(&nodes, "mallory").expect("mallory is a member");
        assert_eq!(m["liveness"], "alive", "{m:#}");
        assert_eq!(
            m["alerter_priority"], 0,
            "{}: mallory's claim was not held to its grant: {m:#}",
            observer.name
        );
        let (alerter, status) = alerters(a);
        assert_eq!(
            alerter, "alpha",
            "{}: the alerter is not the honest choice: {status:#}",
            observer.name
        );
        assert!(
            status["rejections"]["claims_alerter_priority"]
                .as_u64()
                .unwrap_or(0)
                >= 1,
            "{}: the claim was not counted: {status:#}",
            observer.name
        );
    }
    rt.block_on(mallory.close());
}
