//! `labmesh agent` as a process: zero configuration, health endpoint, pick-up and quarantine
//! while running, clean exit on SIGINT and SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use labmesh_tests::{Agent, free_port, http, labmesh, run, stdout, wait_until};
use rustix::process::Signal;
use serde_json::Value;

#[test]
fn zero_configuration_first_start() {
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let root = rustix::process::geteuid().is_root();
    // No data dir given: the default must be created. As root (CI) the default is
    // /var/lib/labmesh; the agent then runs in its own mount namespace with a tmpfs over
    // /var/lib, so the test never touches the machine's real /var/lib.
    let mut cmd = if root {
        let mut c = std::process::Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /var/lib && exec \"$0\" agent",
        ])
        .arg(labmesh_tests::labmesh_bin());
        c
    } else {
        let mut c = std::process::Command::new(labmesh_tests::labmesh_bin());
        c.arg("agent");
        c
    };
    let log = home.path().join("agent.log");
    let log_file = std::fs::File::create(&log).unwrap();
    cmd.env("HOME", home.path())
        .env_remove("LABMESH_DATA_DIR")
        .env_remove("XDG_DATA_HOME")
        .env("LABMESH_NAME", "testnode")
        .env("LABMESH_CONFIG", "/dev/null")
        .env("LABMESH_API_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "LABMESH_GOSSIP_ADDR",
            format!("127.0.0.1:{}", labmesh_tests::free_udp_port()),
        )
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    let mut agent = Agent::from_child(
        cmd.spawn().unwrap(),
        format!("127.0.0.1:{port}").parse().unwrap(),
        home.path(),
        log,
    );
    agent.wait_healthy();
    let health = agent.get_json("/healthz");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["node"], "testnode");
    let data = if root {
        std::path::PathBuf::from(format!("/proc/{}/root/var/lib/labmesh", agent.pid()))
    } else {
        home.path().join(".local/share/labmesh")
    };
    assert!(
        data.join("events").is_dir(),
        "{} not created",
        data.display()
    );
    let token = data.join("api-token");
    let mode = std::fs::metadata(&token).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", token.display());
    let dir_mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    assert_eq!(
        agent.stop_with(Signal::TERM).code(),
        Some(0),
        "{}",
        agent.log_text()
    );
}

#[test]
fn agent_picks_up_files_quarantines_bad_ones_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut agent = Agent::start(&data, &["--rescan-interval", "1s"]);
    assert_eq!(agent.get_json("/healthz")["events"], 0);
    // A good event written while the agent runs is picked up.
    let out =
        run(labmesh(&data).args(["emit", "--type", "backup_completed", "--source", "restic"]));
    let path = std::path::PathBuf::from(stdout(&out).trim());
    wait_until("pick-up", Duration::from_secs(10), || {
        agent.get_json("/healthz")["events"] == 1
    });
    // Garbage dropped beside it is quarantined with a reason and an event; the agent lives on.
    let folder = path.parent().unwrap();
    std::fs::write(folder.join("garbage.json"), [0u8, 159, 146, 150]).unwrap();
    std::fs::write(folder.join("wrong.json"), std::fs::read(&path).unwrap()).unwrap();
    // The store writes each `.reason` file first, then appends its event: wait for both.
    let quarantine_events = || {
        agent
            .get_json("/v1/events?type=event_quarantined")
            .as_array()
            .map_or(0, Vec::len)
    };
    wait_until("quarantine", Duration::from_secs(20), || {
        data.join("quarantine/garbage.json.reason").exists()
            && data.join("quarantine/wrong.json.reason").exists()
            && quarantine_events() == 2
    });
    let reason = std::fs::read_to_string(data.join("quarantine/wrong.json.reason")).unwrap();
    assert!(reason.contains("file name \"wrong.json\""), "{reason}");
    let quarantined: Vec<Value> =
        serde_json::from_value(agent.get_json("/v1/events?type=event_quarantined")).unwrap();
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert!(
        quarantined
            .iter()
            .all(|e| e["severity"] == "warning" && e["node"] == "testnode")
    );
    let listed = agent.get_json("/v1/events?type=backup_completed&source=restic");
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (status, body) = http(agent.api, "GET", "/v1/events?severity=loud", None).unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("\"error\""), "{body}");
    // Logs are JSON lines when stdout is not a terminal.
    let log = agent.log_text();
    let first = log.lines().next().unwrap();
    let parsed: Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert!(parsed["level"].is_string());
    assert_eq!(
        agent.stop_with(Signal::INT).code(),
        Some(0),
        "{}",
        agent.log_text()
    );
    // A restart indexes everything again from disk.
    let agent = Agent::start(&data, &[]);
    assert_eq!(agent.get_json("/healthz")["events"], 3);
}

