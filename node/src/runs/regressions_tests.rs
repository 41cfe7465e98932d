use super::super::history::tests::{now, record};
use super::*;

fn commit(mut run: RunRecord, commit: Option<&str>) -> RunRecord {
    run.git_commit = commit.map(str::to_owned);
    run
}

fn lasting(mut run: RunRecord, secs: f64) -> RunRecord {
    run.duration_secs = Some(secs);
    run
}

fn cuda() -> Series {
    Series::of(&record("x", 0.0, Outcome::Succeeded))
}

#[test]
fn the_streak_names_its_first_failing_commit_and_the_range_to_bisect() {
    let runs = vec![
        commit(record("1", 9.0, Outcome::Failed), Some("c0")),
        commit(record("2", 8.0, Outcome::Succeeded), Some("c1")),
        commit(record("3", 7.0, Outcome::Failed), Some("c2")),
        commit(record("4", 6.0, Outcome::Cancelled), Some("c9")),
        commit(record("5", 5.0, Outcome::Failed), Some("c2")),
        commit(record("6", 4.0, Outcome::Failed), Some("c3")),
        commit(record("7", 3.0, Outcome::Running), Some("c4")),
        commit(record("8", 2.0, Outcome::Abandoned), Some("c5")),
    ];
    let streak = failing_streak(&runs, &cuda());
    let Some(streak) = streak else {
        panic!("no streak in {runs:?}");
    };
    assert_eq!(streak.first_failing_commit.as_deref(), Some("c2"));
    assert_eq!(streak.commits, ["c1", "c2", "c3"]);
    assert_eq!(streak.failed_runs, 3);
    assert_eq!(streak.last_success.map(|r| r.id), Some("2".to_owned()));
    assert_eq!(streak.first_failure.id, "3");
    assert_eq!(streak.latest_failure.id, "6");
    assert!(!streak.began_on_passing_commit);

    // In any order the records come.
    let mut shuffled = runs.clone();
    shuffled.reverse();
    shuffled.swap(1, 5);
    assert_eq!(failing_streaks(&shuffled), failing_streaks(&runs));
}

#[test]
fn no_streak_once_the_latest_finished_run_succeeded() {
    let runs = vec![
        record("1", 3.0, Outcome::Failed),
        record("2", 2.0, Outcome::Succeeded),
        record("3", 1.0, Outcome::Cancelled),
        record("4", 0.0, Outcome::Running),
    ];
    assert_eq!(failing_streak(&runs, &cuda()), None);
    assert!(failing_streaks(&runs).is_empty());
    assert!(failing_streaks(&[]).is_empty());
}

#[test]
fn a_series_that_never_succeeded_fails_from_its_first_commit() {
    let runs = vec![
        commit(record("1", 3.0, Outcome::Failed), None),
        commit(record("2", 2.0, Outcome::Failed), Some("c1")),
        commit(record("3", 1.0, Outcome::Failed), Some("c2")),
        commit(record("4", 0.5, Outcome::Failed), Some("c1")),
    ];
    let streak = failing_streak(&runs, &cuda());
    assert_eq!(streak.as_ref().and_then(|s| s.last_success.clone()), None);
    assert_eq!(
        streak
            .as_ref()
            .and_then(|s| s.first_failing_commit.as_deref()),
        Some("c1")
    );
    assert_eq!(
        streak.as_ref().map(|s| s.first_failure.id.as_str()),
        Some("1")
    );
    assert_eq!(
        streak.map(|s| s.commits),
        Some(vec!["c1".to_owned(), "c2".to_owned()])
    );
}

#[test]
fn a_streak_on_the_last_good_commit_points_away_from_the_code() {
    let runs = vec![
        commit(record("1", 2.0, Outcome::Succeeded), Some("c1")),
        commit(record("2", 1.0, Outcome::Failed), Some("c1")),
    ];
    let streak = failing_streak(&runs, &cuda());
    assert_eq!(
        streak.as_ref().map(|s| s.began_on_passing_commit),
        Some(true)
    );
    assert_eq!(streak.map(|s| s.commits), Some(vec!["c1".to_owned()]));
}

#[test]
fn streaks_are_kept_per_series() {
    let mut metal_ok = record("m", 0.5, Outcome::Succeeded);
    metal_ok.backend = Some("metal".to_owned());
    let mut test_ok = record("t", 0.4, Outcome::Succeeded);
    test_ok.kind = super::super::history::RunKind::Test;
    let runs = vec![
        record("1", 2.0, Outcome::Succeeded),
        record("2", 1.0, Outcome::Failed),
        metal_ok,
        test_ok,
    ];
    let streaks = failing_streaks(&runs);
    assert_eq!(streaks.len(), 1);
    assert_eq!(streaks[0].series, cuda());
}

/// Twenty succeeded builds of about 100 s, one a day, ending two days before [`now`].
fn steady_builds() -> Vec<RunRecord> {
    (0..20)
        .map(|i| {
            let jitter = [0.0, 1.5, -1.0, 2.0, -2.5][i % 5];
            let run = record(&format!("b{i:02}"), 22.0 - i as f64, Outcome::Succeeded);
            lasting(run, 100.0 + jitter)
        })
        .collect()
}

