//! `labmesh runs list|show|stats`: the run history, read from the store.
//!
//! The store holds the whole mesh's synced events, so every peer answers for every host. The
//! store is opened read-only and only the date folders a `--since` can touch are indexed; only
//! run events (`<kind>_started` and the ends, for every kind or the `--kind` asked) are read,
//! then folded into one record per run ([`labmesh::runs::records`]). Whether a run that only
//! started is still going is asked of this host's processes for this host's runs.

use std::io::{self, BufWriter, Write};

use chrono::{DateTime, Local, SecondsFormat, TimeDelta, Utc};
use sync::{EventStore, Order, Query};

use crate::cli::exit;
use crate::cli::run::{RunsCommand, RunsFilterArgs, RunsListArgs, RunsShowArgs, RunsStatsArgs};
use labmesh::config::Settings;
use labmesh::error::UsageError;
use labmesh::output::{color_enabled, format_size, paint};
use labmesh::runs::history::{
    self, MONTH, Outcome, RunKind, RunRecord, RunStats, Series, SuccessRate, TestPassRate, Trend,
};
use labmesh::runs::records::{self, Folded, RunDetail};
use labmesh::runs::regressions::{Direction, DurationRegression, FailingStreak};
use labmesh::runs::schema::{self, RunContext, RunPayload, Stage};
use labmesh::runs::test_summary::TestCounts;
use labmesh::timespec;

const KINDS: [RunKind; 4] = [
    RunKind::Build,
    RunKind::Test,
    RunKind::Deploy,
    RunKind::Maintenance,
];
const STAGES: [Stage; 5] = [
    Stage::Started,
    Stage::Completed,
    Stage::Failed,
    Stage::Cancelled,
    Stage::Abandoned,
];
const NO_RUNS: &str = "no runs recorded yet; wrap a command with `labmesh run -- ...`";
/// The fewest characters of a run id a table shows (more where needed to tell runs apart:
/// run ids are UUIDv7s, whose first 8 digits are the same for runs a minute apart).
const ID_PREFIX: usize = 8;
/// Characters of a commit a table shows.
const COMMIT_PREFIX: usize = 7;

pub fn run(settings: &Settings, cmd: &RunsCommand) -> anyhow::Result<u8> {
    let result = match cmd {
        RunsCommand::List(args) => list(settings, args),
        RunsCommand::Show(args) => show(settings, args),
        RunsCommand::Stats(args) => stats(settings, args),
        RunsCommand::Log(args) => log::log(settings, args),
    };
    match result {
        // `labmesh runs list | head`: the reader had enough.
        Err(err) if is_broken_pipe(&err) => Ok(exit::OK),
        other => other,
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let kind = cause
            .downcast_ref::<io::Error>()
            .map(io::Error::kind)
            .or_else(|| {
                cause
                    .downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            });
        kind == Some(io::ErrorKind::BrokenPipe)
    })
}

/// The `--service/--kind/--host/--since` flags, parsed.
struct Filter {
    service: Option<String>,
    kind: Option<RunKind>,
    host: Option<String>,
    since: Option<DateTime<Utc>>,
}

impl Filter {
    fn parse(args: &RunsFilterArgs, now: DateTime<Utc>) -> Result<Filter, UsageError> {
        Ok(Filter {
            service: args.service.clone(),
            kind: args.kind.map(RunKind::from),
            host: args.host.clone(),
            since: args
                .since
                .as_deref()
                .map(|t| timespec::parse("--since", t, now))
                .transpose()?,
        })
    }

    fn is_empty(&self) -> bool {
        self.service.is_none() && self.kind.is_none() && self.host.is_none() && self.since.is_none()
    }

    fn matches(&self, r: &RunRecord) -> bool {
        self.service.as_ref().is_none_or(|s| *s == r.service)
            && self.kind.is_none_or(|k| k == r.kind)
            && self.host.as_ref().is_none_or(|h| *h == r.host)
            && self.since.is_none_or(|t| r.started >= t)
    }
}

