//! The web status page in a real browser: two joined agents, headless Chromium loads `/` from
//! one of them and must show both nodes, then an incident opened on the other node; the SSE
//! stream must carry a freshly emitted event; a screenshot is kept under
//! `target/test-artifacts/web-status.png`.
//!
//! A second test drives the page over WebDriver (chromedriver, spoken as plain JSON over HTTP)
//! and checks that it updates itself from the event stream, without a reload.
//!
//! Needs `chromium` and `chromium-driver` (Debian packages; scripts/test installs them).
//! Without them the tests are skipped with a message, except under CI (env `CI` set), where
//! they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use labmesh_tests::{
    Agent, free_port, free_udp_port, issue_bundle, labmesh, repo_path, run, stderr, wait_until,
};
use serde_json::{Value, json};

/// The browser binary: `$CHROMIUM`, else the first of the usual names on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Runs headless Chromium on `url` with `args`; returns its standard output. The page keeps an
/// event stream open, so `--virtual-time-budget` would wait forever: `--timeout` stops loading
/// after 5 s of real time instead, and the process is killed if it outlives 90 s.
fn browse(browser: &Path, profile: &Path, url: &str, args: &[&str]) -> String {
    let out_path = profile.with_extension(format!("out{}", rand::random::<u32>()));
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--timeout=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(&out_path).unwrap()
}

fn emit(data: &Path, node: &str, ty: &str, service: &str) {
    let out = run(labmesh(data).args([
        "--name",
        node,
        "emit",
        "--type",
        ty,
        "--severity",
        "error",
        "--service",
        service,
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Opens `/v1/events/stream` and returns the connection once the response head is read.
fn open_stream(api: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    write!(
        s,
        "GET /v1/events/stream HTTP/1.1\r\nHost: {api}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    s
}

/// Reads the stream until `needle` shows in a `data:` line, or panics after `secs`.
fn read_stream_until(s: &mut TcpStream, needle: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if text
            .lines()
            .any(|l| l.starts_with("data:") && l.contains(needle))
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} on the event stream within {secs} s; got:\n{text}"
        );
        match s.read(&mut buf) {
            Ok(0) => panic!("the event stream closed; got:\n{text}"),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the event stream: {e}"),
        }
    }
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path("target"));
    target.join("test-artifacts")
}

#[test]
fn the_status_page_shows_the_mesh_live_in_a_real_browser() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing and CI is set: the browser test must run (apt-get install chromium)"
        );
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium chromium-driver)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fast = ["--gossip-interval", "100ms", "--probe-interval", "1s"];
    let alpha_data = dir.path().join("alpha");
    let alpha_gossip = format!("127.0.0.1:{}", free_udp_port());
    let mut args = vec!["--name", "alpha", "--gossip-addr", &alpha_gossip];
    args.extend_from_slice(&fast);
    let mut alpha = Agent::start(&alpha_data, &args);
    let bundle = dir.path().join("bravo.bundle.json");
    issue_bundle(&alpha_data, "alpha", "bravo", &bundle);
    let bundle = bundle.display().to_string();
    let bravo_data = dir.path().join("bravo");
    let mut args = vec![
        "--name",
        "bravo",
        "--join",
        &bundle,
        "--seed",
        &alpha_gossip,
    ];
    args.extend_from_slice(&fast);
    let bravo = Agent::start(&bravo_data, &args);
    wait_until(
        "alpha to see bravo alive with its summary",
        Duration::from_secs(30),
        || {
            let status = alpha.get_json("/v1/status");
            status["nodes"].as_array().is_some_and(|nodes| {
                nodes.len() == 2
                    && nodes
                        .iter()
                        .all(|n| n["liveness"] == "alive" && n["summary"]["score"].is_u64())
            })
        },
    );
    let url = format!("http://{}/", alpha.api);
    let profile = dir.path().join("chromium-profile");

    // Both nodes, rendered by the server and kept by the page's script.
    let dom = browse(&browser, &profile, &url, &["--dump-dom"]);
    for name in ["alpha", "bravo"] {
        assert!(
            dom.contains(&format!(">{name}</td>")),
            "{name} missing from the page:\n{dom}"
        );
    }
    assert!(dom.contains("id=\"nodes\""), "{dom}");

    // The event stream carries a freshly emitted event, as it is stored.
    let mut stream = open_stream(alpha.api);
    // The first status event comes at once: then the stream is surely subscribed.
    let first = read_stream_until(&mut stream, "\"mesh\"", 15);
    assert!(first.contains("event: status"), "{first}");
    emit(&alpha_data, "alpha", "backup_completed", "sse-probe-svc");
    let seen = read_stream_until(&mut stream, "sse-probe-svc", 15);
    assert!(seen.contains("\"type\":\"backup_completed\""), "{seen}");

    // An incident opened on bravo reaches alpha and its page; names are escaped on the way.
    emit(&bravo_data, "bravo", "service_unhealthy", "nas-<pool>");
    wait_until(
        "alpha to list bravo's incident",
        Duration::from_secs(60),
        || {
            let incidents = alpha.get_json("/v1/incidents");
            incidents.as_object().is_some_and(|m| {
                m.values()
                    .any(|i| i["service"] == "nas-<pool>" && i["status"] == "open")
            })
        },
    );
    let status = alpha.get_json("/v1/status");
    assert_eq!(
        status["incidents_open"][0]["service"], "nas-<pool>",
        "{status}"
    );
    assert_eq!(status["services_unhealthy"][0]["node"], "bravo", "{status}");
    let dom = browse(&browser, &profile, &url, &["--dump-dom"]);
    assert!(dom.contains("nas-&lt;pool&gt;"), "incident missing:\n{dom}");
    assert!(!dom.contains("nas-<pool>"), "unescaped name:\n{dom}");
    assert!(dom.contains("id=\"incidents\""), "{dom}");

    // A screenshot for people: kept as a test artifact.
    let shots = artifacts_dir();
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("web-status.png");
    let _ = std::fs::remove_file(&png);
    browse(
        &browser,
        &profile,
        &url,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,900",
        ],
    );
    let bytes = std::fs::read(&png).unwrap_or_default();
    assert!(
        bytes.len() > 1000 && bytes.starts_with(b"\x89PNG"),
        "no screenshot at {} ({} bytes)",
        png.display(),
        bytes.len()
    );

    // An open event stream must not hold the agent up when it is asked to stop, and the stream
    // ends with it.
    assert_eq!(alpha.stop_with(Signal::TERM).code(), Some(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => assert!(Instant::now() < deadline, "the stream stayed open: {e}"),
        }
    }
    drop(bravo);
}

