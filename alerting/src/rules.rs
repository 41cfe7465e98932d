//! Rule definitions, and how a rule judges one input: what is worth an alert.
//!
//! Rules come from TOML (see [`crate::rule_toml`]: parsing, validation, the shipped defaults
//! and user overrides).
//!
//! Evaluation is pure: a rule looks at one [`NodeSummary`] or one [`Event`] and says what it
//! sees as an [`Observation`] (raise at a severity, clear, or hold inside the hysteresis band).
//! Watchdogs that need memory across inputs live in [`crate::watchdog`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sync::{Event, Severity};

use crate::summary::NodeSummary;
use crate::util::{
    Labels, glob_match, human_bytes, human_duration, parse_duration, payload_number,
};

pub use crate::rule_toml::{DEFAULT_RULES_TOML, RuleError, RuleSet, RuleToml, parse_rules_toml};

/// A gossiped measurement a threshold rule can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    CpuPercent,
    CpuStealPercent,
    MemoryAvailablePercent,
    SwapUsedBytes,
    DiskUsedPercent,
    GpuVramUsedPercent,
}

impl Metric {
    pub(crate) const ALL: [(&'static str, Metric); 6] = [
        ("cpu_percent", Metric::CpuPercent),
        ("cpu_steal_percent", Metric::CpuStealPercent),
        ("memory_available_percent", Metric::MemoryAvailablePercent),
        ("swap_used_bytes", Metric::SwapUsedBytes),
        ("disk_used_percent", Metric::DiskUsedPercent),
        ("gpu_vram_used_percent", Metric::GpuVramUsedPercent),
    ];

    pub(crate) fn parse(text: &str) -> Option<Metric> {
        Metric::ALL
            .iter()
            .find(|(n, _)| *n == text)
            .map(|(_, m)| *m)
    }

    /// The values in a summary: `(extra labels, value)`, one per disk or GPU where it applies.
    pub fn values(self, s: &NodeSummary) -> Vec<(Vec<(&'static str, String)>, f64)> {
        let one = |v: Option<f64>| v.map(|v| (Vec::new(), v)).into_iter().collect();
        match self {
            Metric::CpuPercent => one(s.cpu_percent),
            Metric::CpuStealPercent => one(s.cpu_steal_percent),
            Metric::MemoryAvailablePercent => one(s.mem_available_percent()),
            Metric::SwapUsedBytes => one(s.swap_used_bytes.map(|b| b as f64)),
            Metric::DiskUsedPercent => s
                .disks
                .iter()
                .filter_map(|d| {
                    d.used_percent()
                        .map(|v| (vec![("mount", d.mount.clone())], v))
                })
                .collect(),
            Metric::GpuVramUsedPercent => s
                .gpus
                .iter()
                .filter_map(|g| g.used_percent().map(|v| (vec![("gpu", g.name.clone())], v)))
                .collect(),
        }
    }

    /// The value as people read it: `87.3%` or `1.6 GiB`.
    pub fn format(self, v: f64) -> String {
        match self {
            Metric::SwapUsedBytes => human_bytes(v),
            _ => format!("{v:.1}%"),
        }
    }
}

/// What a rule sees in one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Over the raise level (at this severity).
    Raise(Severity),
    /// Between the clear and raise levels: keep the current state (hysteresis).
    Hold,
    /// Past the clear level: the alert, if any, ends.
    Clear,
}

/// A threshold on a gossiped metric, with separate raise and clear levels.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub metric: Metric,
    /// True for "alert when below" (memory available), false for "above".
    pub below: bool,
    pub warn: Option<f64>,
    pub critical: Option<f64>,
    /// The level the value must cross back before the alert ends. Defaults to the lowest raise
    /// level: set it apart to stop a value hovering at the line from flapping.
    pub clear: f64,
    /// How long the value must stay raised before the alert fires (`pending` until then).
    pub for_: Duration,
}

impl Threshold {
    fn beyond(&self, v: f64, level: f64) -> bool {
        if self.below { v < level } else { v > level }
    }

