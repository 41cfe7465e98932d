//! The weekly digest: the VM roadmap's Telegram digest, extended to the mesh. One block per
//! node (score, steal, disk and freed space, RAM, swap peak, unhealthy containers), then the
//! mesh's builds and tests (count, success rate, slowest), incidents opened and resolved, and
//! the single action that would help most. The driver gathers the week's figures from its
//! world state and events (each node's `host_sample` events, aggregated by [`sampled_week`]);
//! this is only the aggregation and the text, so it is testable to the character.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sync::Event;

use crate::score::{ScoreCard, ScoreInput, score};
use crate::util::{human_bytes, human_duration, payload_number};

/// One node's week.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeWeek {
    /// Inputs of the score card (the week's averages where they apply).
    pub score: ScoreInput,
    pub steal_avg_percent: Option<f64>,
    /// (mount, percent used) at the end of the week.
    pub disks: Vec<(String, f64)>,
    /// Space freed by cleanups this week.
    pub freed_bytes: u64,
    pub mem_available_avg_bytes: Option<u64>,
    pub swap_peak_bytes: Option<u64>,
    pub unhealthy_containers: Vec<String>,
    /// How many `host_sample` events of the week the figures come from; 0 when they are the
    /// node's current summary (no samples yet).
    pub samples: usize,
}

/// The event type of a host's periodic figures (written by every agent, hourly by default):
/// the digest's per-node figures are the week of these, not one current value.
pub const HOST_SAMPLE: &str = "host_sample";

/// One mount in a [`HostSample`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MountSample {
    pub mount: String,
    pub used_percent: f64,
    pub used_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
}

/// One `host_sample` event's figures. Absent figures (a probe that failed) stay `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostSample {
    pub node: String,
    pub at: DateTime<Utc>,
    pub steal_percent: Option<f64>,
    pub mem_available_bytes: Option<u64>,
    pub mem_available_percent: Option<f64>,
    pub swap_used_bytes: Option<u64>,
    pub root_free_bytes: Option<u64>,
    pub disks: Vec<MountSample>,
}

fn number(v: &serde_json::Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

/// Reads a `host_sample` event; `None` for other events. Figures that do not parse are left
/// out rather than refusing the sample (a hand-written event may carry only some).
pub fn host_sample(e: &Event) -> Option<HostSample> {
    if e.event_type != HOST_SAMPLE {
        return None;
    }
    let p = &e.payload;
    let bytes = |k: &str| p.get(k).and_then(serde_json::Value::as_u64);
    let pct = |k: &str| p.get(k).and_then(number).filter(|x| *x >= 0.0);
    let disks = p
        .get("disks")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|d| {
                    Some(MountSample {
                        mount: d.get("mount")?.as_str()?.to_owned(),
                        used_percent: d.get("used_percent").and_then(number)?,
                        used_bytes: d.get("used_bytes").and_then(serde_json::Value::as_u64),
                        total_bytes: d.get("total_bytes").and_then(serde_json::Value::as_u64),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(HostSample {
        node: e.node.clone(),
        at: e.timestamp,
        steal_percent: pct("steal_percent"),
        mem_available_bytes: bytes("mem_available_bytes"),
        mem_available_percent: pct("mem_available_percent"),
        swap_used_bytes: bytes("swap_used_bytes"),
        root_free_bytes: bytes("root_free_bytes"),
        disks,
    })
}

/// One node's week, from its samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampledWeek {
    pub samples: usize,
    pub steal_avg_percent: Option<f64>,
    pub mem_available_avg_bytes: Option<u64>,
    pub mem_available_avg_percent: Option<f64>,
    pub swap_peak_bytes: Option<u64>,
    /// (mount, percent used) in the newest sample.
    pub disks_now: Vec<(String, f64)>,
    /// Bytes freed over the week: per mount, the sum of the drops in used bytes between
    /// consecutive samples (growth in between does not cancel a cleanup).
    pub freed_bytes: u64,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Aggregates one node's samples (any order); `None` without any, so the caller falls back to
/// the node's current summary.
pub fn sampled_week(samples: &[HostSample]) -> Option<SampledWeek> {
    let mut sorted: Vec<&HostSample> = samples.iter().collect();
    sorted.sort_by_key(|s| s.at);
    let last = sorted.last()?;
    let mut freed = 0u64;
    let mut prev: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for s in &sorted {
        for d in &s.disks {
            let Some(used) = d.used_bytes else { continue };
            if let Some(before) = prev.insert(d.mount.as_str(), used) {
                freed = freed.saturating_add(before.saturating_sub(used));
            }
        }
    }
    Some(SampledWeek {
        samples: sorted.len(),
        steal_avg_percent: mean(sorted.iter().filter_map(|s| s.steal_percent)),
        mem_available_avg_bytes: mean(
            sorted
                .iter()
                .filter_map(|s| s.mem_available_bytes)
                .map(|b| b as f64),
        )
        .map(|b| b.round() as u64),
        mem_available_avg_percent: mean(sorted.iter().filter_map(|s| s.mem_available_percent)),
        swap_peak_bytes: sorted.iter().filter_map(|s| s.swap_used_bytes).max(),
        disks_now: last
            .disks
            .iter()
            .map(|d| (d.mount.clone(), d.used_percent))
            .collect(),
        freed_bytes: freed,
    })
}

/// One build or test run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub node: String,
    /// The script or job (`source` of its events).
    pub name: String,
    pub ok: bool,
    pub duration: Option<Duration>,
}

/// Build or test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Build,
    Test,
}

/// Reads a `build_completed|failed` or `test_completed|failed` event (duration from
/// `duration_seconds`, or `duration_ms`).
pub fn run_record(e: &Event) -> Option<(RunKind, RunRecord)> {
    let (kind, ok) = match e.event_type.as_str() {
        "build_completed" => (RunKind::Build, true),
        "build_failed" => (RunKind::Build, false),
        "test_completed" => (RunKind::Test, true),
        "test_failed" => (RunKind::Test, false),
        _ => return None,
    };
    let secs = payload_number(&e.payload, "duration_seconds")
        .or_else(|| payload_number(&e.payload, "duration_ms").map(|ms| ms / 1000.0));
    Some((
        kind,
        RunRecord {
            node: e.node.clone(),
            name: e.source.clone(),
            ok,
            duration: secs
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64),
        },
    ))
}

/// Everything the digest says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DigestInput {
    pub week_ending: NaiveDate,
    pub generated_at: DateTime<Utc>,
    pub nodes: Vec<NodeWeek>,
    pub builds: Vec<RunRecord>,
    pub tests: Vec<RunRecord>,
    pub incidents_opened: u32,
    pub incidents_resolved: u32,
}

