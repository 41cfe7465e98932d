//! The run history read back from events (`labmesh runs`): the `<kind>_started` and end
//! events of each run folded into one [`RunRecord`], with the payload `runs show` prints.
//!
//! One record per run id (the events' `correlation_id`). An end event wins over the start,
//! since it repeats the start's context and adds how the run ended; of several ends (which a
//! wrapper never writes, but a replay or a hand-written event might), the latest wins. A start
//! with no end is running, unless its wrapper is known to be gone (this host, no such
//! process) or, where nobody can tell (another host), it started more than
//! [`ABANDON_AFTER`] ago: then it is abandoned.
//!
//! Pure: the caller reads the events and answers whether a wrapper process is alive.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::Value;
use sync::Event;
use uuid::Uuid;

use super::history::{Outcome, RunKind, RunRecord};
use super::schema::{RunPayload, Stage, parse_event_type};

/// How long a start whose wrapper nobody can check may go without an end before it counts
/// as abandoned.
pub const ABANDON_AFTER: TimeDelta = TimeDelta::days(7);

/// One run: its record, the payload of the event it was read from, and its events.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunDetail {
    pub record: RunRecord,
    /// The payload of the winning event: the latest end, else the start.
    pub payload: RunPayload,
    /// The `<kind>_started` event, when it was seen (the earliest, if several).
    pub start_event: Option<Uuid>,
    /// The end event the record comes from, when there is one.
    pub end_event: Option<Uuid>,
    /// Every event of the run that was read, oldest first.
    pub events: Vec<Uuid>,
}

/// A run event that was not folded in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedEvent {
    pub id: Uuid,
    pub event_type: String,
    pub node: String,
    /// Why (the payload's parse error, or a missing run id).
    pub reason: String,
}

/// The runs a list of events holds, and the run events that could not be read as runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Folded {
    /// Newest first (by start time, then id descending), so the same events fold the same
    /// everywhere.
    pub runs: Vec<RunDetail>,
    /// Run events (by their type) whose payload is not a run's. Other events are ignored.
    pub skipped: Vec<SkippedEvent>,
}

impl Folded {
    /// The records alone, newest first (what [`super::history::stats`] takes).
    pub fn records(&self) -> Vec<RunRecord> {
        self.runs.iter().map(|r| r.record.clone()).collect()
    }
}

/// One parsed run event.
struct Parsed<'a> {
    event: &'a Event,
    kind: RunKind,
    stage: Stage,
    payload: RunPayload,
}

/// Folds `events` (in any order) into runs at `now`.
///
/// `is_alive(node, wrapper_pid)` says whether the wrapper of a run that has only started is
/// still running: `Some(true)` or `Some(false)` where it can tell (this host), `None` where
/// it cannot (another host, no pid).
pub fn fold<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    now: DateTime<Utc>,
    is_alive: impl Fn(&str, u32) -> Option<bool>,
) -> Folded {
    let mut skipped = Vec::new();
    let mut by_run: BTreeMap<String, Vec<Parsed<'a>>> = BTreeMap::new();
    for event in events {
        let Some((kind, stage)) = parse_event_type(&event.event_type) else {
            continue;
        };
        let skip = |reason: String| SkippedEvent {
            id: event.id,
            event_type: event.event_type.clone(),
            node: event.node.clone(),
            reason,
        };
        let mut payload: RunPayload =
            match serde_json::from_value(Value::Object(event.payload.clone())) {
                Ok(p) => p,
                Err(e) => {
                    skipped.push(skip(format!("payload is not a run's: {e}")));
                    continue;
                }
            };
        let id = if event.correlation_id.is_empty() {
            payload.context.run_id.clone()
        } else {
            event.correlation_id.clone()
        };
        if id.is_empty() {
            skipped.push(skip(
                "no run id (correlation_id and run_id are empty)".to_owned(),
            ));
            continue;
        }
        payload.context.run_id.clone_from(&id);
        by_run.entry(id).or_default().push(Parsed {
            event,
            kind,
            stage,
            payload,
        });
    }
    let mut runs: Vec<RunDetail> = by_run
        .into_values()
        .filter_map(|events| run(events, now, &is_alive))
        .collect();
    runs.sort_by(|a, b| newest_first(&a.record, &b.record));
    Folded { runs, skipped }
}

