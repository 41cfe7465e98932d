//! `labmesh runs stats`.

use super::*;

pub(super) fn stats(settings: &Settings, args: &RunsStatsArgs) -> anyhow::Result<u8> {
    let now = Utc::now();
    let filter = Filter::parse(&args.filter, now)?;
    // The windows need 30 days; a longer --since gives the failing streaks more history.
    let month_ago = now.checked_sub_signed(MONTH);
    let read_since = match (filter.since, month_ago) {
        (Some(since), Some(month)) => Some(since.min(month)),
        (since, month) => since.or(month),
    };
    if let (Some(since), Some(month)) = (filter.since, month_ago)
        && since > month
    {
        eprintln!(
            "labmesh: runs stats reads at least the last 30 days (its windows are 7 and 30 days); --since only reaches further back"
        );
    }
    let folded = load(
        settings,
        filter.kind,
        filter.host.as_deref(),
        read_since,
        now,
    )?;
    let considered = Filter {
        since: read_since,
        ..filter
    };
    let runs: Vec<RunRecord> = folded
        .runs
        .iter()
        .map(|r| &r.record)
        .filter(|r| considered.matches(r))
        .cloned()
        .collect();
    let stats = history::stats(&runs, now);
    let mut out = BufWriter::new(io::stdout().lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &stats)?;
        writeln!(out)?;
    } else if runs.is_empty() {
        if folded.runs.is_empty()
            && considered.service.is_none()
            && considered.kind.is_none()
            && considered.host.is_none()
        {
            writeln!(out, "{NO_RUNS}")?;
        } else {
            writeln!(out, "no runs match")?;
        }
    } else {
        let ids: Vec<&str> = folded.runs.iter().map(|r| r.record.id.as_str()).collect();
        let short = ShortIds::new(&ids);
        write_stats(&mut out, &stats, runs.len(), &short, color_enabled())?;
    }
    out.flush()?;
    Ok(exit::OK)
}

pub(super) fn write_stats(
    out: &mut impl Write,
    stats: &RunStats,
    runs: usize,
    short: &ShortIds,
    color: bool,
) -> io::Result<()> {
    writeln!(
        out,
        "{runs} run(s) considered, as of {}",
        rfc3339_local(stats.now)
    )?;

    writeln!(out)?;
    writeln!(
        out,
        "Success rate (succeeded / finished; cancelled, abandoned and running apart)"
    )?;
    let mut rows = vec![strings([
        "KIND",
        "HOST",
        "BACKEND",
        "7 DAYS",
        "30 DAYS",
        "30 DAYS, NOT FINISHED",
    ])];
    for month in &stats.success_30d {
        let week = stats
            .success_7d
            .iter()
            .find(|w| (w.kind, &w.host, &w.backend) == (month.kind, &month.host, &month.backend));
        rows.push(vec![
            kind_name(month.kind).to_owned(),
            month.host.clone(),
            dash(month.backend.as_deref()),
            week.map_or_else(|| "-".to_owned(), success_cell),
            success_cell(month),
            unfinished_cell(month),
        ]);
    }
    write_table(out, &rows)?;

    if !stats.test_pass_30d.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "Test pass rate (tests passed / run, over finished runs that reported tests)"
        )?;
        let mut rows = vec![strings(["BACKEND", "7 DAYS", "30 DAYS"])];
        for month in &stats.test_pass_30d {
            let week = stats
                .test_pass_7d
                .iter()
                .find(|w| w.backend == month.backend);
            rows.push(vec![
                dash(month.backend.as_deref()),
                week.map_or_else(|| "-".to_owned(), test_pass_cell),
                test_pass_cell(month),
            ]);
        }
        write_table(out, &rows)?;
    }

    if !stats.duration_trends_30d.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "Duration trend, succeeded runs, 30 days (oldest -> latest)"
        )?;
        write_trends(out, &stats.duration_trends_30d, secs)?;
    }
    if !stats.artifact_size_trends_30d.is_empty() {
        writeln!(out)?;
        writeln!(out, "Binary size trend, 30 days (oldest -> latest)")?;
        write_trends(out, &stats.artifact_size_trends_30d, |v| {
            format_size(v.max(0.0).round() as u64)
        })?;
    }

    writeln!(out)?;
    if stats.failing.is_empty() {
        writeln!(
            out,
            "Failing: none (every series' latest finished run succeeded)"
        )?;
    } else {
        writeln!(
            out,
            "{}",
            paint(
                "Failing (the latest finished run failed)",
                Some("31"),
                color
            )
        )?;
        for streak in &stats.failing {
            write_streak(out, streak, short)?;
        }
    }

    writeln!(out)?;
    if stats.duration_regressions_7d.is_empty() {
        writeln!(out, "Duration regressions, 7 days: none")?;
    } else {
        writeln!(
            out,
            "Duration regressions, 7 days (against the series' recent succeeded runs)"
        )?;
        for r in &stats.duration_regressions_7d {
            write_regression(out, r, short)?;
        }
    }
    Ok(())
}

