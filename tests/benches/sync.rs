//! Sync benchmark (issue 4): `cargo bench -p labmesh-tests --bench sync`.
//!
//! One run measures, with real `labmesh agent` processes on loopback (release build; this bench
//! builds `target/release/labmesh` first unless `LABMESH_BIN` names one):
//!
//! 1. **Identical sets** (in process, the agents' own [`SyncCore`]): bytes of the sync messages
//!    for a reconciliation between two nodes holding the same `LABMESH_BENCH_IDENTICAL` events
//!    (default 100,000). Goal ≤ 512 B. Baseline: sending every `(timestamp, hash)` item.
//! 2. **The offline laptop**: a two-node mesh (home, laptop) is formed and stopped; then home's
//!    store gets `LABMESH_BENCH_EVENTS` new events (default 100,000) and the laptop's
//!    `LABMESH_BENCH_LAPTOP_EVENTS` (default 1,000), written with `labmesh emit --from-jsonl`.
//!    Home starts; the clock starts when the laptop's agent is spawned and stops when both
//!    `/v1/sync` report the same fingerprint. Goal ≤ 3 s. Baseline: the time the same home
//!    events took to write locally (`emit --from-jsonl`, 1000 per group commit).
//!    Bytes: every message both agents sent (transport counters, gossip included) and, as root,
//!    the UDP bytes on `lo` (iptables counters on the two QUIC ports: IP and UDP headers, QUIC
//!    packets, handshakes and acks), against the raw size of the event files that moved.
//!    Goal ≤ 5 % overhead.
//! 3. **Visibility**: `LABMESH_BENCH_PEERS` agents (default 10) in one mesh; one emits
//!    `LABMESH_BENCH_VISIBILITY_EVENTS` `service_unhealthy` events (default 50), one at a time
//!    with a random pause; for each, the time from spawning `labmesh emit` until
//!    `/v1/services` shows it on every other node (polled every 20 ms). Goal p99 ≤ 1 s.
//!    Baseline: the same event's time to the emitting node's own world.
//! 4. **World**: runs `cargo bench -p sync --bench world` (rebuild from 1M events, incremental
//!    apply rate); `LABMESH_WORLD_BENCH_EVENTS` and `LABMESH_WORLD_BENCH_INCREMENTAL` pass
//!    through, `LABMESH_BENCH_WORLD=0` skips it.
//!
//! Defaults as shipped (gossip every 300 ms, sync `differ_delay` 2 s, views on a 300 ms tick).
//! A smoke run: `LABMESH_BENCH_EVENTS=10000 LABMESH_BENCH_VISIBILITY_EVENTS=10
//! LABMESH_BENCH_PEERS=4 LABMESH_BENCH_WORLD=0`. For a closer look: `LABMESH_BENCH_ONLY` runs
//! some parts (`identical,convergence,visibility,world`), `LABMESH_BENCH_KEEP=1` keeps the
//! agents' folders and logs, `LABMESH_BENCH_AGENT_LOG` is the agents' `--log-level`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labmesh_tests::{Agent, free_udp_port, http, labmesh, repo_path, run, stderr, wait_until};
use rustix::process::Signal;
use serde_json::{Value, json};
use sync::reconcile::{Received, Runtime, SyncCore, SyncMessage, SyncSource};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn verdict(ok: bool) -> &'static str {
    if ok { "✔" } else { "✘" }
}

