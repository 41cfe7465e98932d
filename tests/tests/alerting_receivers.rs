//! Alerting receivers against real or faithful servers: a real Alertmanager (Debian's
//! `prometheus-alertmanager`) and a minimal SMTP server for the email receiver.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use labmesh_tests::{Agent, free_port, labmesh, run, stderr, stdout, wait_until};
use serde_json::Value;

fn events(data: &Path, event_type: &str) -> Vec<Value> {
    let out = run(labmesh(data).args(["events", "list", "--json", "--type", event_type]));
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// A real Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port; `None`
/// when it is not installed (scripts/test installs it).
fn alertmanager(dir: &Path) -> Option<(std::process::Child, SocketAddr)> {
    let bin = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
    let child = std::process::Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Some((child, addr))
}

/// Kills the Alertmanager when the test ends, even on a panic.
struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_alertmanager_receives_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let Some((child, am)) = alertmanager(dir.path()) else {
        eprintln!("prometheus-alertmanager is not installed: skipped (scripts/test installs it)");
        return;
    };
    let _reaper = Reaper(child);
    wait_until("Alertmanager ready", Duration::from_secs(30), || {
        labmesh_tests::http(am, "GET", "/-/ready", None).is_ok_and(|(code, _)| code == 200)
    });
    let data = dir.path().join("data");
    let service_port = free_port();
    let config = format!(
        "[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{service_port}/\"\n\
         interval = \"200ms\"\ntimeout = \"1s\"\nfall = 1\n\n\
         [alerting]\nsettle = \"1s\"\ngroup_wait = \"1s\"\ngroup_interval = \"1s\"\n\n\
         [[receiver]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://{am}\"\n"
    );
    let path = data.with_extension("toml");
    std::fs::write(&path, config).unwrap();
    let _agent = Agent::start_with(&data, &[], |cmd| {
        cmd.env("LABMESH_CONFIG", &path);
    });
    let mut last = Value::Null;
    wait_until("the alert in Alertmanager", Duration::from_secs(30), || {
        let Ok((200, body)) = labmesh_tests::http(am, "GET", "/api/v2/alerts", None) else {
            return false;
        };
        last = serde_json::from_str(&body).unwrap_or(Value::Null);
        last.as_array().is_some_and(|a| {
            a.iter().any(|a| {
                a["labels"]["alertname"] == "service_unhealthy" && a["labels"]["service"] == "web"
            })
        })
    });
    let sent = events(&data, "notification_sent");
    assert!(!sent.is_empty(), "{sent:?}");
}

/// A minimal SMTP server (no STARTTLS offered) that records each message's DATA.
fn smtp_server() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mails: Arc<Mutex<Vec<String>>> = Arc::default();
    let out = mails.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut w) = stream else { continue };
            let _ = w.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(w.try_clone().unwrap());
            let _ = w.write_all(b"220 test ESMTP\r\n");
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let cmd = line.trim_end().to_ascii_uppercase();
                let reply: &[u8] = if cmd.starts_with("EHLO") {
                    b"250-test\r\n250 8BITMIME\r\n"
                } else if cmd == "DATA" {
                    let _ = w.write_all(b"354 go on\r\n");
                    let mut data = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                            break;
                        }
                        data.push_str(&line);
                    }
                    out.lock().unwrap().push(data);
                    b"250 queued\r\n"
                } else if cmd == "QUIT" {
                    let _ = w.write_all(b"221 bye\r\n");
                    break;
                } else {
                    b"250 ok\r\n"
                };
                let _ = w.write_all(reply);
            }
        }
    });
    (addr, mails)
}

#[test]
fn an_email_receiver_sends_over_smtp() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, mails) = smtp_server();
    let data = dir.path().join("data");
    let service_port = free_port();
    let config = format!(
        "[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{service_port}/\"\n\
         interval = \"200ms\"\ntimeout = \"1s\"\nfall = 1\n\n\
         [alerting]\nsettle = \"1s\"\ngroup_wait = \"1s\"\ngroup_interval = \"1s\"\n\n\
         [[receiver]]\nname = \"mail\"\nkind = \"email\"\nsmtp = \"{smtp}\"\n\
         from = \"labmesh@lab.example\"\nto = [\"me@lab.example\"]\n"
    );
    let path = data.with_extension("toml");
    std::fs::write(&path, config).unwrap();
    let _agent = Agent::start_with(&data, &[], |cmd| {
        cmd.env("LABMESH_CONFIG", &path);
    });
    wait_until("the email", Duration::from_secs(30), || {
        mails
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("service_unhealthy") && m.contains("me@lab.example"))
    });
    wait_until("notification_sent", Duration::from_secs(10), || {
        !events(&data, "notification_sent").is_empty()
    });
}
