//! `labmesh run` over a real small cargo project that the test writes: a passing build, a
//! failing one, `cargo test` and `cargo nextest` with one failure and one ignored test, a warning
//! counted, a secret from the environment stored nowhere, a forwarded SIGINT, and a run recorded
//! without an agent that an agent started later picks up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use labmesh_tests::{Agent, events, labmesh, stderr, stdout, wait_until};
use serde_json::Value;

const SECRET: &str = "hunter2-very-secret-value";

/// A crate with a binary that has one warning (an unused variable), and tests: one passes, one
/// fails, one is ignored.
fn project(dir: &Path) -> PathBuf {
    let p = dir.join("demo");
    std::fs::create_dir_all(p.join("src")).unwrap();
    std::fs::write(
        p.join("Cargo.toml"),
        "[package]\nname = \"demo\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        p.join("src/main.rs"),
        r#"fn main() {
    let unused = 1;
    println!("demo {}", std::env::var("DEMO_TOKEN").unwrap_or_default());
}

#[cfg(test)]
mod tests {
    #[test]
    fn passes() {}
    #[test]
    fn fails() {
        panic!("boom");
    }
    #[test]
    #[ignore]
    fn ignored() {}
}
"#,
    )
    .unwrap();
    p
}

/// `labmesh run ARGS` in `cwd`, with the secret in the environment and a target dir of its own
/// (the outer cargo's must not be shared or locked).
fn wrapped(data: &Path, cwd: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = labmesh(data);
    // The outer nextest's settings (CI's profile) mean nothing to the test's own project.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("NEXTEST_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(cwd)
        .env("DEMO_TOKEN", SECRET)
        .env("CARGO_TARGET_DIR", cwd.join("target"))
        .env_remove("RUSTFLAGS")
        .args(["--name", "ws", "run"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The one end event of the run with correlation id `run` (any kind).
fn end_of(data: &Path, types: &[&str]) -> Vec<Value> {
    types.iter().flat_map(|t| events(data, t)).collect()
}

fn never_stored(data: &Path) {
    for entry in walk(data) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(SECRET),
            "the secret is stored in {}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn builds_and_tests_of_a_cargo_project_are_recorded_with_their_counts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let proj = project(dir.path());

    // A passing build: output passes through, a warning is counted, the artifact measured.
    let out = wrapped(
        &data,
        &proj,
        &[
            "--kind",
            "build",
            "--service",
            "demo",
            "--backend",
            "cpu",
            "--artifact",
            "target/debug/demo",
            "--",
            "cargo",
            "build",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unused"),
        "cargo's output passed through"
    );
    let done = end_of(&data, &["build_completed"]);
    assert_eq!(done.len(), 1, "{done:#?}");
    let p = &done[0]["payload"];
    assert_eq!(p["service"], "demo");
    assert_eq!(p["backend"], "cpu");
    assert_eq!(p["exit_code"], 0);
    assert_eq!(p["diagnostics"]["warnings"], 1, "{p:#}");
    assert!(p["artifact_bytes"].as_u64().unwrap() > 1000, "{p:#}");
    assert!(p["duration_seconds"].as_f64().unwrap() > 0.0);
    let started = events(&data, "build_started");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["correlation_id"], done[0]["correlation_id"]);

    // The binary prints the secret: the log keeps it redacted, and nothing stores it.
    let out = wrapped(
        &data,
        &proj,
        &["--kind", "deploy", "--", "target/debug/demo"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(SECRET),
        "the terminal sees the real output"
    );
    let deploy = end_of(&data, &["deployment_completed"]);
    let log = data.join(deploy[0]["payload"]["log"].as_str().unwrap());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("[redacted:DEMO_TOKEN]"), "{text}");

    // cargo test: one failure and one ignored; the exit code is cargo's.
    let out = wrapped(
        &data,
        &proj,
        &["--kind", "test", "--service", "demo", "--", "cargo", "test"],
    );
    assert_eq!(out.status.code(), Some(101), "{}", stderr(&out));
    let failed = end_of(&data, &["test_failed"]);
    assert_eq!(failed.len(), 1);
    let t = &failed[0]["payload"]["tests"];
    assert_eq!(
        (&t["passed"], &t["failed"], &t["ignored"]),
        (&Value::from(1), &Value::from(1), &Value::from(1)),
        "{t}"
    );
    assert_eq!(failed[0]["payload"]["exit_code"], 101);

    // cargo nextest, where installed (CI has it): the same counts.
    let has_nextest = Command::new("cargo")
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has_nextest {
        let out = wrapped(
            &data,
            &proj,
            &[
                "--kind",
                "test",
                "--service",
                "demo-nextest",
                "--",
                "cargo",
                "nextest",
                "run",
                "--no-fail-fast",
            ],
        );
        assert!(!out.status.success());
        let failed: Vec<Value> = end_of(&data, &["test_failed"])
            .into_iter()
            .filter(|e| e["service"] == "demo-nextest")
            .collect();
        assert_eq!(failed.len(), 1);
        let t = &failed[0]["payload"]["tests"];
        assert_eq!(t["passed"], 1, "{t}");
        assert_eq!(t["failed"], 1, "{t}");
        assert_eq!(t["ignored"], 1, "{t}");
    }

    // A failing build inside a script that marks its phases: the failing phase is named.
    std::fs::write(proj.join("src/main.rs"), "fn main() { not_rust }\n").unwrap();
    let script = proj.join("build.sh");
    let bin = labmesh_tests::labmesh_bin();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\n{0} run phase prepare\ntrue\n{0} run phase compile\ncargo build\n",
            bin.display()
        ),
    )
    .unwrap();
    let out = wrapped(
        &data,
        &proj,
        &[
            "--kind",
            "build",
            "--service",
            "demo",
            "--",
            "sh",
            "build.sh",
        ],
    );
    assert_eq!(out.status.code(), Some(101), "{}", stderr(&out));
    let failed = end_of(&data, &["build_failed"]);
    assert_eq!(failed.len(), 1);
    let p = &failed[0]["payload"];
    assert_eq!(p["failing_phase"], "compile", "{p:#}");
    assert_eq!(p["phases"].as_array().unwrap().len(), 2, "{p:#}");
    assert!(p["diagnostics"]["errors"].as_u64().unwrap() >= 1, "{p:#}");
    assert!(
        p["tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap_or("").contains("not_rust")),
        "{p:#}"
    );
    never_stored(&data);
}

#[test]
fn a_command_that_cannot_start_or_is_missing_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = wrapped(&data, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("after `--`"), "{}", stderr(&out));
    let out = wrapped(&data, dir.path(), &["--", "no-such-program-xyz"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("no-such-program-xyz"),
        "{}",
        stderr(&out)
    );
    assert_eq!(end_of(&data, &["build_failed"]).len(), 1);
    // `run phase` outside a run says what to do.
    let out = labmesh(&data).args(["run", "phase", "x"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not inside `labmesh run`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_sigint_to_the_wrapper_reaches_the_command_and_the_run_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let marker = dir.path().join("got-int");
    let script = format!(
        "trap 'echo interrupted > {}; exit 130' INT; echo ready; while true; do sleep 0.05; done",
        marker.display()
    );
    let mut child = labmesh(&data)
        .args([
            "--name", "ws", "run", "--kind", "test", "--", "sh", "-c", &script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the run to start", Duration::from_secs(20), || {
        !events(&data, "test_started").is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(marker.exists(), "the command never saw the SIGINT");
    let cancelled = events(&data, "test_cancelled");
    assert_eq!(cancelled.len(), 1, "{cancelled:#?}");
    assert_eq!(cancelled[0]["payload"]["signal"], "SIGINT");
}

#[test]
fn a_run_recorded_without_an_agent_is_picked_up_and_signed_by_one_started_later() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = wrapped(&data, dir.path(), &["--kind", "build", "--", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let agent = Agent::start(&data, &["--name", "ws"]);
    wait_until("the agent to list the run", Duration::from_secs(20), || {
        let v = agent.get_json("/v1/events?type=build_completed");
        v.as_array().is_some_and(|a| !a.is_empty())
            || v["events"].as_array().is_some_and(|a| !a.is_empty())
    });
    let out = labmesh(&data).args(["fsck", "--verify"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn the_seed_s_build_metrics_come_from_this_node_s_runs_and_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let artifact = dir.path().join("llm-worker");
    std::fs::write(&artifact, vec![0u8; 4096]).unwrap();
    let a = artifact.display().to_string();
    let build = |cmd: &str| {
        wrapped(
            &data,
            dir.path(),
            &[
                "--kind",
                "build",
                "--backend",
                "cuda",
                "--artifact",
                &a,
                "--",
                "sh",
                "-c",
                cmd,
            ],
        )
    };
    assert!(build("true").status.success());
    assert!(!build("exit 1").status.success());
    // The last run also leaves the figures for node_exporter's textfile collector.
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir_all(&textfiles).unwrap();
    let t = textfiles.display().to_string();
    assert!(
        wrapped(
            &data,
            dir.path(),
            &["--kind", "test", "--textfile-dir", &t, "--", "true"]
        )
        .status
        .success()
    );
    let file = std::fs::read_to_string(textfiles.join("labmesh_runs.prom")).unwrap();
    labmesh_tests::promtool_check(&file);
    assert_eq!(
        labmesh_tests::metric_value(
            &file,
            r#"homelab_build_failure_total{host="ws",backend="cuda"}"#
        ),
        Some(1.0),
        "{file}"
    );
    assert_eq!(
        std::fs::read_dir(&textfiles).unwrap().count(),
        1,
        "no temporary file is left"
    );
    let agent = Agent::start(&data, &["--name", "ws"]);
    let mut body = String::new();
    wait_until("the run metrics", Duration::from_secs(20), || {
        body = agent.get("/metrics").1;
        body.contains("homelab_test_success_total")
    });
    labmesh_tests::promtool_check(&body);
    let value = |s: &str| labmesh_tests::metric_value(&body, s);
    let cuda = r#"{host="ws",backend="cuda"}"#;
    assert_eq!(
        value(&format!("homelab_build_success_total{cuda}")),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(&format!("homelab_build_failure_total{cuda}")),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(&format!("homelab_binary_size_bytes{cuda}")),
        Some(4096.0),
        "{body}"
    );
    assert!(
        value(&format!("homelab_build_duration_seconds{cuda}")).is_some(),
        "{body}"
    );
    let none = r#"{host="ws",backend="none"}"#;
    assert_eq!(
        value(&format!("homelab_test_success_total{none}")),
        Some(1.0),
        "{body}"
    );
    assert!(
        body.contains("labmesh_agent_uptime_seconds"),
        "ours are still there: {body}"
    );
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    stdout(&out).trim().to_owned()
}

#[test]
fn runs_stats_names_the_first_failing_commit_and_list_show_read_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let repo = dir.path().join("llm-worker");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    // Commits 1 and 2 build; 3 breaks it and 4 does not fix it.
    let mut commits = Vec::new();
    for (i, ok) in [(1, true), (2, true), (3, false), (4, false)] {
        std::fs::write(repo.join("ok"), if ok { "0" } else { "1" }).unwrap();
        git(&repo, &["add", "ok"]);
        git(
            &repo,
            &[
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                &format!("commit {i}"),
            ],
        );
        commits.push(git(&repo, &["rev-parse", "HEAD"]));
        let out = wrapped(
            &data,
            &repo,
            &["--kind", "build", "--", "sh", "-c", "exit $(cat ok)"],
        );
        assert_eq!(out.status.success(), ok, "{}", stderr(&out));
    }
    let out = labmesh(&data)
        .args(["--name", "ws", "runs", "stats", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let failing = stats["failing"].as_array().unwrap();
    assert_eq!(failing.len(), 1, "{stats:#}");
    let f = &failing[0];
    assert_eq!(
        f["series"]["service"], "llm-worker",
        "the repository names the service"
    );
    assert_eq!(f["first_failing_commit"], commits[2].as_str(), "{f:#}");
    let range: Vec<&str> = f["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(range, [&commits[1], &commits[2], &commits[3]], "{f:#}");
    let human = labmesh(&data)
        .args(["--name", "ws", "runs", "stats"])
        .output()
        .unwrap();
    assert!(
        stdout(&human).contains(&commits[2][..7]),
        "{}",
        stdout(&human)
    );

    let out = labmesh(&data)
        .args(["--name", "ws", "runs", "list", "--json"])
        .output()
        .unwrap();
    let list: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list[0]["git_commit"], commits[3].as_str(), "newest first");
    assert_eq!(list[0]["outcome"], "failed");
    let id = list[0]["id"].as_str().unwrap();
    let out = labmesh(&data)
        .args(["--name", "ws", "runs", "show", id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&commits[3]), "{}", stdout(&out));
}

/// Reads an HTTP response from `stream` until `want` has appeared in it (or 20 s pass).
fn read_until(stream: &mut std::net::TcpStream, seen: &mut String, want: &str) {
    use std::io::Read;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        assert!(
            std::time::Instant::now() < deadline,
            "{want:?} never came; got:\n{seen}"
        );
        match stream.read(&mut buf) {
            Ok(0) => panic!("the stream ended before {want:?}; got:\n{seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_running_build_s_log_is_followed_live_over_sse_and_from_the_cli() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let agent = Agent::start(&data, &["--name", "ws"]);
    let gate = dir.path().join("go-on");
    let script = format!(
        "echo first line; while [ ! -e {} ]; do sleep 0.05; done; echo second line >&2",
        gate.display()
    );
    let mut run = labmesh(&data)
        .env("DEMO_TOKEN", SECRET)
        .args([
            "--name", "ws", "run", "--kind", "build", "--", "sh", "-c", &script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut id = String::new();
    wait_until("the run to start", Duration::from_secs(20), || {
        let started = events(&data, "build_started");
        if let Some(e) = started.first() {
            id = e["correlation_id"].as_str().unwrap().to_owned();
        }
        !id.is_empty()
    });
    // The CLI follows it too, from the start.
    let cli = labmesh(&data)
        .args(["--name", "ws", "runs", "log", &id, "-f"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sse = std::net::TcpStream::connect(agent.api).unwrap();
    sse.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        sse,
        "GET /v1/runs/{id}/log?follow=1 HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        agent.api
    )
    .unwrap();
    let mut seen = String::new();
    read_until(&mut sse, &mut seen, "first line");
    assert!(
        run.try_wait().unwrap().is_none(),
        "the line arrived while the command still ran"
    );
    std::fs::write(&gate, "").unwrap();
    read_until(&mut sse, &mut seen, "second line");
    read_until(&mut sse, &mut seen, "event: end");
    assert!(run.wait().unwrap().success());
    let out = cli.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("first line"), "{}", stdout(&out));
    assert!(stderr(&out).contains("second line"), "{}", stderr(&out));
    assert!(stderr(&out).contains("build_complete"), "{}", stderr(&out));
    // Not a run id, and a run this node does not have.
    let (code, body) = agent.get("/v1/runs/..%2F..%2Fetc/log");
    assert_eq!(code, 400, "{body}");
    let (code, _) = agent.get("/v1/runs/01a25247-3e89-7550-8ed8-602769146e71/log");
    assert_eq!(code, 404);
    let (code, body) = agent.get(&format!("/v1/runs/{id}/log"));
    assert_eq!(code, 200);
    assert_eq!(body.lines().count(), 4, "start, two lines, end: {body}");
}

#[test]
fn a_run_whose_wrapper_is_killed_is_recorded_abandoned_by_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut run = labmesh(&data)
        .args(["--name", "ws", "run", "--kind", "test", "--", "sleep", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the run to start", Duration::from_secs(20), || {
        !events(&data, "test_started").is_empty()
    });
    run.kill().unwrap();
    run.wait().unwrap();
    let out = labmesh(&data)
        .args(["--name", "ws", "runs", "list", "--json"])
        .output()
        .unwrap();
    let list: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        list[0]["outcome"], "abandoned",
        "the CLI sees the wrapper gone: {list:#}"
    );
    // The agent of the host records it, so the whole mesh sees it the same way.
    let _agent = Agent::start(&data, &["--name", "ws"]);
    wait_until("test_abandoned", Duration::from_secs(20), || {
        events(&data, "test_abandoned").len() == 1
    });
    let abandoned = events(&data, "test_abandoned");
    let started = events(&data, "test_started");
    assert_eq!(abandoned[0]["correlation_id"], started[0]["correlation_id"]);
}

#[test]
fn on_a_terminal_the_command_gets_one_too_and_keeps_its_colours() {
    // util-linux's `script` gives the wrapper a terminal, as an operator's shell would.
    let have_script = Command::new("script").arg("--version").output().is_ok();
    assert!(
        have_script,
        "`script` (util-linux; scripts/test installs it) is needed"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bin = labmesh_tests::labmesh_bin();
    let inner =
        "[ -t 1 ] && [ -t 2 ] && echo on-a-tty || echo no-tty; printf '\\033[31mred\\033[0m\\n'";
    let line = |extra: &str| {
        format!(
            "{} --name ws run {extra} -- sh -c \"{inner}\"",
            bin.display()
        )
    };
    let run_in_script = |extra: &str| {
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line(extra), "/dev/null"]);
        for (k, v) in labmesh(&data).get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(Stdio::null()).output().unwrap()
    };
    let out = run_in_script("");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("on-a-tty"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("\u{1b}[31mred"),
        "colours pass through"
    );
    let done = events(&data, "build_completed");
    let log =
        std::fs::read_to_string(data.join(done[0]["payload"]["log"].as_str().unwrap())).unwrap();
    assert!(
        log.contains("\"line\":\"on-a-tty\""),
        "no \\r in the log: {log}"
    );
    let out = run_in_script("--no-pty");
    assert!(stdout(&out).contains("no-tty"), "{}", stdout(&out));
}

#[test]
fn a_run_that_prints_without_end_keeps_a_bounded_log_and_passes_everything_through() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = labmesh(&data)
        .env("LABMESH_RUN_LOG_MAX_BYTES", "4000")
        .args(["--name", "ws", "run", "--", "seq", "1", "20000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Every line reached the caller.
    assert_eq!(stdout(&out).lines().count(), 20000);
    assert_eq!(stdout(&out).lines().last(), Some("20000"));
    let end = &end_of(&data, &["build_completed"])[0];
    let log = data
        .join("logs/runs")
        .join(format!("{}.jsonl", end["correlation_id"].as_str().unwrap()));
    let text = std::fs::read_to_string(&log).unwrap();
    // The output lines stay under the cap; the lifecycle records come on top.
    assert!(text.len() < 4000 + 2000, "{} bytes", text.len());
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        records
            .iter()
            .filter(|r| r["event"] == "log_truncated")
            .count(),
        1,
        "{text}"
    );
    let last = records.last().unwrap();
    assert!(
        last["log_lines_dropped"].as_u64().unwrap() > 19000,
        "{last}"
    );
    // The tail in the event still has the real end of the output.
    let tail = end["payload"]["tail"].as_array().unwrap();
    assert_eq!(tail.last().unwrap(), "20000", "{end}");
}
