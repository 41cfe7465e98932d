//! Three hosts with their own addresses: network namespaces joined by veth pairs and a bridge,
//! one `labmesh agent` in each. A link is cut with `ip link set down`; the others see the cut
//! host dead; the link comes back and so does the host.
//!
//! Needs root (CI runs as root); skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use std::io::Write;

use labmesh_tests::{Agent, issue_bundle, labmesh, labmesh_bin, wait_until};
use serde_json::Value;

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces, bridge and veths of one test; removed on drop, even after a failure.
struct Hosts {
    tag: String,
    names: Vec<String>,
    subnet: String,
}

impl Hosts {
    fn create(n: usize) -> Hosts {
        let id = std::process::id() % 10_000;
        let tag = format!("lm{id}");
        let subnet = format!("10.77.{}", id % 250);
        let bridge = format!("{tag}br");
        let hosts = Hosts {
            tag: tag.clone(),
            names: (0..n).map(|i| format!("{tag}h{i}")).collect(),
            subnet: subnet.clone(),
        };
        sh(&["ip", "link", "add", &bridge, "type", "bridge"]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{subnet}.254/24"),
            "dev",
            &bridge,
        ]);
        sh(&["ip", "link", "set", &bridge, "up"]);
        // With br_netfilter loaded (Docker loads it and sets FORWARD to DROP), bridged frames go
        // through the host's FORWARD chain: let this bridge's own traffic through.
        let _ = Command::new("iptables")
            .args([
                "-I", "FORWARD", "1", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
            ])
            .output();
        for (i, ns) in hosts.names.iter().enumerate() {
            let veth = format!("{tag}v{i}");
            sh(&["ip", "netns", "add", ns]);
            sh(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            sh(&["ip", "link", "set", &veth, "master", &bridge]);
            sh(&["ip", "link", "set", &veth, "up"]);
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{subnet}.{}/24", i + 1),
                "dev",
                "eth0",
            ]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        hosts
    }

    fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    fn cut(&self, i: usize) {
        sh(&["ip", "link", "set", &format!("{}v{i}", self.tag), "down"]);
    }

    fn heal(&self, i: usize) {
        sh(&["ip", "link", "set", &format!("{}v{i}", self.tag), "up"]);
    }

    /// Splits the hosts in two: every host in `a` drops what it would send to a host in `b`,
    /// and the other way round (blackhole routes inside the namespaces); `add` false heals.
    fn partition(&self, a: &[usize], b: &[usize], add: bool) {
        let verb = if add { "add" } else { "del" };
        for (from, to) in a
            .iter()
            .flat_map(|x| b.iter().map(move |y| (*x, *y)))
            .chain(b.iter().flat_map(|y| a.iter().map(move |x| (*y, *x))))
        {
            sh(&[
                "ip",
                "-n",
                &self.names[from],
                "route",
                verb,
                "blackhole",
                &format!("{}/32", self.ip(to)),
            ]);
        }
    }

    /// Starts an agent inside host `i`.
    fn agent(&self, i: usize, data: &Path, name: &str, extra: &[String]) -> Agent {
        std::fs::create_dir_all(data).unwrap();
        let log = data.with_extension("log");
        let f = std::fs::File::create(&log).unwrap();
        let ip = self.ip(i);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.names[i]])
            .arg(labmesh_bin())
            .args([
                "agent",
                "--name",
                name,
                "--gossip-addr",
                &format!("{ip}:7370"),
                "--api-addr",
                &format!("{ip}:7371"),
            ])
            .args(["--gossip-interval", "100ms", "--offline-after", "3s"])
            .args(extra)
            .env("LABMESH_DATA_DIR", data)
            .env("LABMESH_CONFIG", "/dev/null")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        let mut agent = Agent::from_child(
            cmd.spawn().unwrap(),
            format!("{ip}:7371").parse().unwrap(),
            data,
            log,
        );
        agent.wait_healthy();
        agent
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let bridge = format!("{}br", self.tag);
        let _ = Command::new("iptables")
            .args([
                "-D", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
            ])
            .output();
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
    }
}