/// Every event type a run of `kind` (or of any kind) writes.
fn run_event_types(kind: Option<RunKind>) -> Vec<String> {
    KINDS
        .into_iter()
        .filter(|k| kind.is_none_or(|want| want == *k))
        .flat_map(|k| STAGES.map(|s| schema::event_type(k, s)))
        .collect()
}

/// The runs in the store, from the run events at or after `since` (all of them without),
/// of `kind` and on `host` when given.
fn load(
    settings: &Settings,
    kind: Option<RunKind>,
    host: Option<&str>,
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> anyhow::Result<Folded> {
    let mut cfg = settings.store_config();
    cfg.read_only = true;
    cfg.dates = since.map(|t| (t.date_naive(), chrono::NaiveDate::MAX));
    let (store, report) = EventStore::open(cfg)?;
    if report.needs_attention > 0 {
        eprintln!(
            "labmesh: {} file(s) under {} are not valid events and were skipped; run `labmesh fsck` to see them (a running agent quarantines them)",
            report.needs_attention,
            store.events_dir().display()
        );
    }
    let query = Query {
        since,
        types: run_event_types(kind),
        // A run's events are all written by the host it ran on.
        nodes: host.map(str::to_owned).into_iter().collect(),
        order: Order::Asc,
        ..Query::default()
    };
    let mut events = Vec::new();
    for entry in store.query(&query) {
        match store.read_event(&entry) {
            Ok(event) => events.push(event),
            Err(err) => eprintln!(
                "labmesh: skipping {}: {err}",
                entry.relative_path().display()
            ),
        }
    }
    let this_host = settings.name.as_str();
    let folded = records::fold(&events, now, |node, pid| {
        if node == this_host {
            labmesh::runs::context::process_alive(pid)
        } else {
            None
        }
    });
    if let Some(first) = folded.skipped.first() {
        eprintln!(
            "labmesh: {} run event(s) are not readable as runs and were skipped (first: {} {} from {}: {})",
            folded.skipped.len(),
            first.event_type,
            first.id,
            first.node,
            first.reason
        );
    }
    Ok(folded)
}

// ---------------------------------------------------------------------------------------
// list

fn list(settings: &Settings, args: &RunsListArgs) -> anyhow::Result<u8> {
    let now = Utc::now();
    let filter = Filter::parse(&args.filter, now)?;
    let folded = load(
        settings,
        filter.kind,
        filter.host.as_deref(),
        filter.since,
        now,
    )?;
    let total = folded.runs.len();
    let matching: Vec<&RunDetail> = folded
        .runs
        .iter()
        .filter(|r| filter.matches(&r.record))
        .collect();
    let shown = &matching[..matching.len().min(args.limit)];
    let mut out = BufWriter::new(io::stdout().lock());
    if args.json {
        let records: Vec<&RunRecord> = shown.iter().map(|r| &r.record).collect();
        serde_json::to_writer_pretty(&mut out, &records)?;
        writeln!(out)?;
    } else if matching.is_empty() {
        if total == 0 && filter.is_empty() {
            writeln!(out, "{NO_RUNS}")?;
        } else if total == 0 {
            writeln!(out, "no runs match (none recorded in that time)")?;
        } else {
            writeln!(out, "no runs match ({total} recorded)")?;
        }
    } else {
        let ids: Vec<&str> = folded.runs.iter().map(|r| r.record.id.as_str()).collect();
        let short = ShortIds::new(&ids);
        write_list(&mut out, shown, &short, now, color_enabled())?;
        if matching.len() > shown.len() {
            writeln!(
                out,
                "({} more; raise --limit or narrow with --since/--service/--kind/--host)",
                matching.len() - shown.len()
            )?;
        }
    }
    out.flush()?;
    Ok(exit::OK)
}

const LIST_HEADER: [&str; 11] = [
    "ID", "STARTED", "KIND", "SERVICE", "HOST", "BACKEND", "OUTCOME", "DURATION", "COMMIT",
    "TESTS", "",
];
/// The column [`write_list`] colours.
const OUTCOME_COLUMN: usize = 6;

fn list_row(r: &RunDetail, short: &ShortIds, now: DateTime<Utc>) -> [String; 11] {
    let rec = &r.record;
    let exit_note = match (rec.outcome, rec.exit_code, &r.payload.end.signal) {
        (Outcome::Failed | Outcome::Cancelled, _, Some(signal)) => signal.clone(),
        (Outcome::Failed, Some(code), None) => format!("exit {code}"),
        _ => String::new(),
    };
    [
        short.of(&rec.id),
        started_cell(rec.started, now),
        kind_name(rec.kind).to_owned(),
        rec.service.clone(),
        rec.host.clone(),
        dash(rec.backend.as_deref()),
        outcome_name(rec.outcome).to_owned(),
        rec.duration().map_or_else(|| "-".to_owned(), secs),
        rec.git_commit
            .as_deref()
            .map_or_else(|| "-".to_owned(), |c| prefix(c, COMMIT_PREFIX)),
        rec.tests.map_or_else(|| "-".to_owned(), tests_cell),
        exit_note,
    ]
}

fn write_list(
    out: &mut impl Write,
    runs: &[&RunDetail],
    short: &ShortIds,
    now: DateTime<Utc>,
    color: bool,
) -> io::Result<()> {
    let header = LIST_HEADER.map(str::to_owned);
    let rows: Vec<[String; 11]> = runs.iter().map(|r| list_row(r, short, now)).collect();
    let mut widths = LIST_HEADER.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    write_cells(out, &header, &widths, None, false)?;
    for (row, run) in rows.iter().zip(runs) {
        write_cells(out, row, &widths, Some(run.record.outcome), color)?;
    }
    Ok(())
}

fn write_cells(
    out: &mut impl Write,
    row: &[String],
    widths: &[usize],
    outcome: Option<Outcome>,
    color: bool,
) -> io::Result<()> {
    let mut line = String::new();
    for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
        let pad = width.saturating_sub(cell.chars().count());
        match outcome {
            Some(o) if i == OUTCOME_COLUMN => line.push_str(&paint(cell, outcome_color(o), color)),
            _ => line.push_str(cell),
        }
        line.push_str(&" ".repeat(pad + 2));
    }
    writeln!(out, "{}", line.trim_end())
}

