//! What changed for the worse in a series of runs: the commit a failing streak began with,
//! and runs that took far longer (or shorter) than their series usually does.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::history::{Outcome, RunRecord, Series, by_series, within};

/// How many of the latest succeeded runs make a duration baseline.
pub const BASELINE_RUNS: usize = 20;
/// Fewer runs are no baseline: the first runs of a series are never outliers.
pub const MIN_BASELINE_RUNS: usize = 5;
/// How many spreads from the median a duration must be to be an outlier (the usual cut for
/// the modified z-score).
pub const OUTLIER_SPREADS: f64 = 3.5;
/// Makes the median absolute deviation estimate a normal distribution's standard deviation.
const MAD_SCALE: f64 = 1.4826;
/// The least spread, as a share of the median: a series of identical durations (MAD 0) must
/// not make every second of difference an outlier.
const MIN_SPREAD_OF_MEDIAN: f64 = 0.05;
/// The least spread in seconds, for series of near-instant runs.
const MIN_SPREAD_SECS: f64 = 1.0;

/// A run, as a streak or an outlier names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRef {
    pub id: String,
    pub started: DateTime<Utc>,
    pub git_commit: Option<String>,
}

impl RunRef {
    fn of(run: &RunRecord) -> RunRef {
        RunRef {
            id: run.id.clone(),
            started: run.started,
            git_commit: run.git_commit.clone(),
        }
    }
}

/// A series whose latest finished run failed, and since when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailingStreak {
    pub series: Series,
    /// The last success before the streak; `None` when the series never succeeded.
    pub last_success: Option<RunRef>,
    pub first_failure: RunRef,
    pub latest_failure: RunRef,
    pub failed_runs: u32,
    /// The earliest commit a run of the streak failed on: the first suspect.
    pub first_failing_commit: Option<String>,
    /// The last successful commit, then the commits the streak failed on, each once, in
    /// order: the range to bisect.
    pub commits: Vec<String>,
    /// The streak began on the very commit that last succeeded: the machine or a flaky
    /// test is likelier to blame than the code.
    pub began_on_passing_commit: bool,
}

/// The failing streak `series` is in, if its latest finished run failed. Cancelled,
/// abandoned and running runs neither break nor extend a streak.
pub fn failing_streak(runs: &[RunRecord], series: &Series) -> Option<FailingStreak> {
    let groups = by_series(runs);
    streak(series, groups.get(series)?)
}

/// The failing streaks of every series, in series order.
pub fn failing_streaks(runs: &[RunRecord]) -> Vec<FailingStreak> {
    by_series(runs)
        .iter()
        .filter_map(|(series, runs)| streak(series, runs))
        .collect()
}

/// `runs` in time order.
fn streak(series: &Series, runs: &[&RunRecord]) -> Option<FailingStreak> {
    let finished: Vec<&RunRecord> = runs
        .iter()
        .copied()
        .filter(|r| r.outcome.is_finished())
        .collect();
    let failures_from = finished
        .iter()
        .rposition(|r| r.outcome == Outcome::Succeeded)
        .map_or(0, |i| i + 1);
    let failures = &finished[failures_from..];
    let (first_failure, latest_failure) = (failures.first()?, failures.last()?);
    let last_success = failures_from
        .checked_sub(1)
        .and_then(|i| finished.get(i))
        .copied();
    let first_failing_commit = failures.iter().find_map(|r| r.git_commit.clone());
    let mut commits: Vec<String> = Vec::new();
    for commit in last_success
        .into_iter()
        .chain(failures.iter().copied())
        .filter_map(|r| r.git_commit.as_ref())
    {
        if !commits.contains(commit) {
            commits.push(commit.clone());
        }
    }
    let last_good_commit = last_success.and_then(|r| r.git_commit.as_ref());
    Some(FailingStreak {
        series: series.clone(),
        last_success: last_success.map(RunRef::of),
        first_failure: RunRef::of(first_failure),
        latest_failure: RunRef::of(latest_failure),
        failed_runs: u32::try_from(failures.len()).unwrap_or(u32::MAX),
        began_on_passing_commit: last_good_commit.is_some()
            && last_good_commit == first_failing_commit.as_ref(),
        first_failing_commit,
        commits,
    })
}

