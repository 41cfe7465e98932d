//! The deployment files under `deploy/` are checked by the tools that will read them:
//! `systemd-analyze verify` for the systemd unit, Python's plistlib for the launchd plists,
//! `logrotate -d` for the logrotate rules, and `promtool` for the Prometheus configuration and
//! alert rules, whose metric names must all be ones a real agent exports.
//!
//! Each test needs its tool (Debian packages `systemd`, `python3`, `logrotate`, `prometheus`);
//! it is skipped with a message when the tool is missing, except under CI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use labmesh_tests::{Agent, labmesh, labmesh_bin, metric_value, repo_path, wait_until};
use serde_json::Value;

/// Whether `tool` runs; when it does not, the test is skipped (a message) unless CI is set, where
/// a missing tool is a failure.
fn have(tool: &str, version_arg: &str, package: &str) -> bool {
    let usable = Command::new(tool)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success());
    if !usable {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs {tool} (Debian package `{package}`): this test must run there"
        );
        eprintln!("skipped: no {tool} (Debian package `{package}`)");
    }
    usable
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `Key=Value` lines of a unit file, comments and section headers left out.
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn the_systemd_unit_verifies_and_keeps_its_hardening() {
    let unit = read("deploy/systemd/labmesh.service");
    let d = directives(&unit);
    let get = |key: &str| -> Vec<&str> {
        d.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let one = |key: &str| -> &str {
        let values = get(key);
        assert_eq!(values.len(), 1, "{key}= once in the unit: {values:?}");
        values[0]
    };
    for (key, want) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecStart", "/usr/bin/labmesh agent"),
        ("User", "labmesh"),
        ("Group", "labmesh"),
        ("StateDirectory", "labmesh"),
        ("StateDirectoryMode", "0750"),
        ("Restart", "always"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
    ] {
        assert_eq!(one(key), want, "{key}=");
    }
    assert!(!one("WatchdogSec").is_empty());
    assert!(!one("TimeoutStopSec").is_empty());
    assert!(
        ["yes", "read-only", "true"].contains(&one("ProtectHome")),
        "ProtectHome={}",
        one("ProtectHome")
    );
    let families: BTreeSet<&str> = one("RestrictAddressFamilies").split_whitespace().collect();
    for family in ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"] {
        assert!(
            families.contains(family),
            "RestrictAddressFamilies: {family}"
        );
    }
    let env = get("Environment");
    for var in [
        "LABMESH_CONFIG=/etc/labmesh/labmesh.toml",
        "LABMESH_DATA_DIR=/var/lib/labmesh",
    ] {
        assert!(env.contains(&var), "Environment={var}: {env:?}");
    }
    // NVML opens /dev/nvidia*: nothing may close the device list (ProtectClock implies a
    // DeviceAllow= list). A missing docker group would fail the unit.
    for banned in [
        "PrivateDevices",
        "ProtectClock",
        "DeviceAllow",
        "DevicePolicy",
        "SupplementaryGroups",
        "ProcSubset",
    ] {
        assert!(get(banned).is_empty(), "{banned}= must not be set");
    }

    if !have("systemd-analyze", "--version", "systemd") {
        return;
    }
    // verify checks that ExecStart's program exists: point it at the binary under test, in a
    // copy that keeps the unit's file name.
    let dir = tempfile::tempdir().unwrap();
    let bin = labmesh_bin();
    let copy = unit.replace(
        "ExecStart=/usr/bin/labmesh agent",
        &format!("ExecStart=\"{}\" agent", bin.display()),
    );
    assert_ne!(copy, unit);
    let path = dir.path().join("labmesh.service");
    std::fs::write(&path, copy).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = said(&out);
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("labmesh")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify ({}):\n{text}",
        out.status
    );
}

