use chrono::TimeZone;

use super::*;

pub(crate) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 10, 9, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

pub(crate) fn ago(days: f64) -> DateTime<Utc> {
    now() - TimeDelta::milliseconds((days * 86_400_000.0) as i64)
}

/// A CUDA build of `llm-worker-rbee` on the workstation, `days` before [`now`].
pub(crate) fn record(id: &str, days: f64, outcome: Outcome) -> RunRecord {
    RunRecord {
        id: id.to_owned(),
        kind: RunKind::Build,
        service: "llm-worker-rbee".to_owned(),
        host: "workstation.home.arpa".to_owned(),
        backend: Some("cuda".to_owned()),
        started: ago(days),
        duration_secs: Some(60.0),
        outcome,
        exit_code: Some(if outcome == Outcome::Succeeded { 0 } else { 1 }),
        git_commit: Some(format!("c-{id}")),
        git_branch: Some("main".to_owned()),
        artifact_bytes: None,
        tests: None,
    }
}

fn on_mac(mut run: RunRecord) -> RunRecord {
    run.host = "mac.home.arpa".to_owned();
    run.backend = Some("metal".to_owned());
    run
}

fn tests(passed: u64, failed: u64, ignored: u64) -> Option<TestCounts> {
    Some(TestCounts {
        run: passed + failed,
        passed,
        failed,
        ignored,
    })
}

#[test]
fn success_rates_count_finished_runs_and_report_the_rest() {
    let runs = vec![
        record("a", 1.0, Outcome::Succeeded),
        record("b", 2.0, Outcome::Failed),
        record("c", 3.0, Outcome::Succeeded),
        record("d", 3.5, Outcome::Cancelled),
        record("e", 4.0, Outcome::Abandoned),
        record("f", 0.0, Outcome::Running),
        record("g", 10.0, Outcome::Failed),
        record("h", 31.0, Outcome::Succeeded),
        // A peer's clock a little ahead still counts.
        record("i", -0.01, Outcome::Succeeded),
        on_mac(record("m", 1.0, Outcome::Cancelled)),
        RunRecord {
            kind: RunKind::Test,
            ..record("t", 1.0, Outcome::Failed)
        },
    ];
    let week = success_rates(&runs, now(), WEEK);
    assert_eq!(week.len(), 3);
    let cuda = &week[0];
    assert_eq!(
        (cuda.kind, cuda.host.as_str()),
        (RunKind::Build, "mac.home.arpa")
    );
    assert_eq!(cuda.rate, None);
    assert_eq!(cuda.cancelled, 1);
    let workstation = &week[1];
    assert_eq!(workstation.backend.as_deref(), Some("cuda"));
    assert_eq!(
        (
            workstation.succeeded,
            workstation.failed,
            workstation.cancelled,
            workstation.abandoned,
            workstation.running
        ),
        (3, 1, 1, 1, 1)
    );
    assert_eq!(workstation.rate, Some(0.75));
    assert_eq!((week[2].kind, week[2].rate), (RunKind::Test, Some(0.0)));

    let month = success_rates(&runs, now(), MONTH);
    assert_eq!(month[1].failed, 2);
    assert_eq!(month[1].rate, Some(0.6));
}

#[test]
fn test_pass_rates_add_up_per_backend() {
    let runs = vec![
        RunRecord {
            tests: tests(10, 0, 1),
            ..record("a", 1.0, Outcome::Succeeded)
        },
        RunRecord {
            tests: tests(8, 2, 0),
            ..record("b", 2.0, Outcome::Failed)
        },
        // Partial counts of a cancelled run, and a run without tests, are left out.
        RunRecord {
            tests: tests(1, 5, 0),
            ..record("c", 2.0, Outcome::Cancelled)
        },
        record("d", 2.0, Outcome::Succeeded),
        on_mac(RunRecord {
            tests: tests(0, 0, 3),
            ..record("m", 1.0, Outcome::Succeeded)
        }),
        RunRecord {
            backend: None,
            tests: tests(3, 1, 0),
            ..record("n", 40.0, Outcome::Failed)
        },
    ];
    let week = test_pass_rates(&runs, now(), WEEK);
    assert_eq!(week.len(), 2);
    assert_eq!(week[0].backend.as_deref(), Some("cuda"));
    assert_eq!((week[0].runs, week[0].runs_passed), (2, 1));
    assert_eq!(week[0].tests, tests(18, 2, 1).unwrap_or_default());
    assert_eq!(week[0].rate, Some(0.9));
    assert_eq!(
        (week[1].backend.as_deref(), week[1].rate),
        (Some("metal"), None)
    );
    let all = test_pass_rates(&runs, now(), TimeDelta::MAX);
    assert_eq!(all[0].backend, None);
    assert_eq!(all[0].rate, Some(0.75));
}