#[test]
fn second_agent_on_the_same_port_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("a"), &[]);
    let out =
        run(labmesh(&dir.path().join("b")).args(["agent", "--api-addr", &agent.api.to_string()]));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {}", agent.api)) && err.contains("--api-addr"),
        "{err}"
    );
}

#[test]
fn bad_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("labmesh.toml");
    std::fs::write(
        &config,
        "name = \"vm1\"\n\n[store]\nrescan_interval = \"often\"\n",
    )
    .unwrap();
    let out = run(labmesh(dir.path())
        .arg("--config")
        .arg(&config)
        .args(["agent"]));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&config.display().to_string())
            && err.contains("store.rescan_interval")
            && err.contains("\"often\""),
        "{err}"
    );
    std::fs::write(&config, "name = \"vm1\"\n[store]\nmax_event_byte = 10\n").unwrap();
    let out = run(labmesh(dir.path())
        .arg("--config")
        .arg(&config)
        .args(["agent"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3, column 1 (`max_event_byte`)") && err.contains("unknown field"),
        "{err}"
    );
}

/// A raw GET with the given `Host` header (and token); returns the status code.
fn get_as(addr: std::net::SocketAddr, host: &str, token: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /v1/status HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_api_answers_only_for_its_own_names_against_dns_rebinding() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        &dir.path().join("d"),
        &["--api-allowed-host", "labmesh.home.lan"],
    );
    let port = agent.api.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("testnode:{port}"),
        "LabMesh.Home.Lan".to_owned(),
    ] {
        assert_eq!(get_as(agent.api, &host, None), 200, "{host}");
    }
    // A page on evil.example whose name was re-pointed at 127.0.0.1.
    for host in [
        format!("evil.example:{port}"),
        "testnode.evil.example:1".to_owned(),
        "127.0.0.1.evil.example".to_owned(),
        "testnode.home.lan".to_owned(),
    ] {
        assert_eq!(get_as(agent.api, &host, None), 421, "{host}");
    }
}

#[test]
fn with_a_read_token_only_local_clients_read_without_it() {
    // The address other hosts reach this one by (the default route's source address).
    let lan = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.200:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .expect("a non-loopback IPv4 address");
    assert!(!lan.is_loopback(), "{lan}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    std::fs::create_dir_all(&data).unwrap();
    let port = free_port();
    let log = dir.path().join("agent.log");
    let child = labmesh(&data)
        .args(["agent", "--api-addr", &format!("0.0.0.0:{port}")])
        .args([
            "--gossip-addr",
            &format!("127.0.0.1:{}", labmesh_tests::free_udp_port()),
        ])
        .args(["--api-read-token", "true"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("agent.err")).unwrap())
        .spawn()
        .unwrap();
    let local: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut agent = Agent::from_child(child, local, &data, log);
    agent.wait_healthy();
    let token = std::fs::read_to_string(data.join("api-token")).unwrap();
    let remote = std::net::SocketAddr::new(lan, port);
    assert_eq!(get_as(local, &local.to_string(), None), 200);
    assert_eq!(get_as(remote, &remote.to_string(), None), 401);
    assert_eq!(get_as(remote, &remote.to_string(), Some(token.trim())), 200);
}
