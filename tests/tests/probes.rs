//! Host probes and admission through the real binary: `labmesh probe`, the agent's `/v1/host`
//! and `/v1/admit`, `labmesh admit` here and mesh-wide.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use labmesh_tests::{Agent, free_udp_port, issue_bundle, labmesh, run, stderr, stdout, wait_until};
use serde_json::Value;

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {:?} stderr {:?}",
            stdout(out),
            stderr(out)
        )
    })
}

/// On a machine without the NVIDIA driver (CI) the GPU is absent with a reason; with one, its
/// devices have VRAM figures.
fn check_gpu(gpu: &Value) {
    if Path::new("/dev/nvidiactl").exists() {
        assert!(
            gpu["status"] == "ok" || gpu["status"] == "absent",
            "gpu: {gpu}"
        );
        return;
    }
    assert_eq!(gpu["status"], "absent", "gpu: {gpu}");
    let reason = gpu["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("no NVIDIA GPU") && reason.contains("libnvidia-ml"),
        "gpu: {gpu}"
    );
}

/// Real, plausible figures from one `labmesh probe --json`.
fn check_sample(s: &Value, node: &str) {
    assert_eq!(s["node"], node, "{s}");
    let mem = &s["memory"];
    assert_eq!(mem["status"], "ok", "{mem}");
    let total = mem["total_bytes"].as_u64().unwrap();
    let available = mem["available_bytes"].as_u64().unwrap();
    assert!(total > 0 && available > 0 && available <= total, "{mem}");
    assert!(mem["swap_used_bytes"].as_u64().unwrap() <= mem["swap_total_bytes"].as_u64().unwrap());
    let cpu = &s["cpu"];
    assert_eq!(cpu["status"], "ok", "{cpu}");
    let usage = cpu["usage_pct"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&usage), "{cpu}");
    assert!(cpu["cores"].as_u64().unwrap() >= 1, "{cpu}");
    assert!(cpu["interval_ms"].as_u64().unwrap() >= 150, "{cpu}");
    let steal = &s["steal"];
    if cfg!(target_os = "linux") {
        assert_eq!(steal["status"], "ok", "{steal}");
        assert!((0.0..=100.0).contains(&steal["pct"].as_f64().unwrap()));
        assert!(mem["swap_cached_bytes"].is_u64(), "{mem}");
    } else {
        assert_eq!(steal["status"], "absent", "{steal}");
    }
    assert_eq!(s["load"]["status"], "ok");
    assert!(s["uptime"]["seconds"].as_u64().unwrap() > 0);
    let disks = &s["disks"];
    assert_eq!(disks["status"], "ok", "{disks}");
    let mounts = disks["mounts"].as_array().unwrap();
    assert!(!mounts.is_empty(), "{disks}");
    for d in mounts {
        assert!(d["total_bytes"].as_u64().unwrap() > 0, "{d}");
        assert!(
            (0.0..=100.0).contains(&d["used_pct"].as_f64().unwrap()),
            "{d}"
        );
        assert!(!["proc", "tmpfs", "sysfs", "cgroup2"].contains(&d["fs"].as_str().unwrap()));
    }
    assert_eq!(s["network"]["status"], "ok");
    check_gpu(&s["gpu"]);
    // Docker: whatever this machine has, the probe answers with a status, never a crash.
    assert!(
        ["ok", "absent", "error"].contains(&s["docker"]["status"].as_str().unwrap_or("")),
        "docker: {}",
        s["docker"]
    );
}

#[test]
fn probe_json_reports_real_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(labmesh(dir.path()).args(["probe", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    check_sample(&json_of(&out), "testnode");

    let out = run(labmesh(dir.path()).arg("probe"));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for label in [
        "cpu", "steal", "memory", "swap", "disks", "gpu", "docker", "score",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(label)),
            "no {label} line in:\n{text}"
        );
    }
    assert!(!dir.path().join("events").exists(), "probe writes nothing");
}

fn admit(agent_api: &str, data: &Path, args: &[&str]) -> Output {
    run(labmesh(data)
        .args(["--api-addr", agent_api, "admit", "--json"])
        .args(args))
}