/// The shortest prefix of each run id that no other run id begins with, at least
/// [`ID_PREFIX`] characters (what `runs show` takes).
struct ShortIds {
    lengths: std::collections::HashMap<String, usize>,
}

impl ShortIds {
    fn new(ids: &[&str]) -> ShortIds {
        let mut sorted: Vec<&str> = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let common =
            |a: &str, b: &str| a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
        let mut lengths = std::collections::HashMap::new();
        for (i, id) in sorted.iter().enumerate() {
            let before = i
                .checked_sub(1)
                .and_then(|j| sorted.get(j))
                .map_or(0, |p| common(p, id));
            let after = sorted.get(i + 1).map_or(0, |n| common(id, n));
            lengths.insert((*id).to_owned(), (before.max(after) + 1).max(ID_PREFIX));
        }
        ShortIds { lengths }
    }

    fn of(&self, id: &str) -> String {
        prefix(id, self.lengths.get(id).copied().unwrap_or(ID_PREFIX))
    }
}

fn write_table(out: &mut impl Write, rows: &[Vec<String>]) -> io::Result<()> {
    for line in labmesh::output::table("  ", rows) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// cells

fn strings<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

fn kind_name(kind: RunKind) -> &'static str {
    match kind {
        RunKind::Build => "build",
        RunKind::Test => "test",
        RunKind::Deploy => "deploy",
        RunKind::Maintenance => "maintenance",
    }
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::Cancelled => "cancelled",
        Outcome::Abandoned => "abandoned",
        Outcome::Running => "running",
    }
}

