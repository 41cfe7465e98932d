//! Real containers on the machine's Docker engine: an image built FROM scratch around a tiny
//! static program whose HEALTHCHECK we can turn unhealthy. The host probe must list the
//! container with its health, and a `kind = "docker"` check must open `service_unhealthy`
//! when the engine says unhealthy.
//!
//! Needs a Docker engine and gcc with a static libc (CI has both); skipped with a message
//! otherwise, except under CI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use labmesh_tests::{Agent, labmesh, run, wait_until};
use serde_json::Value;

const PROGRAM: &str = r#"
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--check") == 0) return access("/sick", F_OK) == 0 ? 1 : 0;
    if (argc > 1 && strcmp(argv[1], "--sick") == 0) return open("/sick", O_CREAT | O_WRONLY, 0644) < 0;
    for (;;) pause();
}
"#;

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the container and image even when the test fails.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.container])
            .output();
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

fn docker_usable() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn build_image(dir: &Path, image: &str) {
    std::fs::write(dir.join("sleeper.c"), PROGRAM).unwrap();
    sh(Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("sleeper"))
        .arg(dir.join("sleeper.c")));
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY sleeper /sleeper\n\
         HEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD [\"/sleeper\", \"--check\"]\n\
         ENTRYPOINT [\"/sleeper\"]\n",
    )
    .unwrap();
    sh(Command::new("docker")
        .args(["build", "-q", "-t", image])
        .arg(dir));
}

