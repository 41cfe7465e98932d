//! Fault injection across real hosts: `labmesh agent` processes in network namespaces, with nft
//! loss and cuts and a userspace UDP delay proxy (this kernel has no netem), checking the
//! simulation's invariants through each agent's HTTP API:
//! - no reachable peer is declared dead at 5 % loss,
//! - at most one alerter per connected component once the view is stable,
//! - after heal: equal event sets (sync fingerprints, counts), equal world hashes, one alerter,
//!   and every event `labmesh emit` acknowledged present on every node.
//!
//! The figures (time to detect a cut, time to converge after heal) go to stderr; run with
//! `--nocapture` to see them. Needs root (CI runs as root); skipped with a message otherwise,
//! except the proxy's own test, which runs on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labmesh_tests::delay_proxy::{DelayConfig, DelayProxy};
use labmesh_tests::faults_net::{GOSSIP_PORT, NetFaults, in_netns, udp_echo};
use labmesh_tests::netns::{Hosts, liveness};
use labmesh_tests::{Agent, http, issue_bundle, labmesh, wait_until};
use serde_json::{Value, json};

/// `Hosts` names its namespaces after the process id: nextest gives each test a process, but
/// `cargo test` runs this file's tests as threads of one, where they would share names.
fn hosts_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The delay proxy on its own (loopback, no root).

/// A UDP echo server on loopback, answering until `stop` is set.
fn loopback_echo(stop: Arc<AtomicBool>) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    });
    (addr, t)
}

/// A datagram of `len` bytes that says which one it is and whose bytes can be checked.
fn pattern(seq: u32, len: usize) -> Vec<u8> {
    let mut v = seq.to_be_bytes().to_vec();
    v.extend(
        (0..len.saturating_sub(4)).map(|i| (i as u32).wrapping_mul(31).wrapping_add(seq) as u8),
    );
    v
}

#[test]
fn the_delay_proxy_delays_each_way_and_delivers_datagrams_intact() {
    let stop = Arc::new(AtomicBool::new(false));
    let (echo, echo_thread) = loopback_echo(stop.clone());
    let cfg = DelayConfig::new(Duration::from_millis(40), Duration::from_millis(10));
    let proxy = DelayProxy::start("127.0.0.1:0".parse().unwrap(), echo, cfg).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rtts = Vec::new();
    let mut buf = vec![0u8; 65_536];
    // Sizes from an empty-ish datagram to one far over the MTU (loopback carries it whole).
    for (seq, len) in [4usize, 100, 1200, 1472, 9000, 60_000]
        .iter()
        .cycle()
        .take(30)
        .enumerate()
    {
        let sent = pattern(seq as u32, *len);
        let t = Instant::now();
        client.send_to(&sent, proxy.addr()).unwrap();
        let (n, from) = client
            .recv_from(&mut buf)
            .expect("an echo through the proxy");
        rtts.push(t.elapsed());
        assert_eq!(
            from,
            proxy.addr(),
            "answers come from the address the client sent to"
        );
        assert_eq!(
            &buf[..n],
            &sent[..],
            "datagram {seq} ({len} bytes) changed on the way"
        );
    }
    rtts.sort();
    let min = rtts[0];
    eprintln!(
        "delay proxy 40±10 ms each way: round trip min {:?}, p50 {:?}, max {:?}",
        min,
        rtts[rtts.len() / 2],
        rtts[rtts.len() - 1]
    );
    // Both directions wait at least delay - jitter: a lower bound, which load cannot break.
    assert!(min >= Duration::from_millis(60), "round trip {min:?}");
    assert_eq!(proxy.forwarded(), 60);
    assert_eq!(proxy.dropped(), 0);

    // Loss, both ways: about (1 - 0.3)² of the round trips survive.
    let lossy = DelayProxy::start(
        "127.0.0.1:0".parse().unwrap(),
        echo,
        DelayConfig::new(Duration::from_millis(1), Duration::ZERO).with_loss(30),
    )
    .unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let total = 400u32;
    for seq in 0..total {
        client.send_to(&pattern(seq, 64), lossy.addr()).unwrap();
        // Paced, so no socket buffer on the way overflows: only the proxy may lose datagrams.
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut back = BTreeSet::new();
    while let Ok((n, _)) = client.recv_from(&mut buf) {
        assert_eq!(n, 64);
        back.insert(u32::from_be_bytes(buf[..4].try_into().unwrap()));
    }
    let got = back.len() as u32;
    eprintln!(
        "delay proxy at 30 % loss each way: {got}/{total} round trips, {} datagrams dropped",
        lossy.dropped()
    );
    assert!(
        (total * 30 / 100..=total * 70 / 100).contains(&got),
        "{got}/{total} came back"
    );
    assert!(lossy.dropped() > 0);
    drop((proxy, lossy));
    stop.store(true, Ordering::Relaxed);
    echo_thread.join().unwrap();
}

// ---------------------------------------------------------------------------------------------
// nft faults between namespaces, probed with UDP echoes (no agents).

/// Sends `count` datagrams from host namespace `ns` to `to` and counts the echoes; returns the
/// count, the smallest round trip and whether every echo came from `to` itself.
fn probe(ns: &str, to: SocketAddr, count: u32) -> (u32, Duration, bool) {
    in_netns(ns, move || {
        // A fixed port: every probe from a host is the same flow, as an agent's gossip is, so
        // a fault removed while its flow is still in conntrack is tested too.
        let sock = UdpSocket::bind("0.0.0.0:7399").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        let (mut got, mut min, mut from_peer) = (0, Duration::MAX, true);
        let mut buf = [0u8; 64];
        for seq in 0..count {
            let t = Instant::now();
            if sock.send_to(&pattern(seq, 32), to).is_err() {
                continue;
            }
            // Skip late echoes of earlier probes.
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                if n == 32 && buf[..4] == seq.to_be_bytes() {
                    got += 1;
                    min = min.min(t.elapsed());
                    from_peer &= from == to;
                    break;
                }
            }
        }
        (got, min, from_peer)
    })
}

