//! Three hosts with their own addresses: network namespaces joined by veth pairs and a bridge,
//! one `labmesh agent` in each. A link is cut with `ip link set down`; the others see the cut
//! host dead; the link comes back and so does the host.
//!
//! Needs root (CI runs as root); skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use labmesh_tests::netns::{Hosts, emit_lines, liveness, start_mesh};
use labmesh_tests::{issue_bundle, wait_until, world_file};
use serde_json::Value;

#[test]
fn a_cut_host_is_seen_dead_then_back_after_the_link_heals() {
    if !labmesh_tests::netns::can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = Hosts::create(3);
    let names = ["alpha", "bravo", "charlie"];
    let data: Vec<PathBuf> = names.iter().map(|n| dir.path().join(n)).collect();
    let mut agents = vec![hosts.agent(0, &data[0], "alpha", &[])];
    let seed = format!("{}:7370", hosts.ip(0));
    for i in 1..3 {
        let bundle = dir.path().join(format!("{}.json", names[i]));
        issue_bundle(&data[0], "alpha", names[i], &bundle);
        let extra = vec![
            "--join".to_owned(),
            bundle.display().to_string(),
            "--seed".to_owned(),
            seed.clone(),
        ];
        agents.push(hosts.agent(i, &data[i], names[i], &extra));
    }
    for (i, a) in agents.iter().enumerate() {
        for other in names.iter().filter(|n| **n != names[i]) {
            wait_until(
                &format!("{} sees {other}", names[i]),
                Duration::from_secs(20),
                || liveness(a, other).as_deref() == Some("alive"),
            );
        }
    }
    // The gossip really crosses the hosts' own addresses.
    let status = agents[0].get_json("/v1/status");
    let charlie = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "charlie")
        .unwrap()
        .clone();
    assert_eq!(charlie["gossip_addr"], format!("{}:7370", hosts.ip(2)));

    hosts.cut(2);
    for a in &agents[..2] {
        wait_until("charlie dead", Duration::from_secs(20), || {
            matches!(liveness(a, "charlie").as_deref(), Some("dead" | "offline"))
        });
    }
    assert_eq!(liveness(&agents[0], "bravo").as_deref(), Some("alive"));
    hosts.heal(2);
    for a in &agents[..2] {
        wait_until("charlie back", Duration::from_secs(30), || {
            liveness(a, "charlie").as_deref() == Some("alive")
        });
    }
    drop(agents);
}

#[test]
fn both_sides_of_a_partition_write_and_agree_after_it_heals() {
    if !labmesh_tests::netns::can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = Hosts::create(4);
    let names = ["alpha", "bravo", "charlie", "delta"];
    let (data, agents) = start_mesh(&hosts, dir.path(), &names);

    // {alpha, bravo} | {charlie, delta}: each side sees the other dead, and keeps itself.
    hosts.partition(&[0, 1], &[2, 3], true);
    for (i, other) in [(0, "charlie"), (1, "delta"), (2, "alpha"), (3, "bravo")] {
        wait_until(
            &format!("{} loses {other}", names[i]),
            Duration::from_secs(30),
            || {
                matches!(
                    liveness(&agents[i], other).as_deref(),
                    Some("dead" | "offline")
                )
            },
        );
    }
    assert_eq!(liveness(&agents[0], "bravo").as_deref(), Some("alive"));
    assert_eq!(liveness(&agents[2], "delta").as_deref(), Some("alive"));

    // Both sides write. A: an incident on alpha (unhealthy x3), a deployment started on bravo,
    // 300 ordinary events. B: an incident that opens and resolves on charlie, the same
    // deployment completed by delta (a CI runner on the other side), 300 ordinary events.
    let ev = |ty: &str, sev: &str, service: &str, cid: &str| {
        serde_json::json!({"type": ty, "severity": sev, "service": service, "correlation_id": cid,
            "source": "partition-test", "payload": {}})
    };
    let bulk = |side: &str| -> Vec<Value> {
        (0..300)
            .map(|n| ev("backup_completed", "info", &format!("{side}-{n}"), ""))
            .collect()
    };
    emit_lines(&data[0], "alpha", &bulk("a"));
    emit_lines(&data[2], "charlie", &bulk("c"));
    for _ in 0..3 {
        emit_lines(
            &data[0],
            "alpha",
            &[ev("service_unhealthy", "error", "nas", "hc-a")],
        );
    }
    emit_lines(
        &data[1],
        "bravo",
        &[ev("deployment_started", "info", "web", "deploy-part")],
    );
    emit_lines(
        &data[2],
        "charlie",
        &[ev("service_unhealthy", "error", "db", "hc-c")],
    );
    emit_lines(
        &data[2],
        "charlie",
        &[ev("service_recovered", "info", "db", "hc-c")],
    );
    std::thread::sleep(Duration::from_millis(50));
    emit_lines(
        &data[3],
        "delta",
        &[ev("deployment_completed", "info", "web", "deploy-part")],
    );

    // Each side converges within itself while the other stays apart.
    wait_until("side A agrees", Duration::from_secs(30), || {
        agents[0].fingerprint() == agents[1].fingerprint()
    });
    wait_until("side B agrees", Duration::from_secs(30), || {
        agents[2].fingerprint() == agents[3].fingerprint()
    });
    assert_ne!(agents[0].fingerprint(), agents[2].fingerprint());

    hosts.partition(&[0, 1], &[2, 3], false);
    wait_until(
        "one event set after the heal",
        Duration::from_secs(60),
        || {
            let f = agents[0].fingerprint();
            agents.iter().all(|a| a.fingerprint() == f)
        },
    );
    for file in ["incidents.json", "services.json", "deployments.json"] {
        wait_until(
            &format!("identical {file}"),
            Duration::from_secs(30),
            || {
                let first = world_file(&data[0], file);
                !first.is_empty() && data.iter().all(|d| world_file(d, file) == first)
            },
        );
    }
    let deployments: Value =
        serde_json::from_str(&world_file(&data[3], "deployments.json")).unwrap();
    assert_eq!(
        deployments["deploy-part"]["status"], "completed",
        "{deployments}"
    );
    let incidents: Value = serde_json::from_str(&world_file(&data[1], "incidents.json")).unwrap();
    let of = |node: &str, service: &str| {
        incidents
            .as_object()
            .unwrap()
            .values()
            .find(|i| i["node"] == node && i["service"] == service)
            .cloned()
            .unwrap_or_else(|| panic!("no incident for {node}/{service}: {incidents}"))
    };
    assert_eq!(of("alpha", "nas")["status"], "open");
    assert_eq!(of("alpha", "nas")["occurrence_count"], 3);
    assert_eq!(of("charlie", "db")["status"], "resolved");
    drop(agents);
}
