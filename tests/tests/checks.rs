//! Health checks and worker heartbeats with the real binary: an HTTP check against a small
//! server the test controls, a ttl check fed by the CLI, config errors at start-up, and
//! heartbeats that stop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use labmesh_tests::{Agent, events, http_auth, labmesh, run, stderr, stdout, wait_until};
use serde_json::Value;

/// A tiny HTTP server answering every request with the status in `code`.
fn status_server(code: Arc<AtomicU16>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let code = code.load(Ordering::SeqCst);
            let body = if code == 200 {
                "ok"
            } else {
                "database is down"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {code} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// An HTTPS server for `localhost` whose certificate a fresh CA signed; returns its address and
/// the CA's PEM (what an operator would put in `ca_file`).
fn https_server() -> (SocketAddr, String) {
    let labmesh_tests::tls::LocalhostTls {
        ca_pem,
        server: config,
    } = labmesh_tests::tls::localhost_tls();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                tls,
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (addr, ca_pem)
}

fn start_with_config(data: &Path, config: &str) -> Agent {
    let path = data.with_extension("toml");
    std::fs::write(&path, config).unwrap();
    Agent::start_with(data, &[], |cmd| {
        cmd.env("LABMESH_CONFIG", &path);
    })
}

/// `labmesh events list --json --type TYPE` read from the agent's data dir.
fn check_state(agent: &Agent, name: &str) -> Value {
    let checks = agent.get_json("/v1/checks");
    checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no check {name} in {checks}"))
}

#[test]
fn http_check_goes_unhealthy_after_fall_failures_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let code = Arc::new(AtomicU16::new(200));
    let server = status_server(code.clone());
    let agent = start_with_config(
        &data,
        &format!(
            "[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://{server}/health\"\n\
             interval = \"200ms\"\ntimeout = \"1s\"\nfall = 2\nrise = 2\n"
        ),
    );
    let timeout = Duration::from_secs(15);
    wait_until("a first passing probe", timeout, || {
        let c = check_state(&agent, "web");
        c["status"] == "ok" && c["state"] == "ok"
    });
    code.store(500, Ordering::SeqCst);
    wait_until("service_unhealthy", timeout, || {
        !events(&data, "service_unhealthy").is_empty()
    });
    let c = check_state(&agent, "web");
    assert_eq!(c["state"], "unhealthy", "{c}");
    assert_eq!(c["status"], "critical", "{c}");
    let down = &events(&data, "service_unhealthy")[0];
    assert_eq!(down["severity"], "error");
    assert_eq!(down["service"], "web");
    assert_eq!(down["source"], "labmesh-checks");
    let p = &down["payload"];
    assert_eq!(p["check"], "web");
    assert_eq!(p["kind"], "http");
    assert_eq!(p["consecutive_failures"], 2, "{p}");
    assert!(p["latency_ms"].is_u64(), "{p}");
    let output = p["output"].as_str().unwrap();
    assert!(
        output.contains("HTTP 500") && output.contains("database is down"),
        "{p}"
    );

    code.store(200, Ordering::SeqCst);
    wait_until("service_recovered", timeout, || {
        !events(&data, "service_recovered").is_empty()
    });
    assert_eq!(check_state(&agent, "web")["state"], "ok");
    let up = &events(&data, "service_recovered")[0];
    assert_eq!(up["severity"], "info");
    assert_eq!(up["correlation_id"], down["correlation_id"]);
    assert!(up["payload"]["down_for_ms"].as_u64().unwrap() > 0, "{up}");
    // One episode: exactly one service_unhealthy.
    assert_eq!(events(&data, "service_unhealthy").len(), 1);
}

#[test]
fn an_https_check_trusts_the_ca_file_it_is_given_and_only_that() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, ca_pem) = https_server();
    let ca = dir.path().join("homelab-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let url = format!("https://localhost:{}/health", server.port());
    let agent = start_with_config(
        &data,
        &format!(
            "[[check]]\nname = \"own-ca\"\nkind = \"http\"\nurl = \"{url}\"\n\
             ca_file = \"{}\"\ninterval = \"200ms\"\ntimeout = \"2s\"\n\n\
             [[check]]\nname = \"system-roots\"\nkind = \"http\"\nurl = \"{url}\"\n\
             interval = \"200ms\"\ntimeout = \"2s\"\n",
            ca.display()
        ),
    );
    let timeout = Duration::from_secs(20);
    wait_until("the check with ca_file passes", timeout, || {
        check_state(&agent, "own-ca")["status"] == "ok"
    });
    wait_until(
        "the check without it fails on the certificate",
        timeout,
        || {
            let c = check_state(&agent, "system-roots");
            c["status"] == "critical"
                && c["output"]
                    .as_str()
                    .is_some_and(|o| o.to_ascii_lowercase().contains("certificate"))
        },
    );
}