/// A plist as JSON, through Python's plistlib (the format macOS's launchd reads).
fn plist(rel: &str) -> Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, plistlib, sys\n\
             with open(sys.argv[1], 'rb') as f:\n    \
                 print(json.dumps(plistlib.load(f)))",
        ])
        .arg(repo_path(rel))
        .output()
        .unwrap();
    assert!(out.status.success(), "plistlib on {rel}: {}", said(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every string in a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fn check_common(p: &Value, stem: &str) {
    assert_eq!(p["Label"], stem, "Label is the file name's stem");
    let args = p["ProgramArguments"].as_array().expect("ProgramArguments");
    assert_eq!(args.len(), 2, "{args:?}");
    assert_eq!(args[0], "/usr/local/bin/labmesh");
    assert_eq!(args[1], "agent");
    assert_eq!(p["KeepAlive"], true);
    assert_eq!(p["RunAtLoad"], true);
    assert!(p["ThrottleInterval"].as_u64().is_some_and(|t| t > 0), "{p}");
    assert!(
        ["Background", "Standard", "Adaptive", "Interactive"]
            .contains(&p["ProcessType"].as_str().unwrap_or("")),
        "ProcessType: {}",
        p["ProcessType"]
    );
    assert_eq!(p["StandardOutPath"], p["StandardErrorPath"], "one log file");
    // launchd expands neither ~ nor $VARIABLES.
    let mut all = Vec::new();
    strings(p, &mut all);
    for s in &all {
        assert!(!s.contains('~') && !s.contains('$'), "{stem}: {s:?}");
    }
}

#[test]
fn the_launchd_plists_parse_with_the_expected_keys() {
    if !have("python3", "--version", "python3") {
        return;
    }
    let system = plist("deploy/launchd/com.labmesh.agent.plist");
    check_common(&system, "com.labmesh.agent");
    let env = &system["EnvironmentVariables"];
    assert_eq!(env["LABMESH_DATA_DIR"], "/usr/local/var/labmesh");
    assert_eq!(env["LABMESH_CONFIG"], "/usr/local/etc/labmesh/labmesh.toml");
    assert_eq!(
        system["StandardOutPath"],
        "/usr/local/var/log/labmesh/agent.log"
    );
    assert!(system.get("UserName").is_none(), "a system daemon as root");
    // The logrotate rules cover that log.
    assert!(read("deploy/logrotate/labmesh").contains("/usr/local/var/log/labmesh/*.log {"));

    let user = plist("deploy/launchd/com.labmesh.agent.user.plist");
    check_common(&user, "com.labmesh.agent.user");
    assert_eq!(
        user["EnvironmentVariables"]["LABMESH_DATA_DIR"],
        "__HOME__/Library/Application Support/labmesh"
    );
    for key in ["StandardOutPath", "StandardErrorPath"] {
        assert!(
            user[key].as_str().unwrap().starts_with("__HOME__/"),
            "{key}: {}",
            user[key]
        );
    }
    assert!(read("deploy/launchd/README.md").contains("__HOME__"));
}

fn id(flag: &str) -> String {
    let out = Command::new("id").arg(flag).output().unwrap();
    assert!(out.status.success(), "id {flag}: {}", said(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_logrotate_rules_pass_a_dry_run() {
    let rules = read("deploy/logrotate/labmesh");
    let body: Vec<&str> = rules
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for directive in [
        "copytruncate",
        "compress",
        "delaycompress",
        "missingok",
        "notifempty",
        "rotate 4",
        "su labmesh labmesh",
    ] {
        assert!(body.contains(&directive), "logrotate: {directive}");
    }
    if !have("logrotate", "--version", "logrotate") {
        return;
    }
    // The same rules on log files in a temporary folder, rotated as the user running the test
    // (there is no labmesh user here). The macOS path first: it contains the Linux one.
    let dir = tempfile::tempdir().unwrap();
    let linux = dir.path().join("linux");
    let mac = dir.path().join("mac");
    for logs in [&linux, &mac] {
        std::fs::create_dir_all(logs).unwrap();
        std::fs::write(logs.join("agent.log"), "{\"msg\":\"started\"}\n").unwrap();
    }
    let copy = rules
        .replace(
            "/usr/local/var/log/labmesh/",
            &format!("{}/", mac.display()),
        )
        .replace("/var/log/labmesh/", &format!("{}/", linux.display()))
        .replace(
            "su labmesh labmesh",
            &format!("su {} {}", id("-un"), id("-gn")),
        );
    let conf = dir.path().join("labmesh");
    std::fs::write(&conf, copy).unwrap();
    // -d: print what would be done and do nothing; -f: as if each log were due.
    let out = Command::new("logrotate")
        .args(["-d", "-f", "-s"])
        .arg(dir.path().join("state"))
        .arg(&conf)
        .output()
        .unwrap();
    let text = said(&out);
    assert!(
        out.status.success() && !text.to_lowercase().contains("error"),
        "logrotate -d ({}):\n{text}",
        out.status
    );
    for logs in [&linux, &mac] {
        let log = logs.join("agent.log");
        assert!(
            text.contains(&format!("truncating {}", log.display())),
            "{} is copied and truncated:\n{text}",
            log.display()
        );
    }
}

/// The metric names (`labmesh_*`, `homelab_*`) in one PromQL expression, quoted strings
/// (label values) left out.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            let mut escaped = false;
            for q in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if q == '\\' {
                    escaped = true;
                } else if q == c {
                    break;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut word = String::from(c);
            while let Some(&n) = chars.peek() {
                if n.is_ascii_alphanumeric() || n == '_' || n == ':' {
                    word.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            if word.starts_with("labmesh_") || word.starts_with("homelab_") {
                out.insert(word);
            }
        }
    }
}

/// The `expr:` of every rule in a rules file, one line or a YAML block (`expr: |`).
fn expressions(rules: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if !rest.starts_with('|') && !rest.starts_with('>') {
            exprs.push(rest.to_owned());
            continue;
        }
        let indent = line.len() - trimmed.len();
        let mut block = String::new();
        while let Some(next) = lines.peek() {
            let next_indent = next.len() - next.trim_start().len();
            if !next.trim().is_empty() && next_indent <= indent {
                break;
            }
            block.push_str(next.trim());
            block.push('\n');
            lines.next();
        }
        exprs.push(block);
    }
    exprs
}

#[test]
fn the_prometheus_config_and_rules_pass_promtool_and_use_real_metrics() {
    let config = read("deploy/prometheus/prometheus.yml");
    let rules = read("deploy/prometheus/labmesh-rules.yml");
    let targets = "/etc/prometheus/labmesh-targets.json";
    for needle in [
        "job_name: labmesh",
        targets,
        "- labmesh-rules.yml",
        "honor_labels: true",
        "labmesh prometheus-sd",
    ] {
        assert!(config.contains(needle), "prometheus.yml: {needle}");
    }
    let exprs = expressions(&rules);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut names = BTreeSet::new();
    for expr in &exprs {
        metric_names(expr, &mut names);
    }
    assert!(names.len() >= 10, "{names:?}");
    // Each is documented.
    let doc = read("docs/metrics.md");
    for name in &names {
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} is not in docs/metrics.md"
        );
    }

    if !have("promtool", "--version", "prometheus") {
        return;
    }
    // The config next to a copy of the rules, reading a targets file as `labmesh
    // prometheus-sd` writes it.
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("labmesh-targets.json");
    std::fs::write(
        &sd,
        r#"[{"targets": ["127.0.0.1:7371"], "labels": {"node": "nas1", "role": "nas", "backend": "none"}},
 {"targets": ["192.0.2.10:7371"], "labels": {"node": "ws", "role": "workstation", "backend": "cuda"}}]"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        config.replace(targets, &sd.display().to_string()),
    )
    .unwrap();
    std::fs::write(dir.path().join("labmesh-rules.yml"), &rules).unwrap();
    let promtool = |args: &[&str], file: &Path| {
        let out = Command::new("promtool")
            .args(args)
            .arg(file)
            .output()
            .unwrap();
        let text = said(&out);
        assert!(
            out.status.success() && !text.contains("WARNING"),
            "promtool {args:?} ({}):\n{text}",
            out.status
        );
        text
    };
    let text = promtool(&["check", "config"], &dir.path().join("prometheus.yml"));
    assert!(text.contains("1 rule files found"), "{text}");
    promtool(
        &["check", "rules"],
        &repo_path("deploy/prometheus/labmesh-rules.yml"),
    );

    // A real agent with a check and finished builds and tests, so that every family shows.
    let data = dir.path().join("data");
    for (kind, cmd) in [("build", "true"), ("build", "exit 1"), ("test", "exit 1")] {
        let mut run = labmesh(&data);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("NEXTEST_") {
                run.env_remove(key);
            }
        }
        let out = run
            .current_dir(dir.path())
            .args(["run", "--kind", kind, "--", "sh", "-c", cmd])
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            cmd == "true",
            "labmesh run {kind} {cmd}: {}",
            said(&out)
        );
    }
    let checks = dir.path().join("labmesh.toml");
    std::fs::write(
        &checks,
        "[[check]]\nname = \"backup\"\nkind = \"ttl\"\nttl = \"1h\"\n",
    )
    .unwrap();
    let agent = Agent::start_with(&data, &["--probe-interval", "1s"], |cmd| {
        cmd.env("LABMESH_CONFIG", &checks);
    });
    let mut body = String::new();
    wait_until(
        "a host sample, the check and the run metrics",
        Duration::from_secs(30),
        || {
            let (status, text) = agent.get("/metrics");
            body = text;
            status == 200
                && metric_value(&body, "labmesh_probes_sampled") == Some(1.0)
                && body.contains("\nhomelab_test_failure_total{")
                && body.contains("\nlabmesh_check_up{")
        },
    );
    let families: BTreeSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let exported = |name: &str| {
        families.contains(name)
            || ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .any(|base| families.contains(base))
    };
    // Families that only a machine with the hardware exports: absent here is fine when the
    // agent says so.
    let absent_probe = |name: &str| {
        let probe = if name.starts_with("labmesh_containers") {
            "docker"
        } else if name.starts_with("labmesh_node_gpu_") {
            "gpu"
        } else {
            return false;
        };
        metric_value(&body, &format!("labmesh_probe_absent{{probe=\"{probe}\"}}")) == Some(1.0)
    };
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !exported(n) && !absent_probe(n))
        .collect();
    assert!(
        missing.is_empty(),
        "the rules use metrics the agent does not export: {missing:?}\n{body}"
    );
}

#[test]
fn metric_names_skip_label_values_and_functions() {
    let mut names = BTreeSet::new();
    metric_names(
        r#"increase(homelab_build_failure_total{backend="labmesh_x"}[1h]) > 0 unless max by (node) (labmesh_mesh_node_up)"#,
        &mut names,
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        ["homelab_build_failure_total", "labmesh_mesh_node_up"]
    );
    let block = "      - alert: A\n        expr: |\n          labmesh_a\n            / labmesh_b\n        for: 1m\n      - alert: B\n        expr: labmesh_c > 1\n";
    assert_eq!(
        expressions(block),
        ["labmesh_a\n/ labmesh_b\n", "labmesh_c > 1"]
    );
}