/// Which way an outlier is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Slower,
    Faster,
}

/// A run whose duration is far outside its series' recent ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DurationRegression {
    pub series: Series,
    pub run: RunRef,
    pub duration_secs: f64,
    pub direction: Direction,
    /// How many runs the baseline held (at most [`BASELINE_RUNS`]).
    pub baseline_runs: usize,
    pub median_secs: f64,
    /// The scaled median absolute deviation, or its floor.
    pub spread_secs: f64,
    /// `(duration - median) / spread`: beyond ±[`OUTLIER_SPREADS`].
    pub deviation: f64,
    /// The latest run of the baseline, to compare commits with.
    pub previous: RunRef,
}

/// Whether `run` is a duration outlier against the [`BASELINE_RUNS`] latest succeeded runs
/// of its series that started before it. A failed run is only reported for being slower (a
/// failure stopping early is no news).
pub fn duration_regression(runs: &[RunRecord], run: &RunRecord) -> Option<DurationRegression> {
    let groups = by_series(runs);
    let series = Series::of(run);
    let history = groups.get(&series)?;
    let before: Vec<&RunRecord> = history
        .iter()
        .copied()
        .take_while(|r| (r.started, &r.id) < (run.started, &run.id))
        .collect();
    outlier(&series, &before, run)
}

/// The duration outliers among the runs started within `window` before `now`, in series and
/// then time order.
pub fn duration_regressions(
    runs: &[RunRecord],
    now: DateTime<Utc>,
    window: TimeDelta,
) -> Vec<DurationRegression> {
    let mut outliers = Vec::new();
    for (series, history) in by_series(runs) {
        for (i, run) in history.iter().enumerate() {
            if within(run, now, window)
                && let Some(outlier) = outlier(&series, &history[..i], run)
            {
                outliers.push(outlier);
            }
        }
    }
    outliers
}

/// `run` against the runs of its series before it (in time order).
fn outlier(series: &Series, before: &[&RunRecord], run: &RunRecord) -> Option<DurationRegression> {
    if !run.outcome.is_finished() {
        return None;
    }
    let duration = run.duration()?;
    let baseline: Vec<&RunRecord> = before
        .iter()
        .rev()
        .copied()
        .filter(|r| r.outcome == Outcome::Succeeded && r.duration().is_some())
        .take(BASELINE_RUNS)
        .collect();
    if baseline.len() < MIN_BASELINE_RUNS {
        return None;
    }
    let durations: Vec<f64> = baseline.iter().filter_map(|r| r.duration()).collect();
    let median_secs = median(&durations)?;
    let deviations: Vec<f64> = durations.iter().map(|d| (d - median_secs).abs()).collect();
    let spread_secs = (median(&deviations)? * MAD_SCALE)
        .max(median_secs * MIN_SPREAD_OF_MEDIAN)
        .max(MIN_SPREAD_SECS);
    let deviation = (duration - median_secs) / spread_secs;
    let direction = if deviation > 0.0 {
        Direction::Slower
    } else {
        Direction::Faster
    };
    if deviation.abs() <= OUTLIER_SPREADS
        || (run.outcome == Outcome::Failed && direction == Direction::Faster)
    {
        return None;
    }
    Some(DurationRegression {
        series: series.clone(),
        run: RunRef::of(run),
        duration_secs: duration,
        direction,
        baseline_runs: baseline.len(),
        median_secs,
        spread_secs,
        deviation,
        previous: RunRef::of(baseline.first()?),
    })
}

/// The median of finite `values`; `None` for none.
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => sorted.get(mid).copied(),
        _ => Some((sorted.get(mid - 1)? + sorted.get(mid)?) / 2.0),
    }
}

#[cfg(test)]
#[path = "regressions_tests.rs"]
mod tests;