#[test]
fn ttl_check_is_fed_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let agent = start_with_config(
        &data,
        "[[check]]\nname = \"backup\"\nkind = \"ttl\"\nttl = \"1h\"\n",
    );
    let cli = |verb: &str, note: &str| {
        let out = run(labmesh(&data)
            .args([
                "--api-addr",
                &agent.api.to_string(),
                "check",
                verb,
                "backup",
            ])
            .args(["--note", note]));
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let said = cli("fail", "disk full");
    assert!(
        said.contains("critical") && said.contains("unhealthy"),
        "{said}"
    );
    let down = events(&data, "service_unhealthy");
    assert_eq!(down.len(), 1);
    assert_eq!(down[0]["payload"]["output"], "disk full");
    cli("pass", "12 GB in 4 min");
    assert_eq!(events(&data, "service_recovered").len(), 1);
    assert_eq!(check_state(&agent, "backup")["output"], "12 GB in 4 min");
    // Unknown checks are a usage error; without the token the API refuses.
    let out = run(labmesh(&data).args([
        "--api-addr",
        &agent.api.to_string(),
        "check",
        "pass",
        "nope",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no check named \"nope\""),
        "{}",
        stderr(&out)
    );
    let (status, body) =
        http_auth(agent.api, "POST", "/v1/checks/backup/pass", None, None).unwrap();
    assert_eq!(status, 401, "{body}");
}

#[test]
fn bad_check_definitions_stop_the_agent_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("labmesh.toml");
    let start = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let out = run(labmesh(dir.path())
            .arg("--config")
            .arg(&config)
            .arg("agent"));
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&config.display().to_string()), "{err}");
        err
    };
    let err = start("[[check]]\nname = \"web\"\nkind = \"http\"\nurll = \"http://x/\"\n");
    assert!(
        err.contains("line 4, column 1 (`urll`)") && err.contains("unknown field `urll`"),
        "{err}"
    );
    let err =
        start("[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://x/\"\ninterval = 0\n");
    assert!(
        err.contains("line 5, column 12 (`check.interval`): must be more than zero"),
        "{err}"
    );
    let err = start(
        "[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"https://x/\"\n\
         ca_file = \"/nonexistent/ca.pem\"\n",
    );
    assert!(
        err.contains("(`check.ca_file`)") && err.contains("/nonexistent/ca.pem cannot be read"),
        "{err}"
    );
}

#[test]
fn heartbeats_go_stale_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let agent = Agent::start(&data, &[]);
    let token = std::fs::read_to_string(data.join("api-token")).unwrap();
    let token = Some(token.trim());
    let post = |token: Option<&str>, body: &str| {
        http_auth(agent.api, "POST", "/v1/heartbeat", token, Some(body)).unwrap()
    };
    let beat = r#"{"worker_id": "gpu-1", "health_status": "healthy", "metrics": {"queue": 3}, "interval_s": 1}"#;
    let (status, body) = post(token, beat);
    assert_eq!(status, 200, "{body}");
    let workers = agent.get_json("/v1/workers");
    assert_eq!(workers[0]["worker_id"], "gpu-1");
    assert_eq!(workers[0]["status"], "fresh");
    assert_eq!(workers[0]["metrics"]["queue"], 3);
    wait_until("heartbeat_missed", Duration::from_secs(10), || {
        !events(&data, "heartbeat_missed").is_empty()
    });
    let workers = agent.get_json("/v1/workers");
    assert_eq!(workers[0]["status"], "stale", "{workers}");
    assert!(workers[0]["last_heartbeat_age_ms"].as_u64().unwrap() >= 2000);
    let missed = &events(&data, "heartbeat_missed")[0];
    assert_eq!(
        (missed["severity"].as_str(), missed["service"].as_str()),
        (Some("warning"), Some("gpu-1"))
    );
    // Once per episode, then fresh again with a heartbeat_resumed.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(events(&data, "heartbeat_missed").len(), 1);
    assert_eq!(post(token, beat).0, 200);
    assert_eq!(agent.get_json("/v1/workers")[0]["status"], "fresh");
    wait_until("heartbeat_resumed", Duration::from_secs(10), || {
        !events(&data, "heartbeat_resumed").is_empty()
    });
    assert_eq!(
        events(&data, "heartbeat_resumed")[0]["correlation_id"],
        missed["correlation_id"]
    );

    // Bad bodies are 400 with a JSON error naming the field; no or a wrong token is 401.
    let (status, body) = post(token, "{not json");
    assert_eq!(status, 400, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );
    let (status, body) = post(token, r#"{"health_status": "healthy"}"#);
    assert_eq!(status, 400);
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["field"], "worker_id", "{body}");
    for bad_token in [None, Some("wrong")] {
        let (status, body) = post(bad_token, beat);
        assert_eq!(status, 401, "{body}");
        let err: Value = serde_json::from_str(&body).unwrap();
        assert!(err["error"].as_str().unwrap().contains("Bearer"), "{body}");
    }
}

#[test]
fn a_worker_that_dies_while_the_agent_is_down_is_still_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut agent = Agent::start(&data, &[]);
    let token = std::fs::read_to_string(data.join("api-token")).unwrap();
    let beat = r#"{"worker_id": "nightly-render", "health_status": "healthy", "interval_s": 1}"#;
    let (status, body) = http_auth(
        agent.api,
        "POST",
        "/v1/heartbeat",
        Some(token.trim()),
        Some(beat),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    agent.stop_with(rustix::process::Signal::TERM);
    drop(agent);
    // The worker never beats again; the restarted agent still knows it and reports it.
    let agent = Agent::start(&data, &[]);
    let workers = agent.get_json("/v1/workers");
    assert_eq!(workers[0]["worker_id"], "nightly-render", "{workers}");
    wait_until(
        "heartbeat_missed after the restart",
        Duration::from_secs(15),
        || !events(&data, "heartbeat_missed").is_empty(),
    );
    assert_eq!(
        events(&data, "heartbeat_missed")[0]["service"],
        "nightly-render"
    );
}