fn gossip_addr(hosts: &Hosts, i: usize) -> SocketAddr {
    format!("{}:{GOSSIP_PORT}", hosts.ip(i)).parse().unwrap()
}

fn rule_count(ns: &str) -> usize {
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "list", "table", "inet", "lmchaos",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" drop") || l.contains("dnat") || l.contains(" accept"))
        .filter(|l| !l.contains("policy"))
        .count()
}

#[test]
fn nft_loss_cuts_and_a_delayed_link_apply_and_go_away_with_their_guards() {
    if !labmesh_tests::netns::can_run() {
        return;
    }
    let _one_at_a_time = hosts_lock();
    let hosts = Hosts::create(3);
    let faults = NetFaults::new(&hosts);
    let _echo0 = udp_echo(&hosts.names[0], gossip_addr(&hosts, 0));
    let _echo1 = udp_echo(&hosts.names[1], gossip_addr(&hosts, 1));
    let _echo2 = udp_echo(&hosts.names[2], gossip_addr(&hosts, 2));
    let h0 = hosts.names[0].clone();
    let (to1, to2) = (gossip_addr(&hosts, 1), gossip_addr(&hosts, 2));
    assert_eq!(probe(&h0, to1, 20).0, 20, "a clean link loses nothing");

    // One-way: host 0 cannot send to host 1; host 2 is untouched.
    let cut = faults.one_way_cut(0, 1);
    assert_eq!(probe(&h0, to1, 5).0, 0);
    assert_eq!(cut.dropped_packets(), 5, "the cut counts what it drops");
    assert_eq!(probe(&h0, to2, 5).0, 5);
    assert_eq!(
        probe(&hosts.names[1], gossip_addr(&hosts, 0), 1).0,
        0,
        "host 1's datagrams reach host 0, whose answers are cut"
    );
    drop(cut);
    assert_eq!(probe(&h0, to1, 5).0, 5, "the cut is gone with its guard");

    let link = faults.link_cut(0, 2);
    assert_eq!(probe(&h0, to2, 5).0, 0);
    assert_eq!(probe(&h0, to1, 5).0, 5);
    link.remove();
    assert_eq!(probe(&h0, to2, 5).0, 5);

    // 30 % on host 1's sending side: about 70 % of the echoes come back.
    let loss = faults.loss(1, 30);
    let (got, _, _) = probe(&h0, to1, 200);
    eprintln!("30 % loss on host 1: {got}/200 echoes");
    assert!((100..=180).contains(&got), "{got}/200");
    drop(loss);

    // A delayed link: 50 ms each way through the proxies, transparent to the sender.
    let delayed = faults.delay_link(
        0,
        1,
        DelayConfig::new(Duration::from_millis(50), Duration::ZERO),
    );
    let (got, min, from_peer) = probe(&h0, to1, 10);
    eprintln!("delayed link 0-1, 50 ms each way: {got}/10 echoes, min round trip {min:?}");
    assert_eq!(got, 10);
    assert!(min >= Duration::from_millis(100), "{min:?}");
    assert!(
        from_peer,
        "the echo seems to come from host 1, not the proxy"
    );
    assert!(delayed.forward.forwarded() >= 20);
    assert_eq!(delayed.bypassed(), 0);
    // Host 2 is not behind the proxies (a count, not a time: load cannot make it flaky).
    let through_proxies = delayed.forwarded();
    assert_eq!(probe(&h0, to2, 5).0, 5);
    assert_eq!(
        delayed.forwarded(),
        through_proxies,
        "host 2 is not delayed"
    );
    delayed.remove();
    let (got, _, from_peer) = probe(&h0, to1, 5);
    assert!(
        got == 5 && from_peer,
        "the link works straight again once the delay is removed"
    );
    // The same link delayed again (its flow is still in conntrack from the first time).
    let again = faults.delay_link(
        0,
        1,
        DelayConfig::new(Duration::from_millis(30), Duration::ZERO),
    );
    let (got, min, from_peer) = probe(&h0, to1, 5);
    eprintln!("delayed again, 30 ms each way: {got}/5 echoes, min round trip {min:?}");
    assert!(
        got == 5 && from_peer && min >= Duration::from_millis(60),
        "{min:?}"
    );
    drop(again);
    assert_eq!(probe(&h0, to1, 5).0, 5);

    // A failing test still removes its faults: the guards drop while the panic unwinds.
    let before = rule_count(&hosts.names[0]);
    let faults = Arc::new(faults);
    let (f, ns0) = (faults.clone(), hosts.names[0].clone());
    // Named, so the panic message it prints reads as the expected one it is.
    let panicked = std::thread::Builder::new()
        .name("expected-panic".into())
        .spawn(move || {
            let _cut = f.one_way_cut(0, 1);
            let _loss = f.loss(0, 50);
            assert_eq!(rule_count(&ns0), before + 2);
            panic!("expected: a failing test while faults are active");
        })
        .unwrap()
        .join();
    assert!(panicked.is_err());
    assert_eq!(rule_count(&hosts.names[0]), before);
    assert_eq!(probe(&h0, to1, 5).0, 5);
}

