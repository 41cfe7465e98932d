//! The score card with the real binary: `labmesh status --node X --score` in text and JSON, the
//! services and maintenance dimensions from events, and `labmesh_node_score_ratio` in /metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use labmesh_tests::{Agent, labmesh, run, stderr, stdout, wait_until};
use serde_json::Value;

#[test]
fn status_score_explains_each_dimension_and_metrics_export_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("alpha");
    let agent = Agent::start(&data, &["--name", "alpha", "--probe-interval", "1s"]);
    let api = agent.api.to_string();
    let emit = |args: &[&str]| {
        let out = run(labmesh(&data).args(["--name", "alpha", "emit"]).args(args));
        assert!(out.status.success(), "{}", stderr(&out));
    };
    emit(&[
        "--type",
        "service_unhealthy",
        "--severity",
        "error",
        "--service",
        "jellyfin",
    ]);
    emit(&[
        "--type",
        "cleanup_done",
        "--payload",
        r#"{"freed_bytes": 1073741824}"#,
    ]);

    let score = |extra: &[&str]| {
        let out = run(labmesh(&data)
            .args(["--api-addr", &api, "status", "--node", "alpha", "--score"])
            .args(extra));
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let mut card = Value::Null;
    wait_until(
        "a card with the unhealthy service and memory known",
        Duration::from_secs(30),
        || {
            card = serde_json::from_str(&score(&["--json"])).unwrap_or(Value::Null);
            let dims = card["dimensions"].as_array().cloned().unwrap_or_default();
            let known = |n: &str| dims.iter().any(|d| d["name"] == n && d["known"] == true);
            known("memory")
                && known("services")
                && known("maintenance")
                && dims
                    .iter()
                    .any(|d| d["name"] == "services" && d["points"] == 15)
        },
    );
    assert_eq!(card["node"], "alpha", "{card}");
    let total = card["score"].as_u64().unwrap();
    assert!(total <= 100, "{card}");
    let dims = card["dimensions"].as_array().unwrap();
    let names: Vec<&str> = dims.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "cpu_steal",
            "memory",
            "disk",
            "services",
            "maintenance",
            "llm_headroom"
        ]
    );
    let services = dims.iter().find(|d| d["name"] == "services").unwrap();
    assert_eq!(services["points"], 15, "{card}");
    let maintenance = dims.iter().find(|d| d["name"] == "maintenance").unwrap();
    assert_eq!(maintenance["points"], 15, "{card}");
    assert!(
        maintenance["explanation"]
            .as_str()
            .unwrap()
            .contains("freed"),
        "{card}"
    );

    let text = score(&[]);
    assert!(text.contains("alpha  score "), "{text}");
    for name in [
        "cpu_steal",
        "memory",
        "disk",
        "services",
        "maintenance",
        "llm_headroom",
    ] {
        assert!(text.contains(name), "{text}");
    }
    assert!(text.contains("next: "), "{text}");

    // An unknown node name is a usage error.
    let out =
        run(labmesh(&data).args(["--api-addr", &api, "status", "--node", "nobody", "--score"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    let (status, metrics) = agent.get("/metrics");
    assert_eq!(status, 200);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("labmesh_node_score_ratio{node=\"alpha\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((0.0..=1.0).contains(&v), "{line}");
}