fn newest_first(a: &RunRecord, b: &RunRecord) -> Ordering {
    (b.started, &b.id).cmp(&(a.started, &a.id))
}

fn event_order(a: &Parsed<'_>, b: &Parsed<'_>) -> Ordering {
    (a.event.timestamp, a.event.id).cmp(&(b.event.timestamp, b.event.id))
}

/// The events of one run (at least one) as its detail.
fn run(
    mut events: Vec<Parsed<'_>>,
    now: DateTime<Utc>,
    is_alive: &impl Fn(&str, u32) -> Option<bool>,
) -> Option<RunDetail> {
    events.sort_by(event_order);
    let ids: Vec<Uuid> = events.iter().map(|p| p.event.id).collect();
    let start = events.iter().find(|p| p.stage == Stage::Started);
    let end = events.iter().rev().find(|p| p.stage != Stage::Started);
    let start_event = start.map(|p| p.event.id);
    let winner = end.or(start)?;
    let mut record = winner.payload.record(
        winner.kind,
        winner.stage,
        &winner.event.node,
        winner.event.timestamp,
    );
    record.id.clone_from(&winner.payload.context.run_id);
    if let (Some(end), Some(start)) = (end, start)
        && end.payload.end.started.is_none()
    {
        // An end that does not say when the run started: its start event does.
        record.started = start.event.timestamp;
    }
    if end.is_none() && abandoned(&record, winner, now, is_alive) {
        record.outcome = Outcome::Abandoned;
    }
    Some(RunDetail {
        record,
        payload: winner.payload.clone(),
        start_event,
        end_event: end.map(|p| p.event.id),
        events: ids,
    })
}

