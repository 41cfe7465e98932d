//! Alerting with the real binary: a check goes down, the alerter pages a local HTTP receiver
//! exactly once, the check recovers, exactly one resolved notification follows, and the ledger
//! (`notification_sent`) is in the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use labmesh_tests::receiver::{Seen, alert_bodies, healthy_service, recording_server};
use labmesh_tests::{Agent, events, free_port, labmesh, run, stderr, stdout, wait_until};
use serde_json::Value;

fn ntfy_bodies(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(p, b)| p == "/lab" && b.contains("web"))
        .map(|(_, b)| b.clone())
        .collect()
}

#[test]
fn a_failing_check_pages_once_and_its_recovery_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (receiver, seen) = recording_server();
    let service_port = free_port();
    let config = format!(
        "[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{service_port}/\"\n\
         interval = \"200ms\"\ntimeout = \"1s\"\nfall = 1\nrise = 1\n\n\
         [alerting]\nsettle = \"1s\"\ngroup_wait = \"1s\"\ngroup_interval = \"1s\"\n\
         repeat_interval = \"1h\"\n\n\
         [[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{receiver}/hook\"\n\n\
         [[receiver]]\nname = \"phone\"\nkind = \"ntfy\"\nserver = \"http://{receiver}\"\n\
         topic = \"lab\"\n"
    );
    let path = data.with_extension("toml");
    std::fs::write(&path, config).unwrap();
    let agent = Agent::start_with(&data, &[], |cmd| {
        cmd.env("LABMESH_CONFIG", &path);
    });
    let timeout = Duration::from_secs(30);
    wait_until("the firing webhook", timeout, || {
        !alert_bodies(&seen, Some("/hook"), "firing", "service_unhealthy").is_empty()
    });
    wait_until("the firing ntfy message", timeout, || {
        !ntfy_bodies(&seen).is_empty()
    });
    let alerts = agent.get_json("/v1/alerts");
    assert_eq!(alerts["alerter"], agent_name(&agent), "{alerts}");
    assert!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "service_unhealthy" && a["status"] == "firing"),
        "{alerts}"
    );
    let status = agent.get_json("/v1/status");
    assert_eq!(status["alerter"], status["node"], "{status}");
    assert_eq!(status["nodes"][0]["alerter"], true, "{status}");
    // No repeat while it stays down (repeat_interval is 1h).
    std::thread::sleep(Duration::from_secs(3));
    let firing = alert_bodies(&seen, Some("/hook"), "firing", "service_unhealthy");
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(ntfy_bodies(&seen).len(), 1);
    let a = &firing[0]["alerts"][0];
    assert_eq!(a["labels"]["service"], "web", "{a}");

    healthy_service(service_port);
    wait_until("service_recovered", timeout, || {
        !events(&data, "service_recovered").is_empty()
    });
    wait_until("the resolved webhook", timeout, || {
        !alert_bodies(&seen, Some("/hook"), "resolved", "service_unhealthy").is_empty()
    });
    wait_until("the resolved ntfy message", timeout, || {
        ntfy_bodies(&seen).len() >= 2
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        alert_bodies(&seen, Some("/hook"), "resolved", "service_unhealthy").len(),
        1
    );
    assert_eq!(
        alert_bodies(&seen, Some("/hook"), "firing", "service_unhealthy").len(),
        1
    );
    assert_eq!(ntfy_bodies(&seen).len(), 2);
    let sent = events(&data, "notification_sent");
    assert!(
        sent.len() >= 4,
        "two receivers, firing and resolved: {sent:?}"
    );
    assert_eq!(events(&data, "alert_firing").len(), 1);
    assert_eq!(events(&data, "alert_resolved").len(), 1);
    let alerts = agent.get_json("/v1/alerts");
    assert!(
        !alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "service_unhealthy"),
        "{alerts}"
    );
}

fn agent_name(agent: &Agent) -> Value {
    agent.get_json("/v1/status")["node"].clone()
}