    pub fn condition(&self, v: f64) -> Condition {
        if self.critical.is_some_and(|c| self.beyond(v, c)) {
            Condition::Raise(Severity::Critical)
        } else if self.warn.is_some_and(|w| self.beyond(v, w)) {
            Condition::Raise(Severity::Warning)
        } else if self.beyond(v, self.clear) {
            Condition::Hold
        } else {
            Condition::Clear
        }
    }
}

/// Which events an event rule looks at.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventMatch {
    pub types: Vec<String>,
    pub node: Option<String>,
    pub service: Option<String>,
    pub source: Option<String>,
    pub min_severity: Option<Severity>,
}

impl EventMatch {
    /// The node/service/source/severity part (the type is checked by the caller).
    fn labels_match(&self, e: &Event) -> bool {
        let ok = |pat: &Option<String>, v: &str| pat.as_deref().is_none_or(|p| glob_match(p, v));
        ok(&self.node, &e.node)
            && ok(&self.service, &e.service)
            && ok(&self.source, &e.source)
            && self.min_severity.is_none_or(|s| e.severity >= s)
    }
}

/// An alert raised by events: immediate, resolved by a later event or after a quiet time.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRule {
    pub matcher: EventMatch,
    /// A numeric payload field to compare with `above` (e.g. `duration_seconds`); without it
    /// every matching event raises.
    pub field: Option<String>,
    pub above: Option<f64>,
    /// `None`: the event's own severity.
    pub severity: Option<Severity>,
    pub resolve_on: Vec<String>,
    /// Resolve when no matching event came for this long. Keeps one-off failures from staying
    /// open forever; longer than the interval of events that repeat while a problem lasts.
    pub resolve_after: Duration,
    /// Which event fields make the subject (one alert per distinct subject).
    pub subject: Vec<String>,
}

/// A periodic job that must report: an event with `source` in every `every` (plus `grace`).
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    pub source: String,
    pub every: Duration,
    pub grace: Duration,
    /// Only these event types count (empty: any event from the source).
    pub types: Vec<String>,
}

impl Expect {
    /// Parses `NAME every 24h grace 1h` (`grace` optional, default 10% of `every`).
    pub fn parse(text: &str) -> Result<Expect, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let usage = "write it as `NAME every 24h grace 1h` (grace is optional)";
        let (source, every, grace) = match words.as_slice() {
            [name, "every", every] => (*name, *every, None),
            [name, "every", every, "grace", grace] => (*name, *every, Some(*grace)),
            _ => return Err(format!("{text:?} is not an expectation; {usage}")),
        };
        let every = parse_duration(every)?;
        if every.is_zero() {
            return Err(format!("{text:?}: `every` must be longer than zero"));
        }
        let grace = match grace {
            Some(g) => parse_duration(g)?,
            None => every / 10,
        };
        Ok(Expect {
            source: source.to_owned(),
            every,
            grace,
            types: Vec::new(),
        })
    }
}

/// Disk-full projection: a straight line through the recent samples of a file system.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskFull {
    /// Raise when the line reaches 100% within this time.
    pub within: Duration,
    /// Clear when it is projected further out than this (or no longer growing).
    pub clear_within: Duration,
    /// How far back samples count. A week smooths daily cycles (backups, log rotation).
    pub window: Duration,
    /// Project only with at least this span of samples: a fresh node's first hour says little.
    pub min_history: Duration,
}

/// What a rule watches.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    Threshold(Threshold),
    Event(EventRule),
    /// A non-transient member that is not live for `for_`.
    NodeOffline {
        for_: Duration,
    },
    Expect(Expect),
    DiskFull(DiskFull),
}

/// One rule, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    /// The severity of kinds without levels (event rules may leave it to the event).
    pub severity: Option<Severity>,
    pub summary: Option<String>,
    pub labels: Labels,
}