// ---------------------------------------------------------------------------------------------
// Scenarios with real agents.

/// Starts `names[i]` on host `i` with `extra_for(i)`, reading `config`: the first makes the
/// mesh CA, the others join it. Waits until everyone sees everyone alive.
fn start_agents(
    hosts: &Hosts,
    dir: &Path,
    names: &[&str],
    config: &str,
    extra_for: impl Fn(usize) -> Vec<String>,
) -> (Vec<PathBuf>, Vec<Agent>) {
    let config_path = dir.join("labmesh.toml");
    std::fs::write(&config_path, config).unwrap();
    let data: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    let mut agents =
        vec![hosts.agent_with_config(0, &data[0], names[0], &extra_for(0), &config_path)];
    let seed = format!("{}:{GOSSIP_PORT}", hosts.ip(0));
    for i in 1..names.len() {
        let bundle = dir.join(format!("{}.json", names[i]));
        issue_bundle(&data[0], names[0], names[i], &bundle);
        let mut extra = vec![
            "--join".to_owned(),
            bundle.display().to_string(),
            "--seed".to_owned(),
            seed.clone(),
        ];
        extra.extend(extra_for(i));
        agents.push(hosts.agent_with_config(i, &data[i], names[i], &extra, &config_path));
    }
    for (i, a) in agents.iter().enumerate() {
        for other in names.iter().filter(|n| **n != names[i]) {
            wait_until(
                &format!("{} sees {other}", names[i]),
                Duration::from_secs(60),
                || liveness(a, other).as_deref() == Some("alive"),
            );
        }
    }
    (data, agents)
}