#[test]
fn silences_are_added_listed_and_cleared_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let agent = Agent::start(&data, &[]);
    let mut add = labmesh(&data);
    add.args([
        "--api-addr",
        &agent.api.to_string(),
        "silence",
        "add",
        "--match",
        "node=nas1",
        "--match",
        "rule=disk_*",
        "--for",
        "2h",
        "--comment",
        "disk swap",
        "--json",
    ]);
    let out = run(&mut add);
    assert!(out.status.success(), "{}", stderr(&out));
    let added: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let id = added["silence"]["id"].as_str().unwrap().to_owned();
    assert_eq!(added["silence"]["matchers"]["rule"], "disk_*");
    let set = events(&data, "silence_set");
    assert_eq!(set.len(), 1, "{set:?}");
    assert_eq!(set[0]["payload"]["comment"], "disk swap");
    let api = agent.api.to_string();
    let list = || {
        let out = run(labmesh(&data).args(["--api-addr", &api, "silence", "list", "--json"]));
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str::<Value>(&stdout(&out)).unwrap()["silences"]
            .as_array()
            .unwrap()
            .clone()
    };
    wait_until("the silence in force", Duration::from_secs(10), || {
        list().iter().any(|s| s["id"] == id.as_str())
    });
    let out = run(labmesh(&data).args(["--api-addr", &api, "silence", "clear", &id]));
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the silence gone", Duration::from_secs(10), || {
        list().is_empty()
    });
    let bad = run(labmesh(&data).args([
        "--api-addr",
        &api,
        "silence",
        "add",
        "--match",
        "nokey",
        "--for",
        "1h",
    ]));
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let out = run(labmesh(&data).args(["--api-addr", &api, "alerts", "--json"]));
    assert!(out.status.code().is_some(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(doc["alerts"].is_array(), "{doc}");
}

/// Starts `name` with the alerting config in `config`; joins `seed` (the CA node) when given.
fn mesh_node(
    dir: &Path,
    name: &str,
    priority: &str,
    config: &str,
    ca: Option<(&Path, &str, &str)>,
) -> (Agent, PathBuf, String) {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    labmesh_tests::mesh_node(dir, name, priority, &path, ca)
}

#[test]
fn a_killed_alerter_is_replaced_and_the_pending_alert_is_sent_once() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, seen) = recording_server();
    let config = format!(
        "[alerting]\nsettle = \"1s\"\ngroup_wait = \"6s\"\ngroup_interval = \"1s\"\n\
         repeat_interval = \"1h\"\n\n\
         [[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{receiver}/hook\"\n"
    );
    let (mut alpha, alpha_data, seed) = mesh_node(dir.path(), "alpha", "10", &config, None);
    let ca = Some((alpha_data.as_path(), "alpha", seed.as_str()));
    let (bravo, _bravo_data, _) = mesh_node(dir.path(), "bravo", "5", &config, ca);
    let (_charlie, charlie_data, _) = mesh_node(dir.path(), "charlie", "0", &config, ca);
    let timeout = Duration::from_secs(60);
    for agent in [&alpha, &bravo] {
        wait_until("alpha elected everywhere", timeout, || {
            let s = agent.get_json("/v1/status");
            s["alerter"] == "alpha" && s["nodes"].as_array().is_some_and(|n| n.len() == 3)
        });
    }
    let out = run(labmesh(&charlie_data).args([
        "--name",
        "charlie",
        "emit",
        "--type",
        "build_failed",
        "--source",
        "build.sh",
        "--severity",
        "error",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    // alpha records the alert, then dies inside group_wait, before it can send.
    wait_until("alpha records the alert", timeout, || {
        !events(&alpha_data, "alert_firing").is_empty()
    });
    alpha.stop_with(rustix::process::Signal::KILL);
    assert!(
        webhook_rule(&seen, "build_failed").is_empty(),
        "alpha sent before it was killed; the test needs a longer group_wait"
    );
    wait_until("bravo takes over", timeout, || {
        bravo.get_json("/v1/status")["alerter"] == "bravo"
    });
    wait_until("bravo sends the build alert", timeout, || {
        !webhook_rule(&seen, "build_failed").is_empty()
    });
    std::thread::sleep(Duration::from_secs(4));
    let sent = webhook_rule(&seen, "build_failed");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["sender"], "bravo", "{}", sent[0]);
}

#[test]
fn an_alerter_killed_after_it_sent_is_replaced_and_nothing_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, seen) = recording_server();
    let config = format!(
        "[alerting]\nsettle = \"1s\"\ngroup_wait = \"1s\"\ngroup_interval = \"2s\"\n\
         repeat_interval = \"1h\"\n\n\
         [[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{receiver}/hook\"\n"
    );
    let (mut alpha, alpha_data, seed) = mesh_node(dir.path(), "alpha", "10", &config, None);
    let ca = Some((alpha_data.as_path(), "alpha", seed.as_str()));
    let (bravo, bravo_data, _) = mesh_node(dir.path(), "bravo", "5", &config, ca);
    let (_charlie, charlie_data, _) = mesh_node(dir.path(), "charlie", "0", &config, ca);
    let timeout = Duration::from_secs(60);
    for agent in [&alpha, &bravo] {
        wait_until("alpha elected everywhere", timeout, || {
            let s = agent.get_json("/v1/status");
            s["alerter"] == "alpha" && s["nodes"].as_array().is_some_and(|n| n.len() == 3)
        });
    }
    let emit = |event_type: &str| {
        let out = run(labmesh(&charlie_data).args([
            "--name", "charlie", "emit", "--type", event_type, "--source", "build.sh",
        ]));
        assert!(out.status.success(), "{}", stderr(&out));
    };
    emit("build_failed");
    wait_until("alpha sends the build alert", timeout, || {
        !webhook_status(&seen, "build_failed", "firing").is_empty()
    });
    // alpha dies as soon as its ledger entry has reached bravo: the send is over and recorded.
    wait_until("alpha's notification_sent at bravo", timeout, || {
        events(&bravo_data, "notification_sent")
            .iter()
            .any(|e| e["node"] == "alpha")
    });
    alpha.stop_with(rustix::process::Signal::KILL);
    wait_until("bravo takes over", timeout, || {
        bravo.get_json("/v1/status")["alerter"] == "bravo"
    });
    // Well past bravo's group_wait and group_interval: a resend would have happened by now.
    std::thread::sleep(Duration::from_secs(8));
    let firing = webhook_status(&seen, "build_failed", "firing");
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0]["sender"], "alpha", "{}", firing[0]);

    emit("build_completed");
    wait_until("the resolved notification", timeout, || {
        !webhook_status(&seen, "build_failed", "resolved").is_empty()
    });
    std::thread::sleep(Duration::from_secs(5));
    let resolved = webhook_status(&seen, "build_failed", "resolved");
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0]["sender"], "bravo", "{}", resolved[0]);
    assert_eq!(webhook_status(&seen, "build_failed", "firing").len(), 1);
}