fn liveness(observer: &Agent, node: &str) -> Option<String> {
    observer
        .get_json("/v1/nodes")
        .as_array()?
        .iter()
        .find(|n| n["node"] == node)?["liveness"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn a_cut_host_is_seen_dead_then_back_after_the_link_heals() {
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: this test must run there"
        );
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = Hosts::create(3);
    let names = ["alpha", "bravo", "charlie"];
    let data: Vec<PathBuf> = names.iter().map(|n| dir.path().join(n)).collect();
    let mut agents = vec![hosts.agent(0, &data[0], "alpha", &[])];
    let seed = format!("{}:7370", hosts.ip(0));
    for i in 1..3 {
        let bundle = dir.path().join(format!("{}.json", names[i]));
        issue_bundle(&data[0], "alpha", names[i], &bundle);
        let extra = vec![
            "--join".to_owned(),
            bundle.display().to_string(),
            "--seed".to_owned(),
            seed.clone(),
        ];
        agents.push(hosts.agent(i, &data[i], names[i], &extra));
    }
    for (i, a) in agents.iter().enumerate() {
        for other in names.iter().filter(|n| **n != names[i]) {
            wait_until(
                &format!("{} sees {other}", names[i]),
                Duration::from_secs(20),
                || liveness(a, other).as_deref() == Some("alive"),
            );
        }
    }
    // The gossip really crosses the hosts' own addresses.
    let status = agents[0].get_json("/v1/status");
    let charlie = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "charlie")
        .unwrap()
        .clone();
    assert_eq!(charlie["gossip_addr"], format!("{}:7370", hosts.ip(2)));

    hosts.cut(2);
    for a in &agents[..2] {
        wait_until("charlie dead", Duration::from_secs(20), || {
            matches!(liveness(a, "charlie").as_deref(), Some("dead" | "offline"))
        });
    }
    assert_eq!(liveness(&agents[0], "bravo").as_deref(), Some("alive"));
    hosts.heal(2);
    for a in &agents[..2] {
        wait_until("charlie back", Duration::from_secs(30), || {
            liveness(a, "charlie").as_deref() == Some("alive")
        });
    }
    drop(agents);
}

/// Starts `names` on their own hosts: the first makes the mesh CA, the others join it.
fn start_mesh(hosts: &Hosts, dir: &Path, names: &[&str]) -> (Vec<PathBuf>, Vec<Agent>) {
    let data: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    let mut agents = vec![hosts.agent(0, &data[0], names[0], &[])];
    let seed = format!("{}:7370", hosts.ip(0));
    for i in 1..names.len() {
        let bundle = dir.join(format!("{}.json", names[i]));
        issue_bundle(&data[0], names[0], names[i], &bundle);
        let extra = vec![
            "--join".to_owned(),
            bundle.display().to_string(),
            "--seed".to_owned(),
            seed.clone(),
        ];
        agents.push(hosts.agent(i, &data[i], names[i], &extra));
    }
    for (i, a) in agents.iter().enumerate() {
        for other in names.iter().filter(|n| **n != names[i]) {
            wait_until(
                &format!("{} sees {other}", names[i]),
                Duration::from_secs(30),
                || liveness(a, other).as_deref() == Some("alive"),
            );
        }
    }
    (data, agents)
}

