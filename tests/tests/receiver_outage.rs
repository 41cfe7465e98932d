//! A receiver that answers 500, then hangs past the send timeout, then comes back: the real
//! agent's HTTP path counts both as failures (recorded in the ledger, retried with backoff) and
//! delivers the firing and the resolved message once each when the receiver returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labmesh_tests::receiver::read_request;
use labmesh_tests::{Agent, events, labmesh, run, stderr, wait_until};
use serde_json::Value;

/// How long the receiver answers 500, and until when it hangs.
const ERRORS_UNTIL: Duration = Duration::from_secs(8);
const HANGS_UNTIL: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Log {
    errors: usize,
    hangs: usize,
    /// Bodies answered 200.
    accepted: Vec<Value>,
}

/// A webhook that is down (500s, then no answer at all) until `HANGS_UNTIL` after `start`.
fn flaky_receiver(start: Instant) -> (SocketAddr, Arc<Mutex<Log>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Arc<Mutex<Log>> = Arc::default();
    let out = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let log = out.clone();
            std::thread::spawn(move || {
                let Some((_, body)) = read_request(&mut stream) else {
                    return;
                };
                let age = start.elapsed();
                if age < ERRORS_UNTIL {
                    log.lock().unwrap().errors += 1;
                    let _ = stream.write_all(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops",
                    );
                } else if age < HANGS_UNTIL {
                    // Read, then say nothing for longer than the agent's send timeout (2 s).
                    log.lock().unwrap().hangs += 1;
                    std::thread::sleep(Duration::from_secs(6));
                } else {
                    log.lock()
                        .unwrap()
                        .accepted
                        .push(serde_json::from_str(&body).unwrap_or(Value::Null));
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                }
            });
        }
    });
    (addr, log)
}

fn emit(data: &Path, kind: &str) {
    let out = run(labmesh(data).args(["emit", "--type", kind, "--source", "build.sh"]));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Accepted bodies about the build alert, by status.
fn accepted(log: &Mutex<Log>, status: &str) -> usize {
    log.lock()
        .unwrap()
        .accepted
        .iter()
        .filter(|b| b["status"] == status)
        .filter(|b| {
            b["alerts"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|a| a["rule"] == "build_failed" && a["new"] == true)
            })
        })
        .count()
}

#[test]
fn a_receiver_that_errors_then_hangs_gets_each_message_once_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = Instant::now();
    let (receiver, log) = flaky_receiver(start);
    let config = format!(
        "[alerting]\nsettle = \"1s\"\ngroup_wait = \"1s\"\ngroup_interval = \"1s\"\n\
         repeat_interval = \"1h\"\nretry_initial = \"1s\"\nretry_max = \"4s\"\n\
         send_timeout = \"2s\"\nattempt_stale_after = \"10s\"\n\n\
         [[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{receiver}/hook\"\n"
    );
    let path = data.with_extension("toml");
    std::fs::write(&path, config).unwrap();
    let agent = Agent::start_with(&data, &[], |cmd| {
        cmd.env("LABMESH_CONFIG", &path);
    });
    emit(&data, "build_failed");
    wait_until("a 500 answered", Duration::from_secs(30), || {
        log.lock().unwrap().errors > 0
    });
    // It resolves while the receiver is still down.
    wait_until("a hung request", Duration::from_secs(60), || {
        log.lock().unwrap().hangs > 0
    });
    emit(&data, "build_completed");
    let timeout = Duration::from_secs(60);
    wait_until("the firing message", timeout, || {
        accepted(&log, "firing") > 0
    });
    wait_until("the resolved message", timeout, || {
        accepted(&log, "resolved") > 0
    });
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        start.elapsed() > HANGS_UNTIL,
        "nothing was accepted during the outage"
    );
    assert_eq!(accepted(&log, "firing"), 1, "{}", agent.log_text());
    assert_eq!(accepted(&log, "resolved"), 1, "{}", agent.log_text());

    let failed = events(&data, "notification_failed");
    let errors: Vec<&str> = failed
        .iter()
        .filter_map(|e| e["payload"]["error"].as_str())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("500")),
        "a 500 is a failure: {errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("timed out") || e.contains("deadline")),
        "no answer before the send timeout is a failure: {errors:?}"
    );
    assert!(
        failed.iter().all(|e| e["payload"]["final"] == false),
        "{failed:?}"
    );
    let sent = events(&data, "notification_sent");
    assert_eq!(
        sent.len(),
        log.lock().unwrap().accepted.len(),
        "each accepted message is in the ledger once: {sent:?}"
    );
    // One failure record per attempt: a late report of a timed-out attempt is not a second one.
    let mut attempts: Vec<(String, u64)> = failed
        .iter()
        .map(|e| {
            (
                e["payload"]["notification"].as_str().unwrap().to_owned(),
                e["payload"]["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    let n = attempts.len();
    attempts.sort();
    attempts.dedup();
    assert_eq!(attempts.len(), n, "{failed:?}");
}
