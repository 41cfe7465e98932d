//! What a history of runs means (`labmesh runs stats`): success rates per host and backend,
//! test pass rates, duration and binary size trends, and (in [`super::regressions`]) the
//! first failing commit and duration outliers.
//!
//! Everything here is a function of the records and a given `now`, so the same history
//! reads the same on every peer and in tests.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::regressions::{
    DurationRegression, FailingStreak, duration_regressions, failing_streaks,
};
use super::test_summary::TestCounts;

/// The short window of [`stats`].
pub const WEEK: TimeDelta = TimeDelta::days(7);
/// The long window of [`stats`] (the history's minimum retention).
pub const MONTH: TimeDelta = TimeDelta::days(30);

/// What a run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Build,
    Test,
    Deploy,
    Maintenance,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Stopped on purpose (Ctrl-C, a signal): says nothing about the code.
    Cancelled,
    /// Started, then never heard of again (the host went down mid-run).
    Abandoned,
    Running,
}

impl Outcome {
    /// Whether the run ran to its end, which is what rates and streaks count.
    pub fn is_finished(self) -> bool {
        matches!(self, Outcome::Succeeded | Outcome::Failed)
    }
}

/// One run of a wrapped command, as the history keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub kind: RunKind,
    /// What was built, tested or deployed (`llm-worker-rbee`).
    pub service: String,
    pub host: String,
    /// The variant built or tested (`cuda`, `metal`).
    pub backend: Option<String>,
    pub started: DateTime<Utc>,
    /// `None` while running, or when the end was never seen.
    pub duration_secs: Option<f64>,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub git_commit: Option<String>,
    pub git_branch: Option<String>,
    /// The size of the binary the run built.
    pub artifact_bytes: Option<u64>,
    pub tests: Option<TestCounts>,
}

impl RunRecord {
    /// The run's duration, where it is a real one.
    pub fn duration(&self) -> Option<f64> {
        self.duration_secs.filter(|d| d.is_finite() && *d >= 0.0)
    }
}

/// Runs that are comparable with each other: the same command kind on the same service,
/// host and backend (a CUDA build takes as long as CUDA builds do, not as Metal tests).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Series {
    pub kind: RunKind,
    pub service: String,
    pub host: String,
    pub backend: Option<String>,
}

impl Series {
    pub fn of(run: &RunRecord) -> Series {
        Series {
            kind: run.kind,
            service: run.service.clone(),
            host: run.host.clone(),
            backend: run.backend.clone(),
        }
    }
}

/// `runs` in the order they started (ties by id, so the order is the same everywhere).
pub fn in_time_order(runs: &[RunRecord]) -> Vec<&RunRecord> {
    let mut ordered: Vec<&RunRecord> = runs.iter().collect();
    ordered.sort_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));
    ordered
}

/// Whether `run` started within `window` before `now`. Runs stamped after `now` count as
/// recent: a peer's clock a little ahead must not hide its last run.
pub fn within(run: &RunRecord, now: DateTime<Utc>, window: TimeDelta) -> bool {
    now.checked_sub_signed(window)
        .is_none_or(|since| run.started >= since)
}

/// `runs` grouped by [`Series`], each group in time order.
pub fn by_series(runs: &[RunRecord]) -> BTreeMap<Series, Vec<&RunRecord>> {
    let mut groups: BTreeMap<Series, Vec<&RunRecord>> = BTreeMap::new();
    for run in in_time_order(runs) {
        groups.entry(Series::of(run)).or_default().push(run);
    }
    groups
}

/// How the runs of one kind on one host and backend ended over a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuccessRate {
    pub kind: RunKind,
    pub host: String,
    pub backend: Option<String>,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
    pub abandoned: u32,
    pub running: u32,
    /// `succeeded / (succeeded + failed)`: cancelled, abandoned and running runs say nothing
    /// about the code. `None` without a finished run.
    pub rate: Option<f64>,
}

