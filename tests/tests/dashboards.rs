//! The Grafana dashboards in `deploy/grafana/dashboards/` query series that really exist: every
//! PromQL expression of every panel runs through a real Prometheus (Debian's `prometheus`, which
//! scripts/test installs) scraping a real agent that has recorded `labmesh run` builds and tests,
//! and must succeed with a non-empty result. Also: the example scripts of
//! `deploy/examples/homelab/` parse (`bash -n`) and wrap their work with `labmesh run`.
//!
//! Grafana's variables are replaced before querying (see [`substitute`]): `$__rate_interval` by
//! `1m`, `$__interval` by `15s`, `$__range` by `1h`, and the dashboards' own multi-value
//! variables (`$host`, `$backend`, `$node`) by `.*`, their "All" value.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labmesh_tests::prometheus::Prometheus;
use labmesh_tests::{Agent, labmesh, repo_path, stderr, wait_until};
use serde_json::Value;

const DASHBOARDS: [&str; 2] = ["labmesh-builds.json", "labmesh-mesh.json"];
const SCRIPTS: [&str; 4] = [
    "workstation-build.sh",
    "workstation-test.sh",
    "mac-build.sh",
    "mac-test.sh",
];

/// One panel target: where it is, and its expression as written in the dashboard.
struct Query {
    place: String,
    expr: String,
}

/// Every panel (rows' nested panels included) of a dashboard.
fn panels(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in v["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(panels(p));
    }
    out
}

/// Parses each dashboard, checks the parts Grafana needs, and returns every target's `expr`.
fn dashboard_queries() -> Vec<Query> {
    let mut queries = Vec::new();
    for name in DASHBOARDS {
        let path = repo_path("deploy/grafana/dashboards").join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let dash: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            dash["schemaVersion"].as_u64().is_some_and(|v| v >= 39),
            "{name}"
        );
        assert!(
            dash["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{name}"
        );
        let vars = dash["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
            "{name}: the datasource variable"
        );
        let mut ids = std::collections::HashSet::new();
        for panel in panels(&dash) {
            let title = panel["title"].as_str().unwrap_or("");
            assert!(
                ids.insert(panel["id"].as_u64().unwrap()),
                "{name}: panel ids"
            );
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{name}: {title}"
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {title} has no target");
            for t in targets {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: {title}"));
                queries.push(Query {
                    place: format!("{name}: {title} ({})", t["refId"].as_str().unwrap_or("?")),
                    expr: expr.to_owned(),
                });
            }
        }
    }
    queries
}

/// The expression with Grafana's variables replaced by concrete values (the module doc lists
/// them); panics on a variable it does not know.
fn substitute(expr: &str) -> String {
    let mut out = expr.to_owned();
    // Longest names first: `$__rate_interval` before `$__interval`.
    for (var, value) in [
        ("$__rate_interval", "1m"),
        ("$__interval", "15s"),
        ("$__range", "1h"),
        ("$backend", ".*"),
        ("$host", ".*"),
        ("$node", ".*"),
    ] {
        out = out.replace(var, value);
    }
    assert!(
        !out.contains('$'),
        "a variable the test does not know: {expr}"
    );
    out
}

/// `labmesh run` on node `ws` for the agent at `api` (none yet when `None`).
fn run(data: &Path, api: Option<SocketAddr>, kind: &str, artifact: Option<&Path>, ok: bool) {
    let mut cmd = labmesh(data);
    cmd.args([
        "--name",
        "ws",
        "run",
        "--kind",
        kind,
        "--service",
        "llm-worker",
    ])
    .args(["--backend", "cuda"]);
    if let Some(api) = api {
        cmd.arg("--api-addr").arg(api.to_string());
    }
    if let Some(a) = artifact {
        cmd.arg("--artifact").arg(a);
    }
    let out = cmd
        .args(["--", "sh", "-c", if ok { "true" } else { "exit 1" }])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.success(), ok, "{}", stderr(&out));
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus_scraping_a_real_agent() {
    let started = Instant::now();
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{} queries", queries.len());
    let exprs: Vec<String> = queries.iter().map(|q| substitute(&q.expr)).collect();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let artifact = dir.path().join("llm-worker");
    std::fs::write(&artifact, vec![0u8; 4096]).unwrap();
    // Before the agent: the homelab_* series exist from its first scrape on.
    run(&data, None, "build", Some(&artifact), true);
    run(&data, None, "build", Some(&artifact), false);
    run(&data, None, "test", None, true);

    let agent = Agent::start(&data, &["--name", "ws"]);
    wait_until("the run metrics", Duration::from_secs(20), || {
        agent
            .get("/metrics")
            .1
            .contains("homelab_test_success_total")
    });
    let prom = Prometheus::start(dir.path(), agent.api);
    let deadline = Instant::now() + Duration::from_secs(20);
    // The target is up and has a few samples.
    while prom
        .value("count_over_time(up{job=\"labmesh\"}[1m])")
        .unwrap_or(0.0)
        < 3.0
        || prom.value("up{job=\"labmesh\"}") != Some(1.0)
    {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the agent in 20 s; log:\n{}",
            prom.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // After a few scrapes, more runs, so that the counters grow inside the windows and the
    // rates are real numbers (increase() of an unchanged counter is 0, and 0 / 0 is NaN).
    run(&data, Some(agent.api), "build", Some(&artifact), true);
    run(&data, Some(agent.api), "build", Some(&artifact), false);
    run(&data, Some(agent.api), "test", None, true);
    run(&data, Some(agent.api), "test", None, false);
    wait_until(
        "Prometheus to see the later runs",
        Duration::from_secs(20),
        || {
            prom.value("sum(homelab_build_success_total)") == Some(2.0)
                && prom.value("sum(homelab_test_failure_total)") == Some(1.0)
        },
    );
    // A host without an NVIDIA GPU has no VRAM series: those queries must still succeed.
    let gpus = prom.value("max(labmesh_mesh_node_gpus)").unwrap_or(0.0) > 0.0;

    let mut failures = Vec::new();
    for (q, expr) in queries.iter().zip(&exprs) {
        let result = prom.query(expr);
        if result.is_empty() {
            if !gpus && expr.contains("gpu_memory") {
                continue;
            }
            failures.push(format!("{}: empty result for {expr}", q.place));
            continue;
        }
        for r in &result {
            let value = r["value"][1].as_str().and_then(|s| s.parse::<f64>().ok());
            if !value.is_some_and(f64::is_finite) {
                failures.push(format!("{}: {r} for {expr}", q.place));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The 7-day build success rate: 1 of the 2 later builds passed.
    let rate = prom.value(&exprs[0]).unwrap();
    assert!((rate - 0.5).abs() < 1e-9, "build success rate {rate}");
    drop(prom);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_example_homelab_scripts_parse_and_wrap_their_work_with_labmesh_run() {
    use std::os::unix::fs::PermissionsExt;
    for name in SCRIPTS {
        let path = repo_path("deploy/examples/homelab").join(name);
        let out = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(out.status.success(), "bash -n {name}: {}", stderr(&out));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{name} is not executable");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("labmesh run \\\n  --kind"), "{name}");
        assert!(text.contains("labmesh run phase "), "{name}");
        let backend = if name.starts_with("mac") {
            "metal"
        } else {
            "cuda"
        };
        assert!(text.contains(&format!("BACKEND=\"{backend}\"")), "{name}");
    }
}
