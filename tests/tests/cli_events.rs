//! `labmesh emit`, `events list|tail`, `fsck` as a user runs them: real processes, real files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::Stdio;

use labmesh_tests::{labmesh, run, stderr, stdout};
use serde_json::{Value, json};

#[test]
fn emit_then_list_json_round_trips_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(labmesh(dir.path()).args([
        "emit",
        "--type",
        "deployment_failed",
        "--severity",
        "error",
        "--source",
        "deploy.sh",
        "--service",
        "mosquitto",
        "--correlation-id",
        "deploy-882",
        "--payload",
        r#"{"stage": "verify", "error": "port 1883 not bound", "n": [1, 2.5, null]}"#,
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let path = stdout(&out).trim().to_owned();
    assert!(
        path.starts_with(&dir.path().join("events").display().to_string()),
        "{path}"
    );
    assert!(
        path.contains("/testnode/") && path.contains("_deployment_failed_"),
        "{path}"
    );

    let out = run(labmesh(dir.path()).args(["events", "list", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list.len(), 1);
    let ev = &list[0];
    assert_eq!(ev["type"], "deployment_failed");
    assert_eq!(ev["severity"], "error");
    assert_eq!(ev["source"], "deploy.sh");
    assert_eq!(ev["service"], "mosquitto");
    assert_eq!(ev["correlation_id"], "deploy-882");
    assert_eq!(ev["node"], "testnode");
    assert_eq!(
        ev["payload"],
        json!({"stage": "verify", "error": "port 1883 not bound", "n": [1, 2.5, null]})
    );
    let id = ev["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    assert!(path.ends_with(&format!("_{id}.json")));
    let ts = ev["timestamp"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'),
        "{ts}"
    );
    let keys: Vec<&String> = ev.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "id",
            "timestamp",
            "node",
            "type",
            "severity",
            "source",
            "service",
            "correlation_id",
            "payload",
            "hlc"
        ]
    );
    // The origin's hybrid logical clock travels with the event (`<16 hex>/<id>`).
    assert!(
        ev["hlc"]
            .as_str()
            .is_some_and(|h| h.len() > 17 && h.as_bytes()[16] == b'/'),
        "{ev}"
    );

    // --jsonl gives the file's own line.
    let out = run(labmesh(dir.path()).args(["events", "list", "--jsonl"]));
    assert_eq!(stdout(&out), std::fs::read_to_string(&path).unwrap());
}

#[test]
fn emit_reads_the_payload_from_stdin_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = labmesh(dir.path())
        .args([
            "emit",
            "--type",
            "service_unhealthy",
            "--payload-file",
            "-",
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"error": "OOM"}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["event"]["payload"]["error"], "OOM");
    assert!(std::path::Path::new(doc["path"].as_str().unwrap()).exists());

    let file = dir.path().join("payload.json");
    std::fs::write(&file, r#"{"from": "file"}"#).unwrap();
    let out = run(labmesh(dir.path())
        .args(["emit", "--type", "x", "--payload-file"])
        .arg(&file));
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = std::fs::read_to_string(stdout(&out).trim()).unwrap();
    assert!(stored.contains(r#""payload":{"from":"file"}"#), "{stored}");
}

#[test]
fn bad_input_exits_2_with_the_field_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--type", "DeployStarted"],
            "field `type`: \"DeployStarted\" is not snake_case",
        ),
        (
            &["--type", "x", "--severity", "urgent"],
            "\"urgent\" is not a severity; use one of info, warning, error, critical",
        ),
        (
            &["--type", "x", "--payload", "[1,2]"],
            "the payload must be a JSON object, found an array",
        ),
        (
            &["--type", "x", "--payload", "{oops"],
            "--payload: not valid JSON",
        ),
        (
            &["--type", "x", "--service", ""],
            "field `service`: is empty",
        ),
        (
            &["--type", "x", "--source", "a\nb"],
            "field `source`: contains the control character",
        ),
        (
            &["--type", "x", "--payload-file", "/nonexistent/p.json"],
            "--payload-file /nonexistent/p.json",
        ),
    ];
    for (args, want) in cases {
        let out = run(labmesh(dir.path()).arg("emit").args(*args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    // A complete, unsigned event of another node: only that node may write (and sign) it.
    let foreign = dir.path().join("foreign.jsonl");
    std::fs::write(&foreign, r#"{"id":"0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e5f","timestamp":"2026-05-12T12:05:00Z","node":"saturn","type":"silence_set","severity":"info","source":"x","service":"all","correlation_id":"","payload":{}}"#).unwrap();
    let out = run(labmesh(dir.path())
        .args(["emit", "--from-jsonl"])
        .arg(&foreign));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("names node saturn, but this node is testnode"),
        "{}",
        stderr(&out)
    );
    let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(70_000));
    let out = run(labmesh(dir.path()).args(["emit", "--type", "x", "--payload", &big]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("over the 65536-byte limit"),
        "{}",
        stderr(&out)
    );
    let out = run(labmesh(dir.path()).args([
        "--max-event-bytes",
        "100000",
        "emit",
        "--type",
        "x",
        "--payload",
        &big,
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(labmesh(dir.path())
        .env("LABMESH_NAME", "not_a_host")
        .args(["emit", "--type", "x"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("set LABMESH_NAME"),
        "{}",
        stderr(&out)
    );
    // Nothing but the one good event was written, and no temp files either.
    let fsck = run(labmesh(dir.path()).args(["--max-event-bytes", "100000", "fsck", "--json"]));
    let report: Value = serde_json::from_slice(&fsck.stdout).unwrap();
    assert_eq!(report["ok"], 1);
    assert_eq!(report["temp_files"], 0);
}

#[test]
fn list_filters_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = labmesh(dir.path())
        .args(["emit", "--from-jsonl", "-", "--batch-size", "7"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..30 {
            let sev = ["info", "warning", "error", "critical"][i % 4];
            writeln!(stdin, r#"{{"type": "job_{}", "severity": "{sev}", "service": "svc{}", "correlation_id": "run-{}", "payload": {{"i": {i}}}}}"#, i % 3, i % 2, i / 10).unwrap();
        }
        // A complete event (a restore) keeps its own id and time.
        writeln!(stdin, r#"{{"id":"0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e5f","timestamp":"2026-05-12T12:05:00Z","node":"testnode","type":"deployment_started","severity":"info","source":"deploy.sh","service":"mosquitto","correlation_id":"deploy-882","payload":{{}}}}"#).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 31);

    let count = |args: &[&str]| -> usize {
        let out = run(labmesh(dir.path())
            .args(["events", "list", "--jsonl"])
            .args(args));
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out).lines().count()
    };
    assert_eq!(count(&[]), 31);
    assert_eq!(count(&["--type", "job_0"]), 10);
    assert_eq!(count(&["--type", "job_0", "--type", "job_1"]), 20);
    assert_eq!(count(&["--min-severity", "error"]), 14);
    assert_eq!(count(&["--severity", "critical"]), 7);
    assert_eq!(count(&["--service", "svc1"]), 15);
    assert_eq!(count(&["--correlation-id", "run-2"]), 10);
    assert_eq!(count(&["--node", "testnode"]), 31);
    assert_eq!(count(&["--node", "saturn"]), 0);
    assert_eq!(
        count(&["--since", "2026-05-12", "--until", "2026-05-13"]),
        1
    );
    assert_eq!(count(&["--since", "1h"]), 30);
    assert_eq!(count(&["--limit", "3"]), 3);
    let out = run(labmesh(dir.path()).args([
        "events", "list", "--order", "desc", "--limit", "1", "--json",
    ]));
    let newest: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(newest[0]["payload"]["i"], 29);

    let out = run(labmesh(dir.path()).args(["events", "tail", "-n", "2", "--jsonl"]));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["payload"]["i"], 29);
    let table = stdout(&run(labmesh(dir.path()).args([
        "events",
        "list",
        "--type",
        "deployment_started",
    ])));
    assert!(table.starts_with("TIME"), "{table}");
    assert!(table.contains("2026-05-12T12:05:00.000Z  testnode  deployment_started  info      mosquitto  deploy.sh  deploy-882"), "{table}");

    let out = run(labmesh(dir.path()).args(["events", "list", "--since", "last tuesday"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn tail_follow_prints_new_events() {
    let dir = tempfile::tempdir().unwrap();
    run(labmesh(dir.path()).args(["emit", "--type", "first"]));
    let mut child = labmesh(dir.path())
        .args(["events", "tail", "-f", "--jsonl"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert!(line.contains("\"type\":\"first\""), "{line}");
    run(labmesh(dir.path()).args(["emit", "--type", "second"]));
    line.clear();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert!(line.contains("\"type\":\"second\""), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn fsck_reports_torn_invalid_and_misplaced_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(labmesh(dir.path()).args(["emit", "--type", "good"]));
    let good = std::path::PathBuf::from(stdout(&out).trim());
    let folder = good.parent().unwrap().to_owned();
    let text = std::fs::read_to_string(&good).unwrap();
    std::fs::write(
        folder.join("20260512T120500.123Z_torn_0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e5f.json"),
        &text[..text.len() / 2],
    )
    .unwrap();
    std::fs::write(
        folder.join("20260512T120500.123Z_bad_0196c2a4-5b1e-7c3d-8e9f-0a1b2c3d4e60.json"),
        text.replace("\"info\"", "\"loud\""),
    )
    .unwrap();
    let elsewhere = dir.path().join("events/2020-01-01/testnode");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::copy(&good, elsewhere.join(good.file_name().unwrap())).unwrap();
    std::fs::write(folder.join(".leftover.json.0000.tmp"), "{").unwrap();

    let out = run(labmesh(dir.path()).arg("fsck"));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("TORN"), "{text}");
    assert!(
        text.contains("INVALID") && text.contains("\"loud\" is not a severity"),
        "{text}"
    );
    assert!(
        text.contains("MISPLACED") && text.contains("date folder \"2020-01-01\""),
        "{text}"
    );
    assert!(
        text.contains(
            "1 ok, 1 torn, 1 invalid, 1 misplaced; 0 id conflicts, 1 leftover temp files"
        ),
        "{text}"
    );
    let out = run(labmesh(dir.path()).args(["fsck", "--json"]));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["torn"], 1);
    assert_eq!(report["misplaced"], 1);
    // `events list` skips them (read-only) and says so.
    let out = run(labmesh(dir.path()).args(["events", "list", "--jsonl"]));
    assert_eq!(stdout(&out).lines().count(), 1);
    assert!(stderr(&out).contains("3 file(s)"), "{}", stderr(&out));
}