/// Success rates per (kind, host, backend) of the runs started within `window` before `now`.
pub fn success_rates(
    runs: &[RunRecord],
    now: DateTime<Utc>,
    window: TimeDelta,
) -> Vec<SuccessRate> {
    let mut rates: BTreeMap<(RunKind, &str, Option<&str>), SuccessRate> = BTreeMap::new();
    for run in runs.iter().filter(|r| within(r, now, window)) {
        let rate = rates
            .entry((run.kind, &run.host, run.backend.as_deref()))
            .or_insert_with(|| SuccessRate {
                kind: run.kind,
                host: run.host.clone(),
                backend: run.backend.clone(),
                succeeded: 0,
                failed: 0,
                cancelled: 0,
                abandoned: 0,
                running: 0,
                rate: None,
            });
        let count = match run.outcome {
            Outcome::Succeeded => &mut rate.succeeded,
            Outcome::Failed => &mut rate.failed,
            Outcome::Cancelled => &mut rate.cancelled,
            Outcome::Abandoned => &mut rate.abandoned,
            Outcome::Running => &mut rate.running,
        };
        *count = count.saturating_add(1);
    }
    rates
        .into_values()
        .map(|mut rate| {
            rate.rate = ratio(u64::from(rate.succeeded), u64::from(rate.failed));
            rate
        })
        .collect()
}

/// How the tests of one backend fared over a window, over the finished runs that reported
/// test counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestPassRate {
    pub backend: Option<String>,
    pub runs: u32,
    /// Runs in which no test failed.
    pub runs_passed: u32,
    /// All their counts added up.
    pub tests: TestCounts,
    /// `passed / (passed + failed)` of the tests; `None` when none ran.
    pub rate: Option<f64>,
}

/// Test pass rates per backend of the runs started within `window` before `now`.
pub fn test_pass_rates(
    runs: &[RunRecord],
    now: DateTime<Utc>,
    window: TimeDelta,
) -> Vec<TestPassRate> {
    let mut rates: BTreeMap<Option<&str>, TestPassRate> = BTreeMap::new();
    for run in runs
        .iter()
        .filter(|r| r.outcome.is_finished() && within(r, now, window))
    {
        let Some(tests) = run.tests else {
            continue;
        };
        let rate = rates
            .entry(run.backend.as_deref())
            .or_insert_with(|| TestPassRate {
                backend: run.backend.clone(),
                runs: 0,
                runs_passed: 0,
                tests: TestCounts::default(),
                rate: None,
            });
        rate.runs = rate.runs.saturating_add(1);
        if tests.failed == 0 {
            rate.runs_passed = rate.runs_passed.saturating_add(1);
        }
        rate.tests = rate.tests.plus(tests);
    }
    rates
        .into_values()
        .map(|mut rate| {
            rate.rate = ratio(rate.tests.passed, rate.tests.failed);
            rate
        })
        .collect()
}

/// One value of a trend: a run's duration or binary size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrendPoint {
    pub run_id: String,
    pub started: DateTime<Utc>,
    pub git_commit: Option<String>,
    pub value: f64,
}

/// How a value moved over the runs of one series, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    pub series: Series,
    pub points: Vec<TrendPoint>,
    pub first: f64,
    pub last: f64,
    /// `last - first`.
    pub change: f64,
    /// `change / first`; `None` when `first` is 0.
    pub change_ratio: Option<f64>,
    /// The least-squares slope over time, per day: steadier than first-vs-last when one run
    /// was odd. `None` with fewer than two points or all at one instant.
    pub slope_per_day: Option<f64>,
}

/// Durations of the succeeded runs started within `window` before `now`, per series (a
/// failed build stops early: its duration would only add noise).
pub fn duration_trends(runs: &[RunRecord], now: DateTime<Utc>, window: TimeDelta) -> Vec<Trend> {
    trends(runs, now, window, |run| {
        (run.outcome == Outcome::Succeeded)
            .then(|| run.duration())
            .flatten()
    })
}

