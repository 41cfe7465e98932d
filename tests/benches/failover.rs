//! The failover benchmark (issue 6): run with
//!
//! ```sh
//! cargo build --release -p labmesh && cargo bench -p labmesh-tests --bench failover
//! ```
//!
//! Each of `LABMESH_BENCH_TRIALS` trials (default 10) starts a fresh mesh of three agents on
//! loopback (alpha, bravo, charlie by falling `alerter_priority`; gossip every 100 ms,
//! `--offline-after 3s`, chitchat's phi threshold as shipped; the `[alerting]` settle as shipped,
//! 10 s), raises a `build_failed` alert, and SIGKILLs the alerter (alpha) while the alert waits
//! in its group_wait. The kill comes `LABMESH_BENCH_MARGIN_MS` (default 300) before the
//! group_wait ends as the survivors count it, so what is measured is detection, election and
//! the send, not the wait. Figures per trial, from the kill:
//!
//! - detection: until bravo's `/v1/nodes` no longer shows alpha alive or suspect;
//! - failover: until the notification reaches a local webhook receiver;
//! - duplicates: copies of that notification beyond the first, counted past group_interval.
//!
//! Goal: failover p50 ≤ detection p50 + 2 s, with no duplicates.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labmesh_tests::receiver::read_request;
use labmesh_tests::{Agent, env_num, labmesh, run, stderr, wait_until};
use serde_json::Value;

const GROUP_WAIT: Duration = Duration::from_secs(8);
const GROUP_INTERVAL: Duration = Duration::from_secs(2);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn mark(ok: bool) -> &'static str {
    if ok { "✔" } else { "✘" }
}

/// Request bodies with the instant each arrived.
type Arrivals = Arc<Mutex<Vec<(Instant, String)>>>;

fn timed_receiver() -> (SocketAddr, Arrivals) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arrivals = Arc::default();
    let out = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if let Some((_, body)) = read_request(&mut stream) {
                out.lock().unwrap().push((Instant::now(), body));
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (addr, seen)
}

/// Arrival instants and senders of firing notifications about `build_failed`.
fn firing(seen: &Arrivals) -> Vec<(Instant, String)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|(t, b)| Some((*t, serde_json::from_str::<Value>(b).ok()?)))
        .filter(|(_, b)| {
            b["status"] == "firing"
                && b["alerts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["rule"] == "build_failed"))
        })
        .map(|(t, b)| (t, b["sender"].as_str().unwrap_or("?").to_owned()))
        .collect()
}

/// Starts `name`; joins alpha's mesh through `seed` when given.
fn node(
    dir: &Path,
    name: &str,
    priority: &str,
    config: &Path,
    seed: Option<&str>,
) -> (Agent, String) {
    let alpha = dir.join("alpha");
    let ca = seed.map(|s| (alpha.as_path(), "alpha", s));
    let (agent, _, gossip) = labmesh_tests::mesh_node(dir, name, priority, config, ca);
    (agent, gossip)
}

struct Trial {
    detection: f64,
    failover: f64,
    /// group_wait left at the kill, as bravo counts it (approximately: from bravo's first sight).
    wait_left: f64,
    duplicates: usize,
    sender: String,
}

