//! The whole chain on real processes: an HTTP `[[check]]` on alpha fails, the incident it opens
//! reaches bravo through sync, and both nodes show it in `/v1/status`, `labmesh status` and the
//! web page; when the service answers again the incident resolves everywhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use labmesh_tests::{
    Agent, free_port, free_udp_port, issue_bundle, labmesh, run, stderr, stdout, wait_until,
};
use serde_json::Value;

fn start(dir: &Path, name: &str, config: &str, join: Option<(&Path, &str)>) -> Agent {
    let data = dir.join(name);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let gossip = format!("127.0.0.1:{}", free_udp_port());
    let mut args: Vec<String> = [
        "--name",
        name,
        "--gossip-addr",
        &gossip,
        "--gossip-interval",
        "100ms",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some((ca_data, seed)) = join {
        let bundle = dir.join(format!("{name}.bundle.json"));
        issue_bundle(ca_data, "alpha", name, &bundle);
        args.extend([
            "--join".into(),
            bundle.display().to_string(),
            "--seed".into(),
            seed.into(),
        ]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start_with(&data, &refs, |cmd| {
        cmd.env("LABMESH_CONFIG", &path);
    });
    std::fs::write(dir.join(format!("{name}.gossip")), &gossip).unwrap();
    agent
}

fn open_incidents(agent: &Agent) -> Vec<Value> {
    agent.get_json("/v1/status")["incidents_open"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_failing_http_check_is_an_incident_on_every_node_status_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let check = format!(
        "[[check]]\nname = \"grafana\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/\"\n\
         interval = \"200ms\"\ntimeout = \"1s\"\nfall = 2\nrise = 1\n"
    );
    let alpha = start(dir.path(), "alpha", &check, None);
    let seed = std::fs::read_to_string(dir.path().join("alpha.gossip")).unwrap();
    let bravo = start(
        dir.path(),
        "bravo",
        "",
        Some((&dir.path().join("alpha"), &seed)),
    );

    // Nothing listens on the port: after `fall` failures, an incident on alpha's grafana.
    for agent in [&alpha, &bravo] {
        wait_until(
            "the incident on every node",
            Duration::from_secs(30),
            || {
                open_incidents(agent)
                    .iter()
                    .any(|i| i["node"] == "alpha" && i["service"] == "grafana")
            },
        );
        let (code, page) = agent.get("/fragment/status");
        assert_eq!(code, 200);
        assert!(page.contains("grafana"), "{page}");
        let out =
            run(labmesh(&agent.data_dir).args(["--api-addr", &agent.api.to_string(), "status"]));
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("grafana"), "{}", stdout(&out));
    }

    // The service comes up: the check recovers and the incident resolves on both.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = std::io::Write::write_all(
                &mut s,
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
            );
        }
    });
    for agent in [&alpha, &bravo] {
        wait_until(
            "the incident resolved on every node",
            Duration::from_secs(30),
            || {
                !open_incidents(agent)
                    .iter()
                    .any(|i| i["service"] == "grafana")
                    && agent
                        .get_json("/v1/incidents")
                        .as_object()
                        .is_some_and(|m| {
                            m.values()
                                .any(|i| i["service"] == "grafana" && i["status"] == "resolved")
                        })
            },
        );
    }
}
