//! Hosts with their own addresses for multi-host tests: network namespaces joined by veth pairs
//! and a bridge, one `labmesh agent` in each; links are cut with `ip link set down` and
//! partitions made with blackhole routes. Needs root (CI runs as root): [`can_run`] says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{Agent, issue_bundle, labmesh, labmesh_bin, wait_until};

/// True when namespaces can be made (root). Outside CI a test returns early with a message; in
/// CI (always root) a test that cannot run fails instead of passing silently.
pub fn can_run() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs as root: this test must run there"
    );
    eprintln!("skipped: network namespaces need root");
    false
}

pub fn sh(args: &[&str]) {
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
pub struct Hosts {
    pub tag: String,
    pub names: Vec<String>,
    pub subnet: String,
}

impl Hosts {
    pub fn create(n: usize) -> Hosts {
        let id = std::process::id() % 10_000;
        let tag = format!("lm{id}");
        // Two tests running at once must not share a subnet: spread the id over two octets.
        let subnet = format!("10.{}.{}", 100 + id / 250, id % 250);
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

    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    pub fn cut(&self, i: usize) {
        sh(&["ip", "link", "set", &format!("{}v{i}", self.tag), "down"]);
    }

    pub fn heal(&self, i: usize) {
        sh(&["ip", "link", "set", &format!("{}v{i}", self.tag), "up"]);
    }

    /// Splits the hosts in two: every host in `a` drops what it would send to a host in `b`,
    /// and the other way round (blackhole routes inside the namespaces); `add` false heals.
    pub fn partition(&self, a: &[usize], b: &[usize], add: bool) {
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

    /// Starts an agent inside host `i` with no config file.
    pub fn agent(&self, i: usize, data: &Path, name: &str, extra: &[String]) -> Agent {
        self.agent_with_config(i, data, name, extra, Path::new("/dev/null"))
    }

    /// Starts an agent inside host `i` reading `config` (`LABMESH_CONFIG`).
    pub fn agent_with_config(
        &self,
        i: usize,
        data: &Path,
        name: &str,
        extra: &[String],
        config: &Path,
    ) -> Agent {
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
            .env("LABMESH_CONFIG", config)
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

pub fn liveness(observer: &Agent, node: &str) -> Option<String> {
    observer
        .get_json("/v1/nodes")
        .as_array()?
        .iter()
        .find(|n| n["node"] == node)?["liveness"]
        .as_str()
        .map(str::to_owned)
}

/// Starts `names` on their own hosts: the first makes the mesh CA, the others join it.
pub fn start_mesh(hosts: &Hosts, dir: &Path, names: &[&str]) -> (Vec<PathBuf>, Vec<Agent>) {
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
pub fn emit_lines(data: &Path, name: &str, lines: &[Value]) {
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
