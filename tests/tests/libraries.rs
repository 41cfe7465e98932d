//! The shell and Python libraries in `deploy/lib/` write what `labmesh emit` writes: the same
//! layout, fields and formats, read back identically by `labmesh events list`, and adopted (not
//! quarantined) by a running agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use labmesh_tests::{Agent, labmesh, repo_path, run, stderr, stdout, wait_until};
use serde_json::{Value, json};

const PAYLOAD: &str =
    r#"{"version": "1.0", "nested": {"list": [1, 2.5, true, null], "text": "quote \" and é"}}"#;

fn emit_with_shell(data: &Path, cid: &str) -> String {
    let lib = repo_path("deploy/lib/events.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"source "$LIB" && emit_event deployment_started info deploy.sh mosquitto "$CID" "$PAYLOAD""#)
        .env("LIB", lib)
        .env("CID", cid)
        .env("PAYLOAD", PAYLOAD)
        .env("LABMESH_DATA_DIR", data)
        .env("LABMESH_NAME", "testnode")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "events.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn emit_with_python(data: &Path, cid: &str) -> String {
    let script = format!(
        "import sys, json; sys.path.insert(0, {lib:?}); from events import emit_event\nprint(emit_event(event_type='deployment_started', severity='info', source='deploy.sh', service='mosquitto', correlation_id={cid:?}, payload=json.loads({PAYLOAD:?})))",
        lib = repo_path("deploy/lib").display().to_string(),
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("LABMESH_DATA_DIR", data)
        .env("LABMESH_NAME", "testnode")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "events.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn emit_with_cli(data: &Path, cid: &str) -> String {
    let out = run(labmesh(data).args([
        "emit",
        "--type",
        "deployment_started",
        "--severity",
        "info",
        "--source",
        "deploy.sh",
        "--service",
        "mosquitto",
        "--correlation-id",
        cid,
        "--payload",
        PAYLOAD,
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

/// The event without what differs by construction (id, time).
fn comparable(mut ev: Value) -> Value {
    let obj = ev.as_object_mut().unwrap();
    obj.remove("id");
    obj.remove("timestamp");
    obj.remove("correlation_id");
    // Only labmesh stamps its hybrid logical clock; library events order by timestamp, id.
    obj.remove("hlc");
    ev
}

#[test]
fn libraries_and_cli_write_events_that_read_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let paths = [
        emit_with_cli(data, "cli"),
        emit_with_shell(data, "shell"),
        emit_with_python(data, "python"),
    ];
    for p in &paths {
        assert!(Path::new(p).is_file(), "{p} is not a file");
        let text = std::fs::read_to_string(p).unwrap();
        assert!(
            text.ends_with("}\n") && text.lines().count() == 1,
            "{p}: {text:?}"
        );
    }
    let out = run(labmesh(data).args(["events", "list", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).is_empty(),
        "a library wrote something the store refuses: {}",
        stderr(&out)
    );
    let events: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(events.len(), 3);
    let by_cid = |cid: &str| {
        events
            .iter()
            .find(|e| e["correlation_id"] == cid)
            .cloned()
            .unwrap()
    };
    let cli = by_cid("cli");
    for lib in ["shell", "python"] {
        let ev = by_cid(lib);
        let keys: Vec<&String> = ev.as_object().unwrap().keys().collect();
        let cli_keys: Vec<&String> = cli
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "hlc")
            .collect();
        assert_eq!(keys, cli_keys, "{lib}: field order differs");
        assert_eq!(
            comparable(ev.clone()),
            comparable(cli.clone()),
            "{lib} differs from labmesh emit"
        );
        assert_eq!(
            uuid::Uuid::parse_str(ev["id"].as_str().unwrap())
                .unwrap()
                .get_version_num(),
            7
        );
        let ts = ev["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-05-12T12:05:00.123Z".len(), "{lib}: {ts}");
    }
    assert_eq!(
        cli["payload"],
        serde_json::from_str::<Value>(PAYLOAD).unwrap()
    );
    let fsck = run(labmesh(data).arg("fsck"));
    assert_eq!(fsck.status.code(), Some(0), "{}", stdout(&fsck));
}

#[test]
fn a_running_agent_adopts_what_the_libraries_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let agent = Agent::start(&data, &[]);
    emit_with_shell(&data, "shell");
    emit_with_python(&data, "python");
    wait_until("pick-up of library events", Duration::from_secs(10), || {
        agent.get_json("/healthz")["events"] == 2
    });
    let listed = agent.get_json("/v1/events?type=deployment_started");
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(
        !data.join("quarantine").read_dir().unwrap().any(|_| true),
        "something was quarantined"
    );
    assert_eq!(
        agent.get_json("/v1/events?correlation_id=python")[0]["payload"]["version"],
        json!("1.0")
    );
}
