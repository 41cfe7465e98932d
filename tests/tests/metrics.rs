//! `GET /metrics` through the real binary: the body passes the real `promtool check metrics`
//! without a single remark, key series have plausible values, and a joined node's gossiped
//! summary shows up under its `node` label.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::Duration;

use labmesh_tests::{
    Agent, free_udp_port, http_auth, issue_bundle, labmesh, metric_value as value, promtool_check,
    run, stderr, wait_until,
};

fn must(body: &str, series: &str) -> f64 {
    value(body, series).unwrap_or_else(|| panic!("no {series} in\n{body}"))
}

fn scrape(agent: &Agent) -> String {
    let (status, body) = agent.get("/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn metrics_pass_promtool_and_show_host_checks_and_workers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("alpha");
    let config = dir.path().join("alpha.toml");
    std::fs::write(
        &config,
        "[[check]]\nname = \"backup\"\nkind = \"ttl\"\nttl = \"1h\"\nfall = 1\nrise = 1\n",
    )
    .unwrap();
    let agent = Agent::start_with(
        &data,
        &[
            "--name",
            "alpha",
            "--probe-interval",
            "1s",
            "--rescan-interval",
            "1s",
        ],
        |cmd| {
            cmd.env("LABMESH_CONFIG", &config);
        },
    );
    let mut body = String::new();
    wait_until("a first host sample", Duration::from_secs(15), || {
        body = scrape(&agent);
        value(&body, "labmesh_probes_sampled") == Some(1.0)
    });
    promtool_check(&body);

    let total = must(&body, "labmesh_node_memory_total_bytes");
    let available = must(&body, "labmesh_node_memory_available_bytes");
    assert!(
        total > 0.0 && available > 0.0 && available <= total,
        "{body}"
    );
    let cpu = must(&body, "labmesh_node_cpu_ratio");
    assert!((0.0..=1.0).contains(&cpu), "{body}");
    assert!(must(&body, "labmesh_node_uptime_seconds") > 0.0);
    must(&body, "labmesh_node_load1");
    must(&body, "labmesh_node_swap_used_bytes");
    if cfg!(target_os = "linux") {
        let steal = must(&body, "labmesh_node_cpu_steal_ratio");
        assert!((0.0..=1.0).contains(&steal), "{body}");
        must(&body, "labmesh_node_swap_cached_bytes");
    }
    assert!(
        body.lines()
            .any(|l| l.starts_with("labmesh_node_disk_available_bytes{mount=\"")),
        "{body}"
    );
    for probe in ["cpu", "memory", "disks", "network", "load", "uptime"] {
        assert_eq!(
            value(&body, &format!("labmesh_probe_up{{probe=\"{probe}\"}}")),
            Some(1.0),
            "{probe}: {body}"
        );
    }
    // GPU and Docker answer one way or the other, never missing.
    for probe in ["gpu", "docker"] {
        let up = must(&body, &format!("labmesh_probe_up{{probe=\"{probe}\"}}"));
        let absent = must(&body, &format!("labmesh_probe_absent{{probe=\"{probe}\"}}"));
        assert!(up + absent <= 1.0, "{probe}: {body}");
    }
    assert_eq!(
        value(&body, "labmesh_mesh_node_up{node=\"alpha\"}"),
        Some(1.0)
    );
    let score = must(&body, "labmesh_mesh_node_score_ratio{node=\"alpha\"}");
    assert!((0.0..=1.0).contains(&score), "{body}");
    assert_eq!(
        value(&body, "labmesh_check_up{check=\"backup\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&body, "labmesh_check_failures_total{check=\"backup\"}"),
        Some(0.0)
    );
    assert_eq!(value(&body, "labmesh_workers{state=\"fresh\"}"), Some(0.0));
    assert_eq!(value(&body, "labmesh_workers_stale_total"), Some(0.0));
    assert!(body.contains("# TYPE labmesh_sync_events_total counter"));
    for reason in ["queue_full", "too_large", "failed"] {
        let series = format!("labmesh_sync_messages_unsent_total{{reason=\"{reason}\"}}");
        assert_eq!(value(&body, &series), Some(0.0), "{series}: {body}");
    }
    must(&body, "labmesh_events");
    assert_eq!(value(&body, "labmesh_events_quarantined_total"), Some(0.0));

    // A failing ttl report and a worker heartbeat move the series.
    let token = std::fs::read_to_string(data.join("api-token")).unwrap();
    let token = Some(token.trim());
    let (status, text) =
        http_auth(agent.api, "POST", "/v1/checks/backup/fail", token, None).expect("report");
    assert_eq!(status, 200, "{text}");
    let hb = r#"{"worker_id":"w1","health_status":"healthy"}"#;
    let (status, text) =
        http_auth(agent.api, "POST", "/v1/heartbeat", token, Some(hb)).expect("heartbeat");
    assert_eq!(status, 200, "{text}");
    let body = scrape(&agent);
    promtool_check(&body);
    assert_eq!(
        value(&body, "labmesh_check_up{check=\"backup\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&body, "labmesh_check_failures_total{check=\"backup\"}"),
        Some(1.0)
    );
    assert_eq!(value(&body, "labmesh_workers{state=\"fresh\"}"), Some(1.0));

    // A garbage file dropped among the events is quarantined and counted.
    let out =
        run(labmesh(&data).args(["emit", "--type", "backup_completed", "--source", "restic"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let path = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    std::fs::write(path.parent().unwrap().join("garbage.json"), [0u8, 159, 146]).unwrap();
    let mut body = String::new();
    wait_until("the quarantine counted", Duration::from_secs(20), || {
        body = scrape(&agent);
        value(&body, "labmesh_events_quarantined_total") == Some(1.0)
    });
    assert!(must(&body, "labmesh_events") >= 1.0, "{body}");

    // OpenMetrics when asked for it.
    let (status, open) = http_accept(&agent, "application/openmetrics-text;version=1.0.0");
    assert_eq!(status, 200);
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert_eq!(open.matches("# EOF").count(), 1, "one exposition: {open}");
    assert!(
        open.contains("# TYPE labmesh_gossip_bytes counter"),
        "{open}"
    );
}

fn http_accept(agent: &Agent, accept: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(agent.api).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n",
        agent.api
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    (status, body.to_owned())
}

#[test]
fn a_joined_node_summary_shows_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let fast = ["--gossip-interval", "100ms", "--probe-interval", "1s"];
    let alpha_data = dir.path().join("alpha");
    let alpha_gossip = format!("127.0.0.1:{}", free_udp_port());
    let mut args = vec!["--name", "alpha", "--gossip-addr", &alpha_gossip];
    args.extend_from_slice(&fast);
    let alpha = Agent::start(&alpha_data, &args);
    let bundle = dir.path().join("bravo.bundle.json");
    issue_bundle(&alpha_data, "alpha", "bravo", &bundle);
    let bundle = bundle.display().to_string();
    let bravo_gossip = format!("127.0.0.1:{}", free_udp_port());
    let mut args = vec![
        "--name",
        "bravo",
        "--join",
        &bundle,
        "--seed",
        &alpha_gossip,
        "--gossip-addr",
        &bravo_gossip,
    ];
    args.extend_from_slice(&fast);
    let _bravo = Agent::start(&dir.path().join("bravo"), &args);
    let mut body = String::new();
    wait_until(
        "alpha to export bravo's summary",
        Duration::from_secs(30),
        || {
            body = scrape(&alpha);
            // bravo's summary can arrive a round before chitchat counts it live (two
            // heartbeats from bravo itself): wait for both.
            value(&body, "labmesh_mesh_node_score_ratio{node=\"bravo\"}").is_some()
                && value(&body, "labmesh_mesh_node_score_ratio{node=\"alpha\"}").is_some()
                && value(&body, "labmesh_mesh_node_up{node=\"bravo\"}") == Some(1.0)
        },
    );
    promtool_check(&body);
    assert_eq!(
        value(&body, "labmesh_mesh_node_up{node=\"bravo\"}"),
        Some(1.0)
    );
    assert_eq!(value(&body, "labmesh_peers{state=\"alive\"}"), Some(1.0));
    let mem = must(
        &body,
        "labmesh_mesh_node_memory_available_bytes{node=\"bravo\"}",
    );
    assert!(mem > 0.0, "{body}");
    let cpu = must(&body, "labmesh_mesh_node_cpu_ratio{node=\"bravo\"}");
    assert!((0.0..=1.0).contains(&cpu), "{body}");
    assert!(must(&body, "labmesh_gossip_bytes_total{direction=\"sent\"}") > 0.0);
    assert!(must(&body, "labmesh_gossip_bytes_total{direction=\"received\"}") > 0.0);
}
