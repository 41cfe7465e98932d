//! `labmesh digest --now` with the real binary: the week's builds, tests and incidents of an
//! agent become the digest, with a section per node and the top action, printed or sent
//! through a webhook receiver.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use labmesh_tests::{Agent, labmesh, run, stderr, stdout, wait_until};
use serde_json::Value;

#[test]
fn digest_now_prints_the_node_section_and_the_top_action() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("alpha");
    // A webhook receiver that keeps every request as raw text.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let keep = seen.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 65536];
            let mut raw = Vec::new();
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
            }
            keep.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&raw));
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    let config = data.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "[[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{hook}/hook\"\n"
        ),
    )
    .unwrap();
    let agent = Agent::start_with(
        &data,
        &["--name", "alpha", "--probe-interval", "1s"],
        |cmd| {
            cmd.env("LABMESH_CONFIG", &config);
        },
    );
    let api = agent.api.to_string();
    let emit = |args: &[&str]| {
        let out = run(labmesh(&data).args(["--name", "alpha", "emit"]).args(args));
        assert!(out.status.success(), "{}", stderr(&out));
    };
    let slow = r#"{"duration_seconds": 125}"#;
    emit(&[
        "--type",
        "build_completed",
        "--source",
        "build.sh",
        "--payload",
        slow,
    ]);
    emit(&[
        "--type",
        "build_failed",
        "--source",
        "build.sh",
        "--severity",
        "error",
    ]);
    emit(&[
        "--type",
        "build_failed",
        "--source",
        "build.sh",
        "--severity",
        "error",
    ]);
    emit(&["--type", "test_completed", "--source", "pytest"]);
    emit(&[
        "--type",
        "service_unhealthy",
        "--severity",
        "error",
        "--service",
        "jellyfin",
    ]);

    let digest = |extra: &[&str]| {
        let out = run(labmesh(&data)
            .args(["--api-addr", &api, "digest", "--now"])
            .args(extra));
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let mut doc = Value::Null;
    wait_until(
        "a digest with the node's figures",
        Duration::from_secs(30),
        || {
            doc = serde_json::from_str(&digest(&["--json"])).unwrap_or(Value::Null);
            let text = doc["text"].as_str().unwrap_or_default();
            text.contains("RAM:") && text.contains("1 opened")
        },
    );
    let text = digest(&[]);
    assert!(text.contains("Weekly mesh digest"), "{text}");
    assert!(text.contains("alpha — score "), "{text}");
    assert!(text.contains("Containers: 1 unhealthy"), "{text}");
    assert!(text.contains("jellyfin"), "{text}");
    assert!(text.contains("3 (33% ok)"), "{text}");
    assert!(text.contains("slowest 2m build.sh on alpha"), "{text}");
    assert!(text.contains("1 (100% ok)"), "{text}");
    assert!(text.contains("1 opened, 0 resolved"), "{text}");
    assert!(text.contains("Top action: "), "{text}");
    assert_eq!(doc["cards"][0]["node"], "alpha", "{doc}");
    assert!(!doc["top_action"].as_str().unwrap().is_empty(), "{doc}");

    // Sent through a receiver (token-protected POST /v1/digest); an unknown one is refused.
    let text = digest(&["--receiver", "hook"]);
    assert!(text.contains("digest sent through hook"), "{text}");
    assert!(
        seen.lock().unwrap().contains("Weekly mesh digest"),
        "{}",
        seen.lock().unwrap()
    );
    let out =
        run(labmesh(&data).args(["--api-addr", &api, "digest", "--now", "--receiver", "nope"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Without --now it is a usage error (the agent sends it on its schedule).
    let out = run(labmesh(&data).args(["--api-addr", &api, "digest"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn the_alerter_sends_the_scheduled_digest_once() {
    use chrono::{Datelike, Local};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("alpha");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let keep = seen.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 65536];
            let mut raw = Vec::new();
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
            }
            keep.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&raw).into_owned());
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    // Today's slot at 00:00 local time has passed (and by less than a day): it is due now.
    let day = Local::now().weekday();
    let config = data.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "[alerting]\nsettle = \"1s\"\ndigest = \"{day} 00:00\"\n\n\
             [[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{hook}/hook\"\n"
        ),
    )
    .unwrap();
    let _agent = Agent::start_with(&data, &["--name", "alpha"], |cmd| {
        cmd.env("LABMESH_CONFIG", &config);
    });
    let digests = || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains("Weekly mesh digest"))
            .count()
    };
    wait_until("the scheduled digest", Duration::from_secs(40), || {
        digests() == 1
    });
    let out = run(labmesh(&data).args(["events", "list", "--json", "--type", "digest_sent"]));
    let sent: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(sent.as_array().unwrap().len(), 1, "{sent}");
    assert_eq!(sent[0]["payload"]["receivers"][0], "hook", "{sent}");
    // The next check (10 s later) does not send the same week again.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(digests(), 1);

    // A bad schedule keeps the agent from starting.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[alerting]\ndigest = \"Someday 8\"\n").unwrap();
    let out = run(labmesh(&dir.path().join("beta"))
        .env("LABMESH_CONFIG", &bad)
        .args(["--name", "beta", "agent"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("[alerting] digest"),
        "{}",
        stderr(&out)
    );
}

fn host_samples(data: &std::path::Path) -> Vec<Value> {
    let out = run(labmesh(data).args(["events", "list", "--json", "--type", "host_sample"]));
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn the_agent_records_its_host_figures_every_history_interval() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("alpha");
    let _agent = Agent::start(
        &data,
        &[
            "--name",
            "alpha",
            "--probe-interval",
            "1s",
            "--history-interval",
            "1s",
        ],
    );
    wait_until("three host samples", Duration::from_secs(60), || {
        host_samples(&data).len() >= 3
    });
    let samples = host_samples(&data);
    let p = &samples[0]["payload"];
    assert_eq!(samples[0]["node"], "alpha");
    assert!(p["mem_available_bytes"].as_u64().is_some(), "{p}");
    assert!(p["swap_used_bytes"].as_u64().is_some(), "{p}");
    let disks = p["disks"].as_array().unwrap();
    assert!(
        disks
            .iter()
            .all(|d| d["mount"].is_string() && d["used_percent"].is_number()),
        "{p}"
    );
}

#[test]
fn the_digest_reports_the_week_of_host_samples() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("alpha");
    // The agent records its own samples hourly, the first an hour after it starts: these are
    // the week.
    let agent = Agent::start(&data, &["--name", "alpha", "--probe-interval", "1s"]);
    let gib = 1u64 << 30;
    for (steal, swap, used) in [(30.0, gib, 50), (50.0, 300 * gib, 70), (40.0, 2 * gib, 60)] {
        let payload = serde_json::json!({
            "steal_percent": steal,
            "mem_available_bytes": 4 * gib,
            "swap_used_bytes": swap,
            "disks": [{"mount": "/tank", "used_percent": used as f64, "used_bytes": used * gib}],
        });
        let out = run(labmesh(&data).args([
            "--name",
            "alpha",
            "emit",
            "--type",
            "host_sample",
            "--source",
            "labmesh-probe",
            "--payload",
            &payload.to_string(),
        ]));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let samples = host_samples(&data);
    assert_eq!(samples.len(), 3, "{samples:?}");
    let mean = |key: &str| {
        let v: Vec<f64> = samples
            .iter()
            .filter_map(|s| s["payload"][key].as_f64())
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let api = agent.api.to_string();
    let out = run(labmesh(&data).args(["--api-addr", &api, "digest", "--now", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let node = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["score"]["node"] == "alpha")
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(node["samples"], 3, "{node}");
    let steal = node["steal_avg_percent"].as_f64().unwrap();
    assert!((steal - mean("steal_percent")).abs() < 0.01, "{node}");
    assert!(steal > 25.0, "the week, not the current figure: {node}");
    assert_eq!(node["swap_peak_bytes"], 300 * gib, "the peak: {node}");
    let ram = node["mem_available_avg_bytes"].as_f64().unwrap();
    assert!((ram - mean("mem_available_bytes")).abs() < 2.0, "{node}");
    assert_eq!(
        node["disks"],
        serde_json::json!([["/tank", 60.0]]),
        "{node}"
    );
    assert_eq!(node["freed_bytes"], 10 * gib, "70 → 60 GiB: {node}");
    let text = doc["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("CPU steal:  {steal:.1}% avg")),
        "{text}"
    );
    assert!(text.contains("Swap peak:  300 GiB"), "{text}");
    assert!(
        text.contains("/tank 60% ✓ (freed 10.0 GiB this week"),
        "{text}"
    );
}