/// Webhook bodies with this `status` carrying an alert of `rule`.
fn webhook_status(seen: &Seen, rule: &str, status: &str) -> Vec<Value> {
    webhook_rule(seen, rule)
        .into_iter()
        .filter(|b| b["status"] == status)
        .collect()
}

/// Webhook bodies carrying an alert of `rule`.
fn webhook_rule(seen: &Seen, rule: &str) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|(_, b)| serde_json::from_str::<Value>(b).ok())
        .filter(|b| {
            b["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["rule"] == rule))
        })
        .collect()
}

#[test]
fn a_restarted_alerter_replays_the_ledger_and_does_not_page_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (receiver, seen) = recording_server();
    let service_port = free_port();
    let config = format!(
        "[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{service_port}/\"\n\
         interval = \"200ms\"\ntimeout = \"1s\"\nfall = 1\n\n\
         [alerting]\nsettle = \"1s\"\ngroup_wait = \"1s\"\ngroup_interval = \"1s\"\n\
         repeat_interval = \"1h\"\n\n\
         [[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{receiver}/hook\"\n"
    );
    let path = data.with_extension("toml");
    std::fs::write(&path, config).unwrap();
    let start = || {
        Agent::start_with(&data, &[], |cmd| {
            cmd.env("LABMESH_CONFIG", &path);
        })
    };
    let mut agent = start();
    wait_until("the firing webhook", Duration::from_secs(30), || {
        !alert_bodies(&seen, Some("/hook"), "firing", "service_unhealthy").is_empty()
    });
    agent.stop_with(rustix::process::Signal::TERM);
    drop(agent);
    let agent = start();
    wait_until(
        "the alert open again after replay",
        Duration::from_secs(10),
        || {
            agent.get_json("/v1/alerts")["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["rule"] == "service_unhealthy"))
        },
    );
    // Past settle and group_wait: a resend would have happened by now.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        alert_bodies(&seen, Some("/hook"), "firing", "service_unhealthy").len(),
        1
    );
    assert_eq!(events(&data, "alert_firing").len(), 1);
}

#[test]
fn a_member_claiming_the_top_priority_does_not_become_alerter_where_alerters_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let listed = "[alerting]\nsettle = \"1s\"\nalerters = [\"alpha\", \"bravo\"]\n";
    let (alpha, alpha_data, seed) = mesh_node(dir.path(), "alpha", "0", listed, None);
    let ca = Some((alpha_data.as_path(), "alpha", seed.as_str()));
    let (bravo, _, _) = mesh_node(dir.path(), "bravo", "0", listed, ca);
    // mallory runs with a config of its own and claims i64::MAX.
    let (mallory, _, _) = mesh_node(
        dir.path(),
        "mallory",
        &i64::MAX.to_string(),
        "[alerting]\nsettle = \"1s\"\n",
        ca,
    );
    let timeout = Duration::from_secs(60);
    for agent in [&alpha, &bravo] {
        wait_until("all three seen, alpha the alerter", timeout, || {
            let s = agent.get_json("/v1/status");
            s["alerter"] == "alpha" && s["nodes"].as_array().is_some_and(|n| n.len() == 3)
        });
    }
    // mallory believes its own claim; the honest nodes do not.
    wait_until("mallory sees itself as alerter", timeout, || {
        mallory.get_json("/v1/status")["alerter"] == "mallory"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(alpha.get_json("/v1/status")["alerter"], "alpha");
    assert_eq!(bravo.get_json("/v1/status")["alerter"], "alpha");
}
