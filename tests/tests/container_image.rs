//! The agent in a container, on the machine's real Docker engine: `deploy/docker/build-scratch.sh`
//! builds the FROM-scratch image around the binary under test (no base image: nothing can be
//! pulled here), and a container of it joins a host agent's mesh over the host network with a
//! bundle, as deploy/docker/README.md tells homelabs to run it. It must run as a non-root user,
//! answer on its API, be listed alive by the host agent, see the engine through the mounted
//! socket, turn healthy through its shell-less HEALTHCHECK, and come back as the same node when
//! restarted with the same command on the same data volume.
//!
//! Needs a Docker engine (CI has one); skipped with a message otherwise, except under CI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use labmesh_tests::{
    Agent, Peer, free_port, free_udp_port, http, issue_bundle, labmesh_bin, repo_path,
};
use serde_json::Value;

/// The image's user (`nonroot`, as in distroless).
const UID: u32 = 65532;

/// Fast timers so the mesh settles in seconds.
const FAST: [&str; 4] = ["--gossip-interval", "100ms", "--offline-after", "3s"];

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn docker(args: &[&str]) -> String {
    sh(Command::new("docker").args(args))
}

/// Removes the container (with its anonymous data volume) and the image even when the test
/// fails.
struct Cleanup {
    container: String,
    image: String,
}

impl Cleanup {
    /// What the container said, for failure messages.
    fn logs(&self) -> String {
        Command::new("docker")
            .args(["logs", "--tail", "40", &self.container])
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default()
    }

    /// Polls `f` until it is true, or panics naming `what` with the container's and the host
    /// agent's logs; stops early when the container is no longer running.
    fn wait(&self, host: &Agent, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            let running = docker(&["inspect", "-f", "{{.State.Running}}", &self.container]);
            assert!(
                running == "true" && Instant::now() < deadline,
                "waiting for {what} (container running: {running}, {timeout:?} at most)\n\
                 container log:\n{}\nhost agent log:\n{}",
                self.logs(),
                host.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.container])
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

fn get_json(addr: SocketAddr, path: &str) -> Value {
    match http(addr, "GET", path, None) {
        Ok((200, body)) => serde_json::from_str(&body).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn liveness(nodes: &Value, node: &str) -> Option<String> {
    nodes
        .as_array()?
        .iter()
        .find(|n| n["node"] == node)
        .and_then(|n| n["liveness"].as_str().map(str::to_owned))
}

/// The uids (real, effective, saved, filesystem) of a host process, from its /proc status.
fn uids(pid: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("a Uid line")
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect()
}

#[test]
fn the_scratch_image_joins_the_mesh_as_a_non_root_container() {
    if !docker_usable() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI has a Docker engine: this test must run there"
        );
        eprintln!("skipped: no usable Docker engine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let guard = Cleanup {
        container: format!("lm{pid}-boxed"),
        image: format!("labmesh-test-image:{pid}"),
    };
    sh(Command::new("bash")
        .arg(repo_path("deploy/docker/build-scratch.sh"))
        .arg(labmesh_bin())
        .arg(&guard.image));
    assert_eq!(
        docker(&["image", "inspect", "-f", "{{.Config.User}}", &guard.image]),
        format!("{UID}:{UID}")
    );

    // The host agent (a new mesh and its CA), and a bundle for the container's node. The bundle
    // is 0600 and root's: the container's user gets its own copy.
    let host = Peer::start(dir.path(), "hostnode", &FAST);
    let issued = dir.path().join("issued.json");
    issue_bundle(&host.data, &host.name, "boxed", &issued);
    let bundle = dir.path().join("boxed.bundle.json");
    std::fs::copy(&issued, &bundle).unwrap();
    std::os::unix::fs::chown(&bundle, Some(UID), Some(UID)).unwrap();

    // The engine's socket is root:docker 0660: the container's user joins its group.
    let socket_gid = std::fs::metadata("/var/run/docker.sock")
        .map(|m| m.gid().to_string())
        .unwrap_or_else(|_| "0".to_owned());
    let gossip = format!("127.0.0.1:{}", free_udp_port());
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let bundle_mount = format!("{}:/bundle.json:ro", bundle.display());
    // The API address through the environment, so that the HEALTHCHECK (`labmesh status`)
    // asks the same one (as the README says).
    let api_env = format!("LABMESH_API_ADDR={api}");
    let mut run = vec![
        "run",
        "-d",
        "--name",
        &guard.container,
        "--network",
        "host",
        "--group-add",
        &socket_gid,
        "-v",
        &bundle_mount,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock:ro",
        "-e",
        &api_env,
        // The image checks every 30 s; the test cannot wait that long.
        "--health-interval",
        "1s",
        &guard.image,
        "agent",
        "--join",
        "/bundle.json",
        "--seed",
        &host.gossip,
        "--gossip-addr",
        &gossip,
        "--name",
        "boxed",
        "--probe-interval",
        "1s",
    ];
    run.extend_from_slice(&FAST);
    docker(&run);
    let host_agent = host.agent();

    // Its own API answers, from inside the container, on the host's loopback.
    guard.wait(
        host_agent,
        "the container's /healthz",
        Duration::from_secs(60),
        || matches!(http(api, "GET", "/healthz", None), Ok((200, _))),
    );

    // It runs as the image's user, not root: the uids of its process as the host sees them.
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &guard.container]);
    let ids = uids(&pid);
    assert!(
        ids.iter().all(|&u| u == UID),
        "container process {pid} runs with uids {ids:?}"
    );

