//! Unit tests of `rules.rs` (kept apart so the module reads as one idea).
use super::*;
use crate::summary::DiskUsage;
use chrono::TimeZone;
use sync::NewEvent;

fn at() -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000, 0).unwrap()
}

#[test]
fn threshold_observations_carry_subject_labels_and_summary() {
    let set = RuleSet::defaults().unwrap();
    let mut s = NodeSummary::new("vm1", at());
    s.disks = vec![
        DiskUsage {
            mount: "/".into(),
            used_bytes: 90,
            total_bytes: 100,
        },
        DiskUsage {
            mount: "/data".into(),
            used_bytes: 10,
            total_bytes: 100,
        },
    ];
    let obs = set.get("disk_used").unwrap().observe_summary(&s);
    assert_eq!(obs.len(), 2);
    assert_eq!(obs[0].subject, "vm1:/");
    assert_eq!(obs[0].condition, Condition::Raise(Severity::Warning));
    assert_eq!(obs[0].summary, "/ on vm1 is 90.0% full");
    assert_eq!(obs[0].labels["mount"], "/");
    assert_eq!(obs[1].condition, Condition::Clear);
    assert!(
        set.get("cpu_steal").unwrap().observe_summary(&s).is_empty(),
        "unknown is not zero"
    );
}

fn event(kind: &str, source: &str, payload: serde_json::Value) -> Event {
    NewEvent::new(kind, Severity::Error, source)
        .payload(payload.as_object().unwrap().clone())
        .into_event("workstation", at())
        .unwrap()
}

#[test]
fn event_rules_raise_resolve_and_read_durations() {
    let set = RuleSet::defaults().unwrap();
    let failed = set.get("build_failed").unwrap();
    let o = failed
        .observe_event(&event("build_failed", "ws-build.sh", serde_json::json!({})))
        .unwrap();
    assert_eq!(
        (o.subject.as_str(), o.condition),
        ("workstation/ws-build.sh", Condition::Raise(Severity::Error))
    );
    assert_eq!(o.summary, "build ws-build.sh failed on workstation");
    let ok = failed
        .observe_event(&event(
            "build_completed",
            "ws-build.sh",
            serde_json::json!({}),
        ))
        .unwrap();
    assert_eq!(ok.condition, Condition::Clear);
    let slow = set.get("build_slow").unwrap();
    let o = slow
        .observe_event(&event(
            "build_completed",
            "b.sh",
            serde_json::json!({"duration_seconds": 372}),
        ))
        .unwrap();
    assert_eq!(o.condition, Condition::Raise(Severity::Warning));
    assert_eq!(o.summary, "build b.sh on workstation took 6m");
    let o = slow
        .observe_event(&event(
            "build_completed",
            "b.sh",
            serde_json::json!({"duration_ms": 20_000}),
        ))
        .unwrap();
    assert_eq!(o.condition, Condition::Clear);
    assert!(
        slow.observe_event(&event("build_completed", "b.sh", serde_json::json!({})))
            .is_none()
    );
    let tests = set.get("test_slow").unwrap();
    let o = tests
        .observe_event(&event(
            "test_completed",
            "t.sh",
            serde_json::json!({"duration_seconds": 150.5}),
        ))
        .unwrap();
    assert_eq!(o.condition, Condition::Raise(Severity::Warning));
}

#[test]
fn templates() {
    let mut l = Labels::new();
    l.insert("node".into(), "vm1".into());
    assert_eq!(
        render("{node}: {value} {nope} {", &l, "3%"),
        "vm1: 3% {nope} {"
    );
}

#[test]
fn a_failed_run_s_page_names_backend_commit_phase_and_its_last_lines() {
    let set = RuleSet::defaults().unwrap();
    let failed = set.get("build_failed").unwrap();
    let o = failed
        .observe_event(&event(
            "build_failed",
            "workstation-build.sh",
            serde_json::json!({
                "backend": "cuda",
                "git_commit": "a1b2c3d4e5f6",
                "failing_phase": "compile",
                "exit_code": 101,
                "tail": ["error[E0425]: cannot find value `x`", "error: could not compile `llm-worker`"],
            }),
        ))
        .unwrap();
    assert_eq!(
        o.summary,
        "build workstation-build.sh failed on workstation (backend cuda, commit a1b2c3d, phase compile, exit 101)\nerror[E0425]: cannot find value `x`\nerror: could not compile `llm-worker`"
    );
    let l = Labels::new();
    let payload = serde_json::json!({"n": 3, "list": (0..30).collect::<Vec<u32>>()});
    let p = payload.as_object().unwrap();
    assert_eq!(
        crate::rules::render_event("{payload.n} {payload.missing}", &l, "", Some(p)),
        "3 -"
    );
    let last = crate::rules::render_event("{payload.list}", &l, "", Some(p));
    assert_eq!(last.lines().count(), 10, "only the last lines: {last}");
    assert!(last.ends_with("29"));
}
