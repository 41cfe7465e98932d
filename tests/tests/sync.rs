//! Sync with real processes: the offline laptop catches up in both directions, and every node
//! computes the same world.
//! A session with a peer's process that restarted or died is dropped at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use labmesh_tests::{Agent, Peer, free_udp_port, labmesh, run, stderr, wait_until, world_file};
use rustix::process::Signal;
use serde_json::{Value, json};

type Node = Peer;

/// `extra` with the tests' gossip interval unless it sets one.
fn args_after_name<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = Vec::new();
    if !extra.contains(&"--gossip-interval") {
        v.extend(["--gossip-interval", "100ms"]);
    }
    v.extend_from_slice(extra);
    v
}

fn args<'a>(name: &'a str, gossip: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--name", name, "--gossip-addr", gossip];
    v.extend(args_after_name(extra));
    v
}

fn start_ca(dir: &Path) -> Node {
    Peer::start(dir, "alpha", &args_after_name(&[]))
}

fn join(dir: &Path, ca: &Node, name: &str, extra: &[&str]) -> Node {
    Peer::join(dir, ca, name, &args_after_name(extra))
}

/// Emits JSON lines through `labmesh emit --from-jsonl -` on a node's data dir (no agent needed).
fn emit_lines(node: &Node, lines: &[Value]) {
    let mut child = labmesh(&node.data)
        .args([
            "--name",
            &node.name,
            "emit",
            "--from-jsonl",
            "-",
            "--batch-size",
            "500",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_offline_laptop_catches_up_both_ways_and_every_world_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = start_ca(dir.path());
    let bravo = join(dir.path(), &alpha, "bravo", &[]);
    let charlie = join(dir.path(), &alpha, "charlie", &[]);
    let mut laptop = join(dir.path(), &alpha, "laptop", &["--transient"]);
    let a = alpha.agent.as_ref().unwrap();
    wait_until("four nodes", Duration::from_secs(20), || {
        a.get_json("/v1/nodes")
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["liveness"] == "alive")
            .count()
            == 4
    });

    // The laptop goes away.
    laptop.agent.take().unwrap().stop_with(Signal::TERM);

    // An incident on alpha's mosquitto while the laptop is away: unhealthy three times...
    let unhealthy = |i: u32| json!({"type": "service_unhealthy", "severity": "error", "source": "healthcheck.sh", "service": "mosquitto", "correlation_id": "hc-1", "payload": {"try": i}});
    emit_lines(&alpha, &[unhealthy(1), unhealthy(2), unhealthy(3)]);
    // ...the laptop, offline, writes its own work (a node writes only as itself: its events are
    // signed with its own key)...
    let laptop_lines: Vec<Value> = (0..1000)
        .map(|i| json!({"type": "laptop_work", "service": "editor", "payload": {"i": i}}))
        .collect();
    emit_lines(&laptop, &laptop_lines);
    // ...and alpha records, after the recovery, a failure it saw before it (a late file: its
    // timestamp is older than the recovery's), which must still land in the incident.
    let late_id = uuid::Uuid::now_v7();
    let late_at = sync::event::format_timestamp(chrono::Utc::now());
    std::thread::sleep(Duration::from_millis(20));
    emit_lines(
        &alpha,
        &[
            json!({"type": "service_recovered", "source": "healthcheck.sh", "service": "mosquitto", "correlation_id": "hc-1"}),
        ],
    );
    emit_lines(
        &alpha,
        &[json!({
            "id": late_id.to_string(), "timestamp": late_at,
            "node": "alpha", "type": "service_unhealthy", "severity": "error", "source": "late-monitor",
            "service": "mosquitto", "correlation_id": "hc-1", "payload": {"seen": "late"}
        })],
    );
    // A failed, then successful deployment on bravo.
    emit_lines(
        &bravo,
        &[
            json!({"type": "deployment_started", "service": "mosquitto", "correlation_id": "deploy-882", "payload": {"version": "2.0"}}),
            json!({"type": "deployment_failed", "severity": "error", "service": "mosquitto", "correlation_id": "deploy-882", "payload": {"stage": "verify", "error": "port 1883 not bound"}}),
            json!({"type": "deployment_completed", "service": "mosquitto", "correlation_id": "deploy-882"}),
        ],
    );
    // And 10k ordinary events across the three.
    for node in [&alpha, &bravo, &charlie] {
        let lines: Vec<Value> = (0..3334)
            .map(|i| json!({"type": "metric_sample", "service": "all", "payload": {"i": i}}))
            .collect();
        emit_lines(node, &lines);
    }
    let up = [&alpha, &bravo, &charlie];
    wait_until("the three agree", Duration::from_secs(60), || {
        let fps: Vec<String> = up
            .iter()
            .map(|n| n.agent.as_ref().unwrap().fingerprint())
            .collect();
        fps.iter().all(|f| *f == fps[0] && !f.is_empty())
    });

    // The laptop returns.
    let gossip = laptop.gossip.clone();
    laptop.agent = Some(Agent::start(
        &laptop.data,
        &args("laptop", &gossip, &["--seed", &alpha.gossip, "--transient"]),
    ));
    let all = [&alpha, &bravo, &charlie, &laptop];
    let started = std::time::Instant::now();
    wait_until(
        "all four hold the same events",
        Duration::from_secs(90),
        || {
            let fps: Vec<String> = all
                .iter()
                .map(|n| n.agent.as_ref().unwrap().fingerprint())
                .collect();
            fps.iter().all(|f| *f == fps[0])
        },
    );
    eprintln!("laptop converged {:?} after restart", started.elapsed());
    let count = alpha.agent.as_ref().unwrap().get_json("/healthz")["events"]
        .as_u64()
        .unwrap();
    assert!(count >= 11_000, "{count}");

    // Byte-identical world views (nodes.json holds each node's live view and may differ).
    for file in ["incidents.json", "services.json", "deployments.json"] {
        wait_until(
            &format!("{file} identical"),
            Duration::from_secs(20),
            || {
                let first = world_file(&alpha.data, file);
                !first.is_empty() && all.iter().all(|n| world_file(&n.data, file) == first)
            },
        );
    }
    let incidents: Value =
        serde_json::from_str(&world_file(&laptop.data, "incidents.json")).unwrap();
    let incident = incidents
        .as_object()
        .unwrap()
        .values()
        .find(|i| i["node"] == "alpha" && i["service"] == "mosquitto")
        .unwrap();
    assert_eq!(incident["status"], "resolved", "{incident:#}");
    assert_eq!(
        incident["occurrence_count"], 4,
        "the late event lands in the incident: {incident:#}"
    );
    let deployments: Value =
        serde_json::from_str(&world_file(&charlie.data, "deployments.json")).unwrap();
    assert_eq!(deployments["deploy-882"]["status"], "completed");
    let services: Value = serde_json::from_str(&world_file(&bravo.data, "services.json")).unwrap();
    assert_eq!(services["alpha/mosquitto"]["status"], "healthy");

    // The same views through the API and the CLI.
    let api = laptop.agent.as_ref().unwrap().get_json("/v1/incidents");
    assert_eq!(api, incidents);
    let out = run(labmesh(&laptop.data).args(["--name", "laptop", "world", "incidents"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("resolved"));
    let out = run(labmesh(&laptop.data).args([
        "--name",
        "laptop",
        "--api-addr",
        &laptop.agent.as_ref().unwrap().api.to_string(),
        "sync",
        "status",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("alpha"));

    // Charlie restarts without its checkpoint (a full rebuild from the events), and the world
    // files come out byte-identical.
    let mut charlie = charlie;
    let before: Vec<String> = ["incidents.json", "services.json", "deployments.json"]
        .iter()
        .map(|f| world_file(&charlie.data, f))
        .collect();
    charlie.agent.take().unwrap().stop_with(Signal::TERM);
    let checkpoint = charlie.data.join("state/world-checkpoint.json");
    assert!(checkpoint.exists());
    std::fs::remove_file(&checkpoint).unwrap();
    for f in ["incidents.json", "services.json", "deployments.json"] {
        std::fs::remove_file(charlie.data.join("world").join(f)).unwrap();
    }
    let gossip = charlie.gossip.clone();
    let restarted = Agent::start(
        &charlie.data,
        &args("charlie", &gossip, &["--seed", &alpha.gossip]),
    );
    assert!(
        restarted.log_text().contains("\"rebuilt\":true"),
        "{}",
        restarted.log_text()
    );
    charlie.agent = Some(restarted);
    for (f, was) in ["incidents.json", "services.json", "deployments.json"]
        .iter()
        .zip(&before)
    {
        wait_until(&format!("{f} rebuilt"), Duration::from_secs(20), || {
            world_file(&charlie.data, f) == *was
        });
    }
}

#[test]
fn hostile_events_from_a_peer_are_refused_and_the_agent_lives() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = start_ca(dir.path());
    let bravo = join(dir.path(), &alpha, "bravo", &[]);
    let a = alpha.agent.as_ref().unwrap();
    wait_until("bravo alive", Duration::from_secs(20), || {
        a.get_json("/v1/nodes")
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["node"] == "bravo" && n["liveness"] == "alive")
    });
    // A bad file written into bravo's store is quarantined there and never spreads; a good one
    // does.
    let folder = bravo.data.join("events/2026-05-12/bravo");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("20260512T120500.123Z_x_0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e5f.json"),
        b"{\"half\": ",
    )
    .unwrap();
    emit_lines(&bravo, &[json!({"type": "good_one"})]);
    wait_until("good event synced", Duration::from_secs(20), || {
        a.get_json("/v1/events?type=good_one")
            .as_array()
            .is_some_and(|v| !v.is_empty())
    });
    assert!(
        a.get_json("/v1/events?type=x")
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(a.get_json("/healthz")["status"], "ok");
    drop(bravo);
}

/// An event from an external writer (no `hlc`) `days_ago` days and `minutes_ago` minutes back.
fn old_event(days_ago: i64, minutes_ago: i64, node: &str, ty: &str, service: &str) -> Value {
    let at = chrono::Utc::now()
        - chrono::Duration::days(days_ago)
        - chrono::Duration::minutes(minutes_ago);
    let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        at.timestamp() as u64,
        at.timestamp_subsec_nanos(),
    ));
    json!({
        "id": id.to_string(), "timestamp": sync::event::format_timestamp(at), "node": node, "type": ty,
        "severity": "error", "source": "healthcheck.sh", "service": service, "correlation_id": "old", "payload": {}
    })
}

#[test]
fn history_past_retention_reaches_a_newcomer_through_the_world_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut alpha = start_ca(dir.path());
    // Alpha stops; 40-day-old history is written into its store; it starts again and prunes.
    alpha.agent.take().unwrap().stop_with(Signal::TERM);
    emit_lines(
        &alpha,
        &[
            old_event(40, 5, "alpha", "service_unhealthy", "oldsvc"),
            old_event(40, 0, "alpha", "service_recovered", "oldsvc"),
        ],
    );
    let old_folder = alpha.data.join("events").join(
        (chrono::Utc::now() - chrono::Duration::days(40))
            .format("%Y-%m-%d")
            .to_string(),
    );
    assert!(old_folder.exists());
    let gossip = alpha.gossip.clone();
    alpha.agent = Some(Agent::start(
        &alpha.data,
        &args("alpha", &gossip, &["--archive-pruned", "true"]),
    ));
    wait_until("pruned", Duration::from_secs(10), || !old_folder.exists());
    // The pruned day is kept as an archive that plain `tar --zstd` reads.
    let day = old_folder
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let archive = alpha.data.join(format!("events-archive/{day}.tar.zst"));
    let listing = std::process::Command::new("tar")
        .arg("--zstd")
        .arg("-tf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(
        listing.lines().filter(|l| l.ends_with(".json")).count(),
        2,
        "{listing}"
    );
    assert!(listing.contains(&format!("{day}/alpha/")), "{listing}");
    let incidents = || {
        serde_json::from_str::<Value>(&world_file(&alpha.data, "incidents.json"))
            .unwrap_or_default()
    };
    wait_until("history kept in the world", Duration::from_secs(10), || {
        incidents().as_object().is_some_and(|m| {
            m.values()
                .any(|i| i["service"] == "oldsvc" && i["status"] == "resolved")
        })
    });
    // A newcomer gets the pruned history through the world snapshot, not as events.
    let bravo = join(dir.path(), &alpha, "bravo", &[]);
    wait_until(
        "bravo learns the old incident",
        Duration::from_secs(30),
        || {
            serde_json::from_str::<Value>(&world_file(&bravo.data, "incidents.json"))
                .ok()
                .and_then(|v| v.as_object().cloned())
                .is_some_and(|m| {
                    m.values()
                        .any(|i| i["service"] == "oldsvc" && i["status"] == "resolved")
                })
        },
    );
    assert!(
        !bravo
            .data
            .join("events")
            .join(old_folder.file_name().unwrap())
            .exists(),
        "pruned events are never pushed back"
    );
    wait_until("same incidents on both", Duration::from_secs(20), || {
        world_file(&alpha.data, "incidents.json") == world_file(&bravo.data, "incidents.json")
    });
}

