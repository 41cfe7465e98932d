//! Alerting with the real binary: a check goes down, the alerter pages a local HTTP receiver
//! exactly once, the check recovers, exactly one resolved notification follows, and the ledger
//! (`notification_sent`) is in the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use labmesh_tests::{Agent, free_port, labmesh, run, stderr, stdout, wait_until};
use serde_json::Value;

/// One request a receiver got: path and body.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// Reads one HTTP/1.1 request (headers, then `Content-Length` bytes of body).
fn read_request(stream: &mut std::net::TcpStream) -> Option<(String, String)> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + len {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    let body = String::from_utf8_lossy(&data[head_end..]).into_owned();
    Some((path, body))
}

/// A receiver that records every request and answers 200.
fn recording_server() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let out = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if let Some(req) = read_request(&mut stream) {
                out.lock().unwrap().push(req);
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (addr, seen)
}

/// A service that answers 200 on `port` (the check's target coming back).
fn healthy_service(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = read_request(&mut stream);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
}

fn events(data: &Path, event_type: &str) -> Vec<Value> {
    let out = run(labmesh(data).args(["events", "list", "--json", "--type", event_type]));
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// Webhook bodies about the `web` check, by status.
fn webhook_bodies(seen: &Seen, status: &str) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == "/hook")
        .filter_map(|(_, b)| serde_json::from_str::<Value>(b).ok())
        .filter(|b| {
            b["status"] == status
                && b["alerts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["rule"] == "service_unhealthy"))
        })
        .collect()
}

fn ntfy_bodies(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(p, b)| p == "/lab" && b.contains("web"))
        .map(|(_, b)| b.clone())
        .collect()
}

#[test]
fn a_failing_check_pages_once_and_its_recovery_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (receiver, seen) = recording_server();
    let service_port = free_port();
    let config = format!(
        "[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{service_port}/\"\n\
         interval = \"200ms\"\ntimeout = \"1s\"\nfall = 1\nrise = 1\n\n\
         [alerting]\nsettle = \"1s\"\ngroup_wait = \"1s\"\ngroup_interval = \"1s\"\n\
         repeat_interval = \"1h\"\n\n\
         [[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{receiver}/hook\"\n\n\
         [[receiver]]\nname = \"phone\"\nkind = \"ntfy\"\nserver = \"http://{receiver}\"\n\
         topic = \"lab\"\n"
    );
    let path = data.with_extension("toml");
    std::fs::write(&path, config).unwrap();
    let agent = Agent::start_with(&data, &[], |cmd| {
        cmd.env("LABMESH_CONFIG", &path);
    });
    let timeout = Duration::from_secs(30);
    wait_until("the firing webhook", timeout, || {
        !webhook_bodies(&seen, "firing").is_empty()
    });
    wait_until("the firing ntfy message", timeout, || {
        !ntfy_bodies(&seen).is_empty()
    });
    let alerts = agent.get_json("/v1/alerts");
    assert_eq!(alerts["alerter"], agent_name(&agent), "{alerts}");
    assert!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "service_unhealthy" && a["status"] == "firing"),
        "{alerts}"
    );
    let status = agent.get_json("/v1/status");
    assert_eq!(status["alerter"], status["node"], "{status}");
    assert_eq!(status["nodes"][0]["alerter"], true, "{status}");
    // No repeat while it stays down (repeat_interval is 1h).
    std::thread::sleep(Duration::from_secs(3));
    let firing = webhook_bodies(&seen, "firing");
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(ntfy_bodies(&seen).len(), 1);
    let a = &firing[0]["alerts"][0];
    assert_eq!(a["labels"]["service"], "web", "{a}");

    healthy_service(service_port);
    wait_until("service_recovered", timeout, || {
        !events(&data, "service_recovered").is_empty()
    });
    wait_until("the resolved webhook", timeout, || {
        !webhook_bodies(&seen, "resolved").is_empty()
    });
    wait_until("the resolved ntfy message", timeout, || {
        ntfy_bodies(&seen).len() >= 2
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(webhook_bodies(&seen, "resolved").len(), 1);
    assert_eq!(webhook_bodies(&seen, "firing").len(), 1);
    assert_eq!(ntfy_bodies(&seen).len(), 2);
    let sent = events(&data, "notification_sent");
    assert!(
        sent.len() >= 4,
        "two receivers, firing and resolved: {sent:?}"
    );
    assert_eq!(events(&data, "alert_firing").len(), 1);
    assert_eq!(events(&data, "alert_resolved").len(), 1);
    let alerts = agent.get_json("/v1/alerts");
    assert!(
        !alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "service_unhealthy"),
        "{alerts}"
    );
}

fn agent_name(agent: &Agent) -> Value {
    agent.get_json("/v1/status")["node"].clone()
}

#[test]
fn silences_are_added_listed_and_cleared_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let agent = Agent::start(&data, &[]);
    let mut add = labmesh(&data);
    add.args([
        "--api-addr",
        &agent.api.to_string(),
        "silence",
        "add",
        "--match",
        "node=nas1",
        "--match",
        "rule=disk_*",
        "--for",
        "2h",
        "--comment",
        "disk swap",
        "--json",
    ]);
    let out = run(&mut add);
    assert!(out.status.success(), "{}", stderr(&out));
    let added: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let id = added["silence"]["id"].as_str().unwrap().to_owned();
    assert_eq!(added["silence"]["matchers"]["rule"], "disk_*");
    let set = events(&data, "silence_set");
    assert_eq!(set.len(), 1, "{set:?}");
    assert_eq!(set[0]["payload"]["comment"], "disk swap");
    let api = agent.api.to_string();
    let list = || {
        let out = run(labmesh(&data).args(["--api-addr", &api, "silence", "list", "--json"]));
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str::<Value>(&stdout(&out)).unwrap()["silences"]
            .as_array()
            .unwrap()
            .clone()
    };
    wait_until("the silence in force", Duration::from_secs(10), || {
        list().iter().any(|s| s["id"] == id.as_str())
    });
    let out = run(labmesh(&data).args(["--api-addr", &api, "silence", "clear", &id]));
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the silence gone", Duration::from_secs(10), || {
        list().is_empty()
    });
    let bad = run(labmesh(&data).args([
        "--api-addr",
        &api,
        "silence",
        "add",
        "--match",
        "nokey",
        "--for",
        "1h",
    ]));
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let out = run(labmesh(&data).args(["--api-addr", &api, "alerts", "--json"]));
    assert!(out.status.code().is_some(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(doc["alerts"].is_array(), "{doc}");
}