/// A rule's verdict on one input, for one subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub rule: String,
    /// What the alert is about, e.g. `vm1:/` or `workstation/build.sh`.
    pub subject: String,
    pub labels: Labels,
    pub condition: Condition,
    pub summary: String,
    /// When the input was true (summary sample time or event time).
    pub at: DateTime<Utc>,
    /// The `for` duration of the rule.
    pub for_: Duration,
    /// For event rules, the triggering event's id: every node derives the same episode id.
    pub start_key: Option<String>,
}

/// Fills `{label}` and `{value}` placeholders; unknown ones stay as written.
pub fn render(template: &str, labels: &Labels, value: &str) -> String {
    render_event(template, labels, value, None)
}

/// How many of a payload list's last items `{payload.KEY}` shows (a run's `tail`).
const PAYLOAD_LIST_ITEMS: usize = 10;
/// How much of one payload value `{payload.KEY}` shows.
const PAYLOAD_VALUE_CHARS: usize = 300;

/// A payload field as a notification shows it: strings as they are, lists as their last
/// lines, `-` when absent (a script's event without it).
fn payload_text(payload: &serde_json::Map<String, serde_json::Value>, key: &str) -> String {
    use serde_json::Value;
    let cut = |s: &str| -> String {
        if s.chars().count() > PAYLOAD_VALUE_CHARS {
            let mut t: String = s.chars().take(PAYLOAD_VALUE_CHARS).collect();
            t.push('…');
            t
        } else {
            s.to_owned()
        }
    };
    match payload.get(key) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => cut(s),
        Some(Value::Array(items)) => {
            let skip = items.len().saturating_sub(PAYLOAD_LIST_ITEMS);
            items
                .iter()
                .skip(skip)
                .map(|v| match v {
                    Value::String(s) => cut(s),
                    other => cut(&other.to_string()),
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        Some(other) => cut(&other.to_string()),
    }
}

/// `{details}` of a run event: what a person reading a failure page wants first, only the
/// parts the event has: ` (backend cuda, commit a1b2c3d, phase compile, exit 101)` and, on
/// the lines below, the last lines of output (redacted when `labmesh run` recorded them).
fn run_details(payload: &serde_json::Map<String, serde_json::Value>) -> String {
    use serde_json::Value;
    let text = |k: &str| {
        payload
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mut parts = Vec::new();
    if let Some(b) = text("backend") {
        parts.push(format!("backend {b}"));
    }
    if let Some(c) = text("git_commit") {
        parts.push(format!("commit {}", c.chars().take(7).collect::<String>()));
    }
    if let Some(p) = text("failing_phase") {
        parts.push(format!("phase {p}"));
    }
    if let Some(code) = payload
        .get("exit_code")
        .and_then(Value::as_i64)
        .filter(|c| *c != 0)
    {
        parts.push(format!("exit {code}"));
    }
    let mut out = if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    };
    if payload
        .get("tail")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
    {
        out.push('\n');
        out.push_str(&payload_text(payload, "tail"));
    }
    out
}

/// [`render`], where an event rule's template may also name the event's payload fields as
/// `{payload.KEY}` (a failed run's `backend`, `git_commit`, `failing_phase`, `tail`), and
/// `{details}` ([`run_details`]).
pub fn render_event(
    template: &str,
    labels: &Labels,
    value: &str,
    payload: Option<&serde_json::Map<String, serde_json::Value>>,
) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after_open = &rest[open + 1..];
        match after_open.find('}') {
            Some(close) => {
                let key = &after_open[..close];
                match (key, labels.get(key)) {
                    ("value", _) => out.push_str(value),
                    (_, Some(v)) => out.push_str(v),
                    ("details", None) if payload.is_some() => {
                        if let Some(p) = payload {
                            out.push_str(&run_details(p));
                        }
                    }
                    (k, None) if k.starts_with("payload.") && payload.is_some() => {
                        if let Some(p) = payload {
                            out.push_str(&payload_text(p, &k["payload.".len()..]));
                        }
                    }
                    _ => {
                        out.push('{');
                        out.push_str(key);
                        out.push('}');
                    }
                }
                rest = &after_open[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

impl Rule {
    /// Base labels of an alert of this rule: the rule's own, then `rule`.
    pub fn base_labels(&self) -> Labels {
        let mut l = self.labels.clone();
        l.insert("rule".into(), self.name.clone());
        l
    }

    fn summary_or(&self, labels: &Labels, value: &str, default: &str) -> String {
        render(self.summary.as_deref().unwrap_or(default), labels, value)
    }

    /// Threshold observations from one summary (empty for other kinds).
    pub fn observe_summary(&self, s: &NodeSummary) -> Vec<Observation> {
        let RuleKind::Threshold(t) = &self.kind else {
            return Vec::new();
        };
        t.metric
            .values(s)
            .into_iter()
            .map(|(extra, v)| {
                let mut labels = self.base_labels();
                labels.insert("node".into(), s.node.clone());
                let mut subject = s.node.clone();
                for (k, val) in extra {
                    subject = format!("{subject}:{val}");
                    labels.insert(k.into(), val);
                }
                labels.insert("subject".into(), subject.clone());
                let summary = self.summary_or(
                    &labels,
                    &t.metric.format(v),
                    "{rule} on {subject} is {value}",
                );
                Observation {
                    rule: self.name.clone(),
                    subject,
                    labels,
                    condition: t.condition(v),
                    summary,
                    at: s.at,
                    for_: t.for_,
                    start_key: None,
                }
            })
            .collect()
    }

    /// An event rule's verdict on one event (`None`: not for this rule).
    pub fn observe_event(&self, e: &Event) -> Option<Observation> {
        let RuleKind::Event(r) = &self.kind else {
            return None;
        };
        let raises = r.matcher.types.contains(&e.event_type);
        let resolves = r.resolve_on.contains(&e.event_type);
        if !(raises || resolves) || !r.matcher.labels_match(e) {
            return None;
        }
        let mut labels = self.base_labels();
        labels.insert("node".into(), e.node.clone());
        labels.insert("service".into(), e.service.clone());
        labels.insert("source".into(), e.source.clone());
        let subject = r
            .subject
            .iter()
            .map(|part| match part.as_str() {
                "node" => e.node.as_str(),
                "service" => e.service.as_str(),
                "source" => e.source.as_str(),
                "correlation_id" => e.correlation_id.as_str(),
                _ => "",
            })
            .collect::<Vec<_>>()
            .join("/");
        labels.insert("subject".into(), subject.clone());
        let mut value_text = e.event_type.clone();
        let condition = if raises {
            match (&r.field, r.above) {
                (Some(field), Some(limit)) => {
                    let v = event_number(e, field)?;
                    value_text = if field.contains("duration") {
                        human_duration(Duration::from_secs_f64(v.max(0.0)))
                    } else {
                        format!("{v}")
                    };
                    if v > limit {
                        Condition::Raise(self.severity.unwrap_or(e.severity))
                    } else {
                        Condition::Clear
                    }
                }
                _ => Condition::Raise(self.severity.unwrap_or(e.severity)),
            }
        } else {
            Condition::Clear
        };
        let summary = render_event(
            self.summary.as_deref().unwrap_or("{rule}: {subject}"),
            &labels,
            &value_text,
            Some(&e.payload),
        );
        Some(Observation {
            rule: self.name.clone(),
            subject,
            labels,
            condition,
            summary,
            at: e.timestamp,
            for_: Duration::ZERO,
            start_key: Some(e.id.to_string()),
        })
    }

    /// How long after its last raising event an event alert resolves by itself.
    pub fn resolve_after(&self) -> Option<Duration> {
        match &self.kind {
            RuleKind::Event(r) => Some(r.resolve_after),
            _ => None,
        }
    }
}

/// A numeric payload field; `duration_seconds` falls back to `duration_ms` / 1000.
fn event_number(e: &Event, field: &str) -> Option<f64> {
    payload_number(&e.payload, field).or_else(|| {
        (field == "duration_seconds")
            .then(|| payload_number(&e.payload, "duration_ms").map(|ms| ms / 1000.0))
            .flatten()
    })
}

#[cfg(test)]
#[path = "unit_tests/rules.rs"]
mod tests;