#[test]
fn a_clock_ten_minutes_ahead_does_not_confuse_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = start_ca(dir.path());
    // bravo's clock runs 10 minutes ahead.
    let bundle = dir.path().join("bravo.json");
    let out = run(labmesh(&alpha.data)
        .args(["--name", "alpha", "certs", "issue", "bravo", "--out"])
        .arg(&bundle));
    assert!(out.status.success());
    let gossip = format!("127.0.0.1:{}", free_udp_port());
    let b = bundle.display().to_string();
    let bravo_agent = Agent::start_with(
        &dir.path().join("bravo"),
        &args("bravo", &gossip, &["--join", &b, "--seed", &alpha.gossip]),
        |cmd| {
            cmd.env("LABMESH_CLOCK_OFFSET_MS", "600000");
        },
    );
    let bravo = Node {
        name: "bravo".into(),
        data: dir.path().join("bravo"),
        gossip,
        agent: Some(bravo_agent),
    };
    let emit = |node: &Node, ty: &str, service: &str, cid: &str| {
        let mut child = labmesh(&node.data);
        child.args([
            "--name",
            &node.name,
            "emit",
            "--type",
            ty,
            "--service",
            service,
            "--correlation-id",
            cid,
        ]);
        if node.name == "bravo" {
            child.env("LABMESH_CLOCK_OFFSET_MS", "600000");
        }
        let out = run(&mut child);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    // bravo, 10 minutes ahead, starts a deployment; alpha finishes it a moment later in real
    // time, though alpha's wall clock reads 10 minutes earlier. The HLC that alpha's store
    // learned from bravo's event orders the completion after the start.
    emit(&bravo, "deployment_started", "nas", "deploy-skew");
    let a = alpha.agent.as_ref().unwrap();
    wait_until("alpha has the start", Duration::from_secs(20), || {
        a.get_json("/v1/events?type=deployment_started")
            .as_array()
            .is_some_and(|v| !v.is_empty())
    });
    emit(&alpha, "deployment_completed", "nas", "deploy-skew");
    // An incident on alpha while bravo's clock is ahead resolves as usual.
    emit(&alpha, "service_unhealthy", "nas", "hc-skew");
    emit(&alpha, "service_recovered", "nas", "hc-skew");
    for n in [&alpha, &bravo] {
        wait_until("deployment completed", Duration::from_secs(20), || {
            serde_json::from_str::<Value>(&world_file(&n.data, "deployments.json"))
                .ok()
                .is_some_and(|v| v["deploy-skew"]["status"] == "completed")
        });
        wait_until("incident resolved", Duration::from_secs(20), || {
            serde_json::from_str::<Value>(&world_file(&n.data, "incidents.json"))
                .ok()
                .and_then(|v| v.as_object().cloned())
                .is_some_and(|m| {
                    m.values()
                        .any(|i| i["service"] == "nas" && i["status"] == "resolved")
                })
        });
    }
    wait_until("same world", Duration::from_secs(20), || {
        world_file(&alpha.data, "incidents.json") == world_file(&bravo.data, "incidents.json")
            && world_file(&alpha.data, "deployments.json")
                == world_file(&bravo.data, "deployments.json")
    });
    // bravo's events carry its skewed wall time, and an HLC stamp.
    let events: Vec<Value> = alpha
        .agent
        .as_ref()
        .unwrap()
        .get_json("/v1/events?node=bravo&type=deployment_started")
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(events.len(), 1);
    let ts =
        chrono::DateTime::parse_from_rfc3339(events[0]["timestamp"].as_str().unwrap()).unwrap();
    assert!(ts.with_timezone(&chrono::Utc) - chrono::Utc::now() > chrono::Duration::minutes(9));
    assert!(events[0]["hlc"].is_string());
}