pub(super) fn write_trends(
    out: &mut impl Write,
    trends: &[Trend],
    value: impl Fn(f64) -> String,
) -> io::Result<()> {
    let mut rows = vec![strings([
        "SERIES", "RUNS", "FIRST", "LATEST", "CHANGE", "PER DAY",
    ])];
    for t in trends {
        let change = match t.change_ratio {
            Some(ratio) => format!("{} ({:+.1}%)", signed(t.change, &value), ratio * 100.0),
            None => signed(t.change, &value),
        };
        rows.push(vec![
            series_name(&t.series),
            t.points.len().to_string(),
            value(t.first),
            value(t.last),
            change,
            t.slope_per_day
                .map_or_else(|| "-".to_owned(), |s| signed(s, &value)),
        ]);
    }
    write_table(out, &rows)
}

/// `+1m05s`, `-2 MiB`: a change through `value`, with its sign.
pub(super) fn signed(v: f64, value: impl Fn(f64) -> String) -> String {
    if v < 0.0 {
        format!("-{}", value(-v))
    } else {
        format!("+{}", value(v))
    }
}

pub(super) fn write_streak(
    out: &mut impl Write,
    s: &FailingStreak,
    short: &ShortIds,
) -> io::Result<()> {
    writeln!(
        out,
        "  {}: {} failed run(s) in a row since {} (run {})",
        series_name(&s.series),
        s.failed_runs,
        rfc3339_local(s.first_failure.started),
        short.of(&s.first_failure.id)
    )?;
    match &s.first_failing_commit {
        Some(commit) => writeln!(out, "    first failing commit: {commit}")?,
        None => writeln!(
            out,
            "    first failing commit: unknown (the runs recorded none)"
        )?,
    }
    match &s.last_success {
        Some(ok) => writeln!(
            out,
            "    last success: {} on {} (run {})",
            ok.git_commit.as_deref().unwrap_or("an unknown commit"),
            rfc3339_local(ok.started),
            short.of(&ok.id)
        )?,
        None => writeln!(out, "    last success: none in the history read")?,
    }
    if s.commits.len() > 1 {
        writeln!(out, "    commits, last good first: {}", s.commits.join(" "))?;
    }
    if s.began_on_passing_commit {
        writeln!(
            out,
            "    note: it began on the commit that last succeeded: the machine or a flaky test, more likely than the code"
        )?;
    }
    Ok(())
}

pub(super) fn write_regression(
    out: &mut impl Write,
    r: &DurationRegression,
    short: &ShortIds,
) -> io::Result<()> {
    let way = match r.direction {
        Direction::Slower => "slower",
        Direction::Faster => "faster",
    };
    writeln!(
        out,
        "  {}: run {} ({}, commit {}) took {}, {way} than the median {} of {} runs ({:+.1} spreads)",
        series_name(&r.series),
        short.of(&r.run.id),
        rfc3339_local(r.run.started),
        r.run.git_commit.as_deref().unwrap_or("-"),
        secs(r.duration_secs),
        secs(r.median_secs),
        r.baseline_runs,
        r.deviation
    )?;
    writeln!(
        out,
        "    previous run {} on commit {}",
        short.of(&r.previous.id),
        r.previous.git_commit.as_deref().unwrap_or("-")
    )
}

pub(super) fn success_cell(r: &SuccessRate) -> String {
    let finished = r.succeeded.saturating_add(r.failed);
    match r.rate {
        Some(rate) => format!("{} ({}/{finished})", percent(rate), r.succeeded),
        None => "-".to_owned(),
    }
}

pub(super) fn unfinished_cell(r: &SuccessRate) -> String {
    let parts: Vec<String> = [
        (r.cancelled, "cancelled"),
        (r.abandoned, "abandoned"),
        (r.running, "running"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

pub(super) fn test_pass_cell(r: &TestPassRate) -> String {
    match r.rate {
        Some(rate) => format!(
            "{} of {} tests; {}/{} runs clean",
            percent(rate),
            r.tests.run,
            r.runs_passed,
            r.runs
        ),
        None => format!("no tests ran ({} runs)", r.runs),
    }
}