/// Writes `lines` (partial events) on node `name` with `labmesh emit --from-jsonl --json` and
/// returns the ids it acknowledged; it must exit 0.
fn emit_acked(data: &Path, name: &str, lines: &[Value]) -> Vec<String> {
    use std::io::Write;
    let mut child = labmesh(data)
        .args(["--name", name, "emit", "--json", "--from-jsonl", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
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
        "emit on {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), lines.len(), "every line acknowledged on {name}");
    ids
}

/// A batch of events for one side: ordinary ones plus an incident and a deployment step, so
/// the world views have something to agree on.
fn workload(side: &str, round: usize, n: usize) -> Vec<Value> {
    let ev = |ty: &str, sev: &str, service: &str, cid: &str| {
        json!({"type": ty, "severity": sev, "service": service, "correlation_id": cid,
            "source": "chaos-hosts", "payload": {"round": round}})
    };
    let mut lines: Vec<Value> = (0..n)
        .map(|i| {
            ev(
                "backup_completed",
                "info",
                &format!("{side}-{round}-{i}"),
                "",
            )
        })
        .collect();
    lines.push(ev(
        "service_unhealthy",
        "error",
        &format!("svc-{side}"),
        &format!("hc-{side}"),
    ));
    let step = if round == 0 {
        "deployment_started"
    } else {
        "deployment_completed"
    };
    lines.push(ev(
        step,
        "info",
        &format!("web-{side}"),
        &format!("deploy-{side}"),
    ));
    lines
}

fn sync_state(agent: &Agent) -> Option<(String, u64)> {
    let (status, body) = http(agent.api, "GET", "/v1/sync", None).ok()?;
    let v: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
    Some((v["fingerprint"].as_str()?.to_owned(), v["events"].as_u64()?))
}

/// The world as the API serves it, less each node's live mesh view (which is this node's own
/// opinion, not replicated state), as a string: equal strings, equal worlds.
fn world_hash(agent: &Agent) -> Option<String> {
    let (status, body) = http(agent.api, "GET", "/v1/world", None).ok()?;
    let mut v: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
    if let Some(nodes) = v["nodes"].as_object_mut() {
        for n in nodes.values_mut() {
            if let Some(n) = n.as_object_mut() {
                n.remove("live");
            }
        }
    }
    Some(v.to_string())
}

fn alerter(agent: &Agent) -> Option<String> {
    let (status, body) = http(agent.api, "GET", "/v1/status", None).ok()?;
    let v: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
    v["alerter"].as_str().map(str::to_owned)
}

/// Ids of the events from `source` that `agent` holds.
fn event_ids(agent: &Agent, source: &str) -> BTreeSet<String> {
    let list = agent.get_json(&format!("/v1/events?source={source}&limit=1000000"));
    list.as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect()
}

/// Every node of `side` names the same alerter, and it is one of them.
fn one_alerter_in(names: &[&str], agents: &[Agent], side: &[usize]) -> bool {
    let seen: Vec<Option<String>> = side.iter().map(|&i| alerter(&agents[i])).collect();
    all_equal(&seen)
        && seen[0]
            .as_ref()
            .is_some_and(|a| side.iter().any(|&i| names[i] == a))
}

fn all_equal<T: PartialEq>(items: &[Option<T>]) -> bool {
    items.iter().all(|i| i.is_some() && *i == items[0])
}

/// Polls who sees whom as what, for pairs that stay reachable, until stopped: any `dead` or
/// `offline` among them is a false death (the invariant), `suspect` is counted as a figure.
struct LivenessWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Report>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default, Debug)]
struct Report {
    polls: u64,
    suspicions: u64,
    false_deaths: Vec<String>,
}

