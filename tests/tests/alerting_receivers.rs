//! Alerting receivers against real or faithful servers: a real Alertmanager (Debian's
//! `prometheus-alertmanager`) and a minimal SMTP server for the email receiver.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use labmesh_tests::{Agent, events, free_port, wait_until};
use serde_json::Value;

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
    // Alertmanager can show the alert before the agent has stored the send's outcome.
    wait_until("notification_sent", Duration::from_secs(10), || {
        !events(&data, "notification_sent").is_empty()
    });
}

/// How the test SMTP server secures its sessions.
#[derive(Clone, Copy, PartialEq)]
enum SmtpMode {
    /// Plain text, no STARTTLS offered.
    Plain,
    /// STARTTLS offered (and the mail only taken after it).
    Starttls,
    /// TLS from the first byte (SMTPS).
    Implicit,
}

/// One recorded mail: whether it came over TLS, and its DATA.
type Mails = Arc<Mutex<Vec<(bool, String)>>>;

/// A minimal SMTP server that records each message's DATA; the TLS modes use a `localhost`
/// certificate of a throwaway CA (returned as PEM, for the receiver's `ca_file`).
fn smtp_server(mode: SmtpMode) -> (SocketAddr, Mails, String) {
    let tls = labmesh_tests::tls::localhost_tls();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mails: Mails = Arc::default();
    let out = mails.clone();
    let config = tls.server.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut plain) = stream else { continue };
            let _ = plain.set_read_timeout(Some(Duration::from_secs(5)));
            let out = out.clone();
            let config = config.clone();
            std::thread::spawn(move || {
                let wrap = |s: std::net::TcpStream| {
                    rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), s)
                };
                match mode {
                    SmtpMode::Implicit => {
                        let mut s = wrap(plain);
                        smtp_dialogue(&mut s, true, true, false, &out);
                    }
                    SmtpMode::Plain => {
                        smtp_dialogue(&mut plain, true, false, false, &out);
                    }
                    SmtpMode::Starttls => {
                        if smtp_dialogue(&mut plain, true, false, true, &out) {
                            let mut s = wrap(plain);
                            smtp_dialogue(&mut s, false, true, false, &out);
                        }
                    }
                }
            });
        }
    });
    (addr, mails, tls.ca_pem)
}

fn say(s: &mut impl Write, text: &str) {
    let _ = s.write_all(text.as_bytes());
    let _ = s.flush();
}

fn read_line(s: &mut impl Read) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

/// Serves SMTP on `s` until QUIT; true when the client asked for STARTTLS (the caller then
/// wraps the stream and serves again without a greeting: after STARTTLS the client speaks
/// first). A session that offers STARTTLS refuses mail before it (a real relay's policy).
fn smtp_dialogue(
    s: &mut (impl Read + Write),
    greet: bool,
    tls: bool,
    offer_starttls: bool,
    out: &Mails,
) -> bool {
    if greet {
        say(s, "220 test ESMTP\r\n");
    }
    loop {
        let Some(line) = read_line(s) else {
            return false;
        };
        let cmd = line.trim_end().to_ascii_uppercase();
        if cmd.starts_with("EHLO") {
            if offer_starttls {
                say(s, "250-test\r\n250-8BITMIME\r\n250 STARTTLS\r\n");
            } else {
                say(s, "250-test\r\n250 8BITMIME\r\n");
            }
        } else if cmd == "STARTTLS" && offer_starttls {
            say(s, "220 go ahead\r\n");
            return true;
        } else if cmd == "DATA" && offer_starttls {
            say(s, "530 Must issue a STARTTLS command first\r\n");
        } else if cmd == "DATA" {
            say(s, "354 go on\r\n");
            let mut data = String::new();
            loop {
                match read_line(s) {
                    Some(l) if l != ".\r\n" => data.push_str(&l),
                    _ => break,
                }
            }
            out.lock().unwrap().push((tls, data));
            say(s, "250 queued\r\n");
        } else if cmd == "QUIT" {
            say(s, "221 bye\r\n");
            return false;
        } else {
            say(s, "250 ok\r\n");
        }
    }
}

#[test]
fn an_email_receiver_sends_over_smtp() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, mails, _) = smtp_server(SmtpMode::Plain);
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
            .any(|(_, m)| m.contains("service_unhealthy") && m.contains("me@lab.example"))
    });
    wait_until("notification_sent", Duration::from_secs(10), || {
        !events(&data, "notification_sent").is_empty()
    });
}

#[test]
fn email_goes_over_starttls_or_implicit_tls_to_a_relay_of_the_homelab_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (starttls, starttls_mails, ca_pem) = smtp_server(SmtpMode::Starttls);
    let (implicit, implicit_mails, implicit_ca) = smtp_server(SmtpMode::Implicit);
    let (plain, plain_mails, _) = smtp_server(SmtpMode::Plain);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, format!("{ca_pem}{implicit_ca}")).unwrap();
    let ca = ca.display();
    let data = dir.path().join("data");
    let service_port = free_port();
    let email = |name: &str, port: u16, tls: &str| {
        format!(
            "[[receiver]]\nname = \"{name}\"\nkind = \"email\"\nsmtp = \"localhost:{port}\"\n\
             tls = \"{tls}\"\nca_file = \"{ca}\"\n\
             from = \"labmesh@lab.example\"\nto = [\"me@lab.example\"]\n\n"
        )
    };
    let config = format!(
        "[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{service_port}/\"\n\
         interval = \"200ms\"\ntimeout = \"1s\"\nfall = 1\n\n\
         [alerting]\nsettle = \"1s\"\ngroup_wait = \"1s\"\ngroup_interval = \"1s\"\n\n{}{}{}",
        email("starttls", starttls.port(), "starttls"),
        email("smtps", implicit.port(), "implicit"),
        // STARTTLS required, and this relay does not offer it: nothing goes out in clear.
        email("no-downgrade", plain.port(), "starttls"),
    );
    let path = data.with_extension("toml");
    std::fs::write(&path, config).unwrap();
    let _agent = Agent::start_with(&data, &[], |cmd| {
        cmd.env("LABMESH_CONFIG", &path);
    });
    for (what, mails) in [
        ("STARTTLS", &starttls_mails),
        ("implicit TLS", &implicit_mails),
    ] {
        wait_until(
            &format!("the email over {what}"),
            Duration::from_secs(30),
            || {
                mails
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(tls, m)| *tls && m.contains("service_unhealthy"))
            },
        );
    }
    wait_until(
        "the refused downgrade recorded",
        Duration::from_secs(30),
        || {
            events(&data, "notification_failed")
                .iter()
                .any(|e| e["payload"]["receiver"] == "no-downgrade")
        },
    );
    assert!(plain_mails.lock().unwrap().is_empty());
}