    // It joined: the host agent lists it alive, and it lists the host agent alive.
    guard.wait(
        host_agent,
        "the host agent to list boxed alive",
        Duration::from_secs(60),
        || liveness(&host_agent.get_json("/v1/nodes"), "boxed").as_deref() == Some("alive"),
    );
    guard.wait(
        host_agent,
        "boxed to list hostnode alive",
        Duration::from_secs(30),
        || liveness(&get_json(api, "/v1/nodes"), "hostnode").as_deref() == Some("alive"),
    );

    // The mounted socket works for the non-root user: its Docker probe lists its own container.
    guard.wait(
        host_agent,
        "boxed's Docker probe to list its container",
        Duration::from_secs(30),
        || {
            get_json(api, "/v1/host")["docker"]["containers"]
                .as_array()
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["name"] == guard.container.as_str() && c["state"] == "running")
                })
        },
    );

    // The HEALTHCHECK needs no shell: the engine runs `labmesh status` and marks it healthy.
    guard.wait(
        host_agent,
        "the engine to mark the container healthy",
        Duration::from_secs(30),
        || {
            docker(&[
                "inspect",
                "-f",
                "{{.State.Health.Status}}",
                &guard.container,
            ]) == "healthy"
        },
    );

    // A restart (what `restart: unless-stopped` does) runs the same `agent --join` again on the
    // same data volume: it comes back as the same node, and the host agent sees it alive again.
    docker(&["restart", "-t", "10", &guard.container]);
    guard.wait(
        host_agent,
        "the restarted container's /healthz",
        Duration::from_secs(60),
        || matches!(http(api, "GET", "/healthz", None), Ok((200, _))),
    );
    guard.wait(
        host_agent,
        "the restarted boxed to list hostnode alive",
        Duration::from_secs(30),
        || liveness(&get_json(api, "/v1/nodes"), "hostnode").as_deref() == Some("alive"),
    );
    let nodes = host_agent.get_json("/v1/nodes");
    assert_eq!(
        nodes.as_array().map(Vec::len),
        Some(2),
        "one node per agent after the restart: {nodes}"
    );
    assert_eq!(
        liveness(&nodes, "boxed").as_deref(),
        Some("alive"),
        "{nodes}"
    );
    drop(guard);
    check_no_leftovers();
}

/// Nothing of the test is left on the engine once the guard is gone.
fn check_no_leftovers() {
    let pid = std::process::id();
    let containers = docker(&["ps", "-a", "--filter", &format!("name=lm{pid}-boxed"), "-q"]);
    assert!(containers.is_empty(), "container left: {containers}");
    let images = docker(&["images", "-q", &format!("labmesh-test-image:{pid}")]);
    assert!(images.is_empty(), "image left: {images}");
}
