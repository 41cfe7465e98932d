//! `labmesh prometheus-sd` turns the live membership into Prometheus file_sd targets, and a
//! real Prometheus (Debian's `prometheus`) that reads the file scrapes every peer of a real
//! two-node mesh, each under its node's name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use labmesh_tests::prometheus::Prometheus;
use labmesh_tests::{Peer, labmesh, run, stderr, stdout, wait_until};
use serde_json::Value;

fn nodes_alive(peer: &Peer, n: usize) -> bool {
    let nodes = peer.agent().get_json("/v1/nodes");
    nodes
        .as_array()
        .is_some_and(|a| a.iter().filter(|n| n["liveness"] == "alive").count() == n)
}

#[test]
fn prometheus_discovers_every_peer_from_labmesh_prometheus_sd() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = Peer::start(dir.path(), "alpha", &["--role", "nas"]);
    let bravo = Peer::join(dir.path(), &alpha, "bravo", &["--role", "workstation"]);
    wait_until("both see both alive", Duration::from_secs(30), || {
        nodes_alive(&alpha, 2) && nodes_alive(&bravo, 2)
    });
    // Both API addresses are gossiped: asking either agent gives the same two targets.
    let targets = dir.path().join("prom").join("labmesh-targets.json");
    std::fs::create_dir_all(targets.parent().unwrap()).unwrap();
    wait_until(
        "bravo's API address is gossiped",
        Duration::from_secs(30),
        || {
            let out = run(labmesh(&alpha.data)
                .args(["prometheus-sd", "--out"])
                .arg(&targets)
                .arg("--api-addr")
                .arg(alpha.agent().api.to_string()));
            assert!(out.status.success(), "{}", stderr(&out));
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(&targets).unwrap()).unwrap();
            v.as_array().is_some_and(|a| a.len() == 2)
        },
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&targets).unwrap()).unwrap();
    let by_node = |name: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|g| g["labels"]["node"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no target for {name}: {v}"))
    };
    assert_eq!(
        by_node("alpha")["targets"][0],
        alpha.agent().api.to_string()
    );
    assert_eq!(by_node("alpha")["labels"]["role"], "nas");
    assert_eq!(
        by_node("bravo")["targets"][0],
        bravo.agent().api.to_string()
    );
    assert_eq!(by_node("bravo")["labels"]["role"], "workstation");
    assert!(by_node("bravo")["labels"]["backend"].is_string());
    // Prometheus reads it (0644: it runs as its own user).
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&targets).unwrap().permissions().mode() & 0o777,
        0o644
    );

    // stdout gives the same list.
    let out = run(labmesh(&bravo.data)
        .arg("prometheus-sd")
        .arg("--api-addr")
        .arg(bravo.agent().api.to_string()));
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(printed.as_array().unwrap().len(), 2, "{printed}");

    let prom = Prometheus::start_scraping(
        dir.path(),
        &format!(
            "    file_sd_configs:\n      - files: [\"{}\"]\n        refresh_interval: 1s\n",
            targets.display()
        ),
    );
    wait_until(
        "Prometheus scrapes both nodes by name",
        Duration::from_secs(60),
        || {
            ["alpha", "bravo"]
                .iter()
                .all(|n| prom.value(&format!("up{{job=\"labmesh\",node=\"{n}\"}}")) == Some(1.0))
        },
    );
    // Bravo stops: it leaves the list at the next refresh (nodes that left are never listed).
    drop(bravo);
    wait_until("bravo drops out", Duration::from_secs(60), || {
        let out = run(labmesh(&alpha.data)
            .args(["prometheus-sd", "--api-addr"])
            .arg(alpha.agent().api.to_string()));
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null);
        v.as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["labels"]["node"] == "alpha")
    });
}

#[test]
fn prometheus_sd_without_an_agent_fails_with_exit_3_and_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.json");
    std::fs::write(&targets, "[]\n").unwrap();
    let out = run(labmesh(dir.path())
        .args(["prometheus-sd", "--out"])
        .arg(&targets)
        .args([
            "--api-addr",
            &format!("127.0.0.1:{}", labmesh_tests::free_port()),
        ]));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&targets).unwrap(), "[]\n");
}