/// The digest: its text, its top action and the score cards it used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Digest {
    pub text: String,
    pub top_action: String,
    pub cards: Vec<ScoreCard>,
    /// The per-node figures the text shows.
    pub nodes: Vec<NodeWeek>,
}

fn mark(bad: bool) -> &'static str {
    if bad { "⚠️" } else { "✓" }
}

fn runs_line(icon: &str, label: &str, runs: &[RunRecord]) -> String {
    if runs.is_empty() {
        return format!("{icon} {label:<11} none this week");
    }
    let ok = runs.iter().filter(|r| r.ok).count();
    let rate = ok * 100 / runs.len();
    let slowest = runs
        .iter()
        .filter_map(|r| r.duration.map(|d| (d, r)))
        .max_by_key(|(d, _)| *d)
        .map(|(d, r)| format!(", slowest {} {} on {}", human_duration(d), r.name, r.node))
        .unwrap_or_default();
    format!(
        "{icon} {label:<11} {} ({rate}% ok){slowest} {}",
        runs.len(),
        mark(rate < 90)
    )
}

/// Builds the digest text.
pub fn weekly_digest(input: &DigestInput) -> Digest {
    let mut out = vec![
        format!("📊 Weekly mesh digest — week ending {}", input.week_ending),
        String::new(),
    ];
    let mut cards = Vec::new();
    for n in &input.nodes {
        let card = score(&n.score, input.generated_at);
        out.push(format!("{} — score {}/100", n.score.node, card.score));
        if let Some(s) = n.steal_avg_percent {
            let note = if s >= 5.0 {
                " (host contention — escalate if > 10%)"
            } else {
                ""
            };
            out.push(format!(
                "🖥 CPU steal:  {s:.1}% avg {}{note}",
                mark(s >= 5.0)
            ));
        }
        if !n.disks.is_empty() {
            let disks: Vec<String> = n
                .disks
                .iter()
                .map(|(m, u)| format!("{m} {u:.0}%"))
                .collect();
            let full = n.disks.iter().any(|(_, u)| *u >= 85.0);
            let freed = if n.freed_bytes > 0 {
                format!(
                    " (freed {} this week via cleanup)",
                    human_bytes(n.freed_bytes as f64)
                )
            } else {
                String::new()
            };
            out.push(format!(
                "💾 Disk:       {} {}{freed}",
                disks.join(", "),
                mark(full)
            ));
        }
        if let Some(m) = n.mem_available_avg_bytes {
            out.push(format!(
                "🧠 RAM:        {} free avg {}",
                human_bytes(m as f64),
                mark(m < 2 << 30)
            ));
        }
        if let Some(s) = n.swap_peak_bytes {
            out.push(format!(
                "🔄 Swap peak:  {} {}",
                human_bytes(s as f64),
                mark(s as f64 > 1.5 * (1u64 << 30) as f64)
            ));
        }
        let bad = n.unhealthy_containers.len();
        out.push(if bad == 0 {
            "🐳 Containers: all healthy ✓".to_owned()
        } else {
            format!(
                "🐳 Containers: {bad} unhealthy (action required): {}",
                n.unhealthy_containers.join(", ")
            )
        });
        out.push(String::new());
        cards.push(card);
    }
    out.push(runs_line("🔨", "Builds:", &input.builds));
    out.push(runs_line("🧪", "Tests:", &input.tests));
    out.push(format!(
        "🚨 Incidents:  {} opened, {} resolved",
        input.incidents_opened, input.incidents_resolved
    ));
    let top_action = top_action(&cards, &input.builds);
    out.push(String::new());
    out.push(format!("Top action: {top_action}"));
    Digest {
        text: out.join("\n"),
        top_action,
        cards,
        nodes: input.nodes.clone(),
    }
}