/// `peer`'s entry in a node's `/v1/sync` (null when it has none yet).
fn sync_peer(agent: &Agent, peer: &str) -> Value {
    agent.get_json("/v1/sync")["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["peer"] == peer).cloned())
        .unwrap_or(Value::Null)
}

fn sync_now(agent: &Agent, peer: &str) {
    let path = format!("/v1/sync/now?peer={peer}");
    let token = std::fs::read_to_string(agent.data_dir.join("api-token")).unwrap();
    let (status, body) =
        labmesh_tests::http_auth(agent.api, "POST", &path, Some(token.trim()), None).unwrap();
    assert_eq!(status, 200, "POST {path}: {body}");
}

/// Gossip slow enough that a peer frozen for a few seconds is not yet declared dead.
const SLOW_GOSSIP: [&str; 2] = ["--gossip-interval", "1s"];

fn agent_logs(nodes: &[&Node]) -> String {
    nodes
        .iter()
        .map(|n| {
            let log = std::fs::read_to_string(n.data.with_extension("agent.log"));
            format!("{} log:\n{}\n", n.name, log.unwrap_or_default())
        })
        .collect()
}

/// Alpha (sync logged at debug) and bravo, both started with `extra`, with a session alpha
/// opened with bravo that bravo never answers: bravo is frozen (SIGSTOP) when it starts.
struct StaleSession {
    alpha: Node,
    bravo: Node,
    /// Alpha's `sessions_completed` with bravo before the stale session.
    completed: u64,
    /// When the stale session began.
    since: std::time::Instant,
}

fn stale_session(dir: &Path, extra: &[&str]) -> StaleSession {
    let data = dir.join("alpha");
    let gossip = format!("127.0.0.1:{}", free_udp_port());
    let mut alpha_extra = vec!["--log-level", "labmesh::drivers::sync=debug,info"];
    alpha_extra.extend_from_slice(extra);
    let agent = Agent::start(&data, &args("alpha", &gossip, &alpha_extra));
    let alpha = Node {
        name: "alpha".into(),
        data,
        gossip,
        agent: Some(agent),
    };
    let bravo = join(dir, &alpha, "bravo", extra);
    let a = alpha.agent.as_ref().unwrap();
    wait_until("bravo alive on alpha", Duration::from_secs(30), || {
        a.get_json("/v1/nodes")
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["node"] == "bravo" && n["liveness"] == "alive")
    });
    let pid = rustix::process::Pid::from_raw(bravo.agent.as_ref().unwrap().pid()).unwrap();
    rustix::process::kill_process(pid, Signal::STOP).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = sync_peer(a, "bravo");
    let started = before["sessions_started"].as_u64().unwrap_or(0);
    let completed = before["sessions_completed"].as_u64().unwrap_or(0);
    sync_now(a, "bravo");
    wait_until("alpha starts a session", Duration::from_secs(10), || {
        sync_peer(a, "bravo")["sessions_started"]
            .as_u64()
            .unwrap_or(0)
            > started
    });
    let since = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sync_peer(a, "bravo")["sessions_completed"].as_u64(),
        Some(completed),
        "a frozen bravo cannot answer"
    );
    StaleSession {
        alpha,
        bravo,
        completed,
        since,
    }
}