#[test]
fn duration_trends_follow_succeeded_runs_per_series() {
    let mut runs = Vec::new();
    for (i, duration) in [100.0, 110.0, 120.0, 130.0].into_iter().enumerate() {
        runs.push(RunRecord {
            duration_secs: Some(duration),
            ..record(&format!("s{i}"), 4.0 - i as f64, Outcome::Succeeded)
        });
    }
    runs.push(RunRecord {
        duration_secs: Some(5.0),
        ..record("failed", 0.5, Outcome::Failed)
    });
    runs.push(RunRecord {
        duration_secs: Some(f64::NAN),
        ..record("nan", 0.4, Outcome::Succeeded)
    });
    runs.push(on_mac(RunRecord {
        duration_secs: Some(50.0),
        ..record("m", 1.0, Outcome::Succeeded)
    }));
    let trends = duration_trends(&runs, now(), MONTH);
    assert_eq!(trends.len(), 2);
    let mac = &trends[0];
    assert_eq!(mac.series.host, "mac.home.arpa");
    assert_eq!(
        (mac.points.len(), mac.slope_per_day, mac.change),
        (1, None, 0.0)
    );
    let cuda = &trends[1];
    let ids: Vec<&str> = cuda.points.iter().map(|p| p.run_id.as_str()).collect();
    assert_eq!(ids, ["s0", "s1", "s2", "s3"]);
    assert_eq!((cuda.first, cuda.last, cuda.change), (100.0, 130.0, 30.0));
    assert_eq!(cuda.change_ratio, Some(0.3));
    let slope = cuda.slope_per_day.unwrap_or_default();
    assert!((slope - 10.0).abs() < 1e-6, "{slope}");
    assert_eq!(cuda.points[3].git_commit.as_deref(), Some("c-s3"));

    assert_eq!(duration_trends(&runs, now(), TimeDelta::days(2)).len(), 2);
    assert!(duration_trends(&[], now(), MONTH).is_empty());
}

#[test]
fn binary_size_trends_and_runs_at_one_instant() {
    let runs = vec![
        RunRecord {
            artifact_bytes: Some(0),
            ..record("a", 1.0, Outcome::Succeeded)
        },
        RunRecord {
            artifact_bytes: Some(2_000_000),
            ..record("b", 1.0, Outcome::Succeeded)
        },
        record("c", 0.5, Outcome::Succeeded),
    ];
    let trends = artifact_size_trends(&runs, now(), WEEK);
    assert_eq!(trends.len(), 1);
    let size = &trends[0];
    assert_eq!((size.first, size.last), (0.0, 2_000_000.0));
    assert_eq!(size.change_ratio, None);
    assert_eq!(size.slope_per_day, None);
}

#[test]
fn records_read_back_from_snake_case_json() {
    let run = RunRecord {
        tests: tests(3, 1, 0),
        artifact_bytes: Some(42),
        ..record("r1", 1.0, Outcome::Abandoned)
    };
    let json = serde_json::to_value(&run).unwrap_or_default();
    assert_eq!(json["kind"], "build");
    assert_eq!(json["outcome"], "abandoned");
    assert_eq!(json["tests"]["passed"], 3);
    let back: Result<RunRecord, _> = serde_json::from_value(json);
    assert_eq!(back.ok(), Some(run));

    let minimal = serde_json::json!({
        "id": "r2", "kind": "maintenance", "service": "nas", "host": "nas1",
        "started": "2025-10-09T09:27:33+02:00", "outcome": "running"
    });
    let read: Result<RunRecord, _> = serde_json::from_value(minimal);
    let read = read.ok();
    assert_eq!(read.as_ref().map(|r| r.kind), Some(RunKind::Maintenance));
    assert_eq!(read.as_ref().and_then(|r| r.duration_secs), None);
    assert_eq!(
        read.map(|r| r.started),
        Utc.with_ymd_and_hms(2025, 10, 9, 7, 27, 33).single()
    );
}

#[test]
fn stats_are_the_same_whatever_the_order_of_the_records() {
    let mut runs: Vec<RunRecord> = (0..12)
        .map(|i| RunRecord {
            duration_secs: Some(if i == 11 {
                600.0
            } else {
                60.0 + f64::from(i % 3)
            }),
            ..record(&format!("r{i:02}"), 12.5 - f64::from(i), Outcome::Succeeded)
        })
        .collect();
    runs.push(record("z", 0.1, Outcome::Failed));
    let forward = stats(&runs, now());
    runs.reverse();
    assert_eq!(stats(&runs, now()), forward);
    assert_eq!(forward.success_7d[0].succeeded, 6);
    assert_eq!(forward.success_30d[0].succeeded, 12);
    assert_eq!(forward.failing.len(), 1);
    assert_eq!(forward.duration_regressions_7d.len(), 1);
    assert_eq!(forward.duration_regressions_7d[0].run.id, "r11");
}