/// The action that gains the most score points anywhere in the mesh; a build failing more
/// often than not counts as 15 points (what a broken pipeline costs is comparable to a
/// dimension lost).
fn top_action(cards: &[ScoreCard], builds: &[RunRecord]) -> String {
    let mut best: Option<(u32, String)> = None;
    for card in cards {
        if let Some((gain, action)) = card.best_action()
            && best.as_ref().is_none_or(|(g, _)| gain > *g)
        {
            best = Some((gain, action.to_owned()));
        }
    }
    let mut names: Vec<(&str, &str)> = builds
        .iter()
        .map(|b| (b.name.as_str(), b.node.as_str()))
        .collect();
    names.sort();
    names.dedup();
    for (name, node) in names {
        let runs: Vec<&RunRecord> = builds
            .iter()
            .filter(|b| b.name == name && b.node == node)
            .collect();
        let failed = runs.iter().filter(|r| !r.ok).count();
        if failed * 2 > runs.len() && best.as_ref().is_none_or(|(g, _)| 15 > *g) {
            best = Some((
                15,
                format!(
                    "Fix the failing build {name} on {node} ({failed} of {} failed)",
                    runs.len()
                ),
            ));
        }
    }
    best.map_or_else(|| "nothing urgent — keep it up".to_owned(), |(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Maintenance;
    use chrono::TimeZone;

    fn input() -> DigestInput {
        let now = Utc.timestamp_opt(1_780_300_000, 0).unwrap();
        let vm = NodeWeek {
            score: ScoreInput {
                node: "srv1".into(),
                cpu_steal_percent: Some(8.2),
                mem_available_bytes: Some(10 << 30),
                disk_used_percent: Some(37.0),
                unhealthy_services: Some(7),
                maintenance: Maintenance::Last {
                    at: now - chrono::Duration::days(3),
                    freed_bytes: 257 << 20,
                },
                gpu_vram_free_bytes: None,
            },
            steal_avg_percent: Some(8.2),
            disks: vec![("/".into(), 37.0)],
            freed_bytes: 257 << 20,
            mem_available_avg_bytes: Some(10 << 30),
            swap_peak_bytes: Some((1.4 * (1u64 << 30) as f64) as u64),
            unhealthy_containers: (1..=7).map(|i| format!("web{i}")).collect(),
            samples: 168,
        };
        let run = |name: &str, ok: bool, secs: u64| RunRecord {
            node: "workstation".into(),
            name: name.into(),
            ok,
            duration: Some(Duration::from_secs(secs)),
        };
        DigestInput {
            week_ending: NaiveDate::from_ymd_opt(2026, 6, 1).unwrap(),
            generated_at: now,
            nodes: vec![vm],
            builds: vec![
                run("ws-build.sh", true, 300),
                run("ws-build.sh", true, 372),
                run("ws-build.sh", false, 20),
            ],
            tests: vec![run("ws-test.sh", true, 90)],
            incidents_opened: 3,
            incidents_resolved: 2,
        }
    }

    #[test]
    fn the_digest_reads_like_the_roadmap_for_the_mesh() {
        let d = weekly_digest(&input());
        let expected = "📊 Weekly mesh digest — week ending 2026-06-01

srv1 — score 72/100
🖥 CPU steal:  8.2% avg ⚠️ (host contention — escalate if > 10%)
💾 Disk:       / 37% ✓ (freed 257 MiB this week via cleanup)
🧠 RAM:        10.0 GiB free avg ✓
🔄 Swap peak:  1.4 GiB ✓
🐳 Containers: 7 unhealthy (action required): web1, web2, web3, web4, web5, web6, web7

🔨 Builds:     3 (66% ok), slowest 6m ws-build.sh on workstation ⚠️
🧪 Tests:      1 (100% ok), slowest 90s ws-test.sh on workstation ✓
🚨 Incidents:  3 opened, 2 resolved

Top action: Restart 7 unhealthy containers on srv1";
        assert_eq!(d.text, expected);
    }

    #[test]
    fn a_mostly_failing_build_can_be_the_top_action() {
        let mut i = input();
        i.nodes.clear();
        i.builds.push(RunRecord {
            node: "mac".into(),
            name: "mac-build.sh".into(),
            ok: false,
            duration: None,
        });
        assert_eq!(
            weekly_digest(&i).top_action,
            "Fix the failing build mac-build.sh on mac (1 of 1 failed)"
        );
        i.builds.clear();
        assert_eq!(weekly_digest(&i).top_action, "nothing urgent — keep it up");
    }

    fn sample_event(at_s: i64, payload: serde_json::Value) -> Event {
        sync::NewEvent::new(HOST_SAMPLE, sync::Severity::Info, "labmesh-probe")
            .payload(payload.as_object().unwrap().clone())
            .into_event("vm1", Utc.timestamp_opt(1_780_000_000 + at_s, 0).unwrap())
            .unwrap()
    }

    #[test]
    fn a_week_of_samples_gives_averages_peaks_the_disk_now_and_what_was_freed() {
        let gib = 1u64 << 30;
        let day = 86_400;
        let samples: Vec<HostSample> = [
            // Out of order on purpose: a late sync lands anywhere.
            (2 * day, 6.0, 4 * gib, 3 * gib / 2, 60 * gib, 60.0),
            (0, 2.0, 8 * gib, 0, 50 * gib, 50.0),
            (day, 4.0, 6 * gib, gib, 70 * gib, 70.0),
            (3 * day, 8.0, 2 * gib, gib / 2, 65 * gib, 65.0),
        ]
        .iter()
        .map(|(at, steal, mem, swap, used, pct)| {
            let e = sample_event(
                *at,
                serde_json::json!({
                    "steal_percent": steal,
                    "mem_available_bytes": mem,
                    "mem_available_percent": (*mem as f64) / (16 * gib) as f64 * 100.0,
                    "swap_used_bytes": swap,
                    "root_free_bytes": 100 * gib - used,
                    "disks": [
                        {"mount": "/", "used_percent": pct, "used_bytes": used},
                        {"mount": "/data", "used_percent": 10.0},
                    ],
                }),
            );
            host_sample(&e).unwrap()
        })
        .collect();
        let w = sampled_week(&samples).unwrap();
        assert_eq!(w.samples, 4);
        assert_eq!(w.steal_avg_percent, Some(5.0));
        assert_eq!(w.mem_available_avg_bytes, Some(5 * gib));
        assert_eq!(w.mem_available_avg_percent, Some(31.25));
        assert_eq!(
            w.swap_peak_bytes,
            Some(3 * gib / 2),
            "the peak, not the last"
        );
        assert_eq!(
            w.disks_now,
            [("/".to_owned(), 65.0), ("/data".to_owned(), 10.0)],
            "the newest sample's disks"
        );
        // 50 → 70 → 60 → 65 GiB: 10 GiB freed (growth does not cancel it).
        assert_eq!(w.freed_bytes, 10 * gib);
        assert_eq!(sampled_week(&[]), None);
    }

    #[test]
    fn a_partial_sample_keeps_what_it_has() {
        let e = sample_event(
            0,
            serde_json::json!({"swap_used_bytes": 5, "steal_percent": "x"}),
        );
        let s = host_sample(&e).unwrap();
        assert_eq!((s.swap_used_bytes, s.steal_percent), (Some(5), None));
        let w = sampled_week(&[s]).unwrap();
        assert_eq!((w.steal_avg_percent, w.swap_peak_bytes), (None, Some(5)));
        assert!(w.disks_now.is_empty());
        let other = sync::NewEvent::new("build_failed", sync::Severity::Error, "x")
            .into_event("vm1", Utc::now())
            .unwrap();
        assert_eq!(host_sample(&other), None);
    }

    #[test]
    fn run_records_come_from_events() {
        let e = sync::NewEvent::new("test_failed", sync::Severity::Error, "ws-test.sh")
            .payload(
                serde_json::json!({"duration_ms": 1500})
                    .as_object()
                    .unwrap()
                    .clone(),
            )
            .into_event("workstation", Utc::now())
            .unwrap();
        let (kind, r) = run_record(&e).unwrap();
        assert_eq!(kind, RunKind::Test);
        assert!(!r.ok);
        assert_eq!(r.duration, Some(Duration::from_millis(1500)));
    }
}