/// Whether a run that only started will never end.
fn abandoned(
    record: &RunRecord,
    start: &Parsed<'_>,
    now: DateTime<Utc>,
    is_alive: &impl Fn(&str, u32) -> Option<bool>,
) -> bool {
    match is_alive(&start.event.node, start.payload.context.wrapper_pid) {
        Some(alive) => !alive,
        None => now
            .checked_sub_signed(ABANDON_AFTER)
            .is_some_and(|cutoff| record.started < cutoff),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::TimeZone;
    use serde_json::{Map, json};
    use sync::Severity;

    use super::*;
    use crate::runs::schema::{RunContext, RunEnd, event_type};
    use crate::runs::test_summary::TestCounts;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 10, 9, 12, 0, 0)
            .single()
            .unwrap()
    }

    fn mins_ago(m: i64) -> DateTime<Utc> {
        now() - TimeDelta::minutes(m)
    }

    fn context(run_id: &str) -> RunContext {
        RunContext {
            run_id: run_id.to_owned(),
            kind: Some(RunKind::Build),
            service: "llm-worker-rbee".into(),
            backend: Some("cuda".into()),
            target: "ws".into(),
            script: "cargo".into(),
            command: vec!["cargo".into(), "build".into()],
            cwd: "/src/llm-worker-rbee".into(),
            git_commit: Some("abc1234".into()),
            hostname: "ws".into(),
            os: "linux".into(),
            wrapper_pid: 4242,
            log: format!("logs/runs/{run_id}.jsonl"),
            ..RunContext::default()
        }
    }

    fn event(
        run_id: &str,
        kind: RunKind,
        stage: Stage,
        node: &str,
        at: DateTime<Utc>,
        payload: &RunPayload,
    ) -> Event {
        let Value::Object(map) = serde_json::to_value(payload).unwrap() else {
            panic!("a payload is an object");
        };
        Event {
            id: sync::event::uuid_v7_at(at),
            timestamp: at,
            node: node.to_owned(),
            event_type: event_type(kind, stage),
            severity: Severity::Info,
            source: "labmesh-run".into(),
            service: "llm-worker-rbee".into(),
            correlation_id: run_id.to_owned(),
            payload: map,
            extra: Map::new(),
        }
    }

    fn start(run_id: &str, node: &str, at: DateTime<Utc>) -> Event {
        let payload = RunPayload {
            context: context(run_id),
            end: RunEnd::default(),
        };
        event(run_id, RunKind::Build, Stage::Started, node, at, &payload)
    }

    fn end(run_id: &str, stage: Stage, node: &str, started: DateTime<Utc>, secs: f64) -> Event {
        let payload = RunPayload {
            context: context(run_id),
            end: RunEnd {
                started: Some(started),
                duration_seconds: Some(secs),
                exit_code: Some(if stage == Stage::Completed { 0 } else { 1 }),
                tests: Some(TestCounts {
                    run: 3,
                    passed: 2,
                    failed: 1,
                    ignored: 0,
                }),
                ..RunEnd::default()
            },
        };
        let at = started + TimeDelta::milliseconds((secs * 1000.0) as i64);
        event(run_id, RunKind::Build, stage, node, at, &payload)
    }

    /// Nobody can tell whether any wrapper is alive.
    fn unknown(_: &str, _: u32) -> Option<bool> {
        None
    }

    #[test]
    fn a_start_and_its_end_are_one_finished_run() {
        let events = vec![
            end("r1", Stage::Failed, "ws", mins_ago(10), 60.0),
            start("r1", "ws", mins_ago(10)),
        ];
        let folded = fold(&events, now(), unknown);
        assert!(folded.skipped.is_empty());
        assert_eq!(folded.runs.len(), 1);
        let run = &folded.runs[0];
        assert_eq!(run.record.id, "r1");
        assert_eq!(run.record.outcome, Outcome::Failed);
        assert_eq!(run.record.started, mins_ago(10));
        assert_eq!(run.record.duration(), Some(60.0));
        assert_eq!(run.record.exit_code, Some(1));
        assert_eq!(run.record.host, "ws");
        assert_eq!(run.record.tests.map(|t| t.failed), Some(1));
        assert_eq!(run.start_event, Some(events[1].id));
        assert_eq!(run.end_event, Some(events[0].id));
        assert_eq!(run.events, vec![events[1].id, events[0].id]);
        assert_eq!(run.payload.end.duration_seconds, Some(60.0));
        assert_eq!(folded.records(), vec![run.record.clone()]);
    }

    #[test]
    fn the_latest_of_several_ends_wins() {
        let events = vec![
            start("r1", "ws", mins_ago(30)),
            end("r1", Stage::Completed, "ws", mins_ago(30), 600.0),
            end("r1", Stage::Failed, "ws", mins_ago(30), 60.0),
        ];
        let folded = fold(&events, now(), unknown);
        assert_eq!(folded.runs.len(), 1);
        let run = &folded.runs[0];
        assert_eq!(run.record.outcome, Outcome::Succeeded);
        assert_eq!(run.end_event, Some(events[1].id));
        assert_eq!(run.events.len(), 3);
    }

    #[test]
    fn an_end_without_its_start_is_a_whole_record() {
        let events = vec![end("r1", Stage::Completed, "mac", mins_ago(90), 30.0)];
        let folded = fold(&events, now(), unknown);
        let run = &folded.runs[0];
        assert_eq!(run.record.outcome, Outcome::Succeeded);
        assert_eq!(run.record.started, mins_ago(90));
        assert_eq!(run.start_event, None);
    }

    #[test]
    fn an_end_that_omits_its_start_time_takes_the_start_events() {
        let mut late = end("r1", Stage::Completed, "ws", mins_ago(20), 60.0);
        late.payload.remove("started");
        let events = vec![start("r1", "ws", mins_ago(20)), late];
        let run = &fold(&events, now(), unknown).runs[0];
        assert_eq!(run.record.started, mins_ago(20));
    }

    #[test]
    fn a_start_alone_is_running_or_abandoned() {
        let events = vec![
            start("here-alive", "ws", mins_ago(5)),
            start("here-dead", "ws", mins_ago(5)),
            start("there-recent", "mac", mins_ago(60 * 24 * 6)),
            start("there-old", "mac", mins_ago(60 * 24 * 8)),
            // Alive, however old: the wrapper says so.
            start("here-old-alive", "ws", mins_ago(60 * 24 * 30)),
        ];
        let alive = |node: &str, pid: u32| {
            assert_eq!(pid, 4242);
            (node == "ws").then_some(true)
        };
        let folded = fold(&events, now(), alive);
        let outcome = |id: &str| {
            folded
                .runs
                .iter()
                .find(|r| r.record.id == id)
                .map(|r| r.record.outcome)
        };
        assert_eq!(outcome("here-alive"), Some(Outcome::Running));
        assert_eq!(outcome("there-recent"), Some(Outcome::Running));
        assert_eq!(outcome("there-old"), Some(Outcome::Abandoned));
        assert_eq!(outcome("here-old-alive"), Some(Outcome::Running));

        let dead = |node: &str, _: u32| (node == "ws").then_some(false);
        let folded = fold(&events[1..2], now(), dead);
        assert_eq!(folded.runs[0].record.outcome, Outcome::Abandoned);
        assert_eq!(folded.runs[0].end_event, None);
        // An end is never second-guessed by liveness.
        let events = vec![
            start("r1", "ws", mins_ago(5)),
            end("r1", Stage::Cancelled, "ws", mins_ago(5), 2.0),
        ];
        assert_eq!(
            fold(&events, now(), dead).runs[0].record.outcome,
            Outcome::Cancelled
        );
    }

    #[test]
    fn runs_are_listed_newest_first() {
        let events = vec![
            end("old", Stage::Completed, "ws", mins_ago(300), 1.0),
            end("new", Stage::Completed, "ws", mins_ago(3), 1.0),
            end("mid", Stage::Failed, "mac", mins_ago(30), 1.0),
        ];
        let ids: Vec<String> = fold(&events, now(), unknown)
            .records()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["new", "mid", "old"]);
    }

    #[test]
    fn unreadable_payloads_are_skipped_and_counted_other_events_ignored() {
        let mut broken = start("r2", "ws", mins_ago(5));
        broken.payload = json!({"run_id": "r2", "wrapper_pid": "not a pid"})
            .as_object()
            .cloned()
            .unwrap();
        let mut other = start("r3", "ws", mins_ago(5));
        other.event_type = "node_offline".into();
        let mut anonymous = start("", "ws", mins_ago(5));
        anonymous.payload.insert("run_id".into(), json!(""));
        let events = vec![
            start("r1", "ws", mins_ago(5)),
            broken.clone(),
            other,
            anonymous.clone(),
        ];
        let folded = fold(&events, now(), unknown);
        assert_eq!(folded.runs.len(), 1);
        assert_eq!(folded.skipped.len(), 2);
        assert_eq!(folded.skipped[0].id, broken.id);
        assert!(
            folded.skipped[0].reason.contains("payload"),
            "{}",
            folded.skipped[0].reason
        );
        assert_eq!(folded.skipped[1].id, anonymous.id);
    }

    #[test]
    fn the_correlation_id_names_the_run_and_the_payload_id_fills_in() {
        let mut no_corr = end("r9", Stage::Completed, "ws", mins_ago(5), 1.0);
        no_corr.correlation_id.clear();
        let mut mismatched = end("r8", Stage::Completed, "ws", mins_ago(7), 1.0);
        mismatched.payload.insert("run_id".into(), json!("other"));
        let folded = fold(&[no_corr, mismatched], now(), unknown);
        let ids: Vec<&str> = folded.runs.iter().map(|r| r.record.id.as_str()).collect();
        assert_eq!(ids, ["r9", "r8"]);
        assert_eq!(folded.runs[1].payload.context.run_id, "r8");
    }

    #[test]
    fn the_kind_comes_from_the_event_type() {
        let mut deploy = end("d1", Stage::Completed, "ws", mins_ago(5), 1.0);
        deploy.event_type = event_type(RunKind::Deploy, Stage::Completed);
        let folded = fold(&[deploy], now(), unknown);
        assert_eq!(folded.runs[0].record.kind, RunKind::Deploy);
    }

    #[test]
    fn details_serialize_for_runs_show() {
        let events = vec![end("r1", Stage::Completed, "ws", mins_ago(5), 1.0)];
        let folded = fold(&events, now(), unknown);
        let json = serde_json::to_value(&folded).unwrap();
        assert_eq!(json["runs"][0]["record"]["outcome"], "succeeded");
        assert_eq!(json["runs"][0]["payload"]["git_commit"], "abc1234");
        assert_eq!(
            json["runs"][0]["end_event"],
            Value::String(events[0].id.to_string())
        );
    }
}
