//! The agent speaks systemd's notify protocol (what `Type=notify` and `WatchdogSec=` in
//! deploy/systemd/labmesh.service rely on): the test plays systemd's part with a real datagram
//! socket in `$NOTIFY_SOCKET`, as systemd itself does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use labmesh_tests::{Agent, http};

/// The next notification, or None within `timeout`.
fn next(sock: &UnixDatagram, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

#[test]
fn the_agent_tells_systemd_it_is_ready_pings_the_watchdog_and_says_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let started = Instant::now();
    // Agent::start waits for /healthz; READY=1 may only come once it answers.
    let mut agent = Agent::start_with(&dir.path().join("data"), &[], |cmd| {
        cmd.env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "1000000");
    });

    let ready = next(&sock, Duration::from_secs(30)).expect("a READY=1 notification");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .expect("a STATUS= line with READY=1");
    assert!(
        status.contains("peers alive") && status.contains("alerts firing"),
        "{status:?}"
    );
    // Ready means usable: the API answers right away.
    assert_eq!(http(agent.api, "GET", "/healthz", None).unwrap().0, 200);

    // Pings every half of WATCHDOG_USEC (0.5 s): at least three in three seconds.
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(m) = next(&sock, Duration::from_millis(1500)) {
            assert!(!m.contains("READY=1"), "READY twice: {m:?}");
            if m.lines().any(|l| l == "WATCHDOG=1") {
                pings += 1;
            }
        }
    }
    assert!(pings >= 3, "{pings} watchdog pings in 3 s");

    // A stopped (hung) agent stops pinging: systemd would restart it after WatchdogSec.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(agent.pid()).unwrap(),
        rustix::process::Signal::STOP,
    )
    .unwrap();
    while next(&sock, Duration::from_millis(200)).is_some() {}
    assert_eq!(
        next(&sock, Duration::from_secs(2)),
        None,
        "pings while hung"
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(agent.pid()).unwrap(),
        rustix::process::Signal::CONT,
    )
    .unwrap();

    // SIGTERM: STOPPING=1 first, then a clean exit well within TimeoutStopSec.
    let asked = Instant::now();
    let status = agent.stop_with(rustix::process::Signal::TERM);
    assert!(status.success(), "{status}; log:\n{}", agent.log_text());
    assert!(asked.elapsed() < Duration::from_secs(30));
    let mut saw_stopping = false;
    while let Some(m) = next(&sock, Duration::from_millis(200)) {
        saw_stopping |= m.lines().any(|l| l == "STOPPING=1");
    }
    assert!(saw_stopping, "no STOPPING=1; log:\n{}", agent.log_text());
    eprintln!("whole test {:?}", started.elapsed());
}

#[test]
fn without_a_notify_socket_nothing_is_sent_and_the_agent_runs_as_before() {
    // The usual case (a terminal, Docker, launchd): a socket nobody names stays silent.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let agent = Agent::start_with(&dir.path().join("data"), &[], |cmd| {
        cmd.env_remove("NOTIFY_SOCKET")
            .env("WATCHDOG_USEC", "1000000");
    });
    assert_eq!(next(&sock, Duration::from_secs(2)), None);
    assert_eq!(http(agent.api, "GET", "/healthz", None).unwrap().0, 200);
}
