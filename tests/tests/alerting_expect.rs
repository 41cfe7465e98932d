//! `labmesh expect` with the real binary: a declared job that does not report pages a webhook,
//! its report resolves the alert, and the declaration is an event listed by the API;
//! `labmesh expect NAME --remove` resolves its alert and stays removed across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use labmesh_tests::receiver::{alert_bodies, recording_server};
use labmesh_tests::{Agent, http_auth, labmesh, run, stderr, stdout, wait_until};
use serde_json::Value;

#[test]
fn a_declared_job_that_misses_its_window_pages_and_its_report_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (receiver, seen) = recording_server();
    let config = format!(
        "[alerting]\nsettle = \"1s\"\ngroup_wait = \"1s\"\ngroup_interval = \"1s\"\n\
         repeat_interval = \"1h\"\n\n\
         [[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{receiver}/hook\"\n"
    );
    let path = data.with_extension("toml");
    std::fs::write(&path, config).unwrap();
    let agent = Agent::start_with(&data, &[], |cmd| {
        cmd.env("LABMESH_CONFIG", &path);
    });
    let api = agent.api.to_string();

    // Bad declarations are usage errors; without the token the API refuses.
    let out =
        run(labmesh(&data).args(["--api-addr", &api, "expect", "backup.sh", "--every", "soon"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let body = r#"{"name":"backup.sh","every":"2s"}"#;
    let (status, _) = http_auth(agent.api, "POST", "/v1/expectations", None, Some(body)).unwrap();
    assert_eq!(status, 401);

    let out = run(labmesh(&data).args([
        "--api-addr",
        &api,
        "expect",
        "backup.sh",
        "--every",
        "2s",
        "--grace",
        "1s",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("expect:backup.sh"),
        "{}",
        stdout(&out)
    );

    // The declaration is an event (it replicates) and the API lists it.
    let out = run(labmesh(&data).args(["events", "list", "--json", "--type", "expectation_set"]));
    let set: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(set.as_array().unwrap().len(), 1, "{set}");
    assert_eq!(set[0]["payload"]["name"], "backup.sh");
    assert_eq!(set[0]["payload"]["every"], "2s");
    assert_eq!(set[0]["payload"]["grace"], "1s");
    wait_until("the listed expectation", Duration::from_secs(10), || {
        let list = agent.get_json("/v1/expectations");
        list["expectations"][0]["name"] == "backup.sh"
    });
    let out = run(labmesh(&data).args(["--api-addr", &api, "expect"]));
    assert!(
        stdout(&out).contains("backup.sh"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // Nothing reports: the missed window pages.
    let timeout = Duration::from_secs(30);
    wait_until("the firing webhook", timeout, || {
        !alert_bodies(&seen, None, "firing", "expect:backup.sh").is_empty()
    });
    let firing = alert_bodies(&seen, None, "firing", "expect:backup.sh");
    let alert = &firing[0]["alerts"][0];
    assert_eq!(alert["labels"]["source"], "backup.sh", "{alert}");

    // The job reports: the alert resolves.
    let out = run(labmesh(&data).args(["emit", "--type", "backup_done", "--source", "backup.sh"]));
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the resolved webhook", timeout, || {
        !alert_bodies(&seen, None, "resolved", "expect:backup.sh").is_empty()
    });
}

fn webhook_config(data: &std::path::Path, receiver: SocketAddr) -> std::path::PathBuf {
    let config = format!(
        "[alerting]\nsettle = \"1s\"\ngroup_wait = \"1s\"\ngroup_interval = \"1s\"\n\
         repeat_interval = \"1h\"\n\n\
         [[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{receiver}/hook\"\n"
    );
    let path = data.with_extension("toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn open_expect_alerts(agent: &Agent) -> usize {
    agent.get_json("/v1/alerts")["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "expect:backup.sh")
        .count()
}

#[test]
fn a_removed_expectation_resolves_its_alert_and_stays_removed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (receiver, seen) = recording_server();
    let path = webhook_config(&data, receiver);
    let agent = Agent::start_with(&data, &[], |cmd| {
        cmd.env("LABMESH_CONFIG", &path);
    });
    let api = agent.api.to_string();
    let expect = |args: &[&str]| {
        let mut cmd = labmesh(&data);
        cmd.args(["--api-addr", &api, "expect"]).args(args);
        run(&mut cmd)
    };
    let out = expect(&["backup.sh", "--every", "2s", "--grace", "1s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let timeout = Duration::from_secs(30);
    wait_until("the firing webhook", timeout, || {
        !alert_bodies(&seen, None, "firing", "expect:backup.sh").is_empty()
    });

    // Removing needs the token, a known name, and no --every.
    let (status, _) = http_auth(
        agent.api,
        "DELETE",
        "/v1/expectations/backup.sh",
        None,
        None,
    )
    .unwrap();
    assert_eq!(status, 401);
    let out = expect(&["nightly.sh", "--remove"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("nightly.sh"), "{}", stderr(&out));
    let out = expect(&["backup.sh", "--remove", "--every", "2s"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    let out = expect(&["backup.sh", "--remove"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("expect:backup.sh"),
        "{}",
        stdout(&out)
    );
    // An event, so it replicates and survives a restart.
    let out =
        run(labmesh(&data).args(["events", "list", "--json", "--type", "expectation_cleared"]));
    let cleared: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(cleared.as_array().unwrap().len(), 1, "{cleared}");
    assert_eq!(cleared[0]["payload"]["name"], "backup.sh");
    wait_until("the resolved webhook", timeout, || {
        !alert_bodies(&seen, None, "resolved", "expect:backup.sh").is_empty()
    });
    wait_until("no open alert", timeout, || open_expect_alerts(&agent) == 0);
    let list = agent.get_json("/v1/expectations");
    assert_eq!(list["expectations"].as_array().unwrap().len(), 0, "{list}");

    // Restart: the replayed log neither declares it again nor reopens its alert, and windows
    // pass without a page.
    drop(agent);
    let agent = Agent::start_with(&data, &[], |cmd| {
        cmd.env("LABMESH_CONFIG", &path);
    });
    wait_until("the alerter", timeout, || {
        agent.get_json("/v1/alerts")["alerter"].is_string()
    });
    std::thread::sleep(Duration::from_secs(6));
    let list = agent.get_json("/v1/expectations");
    assert_eq!(list["expectations"].as_array().unwrap().len(), 0, "{list}");
    assert_eq!(open_expect_alerts(&agent), 0);
    assert_eq!(
        alert_bodies(&seen, None, "firing", "expect:backup.sh").len(),
        1,
        "paged once, before the removal"
    );
    assert_eq!(
        alert_bodies(&seen, None, "resolved", "expect:backup.sh").len(),
        1
    );
    let out = run(labmesh(&data).args(["events", "list", "--json", "--type", "alert_firing"]));
    let firing: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(firing.as_array().unwrap().len(), 1, "{firing}");
}

/// An agent named `name` in the mesh whose CA node is `ca` (data dir, name, gossip address).
fn mesh_node(
    dir: &std::path::Path,
    name: &str,
    ca: Option<(&std::path::Path, &str, &str)>,
) -> (Agent, std::path::PathBuf, String) {
    let data = dir.join(name);
    let gossip = format!("127.0.0.1:{}", labmesh_tests::free_udp_port());
    let mut args: Vec<String> = [
        "--name",
        name,
        "--gossip-addr",
        &gossip,
        "--gossip-interval",
        "100ms",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some((ca_data, ca_name, seed)) = ca {
        let bundle = dir.join(format!("{name}.bundle.json"));
        labmesh_tests::issue_bundle(ca_data, ca_name, name, &bundle);
        args.extend([
            "--join".to_owned(),
            bundle.display().to_string(),
            "--seed".to_owned(),
            seed.to_owned(),
        ]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    (Agent::start(&data, &refs), data, gossip)
}

fn listed(agent: &Agent) -> Vec<Value> {
    agent.get_json("/v1/expectations")["expectations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_removal_on_one_node_replicates_to_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (alpha, alpha_data, seed) = mesh_node(dir.path(), "alpha", None);
    let ca = Some((alpha_data.as_path(), "alpha", seed.as_str()));
    let (bravo, bravo_data, _) = mesh_node(dir.path(), "bravo", ca);
    let out = run(labmesh(&alpha_data).args([
        "--api-addr",
        &alpha.api.to_string(),
        "expect",
        "backup.sh",
        "--every",
        "1h",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let timeout = Duration::from_secs(60);
    wait_until("bravo knows the declaration", timeout, || {
        listed(&bravo).iter().any(|x| x["name"] == "backup.sh")
    });
    let out = run(labmesh(&bravo_data).args([
        "--api-addr",
        &bravo.api.to_string(),
        "expect",
        "backup.sh",
        "--remove",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("alpha drops it", timeout, || listed(&alpha).is_empty());
    assert!(listed(&bravo).is_empty());
}