/// `chromedriver` on PATH (Debian package `chromium-driver`), or `$CHROMEDRIVER`.
fn chromedriver() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMEDRIVER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromedriver"))
        .find(|p| p.is_file())
}

/// A chromedriver process, killed on drop.
struct Driver(std::process::Child, SocketAddr);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP exchange with chromedriver, which keeps connections open whatever the request
/// says: the body is read by its `Content-Length`.
fn wd_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf)?;
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if rest.len() >= len || n == 0 {
                let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok());
                return Ok((code.unwrap_or(0), rest.to_owned()));
            }
        }
        if n == 0 {
            return Ok((0, text.into_owned()));
        }
    }
}

impl Driver {
    /// A WebDriver command (plain JSON over HTTP); returns the answer's `value`.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let body = body.to_string();
        let (code, text) = wd_http(self.1, method, path, &body).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(code, 200, "{method} {path}: {text}");
        doc["value"].clone()
    }
}

/// The page updates itself from the event stream, in a real browser driven over WebDriver:
/// a new event shows in the live list, and the incident it opens shows (escaped) without a
/// reload.
#[test]
fn the_status_page_updates_itself_from_the_event_stream() {
    let (Some(browser), Some(driver)) = (chromium(), chromedriver()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium or chromedriver is missing and CI is set: apt-get install chromium chromium-driver"
        );
        eprintln!("SKIPPED: chromium or chromedriver is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("alpha");
    let agent = Agent::start(&data, &["--name", "alpha"]);
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child, format!("127.0.0.1:{port}").parse().unwrap());
    wait_until("chromedriver to answer", Duration::from_secs(20), || {
        wd_http(driver.1, "GET", "/status", "").is_ok_and(|(code, _)| code == 200)
    });
    let profile = dir.path().join("chromium-profile");
    let session = driver.call(
        "POST",
        "/session",
        json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": browser,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", format!("--user-data-dir={}", profile.display())],
        }}}}),
    );
    let id = session["sessionId"].as_str().unwrap().to_owned();
    let url = format!("http://{}/", agent.api);
    driver.call("POST", &format!("/session/{id}/url"), json!({ "url": url }));
    let js = |script: &str| {
        driver.call(
            "POST",
            &format!("/session/{id}/execute/sync"),
            json!({"script": script, "args": []}),
        )
    };
    wait_until(
        "the page to connect its stream",
        Duration::from_secs(20),
        || {
            js("return document.getElementById('conn').textContent")
                .as_str()
                .is_some_and(|t| t.starts_with("live"))
        },
    );
    let out = run(labmesh(&data).args([
        "--name",
        "alpha",
        "emit",
        "--type",
        "service_unhealthy",
        "--severity",
        "critical",
        "--service",
        "live-<svc>",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut seen = Value::Null;
    let shown = (0..200).any(|_| {
        seen = js("return [document.getElementById('live').textContent, \
                   document.getElementById('status').innerHTML]");
        let live = seen[0].as_str().unwrap_or_default();
        let body = seen[1].as_str().unwrap_or_default();
        let done = live.contains("live-<svc>") && body.contains("live-&lt;svc&gt;");
        if !done {
            std::thread::sleep(Duration::from_millis(100));
        }
        done
    });
    assert!(shown, "the page did not update itself: {seen}");
    assert!(!seen[1].as_str().unwrap().contains("live-<svc>"), "{seen}");
    driver.call("DELETE", &format!("/session/{id}"), json!({}));
}