fn outcome_color(outcome: Outcome) -> Option<&'static str> {
    match outcome {
        Outcome::Succeeded => Some("32"),
        Outcome::Failed => Some("31"),
        Outcome::Cancelled | Outcome::Abandoned => Some("33"),
        Outcome::Running => Some("36"),
    }
}

/// `build llm-worker-rbee on ws (cuda)`.
fn series_name(s: &Series) -> String {
    let backend = s
        .backend
        .as_deref()
        .map(|b| format!(" ({b})"))
        .unwrap_or_default();
    format!("{} {} on {}{backend}", kind_name(s.kind), s.service, s.host)
}

fn dash(v: Option<&str>) -> String {
    v.unwrap_or("-").to_owned()
}

/// The first `n` characters of `s`.
fn prefix(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn percent(rate: f64) -> String {
    let p = rate * 100.0;
    if p.fract() == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

fn tests_cell(t: TestCounts) -> String {
    if t.failed > 0 {
        format!("{} passed, {} failed", t.passed, t.failed)
    } else {
        format!("{} passed", t.passed)
    }
}

fn tests_long(t: TestCounts) -> String {
    let mut text = format!("{} run: {} passed, {} failed", t.run, t.passed, t.failed);
    if t.ignored > 0 {
        text.push_str(&format!(", {} ignored", t.ignored));
    }
    text
}

/// Seconds for people: `0.4s`, `12.3s`, `1m05s`, `2h03m`.
fn secs(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "-".to_owned();
    }
    if s < 1.0 {
        return format!("{s:.2}s");
    }
    if s < 59.95 {
        return format!("{s:.1}s");
    }
    let whole = s.round() as u64;
    if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, (whole % 3600) / 60)
    }
}

fn elapsed(since: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - since).num_milliseconds().max(0) as f64 / 1000.0
}

/// `45s ago`, `12m ago`, `3h ago`, `2d ago`; `in the future` for a clock ahead.
fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let d = now - t;
    if d < TimeDelta::zero() {
        return "in the future (a clock ahead)".to_owned();
    }
    let s = d.num_seconds();
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// The STARTED cell: an age within a day, else the local date and time.
fn started_cell(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if now - t < TimeDelta::days(1) {
        ago(t, now)
    } else {
        t.with_timezone(&Local).format("%Y-%m-%d %H:%M").to_string()
    }
}

