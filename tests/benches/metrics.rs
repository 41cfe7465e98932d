//! The metrics benchmark (issue 5): run with
//!
//! ```sh
//! cargo build --release -p labmesh && cargo bench -p labmesh-tests --bench metrics
//! ```
//!
//! (a) `/metrics` latency, p50/p99 over `LABMESH_BENCH_REQUESTS` (default 500) sequential
//!     scrapes, each on a new connection like a scraper's, of an agent with 50 nodes' worth of
//!     mesh series (`LABMESH_BENCH_FAKE_PEERS=50`, a test-only switch of the agent). Goal: p99 ≤
//!     10 ms; the seed checklist's goal was 100 ms.
//! (b) CPU and RSS of the agents of an idle 5-node mesh on loopback (probes on, default
//!     intervals) over `LABMESH_BENCH_SECS` (default 60), from `/proc/<pid>/stat` and `status`,
//!     beside a `prometheus-node-exporter` (default collectors) in the same run. Every agent and
//!     the exporter are scraped every `LABMESH_BENCH_SCRAPE_SECS` (default 15, Prometheus's usual
//!     interval) so both do what they do in production. Goals: ≤ 0.5 % of a core, ≤ 25 MB RSS,
//!     CPU ≤ 2 × the exporter's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use labmesh_tests::{
    Agent, env_num, free_port, free_udp_port, http, labmesh, run, stderr, wait_until,
};

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn build_note() -> &'static str {
    if cfg!(debug_assertions) {
        "✘ (debug build: run with cargo bench)"
    } else {
        ""
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "✔" } else { "✘" }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces: fields count from after its closing parenthesis.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn latency() {
    let requests = env_num("LABMESH_BENCH_REQUESTS", 500) as usize;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start_with(&dir.path().join("alpha"), &["--name", "alpha"], |cmd| {
        cmd.env("LABMESH_BENCH_FAKE_PEERS", "50");
    });
    let mut body = String::new();
    wait_until("a first host sample", Duration::from_secs(15), || {
        body = agent.get("/metrics").1;
        body.lines().any(|l| l == "labmesh_probes_sampled 1.0")
    });
    let series = body.lines().filter(|l| !l.starts_with('#')).count();
    for _ in 0..20 {
        agent.get("/metrics");
    }
    let mut ms = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        let (status, _) = http(agent.api, "GET", "/metrics", None).unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200);
    }
    ms.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms[ms.len() - 1],
    );
    println!(
        "(a) /metrics with 50 fake peers + self: {series} series, {} bytes",
        body.len()
    );
    println!(
        "    {requests} requests: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms {}",
        build_note()
    );
    println!(
        "    goal p99 ≤ 10 ms: {}; baseline (seed goal) 100 ms: p99 is {:.0}× under it",
        mark(p99 <= 10.0),
        100.0 / p99
    );
}

struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn idle_mesh() {
    let secs = env_num("LABMESH_BENCH_SECS", 60);
    let scrape_every = Duration::from_secs(env_num("LABMESH_BENCH_SCRAPE_SECS", 15).max(1));
    let dir = tempfile::tempdir().unwrap();
    let names = ["alpha", "bravo", "charlie", "delta", "echo"];
    let seed = format!("127.0.0.1:{}", free_udp_port());
    let alpha_data = dir.path().join("alpha");
    let mut agents = vec![Agent::start(
        &alpha_data,
        &["--name", "alpha", "--gossip-addr", &seed],
    )];
    for name in &names[1..] {
        let bundle = dir.path().join(format!("{name}.bundle.json"));
        let out = run(labmesh(&alpha_data)
            .args(["--name", "alpha", "certs", "issue", name, "--out"])
            .arg(&bundle));
        assert!(out.status.success(), "{}", stderr(&out));
        let bundle = bundle.display().to_string();
        agents.push(Agent::start(
            &dir.path().join(name),
            &["--name", name, "--join", &bundle, "--seed", &seed],
        ));
    }
    wait_until("all five nodes alive", Duration::from_secs(60), || {
        agents.iter().all(|a| {
            let nodes = a.get_json("/v1/nodes");
            nodes
                .as_array()
                .is_some_and(|n| n.len() == 5 && n.iter().all(|n| n["liveness"] == "alive"))
        })
    });
    let ne_port = free_port();
    let ne = Exporter(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{ne_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter (Debian package of that name)"),
    );
    let ne_addr: std::net::SocketAddr = format!("127.0.0.1:{ne_port}").parse().unwrap();
    wait_until("node_exporter to answer", Duration::from_secs(10), || {
        http(ne_addr, "GET", "/metrics", None).is_ok_and(|(s, _)| s == 200)
    });
    // Settle: the join's burst of gossip and sync is not the idle cost.
    std::thread::sleep(Duration::from_secs(5));
    let pids: Vec<u32> = agents
        .iter()
        .map(|a| a.child.as_ref().unwrap().id())
        .collect();
    let ne_pid = ne.0.id();
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let ne_before = cpu_ticks(ne_pid);
    let mut rss_max = vec![0u64; pids.len()];
    let mut ne_rss_max = 0u64;
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut next_scrape = start;
    while Instant::now() < end {
        if Instant::now() >= next_scrape {
            for a in &agents {
                a.get("/metrics");
            }
            let _ = http(ne_addr, "GET", "/metrics", None);
            next_scrape += scrape_every;
        }
        for (m, p) in rss_max.iter_mut().zip(&pids) {
            *m = (*m).max(rss_kib(*p));
        }
        ne_rss_max = ne_rss_max.max(rss_kib(ne_pid));
        std::thread::sleep(
            Duration::from_millis(500).min(end.saturating_duration_since(Instant::now())),
        );
    }
    let elapsed = start.elapsed().as_secs_f64();
    let hz: f64 = sh("getconf CLK_TCK").parse().unwrap_or(100.0);
    let pct = |t0: u64, t1: u64| (t1 - t0) as f64 / hz / elapsed * 100.0;
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| pct(*b, cpu_ticks(*p)))
        .collect();
    let ne_cpu = pct(ne_before, cpu_ticks(ne_pid));
    let mean = cpu.iter().sum::<f64>() / cpu.len() as f64;
    let worst = cpu.iter().copied().fold(0.0, f64::max);
    let rss_worst = rss_max.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
    println!(
        "(b) idle 5-node mesh on loopback, {elapsed:.0} s, scraped every {} s {}",
        scrape_every.as_secs(),
        build_note()
    );
    for ((n, c), r) in names.iter().zip(&cpu).zip(&rss_max) {
        println!(
            "    {n:8} CPU {c:.3} % of a core, RSS max {:.1} MB",
            *r as f64 / 1024.0
        );
    }
    println!(
        "    node_exporter CPU {ne_cpu:.3} % of a core, RSS max {:.1} MB",
        ne_rss_max as f64 / 1024.0
    );
    println!(
        "    goal CPU ≤ 0.5 % (mean {mean:.3} %, worst {worst:.3} %): {}",
        mark(worst <= 0.5)
    );
    println!(
        "    goal RSS ≤ 25 MB (worst {rss_worst:.1} MB): {}",
        mark(rss_worst <= 25.0)
    );
    println!(
        "    goal CPU ≤ 2 × node_exporter ({:.2}×): {}",
        mean / ne_cpu.max(f64::MIN_POSITIVE),
        mark(mean <= 2.0 * ne_cpu)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects one part.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |part: &str| filter.is_empty() || filter.iter().any(|f| part.contains(f.as_str()));
    println!(
        "machine: {} CPUs, {}, kernel {}, {}",
        sh("nproc"),
        sh("awk '/MemTotal/ {printf \"%.1f GiB RAM\", $2/1048576}' /proc/meminfo"),
        sh("uname -r"),
        sh("date -u +%Y-%m-%dT%H:%MZ")
    );
    if want("latency") {
        latency();
    }
    if want("idle") {
        idle_mesh();
    }
}