impl LivenessWatch {
    /// `pairs`: (observer name, observer API, peers it must keep seeing).
    fn start(pairs: Vec<(String, SocketAddr, Vec<String>)>) -> LivenessWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Report::default()));
        let started = Instant::now();
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for (observer, api, peers) in &pairs {
                        let Ok((200, body)) = http(*api, "GET", "/v1/nodes", None) else {
                            continue;
                        };
                        let nodes: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        let states: BTreeMap<&str, &str> = nodes
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|n| Some((n["node"].as_str()?, n["liveness"].as_str()?)))
                            .collect();
                        let mut r = seen.lock().unwrap();
                        r.polls += 1;
                        for p in peers {
                            match states.get(p.as_str()).copied() {
                                Some("dead" | "offline") | None => r.false_deaths.push(format!(
                                    "{observer} saw {p} as {:?} at {:?}",
                                    states.get(p.as_str()),
                                    started.elapsed()
                                )),
                                Some("suspect") => r.suspicions += 1,
                                _ => {}
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        LivenessWatch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for LivenessWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every pair among `members` (by index into `names`/`agents`).
fn pairs_among(
    names: &[&str],
    agents: &[Agent],
    members: &[usize],
) -> Vec<(String, SocketAddr, Vec<String>)> {
    members
        .iter()
        .map(|&i| {
            let peers = members
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| names[j].to_owned())
                .collect();
            (names[i].to_owned(), agents[i].api, peers)
        })
        .collect()
}

fn is_gone(state: Option<String>) -> bool {
    matches!(state.as_deref(), Some("dead" | "offline"))
}

/// How long until every observer sees every one of `gone` dead or offline.
fn wait_gone(names: &[&str], agents: &[Agent], observers: &[usize], gone: &[usize]) -> Duration {
    let t = Instant::now();
    for &o in observers {
        for &g in gone {
            wait_until(
                &format!("{} sees {} gone", names[o], names[g]),
                Duration::from_secs(60),
                || is_gone(liveness(&agents[o], names[g])),
            );
        }
    }
    t.elapsed()
}

/// Waits until all `agents` hold one event set (fingerprint and count) and one world, then
/// until each holds every id in `acked`; returns how long the event sets took.
fn wait_converged(agents: &[Agent], acked: &BTreeSet<String>, what: &str) -> Duration {
    let t = Instant::now();
    wait_until(
        &format!("{what}: one event set"),
        Duration::from_secs(90),
        || all_equal(&agents.iter().map(sync_state).collect::<Vec<_>>()),
    );
    let events = t.elapsed();
    wait_until(
        &format!("{what}: one world"),
        Duration::from_secs(60),
        || all_equal(&agents.iter().map(world_hash).collect::<Vec<_>>()),
    );
    for a in agents {
        let held = event_ids(a, "chaos-hosts");
        let missing: Vec<_> = acked.difference(&held).collect();
        assert!(
            missing.is_empty(),
            "{} lacks acknowledged events {missing:?}",
            a.api
        );
    }
    events
}

#[test]
fn an_offline_laptop_under_loss_and_delay_catches_up_in_both_directions() {
    if !labmesh_tests::netns::can_run() {
        return;
    }
    let _one_at_a_time = hosts_lock();
    let dir = tempfile::tempdir().unwrap();
    let hosts = Hosts::create(4);
    let faults = NetFaults::new(&hosts);
    let names = ["alpha", "bravo", "charlie", "laptop"];
    let (data, agents) = start_agents(&hosts, dir.path(), &names, "", |i| {
        if i == 3 {
            vec!["--transient".to_owned()]
        } else {
            Vec::new()
        }
    });
    // Once the mesh is up: 5 % loss on the three fixed hosts, and 50–150 ms each way between
    // bravo and charlie, on their live connections.
    let _loss = faults.loss_on(&[0, 1, 2], 5);
    let delayed = faults.delay_link(
        1,
        2,
        DelayConfig::new(Duration::from_millis(100), Duration::from_millis(50)),
    );
    let watch = LivenessWatch::start(pairs_among(&names, &agents, &[0, 1, 2]));
    let mut acked = BTreeSet::new();
    acked.extend(emit_acked(&data[0], "alpha", &workload("alpha", 0, 20)));
    std::thread::sleep(Duration::from_secs(2));

    hosts.cut(3);
    let detect = wait_gone(&names, &agents, &[0, 1, 2], &[3]);
    eprintln!("offline laptop: cut detected by all three peers in {detect:?}");
    // Everyone writes while the laptop is away, the laptop too.
    for round in 0..2 {
        for (i, name) in names.iter().enumerate() {
            acked.extend(emit_acked(&data[i], name, &workload(name, round, 30)));
        }
        if round == 0 {
            std::thread::sleep(Duration::from_secs(3));
        }
    }
    // The connected three agree among themselves under loss and delay.
    let t = Instant::now();
    wait_until("the connected three agree", Duration::from_secs(60), || {
        all_equal(&agents[..3].iter().map(sync_state).collect::<Vec<_>>())
    });
    eprintln!(
        "offline laptop: the connected peers agreed {:?} after the last write",
        t.elapsed()
    );
    assert_ne!(
        sync_state(&agents[3]),
        sync_state(&agents[0]),
        "the laptop is still apart"
    );
    // One alerter among the connected three; the laptop alone (transient, not eligible)
    // never makes itself one.
    wait_until(
        "one alerter among the three",
        Duration::from_secs(60),
        || one_alerter_in(&names, &agents, &[0, 1, 2]),
    );
    assert_ne!(alerter(&agents[3]).as_deref(), Some("laptop"));

    hosts.heal(3);
    let t = Instant::now();
    let converge = wait_converged(&agents, &acked, "after the laptop returns");
    eprintln!(
        "offline laptop: event sets equal {converge:?} after heal, worlds and acknowledged events checked after {:?}",
        t.elapsed()
    );
    let report = watch.finish();
    eprintln!(
        "offline laptop: {} liveness polls of the connected peers, {} suspicions, {} false deaths; the delay proxies forwarded {} datagrams",
        report.polls,
        report.suspicions,
        report.false_deaths.len(),
        delayed.forwarded()
    );
    assert!(report.polls > 0);
    assert!(report.false_deaths.is_empty(), "{:#?}", report.false_deaths);
    assert!(
        delayed.forwarded() > 0,
        "bravo and charlie talked through the delay proxies"
    );
    assert_eq!(delayed.bypassed(), 0, "and only through them");

    // The delay goes away under the running agents: each side now sees its peer at the host's
    // own address instead of the proxy's, which QUIC's migration must absorb without a
    // false death or a lost event.
    let watch = LivenessWatch::start(pairs_among(&names, &agents, &[0, 1, 2, 3]));
    let t = Instant::now();
    delayed.remove();
    acked.extend(emit_acked(&data[1], "bravo", &workload("bravo", 2, 10)));
    acked.extend(emit_acked(&data[2], "charlie", &workload("charlie", 2, 10)));
    let converge = wait_converged(&agents, &acked, "after the delay is removed");
    std::thread::sleep(Duration::from_secs(8).saturating_sub(t.elapsed()));
    let report = watch.finish();
    eprintln!(
        "offline laptop: delay removed under the agents; event sets equal {converge:?} after, {} suspicions, {} false deaths",
        report.suspicions,
        report.false_deaths.len()
    );
    assert!(report.false_deaths.is_empty(), "{:#?}", report.false_deaths);
    drop(agents);
}

#[test]
fn a_split_five_node_mesh_has_one_alerter_per_side_and_one_after_heal() {
    if !labmesh_tests::netns::can_run() {
        return;
    }
    let _one_at_a_time = hosts_lock();
    let dir = tempfile::tempdir().unwrap();
    let hosts = Hosts::create(5);
    let faults = NetFaults::new(&hosts);
    let names = ["alpha", "bravo", "charlie", "delta", "echo"];
    let config = "[alerting]\nsettle = \"2s\"\n";
    let (data, agents) = start_agents(&hosts, dir.path(), &names, config, |_| Vec::new());
    let (side_a, side_b) = ([0usize, 1], [2usize, 3, 4]);
    let one_alerter = |side: &[usize]| one_alerter_in(&names, &agents, side);
    let all: Vec<usize> = (0..names.len()).collect();
    wait_until(
        "one alerter before the split",
        Duration::from_secs(30),
        || one_alerter(&all),
    );

    let _loss = faults.loss_on(&all, 5);
    // 20–60 ms each way between delta and echo: within one side, so the partition holds.
    let delayed = faults.delay_link(
        3,
        4,
        DelayConfig::new(Duration::from_millis(40), Duration::from_millis(20)),
    );
    let mut watch_pairs = pairs_among(&names, &agents, &side_a);
    watch_pairs.extend(pairs_among(&names, &agents, &side_b));
    let watch = LivenessWatch::start(watch_pairs);
    hosts.partition(&side_a, &side_b, true);
    let t = Instant::now();
    wait_gone(&names, &agents, &side_a, &side_b);
    wait_gone(&names, &agents, &side_b, &side_a);
    let detect = t.elapsed();
    eprintln!("split brain: both sides saw the other gone after {detect:?}");

    let mut acked = BTreeSet::new();
    for round in 0..2 {
        for (i, name) in names.iter().enumerate() {
            let side = if side_a.contains(&i) { "a" } else { "b" };
            acked.extend(emit_acked(
                &data[i],
                name,
                &workload(&format!("{side}-{name}"), round, 25),
            ));
        }
    }
    // Exactly one alerter on each side once the view settles, and it stays so.
    let t = Instant::now();
    wait_until("one alerter per side", Duration::from_secs(60), || {
        one_alerter(&side_a) && one_alerter(&side_b)
    });
    eprintln!("split brain: one alerter per side after {:?}", t.elapsed());
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        one_alerter(&side_a) && one_alerter(&side_b),
        "the alerters stayed put"
    );
    let (alerter_a, alerter_b) = (alerter(&agents[0]), alerter(&agents[2]));
    assert_ne!(alerter_a, alerter_b, "two sides, two alerters");
    eprintln!("split brain: alerters {alerter_a:?} | {alerter_b:?}");
    wait_until(
        "each side agrees within itself",
        Duration::from_secs(60),
        || {
            all_equal(
                &side_a
                    .iter()
                    .map(|&i| sync_state(&agents[i]))
                    .collect::<Vec<_>>(),
            ) && all_equal(
                &side_b
                    .iter()
                    .map(|&i| sync_state(&agents[i]))
                    .collect::<Vec<_>>(),
            )
        },
    );
    assert_ne!(sync_state(&agents[0]), sync_state(&agents[2]));

    hosts.partition(&side_a, &side_b, false);
    let t = Instant::now();
    let converge = wait_converged(&agents, &acked, "after the split heals");
    wait_until("one alerter mesh-wide", Duration::from_secs(60), || {
        one_alerter(&all)
    });
    eprintln!(
        "split brain: event sets equal {converge:?} after heal, one alerter ({:?}) and one world after {:?}",
        alerter(&agents[0]),
        t.elapsed()
    );
    let report = watch.finish();
    eprintln!(
        "split brain: {} liveness polls within the sides, {} suspicions, {} false deaths",
        report.polls,
        report.suspicions,
        report.false_deaths.len()
    );
    assert!(report.false_deaths.is_empty(), "{:#?}", report.false_deaths);
    assert!(
        delayed.forwarded() > 0,
        "delta and echo talked through the delay proxies"
    );
    assert_eq!(delayed.bypassed(), 0, "and only through them");
    drop(agents);
}