/// A cargo command in the workspace, without the variables cargo set for this bench (some
/// build scripts rebuild when `CARGO_MANIFEST_DIR` changes, which would rebuild half the tree).
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo_path("."));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_by_cargo = key.starts_with("CARGO_PKG_")
            || key == "OUT_DIR"
            || [
                "MANIFEST_DIR",
                "MANIFEST_PATH",
                "MANIFEST_LINKS",
                "CRATE_NAME",
                "BIN_NAME",
                "PRIMARY_PACKAGE",
                "RUSTC_CURRENT_DIR",
                "TARGET_TMPDIR",
            ]
            .iter()
            .any(|k| key.strip_prefix("CARGO_") == Some(k));
        if set_by_cargo {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

/// Builds the agent binary this bench runs (`target/release/labmesh`, next to the bench).
fn build_agent() {
    if std::env::var_os("LABMESH_BIN").is_some() {
        return;
    }
    let status = cargo()
        .args(["build", "--release", "-p", "labmesh"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --release -p labmesh failed");
}

/// A tiny deterministic generator (xorshift64*).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

// ---------- 1. identical sets, in process ----------

struct MemSet(Vec<(u64, [u8; 32])>);

impl SyncSource for MemSet {
    fn items(&self, since_ms: i64) -> Vec<(u64, [u8; 32])> {
        self.0
            .iter()
            .filter(|(ts, _)| *ts as i64 >= since_ms)
            .copied()
            .collect()
    }
    fn bytes(&self, _hash: &[u8; 32]) -> Option<Vec<u8>> {
        None
    }
}

#[derive(Default)]
struct Outbox {
    send: Vec<(String, SyncMessage)>,
    stored: usize,
}

impl Runtime for Outbox {
    fn send(&mut self, to: &str, msg: SyncMessage) {
        self.send.push((to.to_owned(), msg));
    }
    fn store(&mut self, _from: &str, received: Received) {
        self.stored += received.events.len();
    }
}

struct Identical {
    items: usize,
    bytes: usize,
    messages: usize,
    took: Duration,
}

fn identical_sets(n: usize) -> Identical {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let start_ms = 1_780_000_000_000u64;
    let mut items: Vec<(u64, [u8; 32])> = (0..n as u64)
        .map(|i| {
            let mut h = [0u8; 32];
            for c in h.chunks_mut(8) {
                c.copy_from_slice(&g.next().to_le_bytes());
            }
            // 30 days of events, a few per minute.
            (start_ms + i * 25_920 + g.next() % 25_920, h)
        })
        .collect();
    items.sort();
    let a = MemSet(items.clone());
    let b = MemSet(items);
    let started = Instant::now();
    let mut core_a = SyncCore::new(1);
    let mut core_b = SyncCore::new(1 << 40);
    let mut out = Outbox::default();
    core_a.start(&mut out, &a, "b", 0, 0).unwrap();
    let mut pending: VecDeque<(String, SyncMessage)> = out.send.into();
    let (mut bytes, mut messages) = (0, 0);
    while let Some((to, msg)) = pending.pop_front() {
        bytes += msg.encode().len();
        messages += 1;
        let mut out = Outbox::default();
        if to == "b" {
            core_b.on_message(&mut out, &b, "a", msg).unwrap();
        } else {
            core_a.on_message(&mut out, &a, "b", msg).unwrap();
        }
        assert_eq!(out.stored, 0, "identical sets exchanged events");
        pending.extend(out.send);
    }
    assert_eq!(core_a.stats["b"].sessions_completed, 1);
    Identical {
        items: n,
        bytes,
        messages,
        took: started.elapsed(),
    }
}

// ---------- agents ----------

struct Node {
    name: String,
    data: PathBuf,
    gossip: String,
    agent: Option<Agent>,
}

impl Node {
    fn new(dir: &Path, name: &str) -> Node {
        Node {
            name: name.into(),
            data: dir.join(name),
            gossip: format!("127.0.0.1:{}", free_udp_port()),
            agent: None,
        }
    }

    fn start(&mut self, extra: &[&str]) {
        let log = std::env::var("LABMESH_BENCH_AGENT_LOG").ok();
        let mut args = vec!["--name", &self.name, "--gossip-addr", &self.gossip];
        args.extend_from_slice(extra);
        if let Some(log) = &log {
            args.extend_from_slice(&["--log-level", log]);
        }
        self.agent = Some(Agent::start(&self.data, &args));
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("agent running")
    }

    fn port(&self) -> u16 {
        self.gossip.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn stop(&mut self) {
        self.agent.take().unwrap().stop_with(Signal::TERM);
    }

    /// GET as JSON; `None` while the agent does not answer.
    fn try_json(&self, path: &str) -> Option<Value> {
        let (status, body) = http(self.agent().api, "GET", path, None).ok()?;
        (status == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }
}

/// Issues a join bundle for `name` from the CA node's data dir.
fn issue(ca: &Node, dir: &Path, name: &str) -> PathBuf {
    let bundle = dir.join(format!("{name}.json"));
    let out = run(labmesh(&ca.data)
        .args(["--name", &ca.name, "certs", "issue", name, "--out"])
        .arg(&bundle));
    assert!(out.status.success(), "certs issue: {}", stderr(&out));
    bundle
}

fn alive_peers(node: &Node) -> usize {
    node.try_json("/v1/nodes")
        .and_then(|v| v.as_array().cloned())
        .map_or(0, |a| a.iter().filter(|n| n["liveness"] == "alive").count())
}

fn fingerprint(node: &Node) -> Option<String> {
    node.try_json("/v1/sync")
        .and_then(|v| v["fingerprint"].as_str().map(str::to_owned))
}

/// Writes JSON lines into a node's store with `labmesh emit --from-jsonl -` (agent stopped or
/// not); returns how long it took.
fn emit_jsonl(node: &Node, lines: &[Value], batch: usize) -> Duration {
    let started = Instant::now();
    let mut child = labmesh(&node.data)
        .args([
            "--name",
            &node.name,
            "emit",
            "--from-jsonl",
            "-",
            "--batch-size",
        ])
        .arg(batch.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().unwrap());
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "emit --from-jsonl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

/// Every event file of a store: path under `events/` to size.
fn event_files(data: &Path) -> BTreeMap<PathBuf, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, u64>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|x| x == "json") {
                out.insert(path.strip_prefix(root).unwrap().to_owned(), meta.len());
            }
        }
    }
    let root = data.join("events");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// Files that arrived in a store (not there before, written by another node): count, bytes.
fn arrived(
    before: &BTreeMap<PathBuf, u64>,
    after: &BTreeMap<PathBuf, u64>,
    own: &str,
) -> (u64, u64) {
    after
        .iter()
        .filter(|(p, _)| !before.contains_key(*p))
        .filter(|(p, _)| p.iter().nth(1).is_some_and(|n| n != own))
        .fold((0, 0), |(n, b), (_, s)| (n + 1, b + s))
}

/// UDP bytes leaving given ports on `lo`, counted by iptables rules without a target (they
/// only count). Needs root; removed on drop.
struct UdpCounters {
    ports: Vec<u16>,
}

fn iptables(args: &[&str]) -> Option<String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl UdpCounters {
    fn rule(port: u16) -> Vec<String> {
        [
            "OUTPUT",
            "-o",
            "lo",
            "-p",
            "udp",
            "--sport",
            &port.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn install(ports: &[u16]) -> Option<UdpCounters> {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        let mut counters = UdpCounters { ports: Vec::new() };
        for &p in ports {
            let mut args = vec!["-I".to_owned()];
            args.extend(Self::rule(p));
            iptables(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
            counters.ports.push(p);
        }
        Some(counters)
    }

    /// Packets and bytes so far (IP and UDP headers included).
    fn read(&self) -> (u64, u64) {
        let text = iptables(&["-v", "-S", "OUTPUT"]).unwrap_or_default();
        let mut total = (0, 0);
        for p in &self.ports {
            let needle = format!("--sport {p} ");
            for line in text.lines().filter(|l| l.contains(&needle)) {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let Some(i) = words.iter().position(|w| *w == "-c") {
                    total.0 += words.get(i + 1).and_then(|w| w.parse().ok()).unwrap_or(0);
                    total.1 += words.get(i + 2).and_then(|w| w.parse().ok()).unwrap_or(0);
                }
            }
        }
        total
    }
}

impl Drop for UdpCounters {
    fn drop(&mut self) {
        for &p in &self.ports {
            let mut args = vec!["-D".to_owned()];
            args.extend(Self::rule(p));
            iptables(&args.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}

/// The kernel's UDP receive-buffer drops (`RcvbufErrors` in `/proc/net/snmp`, this network
/// namespace): datagrams lost before QUIC saw them, which it then retransmits.
fn udp_rcvbuf_errors() -> u64 {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with("Udp:"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    match rows.as_slice() {
        [names, values, ..] => names
            .iter()
            .position(|n| *n == "RcvbufErrors")
            .and_then(|i| values.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// Sessions a node started with `peer`, from its `/v1/sync`.
fn session_count(sync: &Value, peer: &str) -> u64 {
    sync["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["peer"] == peer))
        .and_then(|p| p["sessions_started"].as_u64())
        .unwrap_or(0)
}

fn transport_sent(node: &Node) -> u64 {
    node.try_json("/v1/status")
        .and_then(|v| v["transport"]["bytes_sent"].as_u64())
        .unwrap_or(0)
}

/// A scratch folder for a scenario's agents; kept (and named) with `LABMESH_BENCH_KEEP=1`.
struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    fn new() -> Scratch {
        Scratch(Some(tempfile::tempdir().unwrap()))
    }
    fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if env_usize("LABMESH_BENCH_KEEP", 0) == 1
            && let Some(dir) = self.0.take()
        {
            eprintln!("kept {}", dir.keep().display());
        }
    }
}

/// Progress on stderr, with the time since the scenario began.
fn phase(started: Instant, what: &str) {
    eprintln!("  [{:6.2} s] {what}", started.elapsed().as_secs_f64());
}

// ---------- 2. the offline laptop ----------

/// Home's events: a homelab's mix (metrics, heartbeats, health checks, backups).
fn home_line(i: usize) -> Value {
    let svc = format!("svc-{:02}", i % 40);
    match i % 10 {
        0..=5 => json!({"type": "metric_sample", "source": "node-exporter", "service": svc,
            "payload": {"cpu_pct": (i * 7 % 1000) as f64 / 10.0, "mem_mb": 1000 + i % 7000, "disk_pct": i % 100}}),
        6 | 7 => {
            json!({"type": "heartbeat", "source": "labmesh", "payload": {"load": (i % 400) as f64 / 100.0}})
        }
        8 => json!({"type": "healthcheck_passed", "source": "healthcheck.sh", "service": svc,
            "payload": {"latency_ms": i % 250}}),
        _ => json!({"type": "backup_completed", "source": "restic", "service": svc,
            "correlation_id": format!("backup-{i}"), "payload": {"bytes": i * 4096, "duration_s": i % 600}}),
    }
}

fn laptop_line(i: usize) -> Value {
    json!({"type": "build_completed", "source": "make", "service": "editor",
        "correlation_id": format!("build-{i}"), "payload": {"target": "release", "duration_s": i % 90}})
}

struct Convergence {
    home_events: usize,
    laptop_events: usize,
    local_write: Duration,
    home_start: Duration,
    laptop_up: Duration,
    first_received: Option<Duration>,
    converged: Duration,
    moved_files: u64,
    raw_bytes: u64,
    app_bytes: u64,
    udp: Option<(u64, u64)>,
    trailing_app_bytes: u64,
    counted_event_bytes: u64,
    rcvbuf_drops: u64,
    /// Sessions started by home, by the laptop.
    sessions: (u64, u64),
    /// Events both agents received (pushes and session batches, duplicates included).
    received: u64,
}

fn convergence(home_events: usize, laptop_events: usize) -> Convergence {
    let begun = Instant::now();
    let dir = Scratch::new();
    let mut home = Node::new(dir.path(), "home");
    let mut laptop = Node::new(dir.path(), "laptop");
    home.start(&[]);
    let bundle = issue(&home, dir.path(), "laptop");
    let b = bundle.display().to_string();
    let seed = home.gossip.clone();
    laptop.start(&["--join", &b, "--seed", &seed, "--transient"]);
    wait_until("home and laptop meet", Duration::from_secs(30), || {
        alive_peers(&home) == 2 && alive_peers(&laptop) == 2
    });
    wait_until("home and laptop agree", Duration::from_secs(30), || {
        fingerprint(&home).is_some_and(|f| Some(f) == fingerprint(&laptop))
    });
    laptop.stop();
    home.stop();
    phase(begun, "mesh of home and laptop formed and stopped");

    // While both are down: home gets the events the laptop will miss, the laptop its own.
    let lines: Vec<Value> = (0..home_events).map(home_line).collect();
    let local_write = emit_jsonl(&home, &lines, 1000);
    drop(lines);
    let lines: Vec<Value> = (0..laptop_events).map(laptop_line).collect();
    emit_jsonl(&laptop, &lines, 1000);
    let home_before = event_files(&home.data);
    let laptop_before = event_files(&laptop.data);
    phase(begun, "events written");

    let started = Instant::now();
    home.start(&[]);
    let home_start = started.elapsed();
    let counters = UdpCounters::install(&[home.port(), laptop.port()]);
    let udp_before = counters.as_ref().map(UdpCounters::read);
    let home_sent_before = transport_sent(&home);
    let drops_before = udp_rcvbuf_errors();
    let laptop_count_before = laptop_before.len() as u64;

    phase(begun, "home started; starting the laptop");
    let t0 = Instant::now();
    laptop.start(&["--seed", &seed, "--transient"]);
    let laptop_up = t0.elapsed();
    let mut first_received = None;
    let deadline = Duration::from_secs(300);
    let mut next_progress = Duration::from_secs(1);
    let converged = loop {
        let (h, l) = (home.try_json("/v1/sync"), laptop.try_json("/v1/sync"));
        if let (Some(h), Some(l)) = (h, l) {
            if first_received.is_none() && l["events"].as_u64().unwrap_or(0) > laptop_count_before {
                first_received = Some(t0.elapsed());
            }
            if t0.elapsed() >= next_progress {
                next_progress += Duration::from_secs(1);
                phase(
                    t0,
                    &format!(
                        "laptop holds {} events, home {}; sessions started by home {}, by the laptop {}",
                        l["events"],
                        h["events"],
                        session_count(&h, "laptop"),
                        session_count(&l, "home")
                    ),
                );
            }
            if h["fingerprint"] == l["fingerprint"] && h["fingerprint"].is_string() {
                break t0.elapsed();
            }
        }
        assert!(
            t0.elapsed() < deadline,
            "no convergence in {deadline:?}; home log:\n{}",
            home.agent().log_text()
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    let app_bytes = transport_sent(&home) - home_sent_before + transport_sent(&laptop);
    let rcvbuf_drops = udp_rcvbuf_errors() - drops_before;
    phase(begun, "converged");
    let udp = counters.as_ref().zip(udp_before).map(|(c, (p0, b0))| {
        let (p, b) = c.read();
        (p - p0, b - b0)
    });
    let sessions = (
        home.try_json("/v1/sync")
            .map_or(0, |v| session_count(&v, "laptop")),
        laptop
            .try_json("/v1/sync")
            .map_or(0, |v| session_count(&v, "home")),
    );
    let received: u64 = [&home, &laptop]
        .iter()
        .filter_map(|n| n.try_json("/v1/sync"))
        .flat_map(|v| v["peers"].as_array().cloned().unwrap_or_default())
        .map(|p| p["events_received"].as_u64().unwrap_or(0))
        .sum();
    let counted_event_bytes: u64 = [&home, &laptop]
        .iter()
        .filter_map(|n| n.try_json("/v1/sync"))
        .flat_map(|v| v["peers"].as_array().cloned().unwrap_or_default())
        .map(|p| p["bytes_sent"].as_u64().unwrap_or(0))
        .sum();
    // What still crossed in the 2 s after convergence (sessions still running, retries).
    std::thread::sleep(Duration::from_secs(2));
    let trailing_app_bytes =
        transport_sent(&home) - home_sent_before + transport_sent(&laptop) - app_bytes;
    let (n1, b1) = arrived(&laptop_before, &event_files(&laptop.data), "laptop");
    let (n2, b2) = arrived(&home_before, &event_files(&home.data), "home");
    drop(counters);
    Convergence {
        home_events,
        laptop_events,
        local_write,
        home_start,
        laptop_up,
        first_received,
        converged,
        moved_files: n1 + n2,
        raw_bytes: b1 + b2,
        app_bytes,
        udp,
        trailing_app_bytes,
        counted_event_bytes,
        rcvbuf_drops,
        sessions,
        received,
    }
}

// ---------- 3. visibility in a mesh ----------

struct Visibility {
    peers: usize,
    local: Vec<f64>,
    /// Per event, the slowest of the other peers.
    everywhere: Vec<f64>,
    /// Every (event, other peer) sample.
    each: Vec<f64>,
    emit: Vec<f64>,
}

fn visibility(peers: usize, events: usize) -> Visibility {
    let begun = Instant::now();
    let dir = Scratch::new();
    let mut nodes: Vec<Node> = (0..peers)
        .map(|i| Node::new(dir.path(), &format!("n{i}")))
        .collect();
    nodes[0].start(&[]);
    let seed = nodes[0].gossip.clone();
    for i in 1..peers {
        let bundle = issue(&nodes[0], dir.path(), &nodes[i].name);
        let b = bundle.display().to_string();
        nodes[i].start(&["--join", &b, "--seed", &seed]);
    }
    phase(begun, &format!("{peers} agents started"));
    wait_until(
        &format!("{peers} peers see each other"),
        Duration::from_secs(90),
        || nodes.iter().all(|n| alive_peers(n) == peers),
    );
    wait_until(
        "the peers hold the same events",
        Duration::from_secs(90),
        || {
            let first = fingerprint(&nodes[0]);
            first.is_some() && nodes.iter().all(|n| fingerprint(n) == first)
        },
    );
    phase(begun, "mesh formed, events agree");
    std::thread::sleep(Duration::from_secs(2));

    let mut v = Visibility {
        peers,
        local: Vec::new(),
        everywhere: Vec::new(),
        each: Vec::new(),
        emit: Vec::new(),
    };
    for i in 0..events {
        let service = format!("bench-{i:03}");
        let key = format!("{}/{service}", nodes[0].name);
        let t0 = Instant::now();
        let out = run(labmesh(&nodes[0].data).args([
            "--name",
            &nodes[0].name,
            "emit",
            "--type",
            "service_unhealthy",
            "--severity",
            "error",
            "--source",
            "bench",
            "--service",
            &service,
        ]));
        assert!(out.status.success(), "emit: {}", stderr(&out));
        v.emit.push(t0.elapsed().as_secs_f64());
        let times: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = nodes
                .iter()
                .map(|n| {
                    let (api, key) = (n.agent().api, &key);
                    s.spawn(move || {
                        loop {
                            if let Ok((200, body)) = http(api, "GET", "/v1/services", None)
                                && serde_json::from_str::<Value>(&body)
                                    .is_ok_and(|v| v.get(key).is_some())
                            {
                                return t0.elapsed().as_secs_f64();
                            }
                            assert!(
                                t0.elapsed() < Duration::from_secs(60),
                                "{key} not visible at {api} in 60 s"
                            );
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        v.local.push(times[0]);
        v.everywhere
            .push(times[1..].iter().copied().fold(0.0, f64::max));
        v.each.extend_from_slice(&times[1..]);
        // A random pause, so emits do not line up with the agents' ticks.
        std::thread::sleep(Duration::from_millis(100 + rand::random::<u64>() % 400));
    }
    phase(begun, "events measured");
    for list in [&mut v.local, &mut v.everywhere, &mut v.each, &mut v.emit] {
        list.sort_by(f64::total_cmp);
    }
    v
}

// ---------- 4. the world benchmark ----------

fn world_bench() -> Option<String> {
    if env_usize("LABMESH_BENCH_WORLD", 1) == 0 {
        return None;
    }
    let out = cargo()
        .args(["bench", "-p", "sync", "--bench", "world"])
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo bench -p sync --bench world");
    assert!(out.status.success(), "the world benchmark failed");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `/proc/loadavg`'s three averages: other work on the machine skews every figure here.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let home_events = env_usize("LABMESH_BENCH_EVENTS", 100_000);
    let laptop_events = env_usize("LABMESH_BENCH_LAPTOP_EVENTS", 1_000);
    let identical = env_usize("LABMESH_BENCH_IDENTICAL", 100_000);
    let peers = env_usize("LABMESH_BENCH_PEERS", 10).max(2);
    let vis_events = env_usize("LABMESH_BENCH_VISIBILITY_EVENTS", 50).max(1);
    let only = std::env::var("LABMESH_BENCH_ONLY").unwrap_or_default();
    let want = |part: &str| only.is_empty() || only.split(',').any(|o| o.trim() == part);
    build_agent();
    let whole = Instant::now();
    println!("== sync: identical sets, convergence and wire bytes, visibility, world ==");
    println!("load average at start: {}", load_average());
    if want("identical") {
        report_identical(identical);
    }
    if want("convergence") {
        report_convergence(home_events, laptop_events);
    }
    if want("visibility") {
        report_visibility(peers, vis_events);
    }
    println!();
    println!(
        "agent scenarios took {:.0} s; load average now: {}",
        whole.elapsed().as_secs_f64(),
        load_average()
    );
    if want("world")
        && let Some(out) = world_bench()
    {
        println!();
        println!("world (cargo bench -p sync --bench world):");
        for line in out.lines() {
            println!("  {line}");
        }
    }
}

fn report_identical(identical: usize) {
    let id = identical_sets(identical);
    let naive = id.items * 40;
    println!();
    println!("identical sets, {} events each (in process):", id.items);
    println!(
        "  {} B in {} messages, {:.0} ms of CPU; goal <= 512 B {} ({:.2}x of the goal)",
        id.bytes,
        id.messages,
        id.took.as_secs_f64() * 1e3,
        verdict(id.bytes <= 512),
        id.bytes as f64 / 512.0
    );
    println!(
        "  baseline, every (timestamp, hash) sent: {naive} B; ratio {:.6}x",
        id.bytes as f64 / naive as f64
    );
}

fn report_convergence(home_events: usize, laptop_events: usize) {
    let c = convergence(home_events, laptop_events);
    let conv = c.converged.as_secs_f64();
    let overhead = |wire: u64| (wire as f64 - c.raw_bytes as f64) / c.raw_bytes as f64 * 100.0;
    println!();
    println!(
        "offline laptop: missing {} home events, holding {} new ones (2 agents, loopback):",
        c.home_events, c.laptop_events
    );
    println!(
        "  converged both ways {conv:.2} s after the laptop's agent was spawned; goal <= 3 s {} ({:.2}x of the goal)",
        verdict(conv <= 3.0),
        conv / 3.0
    );
    println!(
        "  baseline, writing home's events locally (emit --from-jsonl, 1000 per commit): {:.2} s; ratio {:.2}x",
        c.local_write.as_secs_f64(),
        conv / c.local_write.as_secs_f64()
    );
    println!(
        "  laptop API up {:.2} s; first event received {}; home's own start with its store {:.2} s (not counted)",
        c.laptop_up.as_secs_f64(),
        c.first_received
            .map_or("never".into(), |t| format!("{:.2} s", t.as_secs_f64())),
        c.home_start.as_secs_f64()
    );
    println!(
        "  reconciliation sessions started: {} by home, {} by the laptop",
        c.sessions.0, c.sessions.1
    );
    println!(
        "  raw event files moved: {} files, {} B (mean {} B); events received {} ({} more than moved)",
        c.moved_files,
        c.raw_bytes,
        c.raw_bytes / c.moved_files.max(1),
        c.received,
        c.received.saturating_sub(c.moved_files)
    );
    println!(
        "  messages sent by both agents (QUIC stream payload, gossip included): {} B, overhead {:+.2} %; goal <= 5 % {}",
        c.app_bytes,
        overhead(c.app_bytes),
        verdict(overhead(c.app_bytes) <= 5.0)
    );
    match c.udp {
        Some((packets, bytes)) => println!(
            "  UDP on lo (iptables; IP+UDP headers, QUIC packets, acks, handshakes): {bytes} B in {packets} datagrams, overhead {:+.2} %; goal <= 5 % {}",
            overhead(bytes),
            verdict(overhead(bytes) <= 5.0)
        ),
        None => println!("  UDP on lo: not measured (needs root and iptables)"),
    }
    println!(
        "  UDP datagrams the kernel dropped for a full receive buffer meanwhile: {}",
        c.rcvbuf_drops
    );
    println!(
        "  sync counters of /v1/sync (event bytes the cores handed out): {} B; sent in the 2 s after convergence: {} B",
        c.counted_event_bytes, c.trailing_app_bytes
    );
}

fn report_visibility(peers: usize, vis_events: usize) {
    let v = visibility(peers, vis_events);
    let (p50, p99) = (
        percentile(&v.everywhere, 0.5),
        percentile(&v.everywhere, 0.99),
    );
    println!();
    println!(
        "visibility: {} events emitted one at a time on one of {} peers, until /v1/services shows it:",
        v.everywhere.len(),
        v.peers
    );
    println!(
        "  on every other peer: p50 {p50:.3} s  p99 {p99:.3} s  max {:.3} s; goal p99 <= 1 s {} ({:.2}x of the goal)",
        v.everywhere[v.everywhere.len() - 1],
        verdict(p99 <= 1.0),
        p99
    );
    println!(
        "  each (event, peer) pair, {} samples: p50 {:.3} s  p99 {:.3} s",
        v.each.len(),
        percentile(&v.each, 0.5),
        percentile(&v.each, 0.99)
    );
    let lp50 = percentile(&v.local, 0.5);
    println!(
        "  baseline, the emitting node's own world: p50 {lp50:.3} s  p99 {:.3} s; ratio p50 {:.2}x",
        percentile(&v.local, 0.99),
        p50 / lp50
    );
    println!(
        "  (the `labmesh emit` process itself: p50 {:.1} ms)",
        percentile(&v.emit, 0.5) * 1e3
    );
}
