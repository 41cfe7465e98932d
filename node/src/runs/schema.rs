//! The events a run writes, and the environment it gives the wrapped command.
//!
//! A run is recorded as two events with the run id as `correlation_id`: `<kind>_started` when
//! the command starts, and one end, `<kind>_completed`, `_failed`, `_cancelled` (Ctrl-C or a
//! signal) or `_abandoned` (the wrapper died and the agent noticed). Events are immutable, so
//! the end repeats the start's context: each end event alone is a whole [`RunRecord`], which
//! is what history, metrics and rules read. The kinds follow the seed's event names: `build`,
//! `test`, `deployment`, `maintenance`.
//!
//! Payload fields are flat and named as the seed's JSON log lines are (`git_commit`,
//! `git_branch`, `backend`, `target`, `script`), and durations are `duration_seconds`, which the
//! shipped rules and the digest already read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::history::{Outcome, RunKind, RunRecord};
use super::output::Diagnostics;
use super::test_summary::TestCounts;

/// The run id, exported to the wrapped command (so `labmesh run phase` and scripts can name
/// their run).
pub const RUN_ID_ENV: &str = "LABMESH_RUN_ID";
/// The file `labmesh run phase NAME` appends to, exported to the wrapped command.
pub const PHASE_FILE_ENV: &str = "LABMESH_RUN_PHASE_FILE";
/// Where run logs live under the data dir: `<data>/logs/runs/<run-id>.jsonl`.
pub const RUN_LOG_DIR: &str = "logs/runs";
/// The `source` of run events when the command names no script.
pub const RUN_SOURCE: &str = "labmesh-run";

/// How far a run got: the suffix of its event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Started,
    Completed,
    Failed,
    Cancelled,
    Abandoned,
}

impl Stage {
    const ALL: [Stage; 5] = [
        Stage::Started,
        Stage::Completed,
        Stage::Failed,
        Stage::Cancelled,
        Stage::Abandoned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Started => "started",
            Stage::Completed => "completed",
            Stage::Failed => "failed",
            Stage::Cancelled => "cancelled",
            Stage::Abandoned => "abandoned",
        }
    }

    /// The outcome an event of this stage records.
    pub fn outcome(self) -> Outcome {
        match self {
            Stage::Started => Outcome::Running,
            Stage::Completed => Outcome::Succeeded,
            Stage::Failed => Outcome::Failed,
            Stage::Cancelled => Outcome::Cancelled,
            Stage::Abandoned => Outcome::Abandoned,
        }
    }

    /// The stage that records `outcome` (`Running` is the start).
    pub fn of(outcome: Outcome) -> Stage {
        match outcome {
            Outcome::Running => Stage::Started,
            Outcome::Succeeded => Stage::Completed,
            Outcome::Failed => Stage::Failed,
            Outcome::Cancelled => Stage::Cancelled,
            Outcome::Abandoned => Stage::Abandoned,
        }
    }
}

/// The event-type prefix of a kind (the seed's names: a deploy is a `deployment_*`).
pub fn event_prefix(kind: RunKind) -> &'static str {
    match kind {
        RunKind::Build => "build",
        RunKind::Test => "test",
        RunKind::Deploy => "deployment",
        RunKind::Maintenance => "maintenance",
    }
}

/// `build_started`, `deployment_failed`, ...
pub fn event_type(kind: RunKind, stage: Stage) -> String {
    format!("{}_{}", event_prefix(kind), stage.as_str())
}

/// The kind and stage of a run event type; `None` for every other event.
pub fn parse_event_type(event_type: &str) -> Option<(RunKind, Stage)> {
    let (prefix, stage) = event_type.rsplit_once('_')?;
    let kind = [
        RunKind::Build,
        RunKind::Test,
        RunKind::Deploy,
        RunKind::Maintenance,
    ]
    .into_iter()
    .find(|k| event_prefix(*k) == prefix)?;
    let stage = Stage::ALL.into_iter().find(|s| s.as_str() == stage)?;
    Some((kind, stage))
}