/// Bravo stops answering while alpha has a session open with it, then restarts (a new process,
/// a new mesh generation) before the freeze alone would get it declared dead (gossip every
/// 1 s). Alpha drops that session as soon as the new generation shows up (the view shows it
/// dead until its first heartbeat, or alive under a new generation) instead of holding it
/// until the 60 s session timeout, so a session with the new process starts and completes at
/// once; an event alpha wrote while bravo was down reaches it.
#[test]
fn a_session_with_a_restarted_peer_is_dropped_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let StaleSession {
        alpha,
        mut bravo,
        completed,
        since: stale_since,
    } = stale_session(dir.path(), &SLOW_GOSSIP);
    let a = alpha.agent.as_ref().unwrap();
    // Alpha writes while bravo is down: the push is lost, only a session can deliver it.
    emit_lines(&alpha, &[json!({"type": "written_while_bravo_was_down"})]);

    // Bravo's process dies and a new one starts on the same address.
    bravo.agent.take().unwrap().stop_with(Signal::KILL);
    let gossip = bravo.gossip.clone();
    bravo.agent = Some(Agent::start(
        &bravo.data,
        &args(
            "bravo",
            &gossip,
            &[&["--seed", &alpha.gossip], &SLOW_GOSSIP[..]].concat(),
        ),
    ));
    let restarted_after = stale_since.elapsed();
    eprintln!("bravo restarted {restarted_after:?} after alpha's session began");
    // The stale session would block alpha until 60 s after it began; leave a margin for a slow
    // machine, and make sure the rest of the test still fits before that.
    let budget = Duration::from_secs(50).saturating_sub(restarted_after);
    assert!(
        budget >= Duration::from_secs(15),
        "bravo took {restarted_after:?} to restart; too slow to tell a dropped session from an expired one"
    );
    let b = bravo.agent.as_ref().unwrap();
    let mut last_nudge: Option<std::time::Instant> = None;
    let deadline = std::time::Instant::now() + budget;
    loop {
        let peer = sync_peer(a, "bravo");
        if peer["sessions_completed"].as_u64().unwrap_or(0) > completed {
            eprintln!(
                "alpha completed a session with the new bravo {:?} after the stale one began",
                stale_since.elapsed()
            );
            assert!(
                peer["sessions_abandoned"].as_u64().unwrap_or(0) >= 1,
                "{peer:#}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alpha still holds its session with bravo's old process {:?} after it began: {peer:#}\n{}",
            stale_since.elapsed(),
            agent_logs(&[&alpha, &bravo])
        );
        if last_nudge.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            sync_now(a, "bravo");
            last_nudge = Some(std::time::Instant::now());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until("bravo has alpha's event", Duration::from_secs(20), || {
        b.get_json("/v1/events?type=written_while_bravo_was_down")
            .as_array()
            .is_some_and(|v| !v.is_empty())
    });
    assert!(
        a.log_text()
            .contains("dropped sync sessions with a peer's old process"),
        "{}",
        agent_logs(&[&alpha, &bravo])
    );
}

/// Bravo stays frozen until alpha declares it dead (a few seconds, gossip every 300 ms):
/// alpha drops the session then, not at the 60 s session timeout, so it stops counting against
/// `max_sessions` and a returning bravo gets a session at once.
#[test]
fn a_session_with_a_peer_declared_dead_is_dropped_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let stale = stale_session(dir.path(), &["--gossip-interval", "300ms"]);
    let a = stale.alpha.agent.as_ref().unwrap();
    wait_until("bravo not live on alpha", Duration::from_secs(30), || {
        !a.get_json("/v1/nodes").as_array().unwrap().iter().any(|n| {
            n["node"] == "bravo" && (n["liveness"] == "alive" || n["liveness"] == "suspect")
        })
    });
    let dead_after = stale.since.elapsed();
    let budget = Duration::from_secs(50).saturating_sub(dead_after);
    assert!(
        budget >= Duration::from_secs(10),
        "bravo took {dead_after:?} to be declared dead; too slow to tell a dropped session from an expired one"
    );
    let deadline = std::time::Instant::now() + budget;
    loop {
        let peer = sync_peer(a, "bravo");
        if peer["sessions_abandoned"].as_u64().unwrap_or(0) >= 1 {
            eprintln!(
                "alpha dropped the session {:?} after it began (bravo dead after {dead_after:?})",
                stale.since.elapsed()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alpha still holds its session with a dead bravo {:?} after it began: {peer:#}\n{}",
            stale.since.elapsed(),
            agent_logs(&[&stale.alpha, &stale.bravo])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        sync_peer(a, "bravo")["sessions_completed"].as_u64(),
        Some(stale.completed),
        "dropped, not completed"
    );
}

#[test]
fn old_events_stay_when_the_checkpoint_that_keeps_their_history_cannot_be_saved() {
    let dir = tempfile::tempdir().unwrap();
    let mut alpha = start_ca(dir.path());
    alpha.agent.take().unwrap().stop_with(Signal::TERM);
    emit_lines(
        &alpha,
        &[old_event(40, 5, "alpha", "service_unhealthy", "oldsvc")],
    );
    let old_folder = alpha.data.join("events").join(
        (chrono::Utc::now() - chrono::Duration::days(40))
            .format("%Y-%m-%d")
            .to_string(),
    );
    assert!(old_folder.exists());
    // The checkpoint cannot be written (as on a full disk): a folder holds its name.
    let checkpoint = alpha.data.join("state/world-checkpoint.json");
    let _ = std::fs::remove_file(&checkpoint);
    std::fs::create_dir_all(checkpoint.join("in-the-way")).unwrap();
    let gossip = alpha.gossip.clone();
    let agent = Agent::start(&alpha.data, &args("alpha", &gossip, &[]));
    wait_until("the refusal logged", Duration::from_secs(10), || {
        agent.log_text().contains("not pruning old events")
    });
    assert!(
        old_folder.exists(),
        "the only copy of that history was deleted"
    );
}
