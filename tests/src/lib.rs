//! Test harness for multi-process labmesh tests: finds the built `labmesh` binary, gives each
//! test its own data dir and free ports, starts agents as real processes, and always tears them
//! down (agents are killed on drop, so a failing assertion never leaves a process behind).
//!
//! The binary is `$LABMESH_BIN` when set (e.g. a release build), else `target/<profile>/labmesh`
//! next to the test executable; `scripts/test` builds it before running the tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod delay_proxy;
pub mod faults_net;
pub mod fuzz;
pub mod netns;
pub mod prometheus;
pub mod receiver;
pub mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of the `labmesh` binary under test.
pub fn labmesh_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LABMESH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>-<hash>  ->  target/<profile>/labmesh
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join("labmesh");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p labmesh` (scripts/test does this)",
        bin.display()
    );
    bin
}

/// Path of a file in the repository (the workspace root is the parent of this crate).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A `labmesh` command with a clean environment: only this test's data dir and node name.
pub fn labmesh(data_dir: &Path) -> Command {
    let mut cmd = Command::new(labmesh_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LABMESH_") && key != "LABMESH_BIN" {
            cmd.env_remove(key);
        }
    }
    cmd.env("LABMESH_DATA_DIR", data_dir)
        .env("LABMESH_NAME", "testnode")
        .env("NO_COLOR", "1")
        // Never pick up the developer's own config file.
        .env("LABMESH_CONFIG", "/dev/null");
    cmd
}

/// Runs a command to completion and returns its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("spawn labmesh")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every stored event of `event_type` in `data`, as `labmesh events list --json` prints them.
pub fn events(data: &Path, event_type: &str) -> Vec<serde_json::Value> {
    let out = run(labmesh(data).args(["events", "list", "--json", "--type", event_type]));
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// A world view file (`nodes.json`, `incidents.json`, ...) of the data dir `data`, empty
/// while it is not written.
pub fn world_file(data: &Path, name: &str) -> String {
    std::fs::read_to_string(data.join("world").join(name)).unwrap_or_default()
}

/// A free TCP port on loopback (the OS picks; there is a small race with other processes).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A free UDP port on loopback (for a QUIC endpoint).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free UDP port")
}

/// Polls `f` until it is true, or panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A minimal HTTP/1.1 client: enough for our JSON API without a client library in the tests.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http_auth(addr, method, path, None, body)
}

/// [`http`] with `Authorization: Bearer <token>` when a token is given.
pub fn http_auth(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A running `labmesh agent` process. Killed on drop.
pub struct Agent {
    pub child: Option<Child>,
    pub api: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl Agent {
    /// Starts an agent with its own API port; waits until `/healthz` answers.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Agent {
        Self::start_with(data_dir, extra, |_| {})
    }

    pub fn start_with(data_dir: &Path, extra: &[&str], tweak: impl FnOnce(&mut Command)) -> Agent {
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        std::fs::create_dir_all(data_dir).unwrap();
        let log = data_dir.with_extension("agent.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = labmesh(data_dir);
        cmd.arg("agent").arg("--api-addr").arg(api.to_string());
        if !extra.contains(&"--gossip-addr") {
            cmd.arg("--gossip-addr")
                .arg(format!("127.0.0.1:{}", free_udp_port()));
        }
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        tweak(&mut cmd);
        let child = cmd.spawn().expect("spawn labmesh agent");
        let mut agent = Agent {
            child: Some(child),
            api,
            data_dir: data_dir.to_owned(),
            log,
        };
        agent.wait_healthy();
        agent
    }

    /// Wraps an agent process started some other way (e.g. inside a namespace).
    pub fn from_child(child: Child, api: SocketAddr, data_dir: &Path, log: PathBuf) -> Agent {
        Agent {
            child: Some(child),
            api,
            data_dir: data_dir.to_owned(),
            log,
        }
    }

    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http(self.api, "GET", "/healthz", None) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("agent exited early ({status}); log:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "agent not healthy in 30 s; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.api, "GET", path, None).expect("HTTP request to the agent")
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The agent's event-set fingerprint (`GET /v1/sync`), empty when it has none.
    pub fn fingerprint(&self) -> String {
        self.get_json("/v1/sync")["fingerprint"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Sends a signal and waits for the process to exit.
    pub fn stop_with(&mut self, signal: rustix::process::Signal) -> ExitStatus {
        let mut child = self.child.take().expect("agent already stopped");
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("agent did not exit within 20 s of {signal:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Issues a join bundle for `node` on the CA node whose data dir is `ca_data` (named `ca_name`),
/// written to `out`, as `labmesh certs issue NODE --out FILE` does.
pub fn issue_bundle(ca_data: &Path, ca_name: &str, node: &str, out: &Path) {
    issue_bundle_granting(ca_data, ca_name, node, out, "0");
}

/// [`issue_bundle`] for a node whose certificate lets it claim `alerter_priority` up to
/// `priority` (peers hold it to that).
pub fn issue_bundle_granting(
    ca_data: &Path,
    ca_name: &str,
    node: &str,
    out: &Path,
    priority: &str,
) {
    let res = run(labmesh(ca_data)
        .args([
            "--name",
            ca_name,
            "certs",
            "issue",
            node,
            "--alerter-priority",
            priority,
            "--out",
        ])
        .arg(out));
    assert!(res.status.success(), "certs issue {node}: {}", stderr(&res));
}

/// A genuine identity of the mesh whose CA node is `ca_name` in `ca_data`: a test playing a
/// hostile member holds one, so TLS lets it in.
pub fn member_identity(
    dir: &Path,
    ca_data: &Path,
    ca_name: &str,
    name: &str,
) -> certs::NodeIdentity {
    let bundle = dir.join(format!("{name}.json"));
    issue_bundle(ca_data, ca_name, name, &bundle);
    let (bundle, _) = certs::JoinBundle::read(&bundle).expect("the issued bundle reads back");
    bundle
        .identity()
        .expect("the issued bundle holds an identity")
}

/// A member's own QUIC endpoint (call inside a tokio runtime), bound to `bind` and claiming
/// `advertise` in its frames (the same address, or another endpoint's for a replaced-connection
/// test), speaking the real transport.
pub fn member_transport(
    identity: &certs::NodeIdentity,
    bind: SocketAddr,
    advertise: SocketAddr,
) -> mesh::QuicTransport {
    let revoked = certs::RevocationList::new();
    let rejections = certs::Rejections::new();
    let server = certs::server_config(identity, revoked.clone(), rejections.clone())
        .expect("a server config for the member");
    let client = certs::client_config(identity, revoked, rejections).expect("a client config");
    let cfg = mesh::TransportConfig::new(bind, advertise, server, client);
    mesh::QuicTransport::bind(
        cfg,
        std::sync::Arc::new(mesh::MeshStats::default()),
        Box::new(|_| false),
    )
    .expect("the member's endpoint binds")
}

/// A free loopback UDP address.
pub fn free_udp_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_udp_port()))
}

/// One agent of a loopback mesh with what the tests need about it: its name, data dir and
/// gossip address; `agent` is `None` while it is stopped (a restart test).
pub struct Peer {
    pub name: String,
    pub data: PathBuf,
    pub gossip: String,
    pub agent: Option<Agent>,
}

impl Peer {
    /// Starts `name` (a new mesh and its CA when it joins none) on a free loopback port with
    /// `args` after `--name` and `--gossip-addr`.
    pub fn start(dir: &Path, name: &str, args: &[&str]) -> Peer {
        let data = dir.join(name);
        let gossip = format!("127.0.0.1:{}", free_udp_port());
        let mut all = vec!["--name", name, "--gossip-addr", &gossip];
        all.extend_from_slice(args);
        let agent = Agent::start(&data, &all);
        Peer {
            name: name.to_owned(),
            data,
            gossip,
            agent: Some(agent),
        }
    }

    /// Starts `name` joining `ca`'s mesh with a bundle `ca` issues, seeded with `ca`.
    pub fn join(dir: &Path, ca: &Peer, name: &str, args: &[&str]) -> Peer {
        let bundle = dir.join(format!("{name}.bundle.json"));
        issue_bundle(&ca.data, &ca.name, name, &bundle);
        let b = bundle.display().to_string();
        let mut all = vec!["--join", &b, "--seed", &ca.gossip];
        all.extend_from_slice(args);
        Peer::start(dir, name, &all)
    }

    /// The running agent (panics while it is stopped).
    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("the agent is running")
    }
}

/// Starts `name` on loopback as a mesh member for multi-agent alerting tests (gossip 100 ms,
/// offline after 3 s, the given alerter priority), reading `config` (`LABMESH_CONFIG`). With
/// `ca` = (CA node's data dir, CA node's name, seed gossip address) it joins that mesh.
/// Returns the agent, its data dir and its gossip address.
pub fn mesh_node(
    dir: &Path,
    name: &str,
    priority: &str,
    config: &Path,
    ca: Option<(&Path, &str, &str)>,
) -> (Agent, PathBuf, String) {
    let data = dir.join(name);
    let gossip = format!("127.0.0.1:{}", free_udp_port());
    let mut args: Vec<String> = [
        "--name",
        name,
        "--gossip-addr",
        &gossip,
        "--gossip-interval",
        "100ms",
        "--offline-after",
        "3s",
        "--alerter-priority",
        priority,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some((ca_data, ca_name, seed)) = ca {
        let bundle = dir.join(format!("{name}.bundle.json"));
        issue_bundle_granting(ca_data, ca_name, name, &bundle, priority);
        args.extend([
            "--join".to_owned(),
            bundle.display().to_string(),
            "--seed".to_owned(),
            seed.to_owned(),
        ]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start_with(&data, &refs, |cmd| {
        cmd.env("LABMESH_CONFIG", config);
    });
    (agent, data, gossip)
}

/// Feeds the body to `promtool check metrics` and fails on any output at all (lint warnings
/// included), not only on a failing exit code.
pub fn promtool_check(body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics ({}): {said}\nbody:\n{body}",
        out.status
    );
}

/// The value of the sample `series` (a name, or a name with its labels as written, e.g.
/// `labmesh_peers{state="alive"}`).
pub fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A benchmark knob from the environment (`LABMESH_BENCH_*`), or its default.
pub fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