/// What a run is, known when it starts: the payload of `<kind>_started`, repeated in its end.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunContext {
    pub run_id: String,
    pub kind: Option<RunKind>,
    /// What is built, tested or deployed (`--service`, else the git repository's folder name,
    /// else the command's name).
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The host the run is about (`--target-host`; the seed's `target`), else this host.
    pub target: String,
    /// The script or program run (the seed's `script`): the command's file name.
    pub script: String,
    /// The command line, redacted.
    pub command: Vec<String>,
    /// The folder it ran in.
    pub cwd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_dirty: Option<bool>,
    /// The `origin` remote, credentials removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_remote: Option<String>,
    pub hostname: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// GPU model, driver and CUDA version (NVML), or Metal on a Mac, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// The wrapper's process id: a start whose wrapper is gone is an abandoned run.
    pub wrapper_pid: u32,
    /// The run's log, relative to the data dir.
    pub log: String,
}

/// A phase marked with `labmesh run phase NAME` (or the wrapper's own `repo_sync`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub started: DateTime<Utc>,
    /// Until the next phase began, or the run ended.
    pub duration_seconds: f64,
}

/// The `--git-pull` step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepoSync {
    pub ok: bool,
    pub duration_seconds: f64,
    /// Bytes git reported receiving (0 when already up to date).
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_before: Option<String>,
}

/// How a run ended: the rest of an end event's payload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunEnd {
    pub started: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the command, or that the wrapper forwarded to it (`SIGINT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_bytes: Option<u64>,
    #[serde(default)]
    pub diagnostics: Diagnostics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestCounts>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
    /// The phase running when the command failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_sync: Option<RepoSync>,
    /// The last lines of output, redacted (for the failure notification).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tail: Vec<String>,
}

/// A run event's payload, as written and read back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunPayload {
    #[serde(flatten)]
    pub context: RunContext,
    #[serde(flatten)]
    pub end: RunEnd,
}

impl RunPayload {
    /// The history record of one run event written on `host` at `at`: the start gives a
    /// running record, an end a finished one.
    pub fn record(&self, kind: RunKind, stage: Stage, host: &str, at: DateTime<Utc>) -> RunRecord {
        let c = &self.context;
        RunRecord {
            id: c.run_id.clone(),
            kind,
            service: c.service.clone(),
            host: host.to_owned(),
            backend: c.backend.clone(),
            started: self.end.started.unwrap_or(at),
            duration_secs: self.end.duration_seconds,
            outcome: stage.outcome(),
            exit_code: self.end.exit_code,
            git_commit: c.git_commit.clone(),
            git_branch: c.git_branch.clone(),
            artifact_bytes: self.end.artifact_bytes,
            tests: self.end.tests,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn event_types_round_trip_and_others_are_not_runs() {
        for kind in [
            RunKind::Build,
            RunKind::Test,
            RunKind::Deploy,
            RunKind::Maintenance,
        ] {
            for stage in Stage::ALL {
                let t = event_type(kind, stage);
                assert_eq!(parse_event_type(&t), Some((kind, stage)), "{t}");
            }
        }
        assert_eq!(
            event_type(RunKind::Deploy, Stage::Started),
            "deployment_started"
        );
        for other in [
            "node_offline",
            "build",
            "build_",
            "_started",
            "deploy_started",
            "",
        ] {
            assert_eq!(parse_event_type(other), None, "{other}");
        }
    }

    #[test]
    fn an_end_payload_reads_back_as_a_record() {
        let payload = RunPayload {
            context: RunContext {
                run_id: "r1".into(),
                kind: Some(RunKind::Build),
                service: "llm-worker".into(),
                backend: Some("cuda".into()),
                git_commit: Some("abc".into()),
                ..RunContext::default()
            },
            end: RunEnd {
                duration_seconds: Some(12.5),
                exit_code: Some(0),
                ..RunEnd::default()
            },
        };
        let json = serde_json::to_value(&payload).unwrap();
        assert_eq!(json["git_commit"], "abc");
        assert_eq!(json["duration_seconds"], 12.5);
        let back: RunPayload = serde_json::from_value(json).unwrap();
        assert_eq!(back, payload);
        let at = Utc::now();
        let r = back.record(RunKind::Build, Stage::Completed, "ws", at);
        assert_eq!(r.outcome, Outcome::Succeeded);
        assert_eq!(r.started, at);
        assert_eq!(r.host, "ws");
        assert_eq!(r.duration(), Some(12.5));
    }
}