/// Binary sizes of the runs started within `window` before `now`, per series.
pub fn artifact_size_trends(
    runs: &[RunRecord],
    now: DateTime<Utc>,
    window: TimeDelta,
) -> Vec<Trend> {
    // Sizes are far below 2^53 bytes, so f64 holds them exactly.
    trends(runs, now, window, |run| {
        run.artifact_bytes.map(|b| b as f64)
    })
}

fn trends(
    runs: &[RunRecord],
    now: DateTime<Utc>,
    window: TimeDelta,
    value: impl Fn(&RunRecord) -> Option<f64>,
) -> Vec<Trend> {
    by_series(runs)
        .into_iter()
        .filter_map(|(series, runs)| {
            let points: Vec<TrendPoint> = runs
                .into_iter()
                .filter(|run| within(run, now, window))
                .filter_map(|run| {
                    Some(TrendPoint {
                        run_id: run.id.clone(),
                        started: run.started,
                        git_commit: run.git_commit.clone(),
                        value: value(run)?,
                    })
                })
                .collect();
            trend(series, points)
        })
        .collect()
}

fn trend(series: Series, points: Vec<TrendPoint>) -> Option<Trend> {
    let first = points.first()?.value;
    let last = points.last()?.value;
    let change = last - first;
    let slope_per_day = slope_per_day(&points);
    Some(Trend {
        series,
        first,
        last,
        change,
        change_ratio: (first != 0.0).then(|| change / first),
        slope_per_day,
        points,
    })
}

/// The least-squares slope of the points' values over their start times, per day.
fn slope_per_day(points: &[TrendPoint]) -> Option<f64> {
    let origin = points.first()?.started;
    let days: Vec<f64> = points
        .iter()
        .map(|p| (p.started - origin).num_milliseconds() as f64 / 86_400_000.0)
        .collect();
    let n = points.len() as f64;
    let mean_day = days.iter().sum::<f64>() / n;
    let mean_value = points.iter().map(|p| p.value).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for (day, point) in days.iter().zip(points) {
        covariance += (day - mean_day) * (point.value - mean_value);
        variance += (day - mean_day) * (day - mean_day);
    }
    (points.len() >= 2 && variance > 0.0).then(|| covariance / variance)
}

/// `good / (good + bad)`, `None` when both are 0.
fn ratio(good: u64, bad: u64) -> Option<f64> {
    let all = good.saturating_add(bad);
    (all > 0).then(|| good as f64 / all as f64)
}

/// Everything `labmesh runs stats` shows, at `now`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    pub now: DateTime<Utc>,
    pub success_7d: Vec<SuccessRate>,
    pub success_30d: Vec<SuccessRate>,
    pub test_pass_7d: Vec<TestPassRate>,
    pub test_pass_30d: Vec<TestPassRate>,
    pub duration_trends_30d: Vec<Trend>,
    pub artifact_size_trends_30d: Vec<Trend>,
    /// Series whose latest finished run failed.
    pub failing: Vec<FailingStreak>,
    pub duration_regressions_7d: Vec<DurationRegression>,
}

/// The statistics of `runs` at `now`.
pub fn stats(runs: &[RunRecord], now: DateTime<Utc>) -> RunStats {
    RunStats {
        now,
        success_7d: success_rates(runs, now, WEEK),
        success_30d: success_rates(runs, now, MONTH),
        test_pass_7d: test_pass_rates(runs, now, WEEK),
        test_pass_30d: test_pass_rates(runs, now, MONTH),
        duration_trends_30d: duration_trends(runs, now, MONTH),
        artifact_size_trends_30d: artifact_size_trends(runs, now, MONTH),
        failing: failing_streaks(runs),
        duration_regressions_7d: duration_regressions(runs, now, WEEK),
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
pub(crate) mod tests;
