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