#[test]
fn a_much_slower_run_is_a_regression_against_the_previous_commit() {
    let runs = steady_builds();
    let slow = lasting(record("slow", 1.0, Outcome::Succeeded), 200.0);
    let regression = duration_regression(&runs, &slow);
    let Some(regression) = regression else {
        panic!("200 s after ~100 s is no regression");
    };
    assert_eq!(regression.direction, Direction::Slower);
    assert_eq!(regression.baseline_runs, 20);
    assert_eq!(regression.median_secs, 100.0);
    assert!(
        (regression.spread_secs - 5.0).abs() < 1e-9,
        "{}",
        regression.spread_secs
    );
    assert!((regression.deviation - 20.0).abs() < 1e-9);
    assert_eq!(regression.previous.id, "b19");
    assert_eq!(regression.previous.git_commit.as_deref(), Some("c-b19"));
    assert_eq!(regression.run.git_commit.as_deref(), Some("c-slow"));

    let ordinary = lasting(record("ok", 1.0, Outcome::Succeeded), 110.0);
    assert_eq!(duration_regression(&runs, &ordinary), None);
    let fast = lasting(record("fast", 1.0, Outcome::Succeeded), 60.0);
    assert_eq!(
        duration_regression(&runs, &fast).map(|r| r.direction),
        Some(Direction::Faster)
    );
}

#[test]
fn failed_runs_count_only_for_being_slow() {
    let runs = steady_builds();
    let early_failure = lasting(record("e", 1.0, Outcome::Failed), 3.0);
    assert_eq!(duration_regression(&runs, &early_failure), None);
    let hung = lasting(record("h", 1.0, Outcome::Failed), 900.0);
    assert!(duration_regression(&runs, &hung).is_some());
    let running = lasting(record("r", 1.0, Outcome::Running), 900.0);
    assert_eq!(duration_regression(&runs, &running), None);
}

#[test]
fn the_baseline_is_the_last_twenty_succeeded_runs_of_at_least_five() {
    let mut runs: Vec<RunRecord> = (0..30)
        .map(|i| {
            lasting(
                record(
                    &format!("old{i:02}"),
                    90.0 - f64::from(i),
                    Outcome::Succeeded,
                ),
                10.0,
            )
        })
        .collect();
    runs.extend(steady_builds());
    // Failures and odd records among them are no part of the baseline.
    runs.push(lasting(record("f", 1.5, Outcome::Failed), 1.0));
    runs.push(RunRecord {
        duration_secs: None,
        ..record("n", 1.4, Outcome::Succeeded)
    });
    let run = lasting(record("now", 1.0, Outcome::Succeeded), 100.0);
    assert_eq!(duration_regression(&runs, &run), None);

    let few: Vec<RunRecord> = steady_builds().into_iter().take(4).collect();
    let slow = lasting(record("slow", 1.0, Outcome::Succeeded), 1000.0);
    assert_eq!(duration_regression(&few, &slow), None);
    // Only runs before it count, and never the run itself.
    let mut with_itself = few.clone();
    with_itself.push(slow.clone());
    assert_eq!(duration_regression(&with_itself, &slow), None);
}

#[test]
fn identical_durations_use_a_floor_for_their_spread() {
    let runs: Vec<RunRecord> = (0..10)
        .map(|i| {
            lasting(
                record(&format!("b{i}"), 20.0 - f64::from(i), Outcome::Succeeded),
                100.0,
            )
        })
        .collect();
    let check = |secs: f64| {
        duration_regression(&runs, &lasting(record("x", 1.0, Outcome::Succeeded), secs))
    };
    // 5 % of 100 s is the spread: outliers lie beyond 3.5 × 5 s.
    assert_eq!(check(115.0), None);
    assert_eq!(check(118.0).map(|r| r.spread_secs), Some(5.0));

    let instant: Vec<RunRecord> = (0..10)
        .map(|i| {
            lasting(
                record(&format!("i{i}"), 20.0 - f64::from(i), Outcome::Succeeded),
                0.2,
            )
        })
        .collect();
    let check = |secs: f64| {
        duration_regression(
            &instant,
            &lasting(record("x", 1.0, Outcome::Succeeded), secs),
        )
    };
    assert_eq!(check(3.0), None);
    assert!(check(4.0).is_some());
}

#[test]
fn regressions_are_found_within_the_window_only() {
    let mut runs = steady_builds();
    runs.insert(
        12,
        lasting(record("slow-old", 9.5, Outcome::Succeeded), 300.0),
    );
    runs.push(lasting(record("slow-new", 1.0, Outcome::Succeeded), 300.0));
    runs.push(lasting(record("after", 0.5, Outcome::Succeeded), 101.0));
    let recent = duration_regressions(&runs, now(), TimeDelta::days(7));
    let ids: Vec<&str> = recent.iter().map(|r| r.run.id.as_str()).collect();
    assert_eq!(ids, ["slow-new"]);
    let all = duration_regressions(&runs, now(), TimeDelta::days(60));
    let ids: Vec<&str> = all.iter().map(|r| r.run.id.as_str()).collect();
    assert_eq!(ids, ["slow-old", "slow-new"]);
}

#[test]
fn the_median_of_even_and_odd_counts() {
    assert_eq!(median(&[]), None);
    assert_eq!(median(&[3.0]), Some(3.0));
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
}
