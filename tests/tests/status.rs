//! `labmesh status`, the one screen, through the real binary: host figures from the gossiped
//! summary, unhealthy services, open incidents and recent deployments, in text and in JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use labmesh_tests::{Agent, labmesh, run, stderr, stdout, wait_until};
use serde_json::Value;

#[test]
fn status_shows_figures_services_incidents_and_deployments() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("alpha");
    let agent = Agent::start(&data, &["--name", "alpha", "--probe-interval", "1s"]);
    let api = agent.api.to_string();
    for (ty, cid) in [("service_unhealthy", ""), ("deployment_started", "run-7")] {
        let out = run(labmesh(&data).args([
            "--name",
            "alpha",
            "emit",
            "--type",
            ty,
            "--severity",
            "error",
            "--service",
            "jellyfin",
            "--correlation-id",
            cid,
        ]));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let mut doc = Value::Null;
    wait_until(
        "the status document to hold the summary, incident and deployment",
        Duration::from_secs(30),
        || {
            let out = run(labmesh(&data).args(["--api-addr", &api, "status", "--json"]));
            doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            doc["nodes"][0]["summary"]["score"].is_u64()
                && doc["incidents_open"]
                    .as_array()
                    .is_some_and(|a| a.len() == 1)
                && doc["deployments_recent"]
                    .as_array()
                    .is_some_and(|a| a.len() == 1)
        },
    );
    // The fields the older tests and scripts use are still there.
    let me = &doc["nodes"][0];
    assert_eq!(me["node"], "alpha", "{doc}");
    assert_eq!(me["liveness"], "alive", "{doc}");
    assert_eq!(me["alerter"], false, "{doc}");
    assert!(
        me["gossip_addr"].is_string() && me["role"].is_string(),
        "{doc}"
    );
    assert!(doc["rejections"].is_object(), "{doc}");
    assert_eq!(doc["node"], "alpha");
    assert_eq!(doc["services_unhealthy"][0]["service"], "jellyfin", "{doc}");
    assert_eq!(doc["incidents_open"][0]["status"], "open", "{doc}");
    assert_eq!(
        doc["deployments_recent"][0]["correlation_id"], "run-7",
        "{doc}"
    );

    let out = run(labmesh(&data).args(["--api-addr", &api, "status"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains('\x1b'), "colour off a terminal:\n{text}");
    for needle in [
        "HEARTBEAT",
        "SCORE",
        "alive",
        "unhealthy services:",
        "jellyfin",
        "run-7",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    let out = run(labmesh(&data).args(["--api-addr", &api, "status", "--watch", "0"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