/// One trial, or `None` when alpha sent before it was killed (the trial is then repeated).
fn trial(n: usize, margin: Duration) -> Option<Trial> {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, seen) = timed_receiver();
    let config = dir.path().join("labmesh.toml");
    std::fs::write(
        &config,
        format!(
            "[alerting]\ngroup_wait = \"{}s\"\ngroup_interval = \"{}s\"\nrepeat_interval = \"1h\"\n\n\
             [[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{receiver}/hook\"\n",
            GROUP_WAIT.as_secs(),
            GROUP_INTERVAL.as_secs()
        ),
    )
    .unwrap();
    let (mut alpha, seed) = node(dir.path(), "alpha", "10", &config, None);
    let (bravo, _) = node(dir.path(), "bravo", "5", &config, Some(&seed));
    let (charlie, _) = node(dir.path(), "charlie", "0", &config, Some(&seed));
    let timeout = Duration::from_secs(90);
    for agent in [&alpha, &bravo, &charlie] {
        wait_until("alpha elected everywhere", timeout, || {
            let s = agent.get_json("/v1/status");
            s["alerter"] == "alpha" && s["nodes"].as_array().is_some_and(|n| n.len() == 3)
        });
    }
    let out = run(labmesh(&dir.path().join("charlie")).args([
        "--name",
        "charlie",
        "emit",
        "--type",
        "build_failed",
        "--source",
        &format!("bench-{n}.sh"),
        "--severity",
        "error",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("bravo sees the alert", timeout, || {
        bravo.get_json("/v1/alerts")["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["rule"] == "build_failed"))
    });
    let due = Instant::now() + GROUP_WAIT;
    std::thread::sleep(GROUP_WAIT.saturating_sub(margin));
    if !firing(&seen).is_empty() {
        return None;
    }
    let killed = Instant::now();
    alpha.stop_with(rustix::process::Signal::KILL);
    let mut detected = None;
    wait_until("bravo detects and sends", timeout, || {
        if detected.is_none() {
            let nodes = bravo.get_json("/v1/nodes");
            let up = nodes.as_array().is_some_and(|n| {
                n.iter().any(|n| {
                    n["node"] == "alpha"
                        && matches!(n["liveness"].as_str(), Some("alive" | "suspect"))
                })
            });
            if !up {
                detected = Some(Instant::now());
            }
        }
        detected.is_some() && !firing(&seen).is_empty()
    });
    // Past group_interval: a second copy would be here.
    std::thread::sleep(GROUP_INTERVAL * 2 + Duration::from_secs(1));
    let sent = firing(&seen);
    let (arrived, sender) = sent[0].clone();
    Some(Trial {
        detection: detected.unwrap().duration_since(killed).as_secs_f64(),
        failover: arrived.duration_since(killed).as_secs_f64(),
        wait_left: due.saturating_duration_since(killed).as_secs_f64(),
        duplicates: sent.len() - 1,
        sender,
    })
}

fn main() {
    let trials = env_num("LABMESH_BENCH_TRIALS", 10).max(1) as usize;
    let margin = Duration::from_millis(env_num("LABMESH_BENCH_MARGIN_MS", 300));
    let build = if cfg!(debug_assertions) {
        " (debug build: run with cargo bench for figures)"
    } else {
        ""
    };
    println!(
        "failover: {trials} trials, 3 agents, gossip 100 ms, offline-after 3 s, settle as shipped, \
         group_wait {} s (kill {} ms before it ends), group_interval {} s{build}",
        GROUP_WAIT.as_secs(),
        margin.as_millis(),
        GROUP_INTERVAL.as_secs()
    );
    let mut done = Vec::new();
    let mut early = 0;
    while done.len() < trials {
        match trial(done.len(), margin) {
            Some(t) => {
                println!(
                    "  trial {:2}: detection {:.3} s, failover {:.3} s, group_wait left at the kill {:.3} s, \
                     sent by {}, duplicates {}",
                    done.len() + 1,
                    t.detection,
                    t.failover,
                    t.wait_left,
                    t.sender,
                    t.duplicates
                );
                done.push(t);
            }
            None => {
                early += 1;
                println!("  (alpha sent before the kill; trial repeated)");
                assert!(early <= trials, "alpha keeps sending before the kill");
            }
        }
    }
    let mut failover: Vec<f64> = done.iter().map(|t| t.failover).collect();
    let mut detection: Vec<f64> = done.iter().map(|t| t.detection).collect();
    failover.sort_by(f64::total_cmp);
    detection.sort_by(f64::total_cmp);
    let dupes: usize = done.iter().map(|t| t.duplicates).sum();
    let wrong_sender = done.iter().filter(|t| t.sender != "bravo").count();
    let d50 = percentile(&detection, 0.5);
    let goal = d50 + 2.0;
    let p50 = percentile(&failover, 0.5);
    println!(
        "detection (kill → bravo marks alpha dead): p50 {d50:.3} s, p90 {:.3} s, max {:.3} s",
        percentile(&detection, 0.9),
        detection[detection.len() - 1]
    );
    println!(
        "failover (kill → notification at the receiver): p50 {p50:.3} s, p90 {:.3} s, max {:.3} s",
        percentile(&failover, 0.9),
        failover[failover.len() - 1]
    );
    println!(
        "failover beyond detection (p50 of the differences): {:.3} s",
        {
            let mut d: Vec<f64> = done.iter().map(|t| t.failover - t.detection).collect();
            d.sort_by(f64::total_cmp);
            percentile(&d, 0.5)
        }
    );
    println!(
        "goal p50 ≤ detection p50 + 2 s = {goal:.3} s: ratio {:.2} {}",
        p50 / goal,
        mark(p50 <= goal)
    );
    println!(
        "duplicates: {dupes} in {trials} trials {}; sent by another node than bravo: {wrong_sender}",
        mark(dupes == 0)
    );
}