#[test]
fn a_one_way_link_makes_no_peer_dead_and_events_go_around_it() {
    if !labmesh_tests::netns::can_run() {
        return;
    }
    let _one_at_a_time = hosts_lock();
    let dir = tempfile::tempdir().unwrap();
    let hosts = Hosts::create(3);
    let faults = NetFaults::new(&hosts);
    let names = ["alpha", "bravo", "charlie"];
    let (data, agents) = start_agents(&hosts, dir.path(), &names, "", |_| Vec::new());
    let watch = LivenessWatch::start(pairs_among(&names, &agents, &[0, 1, 2]));
    // alpha's datagrams never reach bravo; bravo's still reach alpha. Neither can finish a QUIC
    // handshake with the other, but both still hear of each other through charlie.
    let cut = faults.one_way_cut(0, 1);
    let t = Instant::now();
    let mut acked = BTreeSet::new();
    acked.extend(emit_acked(&data[0], "alpha", &workload("alpha", 0, 30)));
    acked.extend(emit_acked(&data[1], "bravo", &workload("bravo", 0, 30)));
    let converge = wait_converged(&agents, &acked, "around the one-way link");
    eprintln!("one-way link: event sets equal {converge:?} after the writes");
    // Long past --offline-after (3 s): a peer heard of only indirectly would be gone by now.
    std::thread::sleep(Duration::from_secs(8).saturating_sub(t.elapsed()));
    let report = watch.finish();
    eprintln!(
        "one-way link: {} liveness polls, {} suspicions, {} false deaths",
        report.polls,
        report.suspicions,
        report.false_deaths.len()
    );
    assert!(report.false_deaths.is_empty(), "{:#?}", report.false_deaths);
    let lost = cut.dropped_packets();
    eprintln!("one-way link: {lost} of alpha's datagrams to bravo dropped");
    assert!(lost > 0, "alpha kept sending to bravo, and lost it");
    drop(agents);
}