/// Writes partial events (stamped now) into a node's store, as `labmesh emit --from-jsonl`.
fn emit_lines(data: &Path, name: &str, lines: &[Value]) {
    let mut child = labmesh(data)
        .args(["--name", name, "emit", "--from-jsonl", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fingerprint(agent: &Agent) -> String {
    agent.get_json("/v1/sync")["fingerprint"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn world_file(data: &Path, name: &str) -> String {
    std::fs::read_to_string(data.join("world").join(name)).unwrap_or_default()
}

#[test]
fn both_sides_of_a_partition_write_and_agree_after_it_heals() {
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: this test must run there"
        );
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = Hosts::create(4);
    let names = ["alpha", "bravo", "charlie", "delta"];
    let (data, agents) = start_mesh(&hosts, dir.path(), &names);

    // {alpha, bravo} | {charlie, delta}: each side sees the other dead, and keeps itself.
    hosts.partition(&[0, 1], &[2, 3], true);
    for (i, other) in [(0, "charlie"), (1, "delta"), (2, "alpha"), (3, "bravo")] {
        wait_until(
            &format!("{} loses {other}", names[i]),
            Duration::from_secs(30),
            || {
                matches!(
                    liveness(&agents[i], other).as_deref(),
                    Some("dead" | "offline")
                )
            },
        );
    }
    assert_eq!(liveness(&agents[0], "bravo").as_deref(), Some("alive"));
    assert_eq!(liveness(&agents[2], "delta").as_deref(), Some("alive"));

    // Both sides write. A: an incident on alpha (unhealthy x3), a deployment started on bravo,
    // 300 ordinary events. B: an incident that opens and resolves on charlie, the same
    // deployment completed by delta (a CI runner on the other side), 300 ordinary events.
    let ev = |ty: &str, sev: &str, service: &str, cid: &str| {
        serde_json::json!({"type": ty, "severity": sev, "service": service, "correlation_id": cid,
            "source": "partition-test", "payload": {}})
    };
    let bulk = |side: &str| -> Vec<Value> {
        (0..300)
            .map(|n| ev("backup_completed", "info", &format!("{side}-{n}"), ""))
            .collect()
    };
    emit_lines(&data[0], "alpha", &bulk("a"));
    emit_lines(&data[2], "charlie", &bulk("c"));
    for _ in 0..3 {
        emit_lines(
            &data[0],
            "alpha",
            &[ev("service_unhealthy", "error", "nas", "hc-a")],
        );
    }
    emit_lines(
        &data[1],
        "bravo",
        &[ev("deployment_started", "info", "web", "deploy-part")],
    );
    emit_lines(
        &data[2],
        "charlie",
        &[ev("service_unhealthy", "error", "db", "hc-c")],
    );
    emit_lines(
        &data[2],
        "charlie",
        &[ev("service_recovered", "info", "db", "hc-c")],
    );
    std::thread::sleep(Duration::from_millis(50));
    emit_lines(
        &data[3],
        "delta",
        &[ev("deployment_completed", "info", "web", "deploy-part")],
    );

    // Each side converges within itself while the other stays apart.
    wait_until("side A agrees", Duration::from_secs(30), || {
        fingerprint(&agents[0]) == fingerprint(&agents[1])
    });
    wait_until("side B agrees", Duration::from_secs(30), || {
        fingerprint(&agents[2]) == fingerprint(&agents[3])
    });
    assert_ne!(fingerprint(&agents[0]), fingerprint(&agents[2]));

    hosts.partition(&[0, 1], &[2, 3], false);
    wait_until(
        "one event set after the heal",
        Duration::from_secs(60),
        || {
            let f = fingerprint(&agents[0]);
            agents.iter().all(|a| fingerprint(a) == f)
        },
    );
    for file in ["incidents.json", "services.json", "deployments.json"] {
        wait_until(
            &format!("identical {file}"),
            Duration::from_secs(30),
            || {
                let first = world_file(&data[0], file);
                !first.is_empty() && data.iter().all(|d| world_file(d, file) == first)
            },
        );
    }
    let deployments: Value =
        serde_json::from_str(&world_file(&data[3], "deployments.json")).unwrap();
    assert_eq!(
        deployments["deploy-part"]["status"], "completed",
        "{deployments}"
    );
    let incidents: Value = serde_json::from_str(&world_file(&data[1], "incidents.json")).unwrap();
    let of = |node: &str, service: &str| {
        incidents
            .as_object()
            .unwrap()
            .values()
            .find(|i| i["node"] == node && i["service"] == service)
            .cloned()
            .unwrap_or_else(|| panic!("no incident for {node}/{service}: {incidents}"))
    };
    assert_eq!(of("alpha", "nas")["status"], "open");
    assert_eq!(of("alpha", "nas")["occurrence_count"], 3);
    assert_eq!(of("charlie", "db")["status"], "resolved");
    drop(agents);
}