/// The latest host sample, or null before the first one.
fn host(agent: &Agent) -> Value {
    match agent.get("/v1/host") {
        (200, body) => serde_json::from_str(&body).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn container<'a>(host: &'a Value, name: &str) -> Option<&'a Value> {
    host["docker"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

#[test]
fn docker_probe_and_check_follow_a_real_container_health() {
    if !docker_usable() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI has a Docker engine: this test must run there"
        );
        eprintln!("skipped: no usable Docker engine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("lm{}", std::process::id());
    let cleanup = Cleanup {
        container: format!("{tag}-sleeper"),
        image: format!("labmesh-test-sleeper:{tag}"),
    };
    build_image(dir.path(), &cleanup.image);
    sh(Command::new("docker").args(["run", "-d", "--name", &cleanup.container, &cleanup.image]));

    let data = dir.path().join("data");
    let config = dir.path().join("labmesh.toml");
    std::fs::write(
        &config,
        format!(
            "[probes]\ninterval = \"1s\"\n\n[[check]]\nname = \"sleeper\"\nkind = \"docker\"\n\
             container = \"{}\"\ninterval = \"300ms\"\nfall = 1\nrise = 1\n",
            cleanup.container
        ),
    )
    .unwrap();
    let agent = Agent::start_with(&data, &[], |cmd| {
        cmd.env("LABMESH_CONFIG", &config);
    });

    // The probe sees the container running and, after its first health check, healthy.
    wait_until("the probe sees it healthy", Duration::from_secs(30), || {
        container(&host(&agent), &cleanup.container)
            .is_some_and(|c| c["state"] == "running" && c["health"] == "healthy")
    });

    // Make it sick: the engine marks it unhealthy, the probe and the check follow.
    sh(Command::new("docker").args(["exec", &cleanup.container, "/sleeper", "--sick"]));
    wait_until(
        "the probe sees it unhealthy",
        Duration::from_secs(30),
        || {
            container(&host(&agent), &cleanup.container).is_some_and(|c| {
                c["health"] == "unhealthy" && c["failing_streak"].as_i64().unwrap_or(0) >= 1
            })
        },
    );
    wait_until(
        "service_unhealthy from the docker check",
        Duration::from_secs(30),
        || {
            let out = run(labmesh(&data).args([
                "events",
                "list",
                "--json",
                "--type",
                "service_unhealthy",
            ]));
            serde_json::from_slice::<Vec<Value>>(&out.stdout)
                .is_ok_and(|v| v.iter().any(|e| e["service"] == "sleeper"))
        },
    );
    let unhealthy = agent.get_json("/v1/host")["docker"]["unhealthy"]
        .as_u64()
        .unwrap_or(0);
    assert!(unhealthy >= 1);
    drop(cleanup);
}

fn inspect(container: &str, format: &str) -> String {
    sh(Command::new("docker").args(["inspect", "--format", format, container]))
        .trim()
        .to_owned()
}

/// The watchdog's events about `container`, oldest first.
fn remediations(data: &Path, event_type: &str, container: &str) -> Vec<Value> {
    let mut v: Vec<Value> = labmesh_tests::events(data, event_type)
        .into_iter()
        .filter(|e| e["service"] == container)
        .collect();
    v.sort_by_key(|e| e["timestamp"].as_str().unwrap_or("").to_owned());
    v
}

#[test]
fn the_watchdog_restarts_an_opted_in_unhealthy_container_within_its_cooldown_and_cap_only() {
    if !docker_usable() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI has a Docker engine: this test must run there"
        );
        eprintln!("skipped: no usable Docker engine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("lmw{}", std::process::id());
    let image = format!("labmesh-test-sleeper:{tag}");
    let (fixme, twin, stopped) = (
        format!("{tag}-fixme"),
        format!("{tag}-twin"),
        format!("{tag}-stopped"),
    );
    let _cleanup = [&fixme, &twin, &stopped].map(|c| Cleanup {
        container: c.clone(),
        image: image.clone(),
    });
    build_image(dir.path(), &image);
    let label = "labmesh.restart=on-unhealthy";
    sh(Command::new("docker").args(["run", "-d", "--label", label, "--name", &fixme, &image]));
    sh(Command::new("docker").args(["run", "-d", "--name", &twin, &image]));
    sh(Command::new("docker").args(["run", "-d", "--label", label, "--name", &stopped, &image]));
    sh(Command::new("docker").args(["stop", "-t", "1", &stopped]));

    let (receiver, seen) = labmesh_tests::receiver::recording_server();
    let data = dir.path().join("data");
    let config = dir.path().join("labmesh.toml");
    std::fs::write(
        &config,
        format!(
            "[probes]\ninterval = \"1s\"\n\n\
             [remediation]\nunhealthy_streak = 3\ncooldown = \"6s\"\nmax_per_hour = 2\n\n\
             [alerting]\nsettle = \"1s\"\ngroup_wait = \"1s\"\ngroup_interval = \"1s\"\n\
             repeat_interval = \"1h\"\n\n\
             [[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{receiver}/hook\"\n"
        ),
    )
    .unwrap();
    let agent = Agent::start_with(&data, &[], |cmd| {
        cmd.env("LABMESH_CONFIG", &config);
    });
    wait_until(
        "the probe sees both healthy",
        Duration::from_secs(30),
        || {
            let h = host(&agent);
            [&fixme, &twin]
                .iter()
                .all(|c| container(&h, c).is_some_and(|c| c["health"] == "healthy"))
        },
    );
    assert_eq!(
        container(&host(&agent), &fixme).unwrap()["restart_on_unhealthy"],
        true
    );
    let twin_started = inspect(&twin, "{{.State.StartedAt}}");
    let fixme_started = inspect(&fixme, "{{.State.StartedAt}}");

    // Both fall sick (the flag file survives a restart, so a restart does not cure it: the
    // watchdog must then hold back for the cooldown, and stop at the hourly cap).
    for c in [&fixme, &twin] {
        sh(Command::new("docker").args(["exec", c, "/sleeper", "--sick"]));
    }
    wait_until("the first restart", Duration::from_secs(60), || {
        !remediations(&data, "remediation_completed", &fixme).is_empty()
    });
    assert_ne!(inspect(&fixme, "{{.State.StartedAt}}"), fixme_started);
    let first = &remediations(&data, "remediation_started", &fixme)[0];
    assert!(
        first["payload"]["failing_streak"].as_i64().unwrap() >= 3,
        "{first}"
    );
    assert_eq!(first["payload"]["action"], "restart");
    assert!(
        !first["payload"]["health_log"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{first}"
    );
    assert_eq!(first["source"], "labmesh-watchdog");

    wait_until(
        "the second restart, after the cooldown",
        Duration::from_secs(60),
        || remediations(&data, "remediation_completed", &fixme).len() >= 2,
    );
    let started = remediations(&data, "remediation_started", &fixme);
    let at =
        |e: &Value| chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
    let gap = at(&started[1]) - at(&started[0]);
    assert!(
        gap >= chrono::Duration::seconds(6),
        "restarted again after {gap}"
    );

    // The cap (2 an hour): it stays unhealthy, and is not restarted a third time.
    wait_until(
        "unhealthy again after the second restart",
        Duration::from_secs(30),
        || {
            container(&host(&agent), &fixme).is_some_and(|c| {
                c["health"] == "unhealthy" && c["failing_streak"].as_i64().unwrap_or(0) >= 3
            })
        },
    );
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(remediations(&data, "remediation_started", &fixme).len(), 2);
    assert!(
        agent
            .log_text()
            .contains("restarted the most times allowed in an hour")
    );

    // Left alone: the unlabelled twin, sick all along, and the labelled container stopped
    // on purpose.
    assert_eq!(inspect(&twin, "{{.State.StartedAt}}"), twin_started);
    assert_eq!(inspect(&twin, "{{.State.Health.Status}}"), "unhealthy");
    assert!(remediations(&data, "remediation_started", &twin).is_empty());
    assert_eq!(inspect(&stopped, "{{.State.Status}}"), "exited");
    assert!(remediations(&data, "remediation_started", &stopped).is_empty());

    // `labmesh containers`: health, streak, the watchdog's opt-in and the last remediation;
    // exit 1 while any is unhealthy.
    let out = run(labmesh(&data)
        .args(["containers", "--json", "--api-addr"])
        .arg(agent.api.to_string()));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        labmesh_tests::stderr(&out)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |name: &str| {
        listed["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"))
    };
    assert_eq!(row(&fixme)["restart_on_unhealthy"], true);
    assert_eq!(row(&fixme)["last_remediation"]["outcome"], "completed");
    assert_eq!(row(&twin)["restart_on_unhealthy"], false);
    assert!(row(&twin)["last_remediation"].is_null());
    assert_eq!(row(&twin)["health"], "unhealthy");
    let out = run(labmesh(&data)
        .args(["containers", "--unhealthy", "--api-addr"])
        .arg(agent.api.to_string()));
    let table = labmesh_tests::stdout(&out);
    assert!(
        table.contains(&twin) && table.contains("LAST REMEDIATION") && table.contains("completed"),
        "{table}"
    );
    assert!(!table.contains(&stopped), "{table}");

    // One page per remediation.
    wait_until("a page per restart", Duration::from_secs(30), || {
        pages(&seen, &fixme) == 2
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pages(&seen, &fixme), 2);
}

/// Distinct firing `container_remediated` alerts about `container` the receiver got.
fn pages(seen: &labmesh_tests::receiver::Seen, container: &str) -> usize {
    let mut subjects: Vec<String> = labmesh_tests::receiver::alert_bodies(
        seen,
        Some("/hook"),
        "firing",
        "container_remediated",
    )
    .iter()
    .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
    .filter(|a| a["rule"] == "container_remediated" && a["labels"]["service"] == container)
    .filter_map(|a| a["labels"]["subject"].as_str().map(str::to_owned))
    .collect();
    subjects.sort();
    subjects.dedup();
    subjects.len()
}