#[test]
fn agent_serves_host_and_admits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let agent = Agent::start(&data, &["--probe-interval", "1s"]);
    let api = agent.api.to_string();
    let mut host = Value::Null;
    wait_until("a first host sample", Duration::from_secs(10), || {
        let (status, body) = agent.get("/v1/host");
        if status == 200 {
            host = serde_json::from_str(&body).unwrap();
        }
        status == 200
    });
    check_sample(&host, "testnode");

    // Yes, from the agent (no "source": it was not measured by the client).
    let out = admit(&api, &data, &["--mem", "1K"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let yes = json_of(&out);
    assert_eq!(yes["admit"], true, "{yes}");
    assert_eq!(yes["node"], "testnode");
    assert!(yes.get("source").is_none(), "{yes}");
    let check = &yes["checks"][0];
    assert_eq!(check["resource"], "memory");
    assert_eq!(check["needed_bytes"], 1024);
    assert!(check["remaining_bytes"].as_i64().unwrap() > 0);

    // No, with a reason naming the numbers.
    let out = admit(&api, &data, &["--mem", "100T"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let no = json_of(&out);
    assert_eq!(no["admit"], false, "{no}");
    let reason = no["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("memory: needs 100 TiB but only ") && reason.contains(" is available"),
        "{reason}"
    );
    assert!(reason.contains("GiB") || reason.contains("MiB"), "{reason}");

    // Readable output, a floor from the command line, a path that does not exist yet.
    let out = run(labmesh(&data)
        .args([
            "--api-addr",
            &api,
            "admit",
            "--disk",
            "1M",
            "--min-free-disk",
            "100T",
            "--path",
        ])
        .arg(dir.path().join("models/not/yet")));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("testnode: no"), "{text}");
    assert!(text.contains("under the 100 TiB floor"), "{text}");
    assert!(text.contains("nearest existing folder"), "{text}");

    // Bad input is a usage error; the API says 400 with the same precision.
    let out = admit(&api, &data, &["--mem", "8X"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown unit \"X\""),
        "{}",
        stderr(&out)
    );
    let (status, body) = agent.get("/v1/admit?mem=lots");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("is not a size"), "{body}");
    let (status, body) = agent.get("/v1/admit");
    assert_eq!(status, 400, "{body}");

    // Mesh-wide: this lone node, ranked from its own gossiped summary.
    let out = admit(&api, &data, &["--mem", "1K", "--anywhere"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ranked = json_of(&out);
    assert_eq!(ranked["best"], "testnode", "{ranked}");
    assert_eq!(ranked["nodes"][0]["self"], true);
    assert!(ranked["nodes"][0]["score"].as_u64().unwrap() <= 100);

    // Without an agent: this host is measured directly; --anywhere cannot be answered.
    drop(agent);
    let out = admit(&api, &data, &["--mem", "1K"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        json_of(&out)["source"]
            .as_str()
            .unwrap()
            .contains("no agent")
    );
    let out = admit(&api, &data, &["--mem", "1K", "--anywhere"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn anywhere_ranks_every_live_node() {
    let dir = tempfile::tempdir().unwrap();
    let fast = ["--gossip-interval", "100ms", "--probe-interval", "1s"];
    let alpha_data = dir.path().join("alpha");
    let alpha_gossip = format!("127.0.0.1:{}", free_udp_port());
    let mut args = vec!["--name", "alpha", "--gossip-addr", &alpha_gossip];
    args.extend_from_slice(&fast);
    let alpha = Agent::start(&alpha_data, &args);
    let bundle = dir.path().join("beta.bundle.json");
    issue_bundle(&alpha_data, "alpha", "beta", &bundle);
    let bundle = bundle.display().to_string();
    let beta_gossip = format!("127.0.0.1:{}", free_udp_port());
    let mut args = vec![
        "--name",
        "beta",
        "--join",
        &bundle,
        "--seed",
        &alpha_gossip,
        "--gossip-addr",
        &beta_gossip,
    ];
    args.extend_from_slice(&fast);
    let _beta = Agent::start(&dir.path().join("beta"), &args);
    let api = alpha.api.to_string();
    let mut ranked = Value::Null;
    wait_until(
        "alpha to rank both nodes from their summaries",
        Duration::from_secs(30),
        || {
            let out = admit(&api, &alpha_data, &["--mem", "1K", "--anywhere"]);
            ranked = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            ranked["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["admit"] == true))
        },
    );
    let names: Vec<&str> = ranked["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"alpha") && names.contains(&"beta"),
        "{ranked}"
    );
    assert!(ranked["nodes"][1]["summary_age_s"].as_i64().unwrap() < 30);

    // Nobody here has a GPU: a VRAM request is a no everywhere, each with its reason.
    if !Path::new("/dev/nvidiactl").exists() {
        let out = admit(&api, &alpha_data, &["--vram", "1G", "--anywhere"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let none = json_of(&out);
        assert_eq!(none["best"], Value::Null);
        for n in none["nodes"].as_array().unwrap() {
            assert!(
                n["reason"].as_str().unwrap().contains("no NVIDIA GPU"),
                "{n}"
            );
        }
    }
}