fn rfc3339_local(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// A command line as one could type it back: arguments with spaces or quotes single-quoted.
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

mod log;
mod show;
mod stats;

use show::show;
use stats::stats;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::show::write_show;
    use super::stats::write_stats;
    use super::*;

    #[test]
    fn every_run_event_type_is_queried() {
        let all = run_event_types(None);
        assert_eq!(all.len(), 20);
        assert!(all.contains(&"deployment_abandoned".to_owned()));
        let builds = run_event_types(Some(RunKind::Build));
        assert_eq!(builds.len(), 5);
        assert!(builds.iter().all(|t| t.starts_with("build_")));
    }

    #[test]
    fn cells_for_people() {
        assert_eq!(secs(0.042), "0.04s");
        assert_eq!(secs(12.34), "12.3s");
        assert_eq!(secs(59.97), "1m00s");
        assert_eq!(secs(65.2), "1m05s");
        assert_eq!(secs(7380.0), "2h03m");
        assert_eq!(secs(f64::NAN), "-");
        assert_eq!(percent(0.5), "50%");
        assert_eq!(percent(2.0 / 3.0), "66.7%");
        assert_eq!(
            shell_words(&["cargo".into(), "a b".into(), "it's".into()]),
            r"cargo 'a b' 'it'\''s'"
        );
        let now = Utc::now();
        assert_eq!(ago(now - TimeDelta::minutes(90), now), "1h ago");
        let short = ShortIds::new(&[
            "01a25249-c0d5-7522",
            "01a25249-c10e-75a0",
            "01a25249-c10f-75a0",
            "ffffffffffff",
        ]);
        assert_eq!(short.of("01a25249-c0d5-7522"), "01a25249-c0");
        assert_eq!(short.of("01a25249-c10e-75a0"), "01a25249-c10e");
        assert_eq!(short.of("ffffffffffff"), "ffffffff");
        assert_eq!(short.of("unknown-id"), "unknown-");
        assert_eq!(prefix("0199c3a1-7e", ID_PREFIX), "0199c3a1");
    }

    fn detail(id: &str, outcome: Outcome, minutes_ago: i64, commit: &str) -> RunDetail {
        let started = Utc::now() - TimeDelta::minutes(minutes_ago);
        let payload = RunPayload {
            context: RunContext {
                run_id: id.to_owned(),
                service: "llm-worker".into(),
                command: vec!["cargo".into(), "build".into()],
                git_commit: Some(commit.to_owned()),
                git_branch: Some("main".into()),
                log: format!("logs/runs/{id}.jsonl"),
                ..RunContext::default()
            },
            end: labmesh::runs::schema::RunEnd {
                started: Some(started),
                duration_seconds: Some(61.0),
                exit_code: Some(i32::from(outcome != Outcome::Succeeded)),
                phases: vec![labmesh::runs::schema::Phase {
                    name: "compile".into(),
                    started,
                    duration_seconds: 61.0,
                }],
                failing_phase: (outcome == Outcome::Failed).then(|| "compile".to_owned()),
                tail: vec!["error: could not compile".into()],
                ..Default::default()
            },
        };
        let stage = Stage::of(outcome);
        RunDetail {
            record: payload.record(RunKind::Build, stage, "ws", started),
            payload,
            start_event: None,
            end_event: None,
            events: Vec::new(),
        }
    }

    #[test]
    fn human_output_renders() {
        let runs = [
            detail("r-3", Outcome::Failed, 10, "ccc"),
            detail("r-2", Outcome::Succeeded, 60, "bbb"),
            detail("r-1", Outcome::Running, 2000, "aaa"),
        ];
        let refs: Vec<&RunDetail> = runs.iter().collect();
        let ids: Vec<&str> = runs.iter().map(|r| r.record.id.as_str()).collect();
        let short = ShortIds::new(&ids);
        let now = Utc::now();
        let mut out = Vec::new();
        write_list(&mut out, &refs, &short, now, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("ID "), "{text}");
        assert!(
            text.contains("failed") && text.contains("1m01s") && text.contains("exit 1"),
            "{text}"
        );

        let mut out = Vec::new();
        write_show(
            &mut out,
            "mac",
            &runs[0],
            Some("/d/logs/runs/r-3.jsonl".into()),
            now,
            false,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("failed in"), "{text}");
        assert!(text.contains("/d/logs/runs/r-3.jsonl (on ws)"), "{text}");
        assert!(
            text.contains("compile") && text.contains("<- failed here"),
            "{text}"
        );
        assert!(text.contains("error: could not compile"), "{text}");

        let records: Vec<RunRecord> = runs.iter().map(|r| r.record.clone()).collect();
        let stats = history::stats(&records, now);
        let mut out = Vec::new();
        write_stats(&mut out, &stats, records.len(), &short, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("50% (1/2)"), "{text}");
        assert!(text.contains("first failing commit: ccc"), "{text}");
        assert!(text.contains("commits, last good first: bbb ccc"), "{text}");
    }

    #[test]
    fn a_broken_pipe_is_no_error() {
        let err = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }

    #[test]
    fn our_own_process_is_alive() {
        assert_eq!(
            labmesh::runs::context::process_alive(std::process::id()),
            Some(true)
        );
        assert_eq!(labmesh::runs::context::process_alive(0), None);
    }
}
