//! The seed's build and test metrics (`homelab_build_duration_seconds{host,backend}` and
//! friends), folded from run end events.
//!
//! Each node exports the runs it ran itself, so a Prometheus that scrapes every node of the mesh
//! sees each run once (docs/metrics.md). The counts come from the stored events, so they are
//! right after a restart: they restart from what the store still holds (retention), which
//! Prometheus reads as a counter reset, not as a drop.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sync::Event;
use uuid::Uuid;

use super::history::RunKind;
use super::schema::{self, Stage};

/// The end events the metrics read.
pub fn end_types() -> Vec<String> {
    [RunKind::Build, RunKind::Test]
        .into_iter()
        .flat_map(|k| {
            [
                schema::event_type(k, Stage::Completed),
                schema::event_type(k, Stage::Failed),
            ]
        })
        .collect()
}

/// One (kind, host, backend) series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesFigures {
    pub success: u64,
    pub failure: u64,
    /// The latest finished run's duration, and when it ended.
    pub last_duration: Option<(DateTime<Utc>, f64)>,
    /// The latest artifact size a build recorded.
    pub last_binary_bytes: Option<(DateTime<Utc>, u64)>,
}

/// The folded figures, keyed by (kind, host, backend); `backend` is `"none"` when unset.
#[derive(Debug, Default)]
pub struct RunMetrics {
    seen: HashSet<Uuid>,
    pub series: BTreeMap<(RunKind, String, String), SeriesFigures>,
}

impl RunMetrics {
    pub fn has_seen(&self, id: &Uuid) -> bool {
        self.seen.contains(id)
    }

    /// Folds one event in (once per event id; anything but a build or test end is ignored).
    pub fn observe(&mut self, e: &Event) {
        let Some((kind, stage)) = schema::parse_event_type(&e.event_type) else {
            return;
        };
        if !matches!(kind, RunKind::Build | RunKind::Test)
            || !matches!(stage, Stage::Completed | Stage::Failed)
            || !self.seen.insert(e.id)
        {
            return;
        }
        let backend = e
            .payload
            .get("backend")
            .and_then(Value::as_str)
            .filter(|b| !b.is_empty())
            .unwrap_or("none");
        let s = self
            .series
            .entry((kind, e.node.clone(), backend.to_owned()))
            .or_default();
        if stage == Stage::Completed {
            s.success += 1;
        } else {
            s.failure += 1;
        }
        let at = e.timestamp;
        if let Some(d) = e
            .payload
            .get("duration_seconds")
            .and_then(Value::as_f64)
            .filter(|d| d.is_finite() && *d >= 0.0)
            && s.last_duration.is_none_or(|(t, _)| t <= at)
        {
            s.last_duration = Some((at, d));
        }
        if kind == RunKind::Build
            && let Some(b) = e.payload.get("artifact_bytes").and_then(Value::as_u64)
            && s.last_binary_bytes.is_none_or(|(t, _)| t <= at)
        {
            s.last_binary_bytes = Some((at, b));
        }
    }

    /// Every series as (metric name without prefix, labels, value) triples, in a stable order:
    /// `build_duration_seconds`, `build_success`, `build_failure` (counters), `test_*`, and
    /// `binary_size_bytes`.
    pub fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for ((kind, host, backend), s) in &self.series {
            let prefix = schema::event_prefix(*kind);
            let labels = vec![
                ("host".to_owned(), host.clone()),
                ("backend".to_owned(), backend.clone()),
            ];
            if let Some((_, d)) = s.last_duration {
                out.push(Sample::gauge(
                    format!("{prefix}_duration_seconds"),
                    &labels,
                    d,
                ));
            }
            out.push(Sample::counter(
                format!("{prefix}_success"),
                &labels,
                s.success,
            ));
            out.push(Sample::counter(
                format!("{prefix}_failure"),
                &labels,
                s.failure,
            ));
            if let Some((_, b)) = s.last_binary_bytes {
                out.push(Sample::gauge("binary_size_bytes".into(), &labels, b as f64));
            }
        }
        out
    }
}

/// One sample of a `homelab_*` family.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Without the `homelab_` prefix; counters without `_total`.
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: SampleValue,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SampleValue {
    Gauge(f64),
    Counter(u64),
}

impl Sample {
    fn gauge(name: String, labels: &[(String, String)], v: f64) -> Sample {
        Sample {
            name,
            labels: labels.to_vec(),
            value: SampleValue::Gauge(v),
        }
    }

    fn counter(name: String, labels: &[(String, String)], v: u64) -> Sample {
        Sample {
            name,
            labels: labels.to_vec(),
            value: SampleValue::Counter(v),
        }
    }
}

/// What each family means (its `# HELP`).
pub fn help(name: &str) -> &'static str {
    match name {
        "build_duration_seconds" => {
            "Duration of the latest finished build (labmesh run --kind build)"
        }
        "build_success" => "Builds that succeeded, from the stored events",
        "build_failure" => "Builds that failed, from the stored events",
        "test_duration_seconds" => {
            "Duration of the latest finished test run (labmesh run --kind test)"
        }
        "test_success" => "Test runs that succeeded, from the stored events",
        "test_failure" => "Test runs that failed, from the stored events",
        "binary_size_bytes" => "Size of the artifact the latest build recorded (--artifact)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;
    use sync::{NewEvent, Severity};

    fn end(kind_stage: &str, node: &str, secs: i64, payload: Value) -> Event {
        let Value::Object(map) = payload else {
            panic!()
        };
        NewEvent::new(kind_stage, Severity::Info, "build.sh")
            .payload(map)
            .into_event(node, DateTime::from_timestamp(secs, 0).unwrap())
            .unwrap()
    }

    #[test]
    fn ends_are_counted_once_by_series_and_the_latest_figures_kept() {
        let mut m = RunMetrics::default();
        let a = end(
            "build_completed",
            "ws",
            100,
            json!({"backend": "cuda", "duration_seconds": 12.0, "artifact_bytes": 1000}),
        );
        let b = end(
            "build_failed",
            "ws",
            200,
            json!({"backend": "cuda", "duration_seconds": 3.0}),
        );
        let old = end(
            "build_completed",
            "ws",
            50,
            json!({"backend": "cuda", "duration_seconds": 99.0, "artifact_bytes": 5}),
        );
        let t = end(
            "test_completed",
            "mac",
            10,
            json!({"duration_seconds": 1.5}),
        );
        let other = end("build_started", "ws", 300, json!({"backend": "cuda"}));
        for e in [&a, &b, &old, &a, &t, &other] {
            m.observe(e);
        }
        let cuda = &m.series[&(RunKind::Build, "ws".into(), "cuda".into())];
        assert_eq!((cuda.success, cuda.failure), (2, 1));
        assert_eq!(cuda.last_duration.map(|d| d.1), Some(3.0));
        assert_eq!(cuda.last_binary_bytes.map(|d| d.1), Some(1000));
        let names: Vec<String> = m.samples().into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "build_duration_seconds",
                "build_success",
                "build_failure",
                "binary_size_bytes",
                "test_duration_seconds",
                "test_success",
                "test_failure",
            ]
        );
        let test = m
            .samples()
            .into_iter()
            .find(|s| s.name == "test_success")
            .unwrap();
        assert_eq!(
            test.labels,
            [
                ("host".into(), "mac".into()),
                ("backend".into(), "none".into())
            ]
        );
        for s in m.samples() {
            assert!(!help(&s.name).is_empty(), "{}", s.name);
        }
    }
}
