//! The node score card (0–100), with the VM roadmap's weights and one explanation per
//! dimension, so a low score says why and what to do.
//!
//! | dimension | points | full marks |
//! | --- | --- | --- |
//! | CPU steal | 20 | < 2 % (< 5 %: 15, < 10 %: 10, else 5) |
//! | memory | 20 | > 6 GiB available (> 3: 15, > 1: 5, else 0) |
//! | disk | 15 | worst mount < 40 % used (< 55 %: 10, < 70 %: 5, else 0) |
//! | services | 20 | no unhealthy container (1–2: 15, 3–5: 8, 6+: 2) |
//! | maintenance | 15 | cleanup in the last 7 days that freed space (< 30 days: 8, else 0) |
//! | LLM/GPU headroom | 10 | > 8 GiB free for a model (> 4: 7, > 2: 4, else 1) |
//!
//! The roadmap's "GB" are read as GiB (what `free -g` shows). LLM headroom is free VRAM on a
//! node with a GPU, free RAM otherwise. A dimension without data is left out and the score is
//! scaled over the known ones: no data must read neither as healthy nor as broken.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::util::human_bytes;

const GIB: f64 = (1u64 << 30) as f64;

/// When maintenance (the cleanup job) last ran.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Maintenance {
    /// No information (the job does not report to labmesh).
    Unknown,
    /// It reports, and has never run.
    Never,
    Last {
        at: DateTime<Utc>,
        freed_bytes: u64,
    },
}

/// What the score is computed from (current values, or the week's averages for the digest).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreInput {
    pub node: String,
    pub cpu_steal_percent: Option<f64>,
    pub mem_available_bytes: Option<u64>,
    /// The fullest mount, percent used.
    pub disk_used_percent: Option<f64>,
    pub unhealthy_services: Option<u32>,
    pub maintenance: Maintenance,
    /// Free VRAM of the largest GPU; `None` on a node without one.
    pub gpu_vram_free_bytes: Option<u64>,
}

/// One scored dimension.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dimension {
    pub name: &'static str,
    pub points: u32,
    pub max: u32,
    /// False when there was no data (the dimension does not count).
    pub known: bool,
    pub explanation: String,
    /// What would raise the score, when it is not full.
    pub action: Option<String>,
}

/// A node's score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreCard {
    pub node: String,
    /// 0–100, over the known dimensions.
    pub score: u32,
    pub dimensions: Vec<Dimension>,
}

fn dim(name: &'static str, max: u32, scored: Option<(u32, String, String)>) -> Dimension {
    match scored {
        Some((points, explanation, action)) => Dimension {
            name,
            points,
            max,
            known: true,
            explanation,
            action: (points < max).then_some(action),
        },
        None => Dimension {
            name,
            points: 0,
            max,
            known: false,
            explanation: "no data".into(),
            action: None,
        },
    }
}

/// Points for `v` on a ladder of `(threshold, points)` tried in order with `test`.
fn ladder(v: f64, steps: &[(f64, u32)], floor: u32, test: impl Fn(f64, f64) -> bool) -> u32 {
    steps
        .iter()
        .find(|(t, _)| test(v, *t))
        .map_or(floor, |(_, p)| *p)
}

/// Scores one node at `now`.
pub fn score(input: &ScoreInput, now: DateTime<Utc>) -> ScoreCard {
    let n = &input.node;
    let below = |v: f64, t: f64| v < t;
    let above = |v: f64, t: f64| v > t;
    let steal = input.cpu_steal_percent.map(|s| {
        let p = ladder(s, &[(2.0, 20), (5.0, 15), (10.0, 10)], 5, below);
        let why = format!(
            "CPU steal {s:.1}% ({p}/20{})",
            if s >= 5.0 {
                ": the host is oversubscribed"
            } else {
                ""
            }
        );
        (
            p,
            why,
            format!("Ask the provider about CPU steal on {n} ({s:.1}%) or move the VM"),
        )
    });
    let memory = input.mem_available_bytes.map(|b| {
        let g = b as f64 / GIB;
        let p = ladder(g, &[(6.0, 20), (3.0, 15), (1.0, 5)], 0, above);
        (
            p,
            format!("{} available ({p}/20)", human_bytes(b as f64)),
            format!("Free memory on {n}: stop idle models or containers"),
        )
    });
    let disk = input.disk_used_percent.map(|u| {
        let p = ladder(u, &[(40.0, 15), (55.0, 10), (70.0, 5)], 0, below);
        (
            p,
            format!("fullest mount {u:.0}% used ({p}/15)"),
            format!("Clean up disk space on {n} ({u:.0}% used)"),
        )
    });
    let services = input.unhealthy_services.map(|c| {
        let p = match c {
            0 => 20,
            1..=2 => 15,
            3..=5 => 8,
            _ => 2,
        };
        let word = if c == 1 { "container" } else { "containers" };
        (
            p,
            format!("{c} unhealthy ({p}/20)"),
            format!("Restart {c} unhealthy {word} on {n}"),
        )
    });
    let maintenance = match input.maintenance {
        Maintenance::Unknown => None,
        Maintenance::Never => Some((
            0,
            "cleanup never ran (0/15)".into(),
            format!("Schedule the cleanup job on {n}"),
        )),
        Maintenance::Last { at, freed_bytes } => {
            let days = (now - at).num_days();
            let p = if days < 7 && freed_bytes > 0 {
                15
            } else if days < 30 {
                8
            } else {
                0
            };
            let why = format!(
                "last cleanup {days} days ago, freed {} ({p}/15)",
                human_bytes(freed_bytes as f64)
            );
            Some((
                p,
                why,
                format!("Run the cleanup on {n} (last one {days} days ago)"),
            ))
        }
    };
    let (free, what) = match (input.gpu_vram_free_bytes, input.mem_available_bytes) {
        (Some(v), _) => (Some(v), "VRAM"),
        (None, m) => (m, "RAM"),
    };
    let llm = free.map(|b| {
        let p = ladder(b as f64 / GIB, &[(8.0, 10), (4.0, 7), (2.0, 4)], 1, above);
        (
            p,
            format!("{} {what} free for a model ({p}/10)", human_bytes(b as f64)),
            format!("Unload idle models on {n} to make room"),
        )
    });
    let dimensions = vec![
        dim("cpu_steal", 20, steal),
        dim("memory", 20, memory),
        dim("disk", 15, disk),
        dim("services", 20, services),
        dim("maintenance", 15, maintenance),
        dim("llm_headroom", 10, llm),
    ];
    let (got, max) = dimensions
        .iter()
        .filter(|d| d.known)
        .fold((0, 0), |(g, m), d| (g + d.points, m + d.max));
    let score = (got * 100 + max / 2).checked_div(max).unwrap_or(0);
    ScoreCard {
        node: n.clone(),
        score,
        dimensions,
    }
}

impl ScoreCard {
    /// The action that gains the most points, with the points it gains.
    pub fn best_action(&self) -> Option<(u32, &str)> {
        self.dimensions
            .iter()
            .filter_map(|d| d.action.as_deref().map(|a| (d.max - d.points, a)))
            .max_by_key(|(gain, _)| *gain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000, 0).unwrap()
    }

    fn roadmap_vm() -> ScoreInput {
        // The roadmap's VM: steal 8.2 %, 10 GB free, disk 37 %, 7 unhealthy containers,
        // cleanup 3 days ago that freed 257 MB, no GPU.
        ScoreInput {
            node: "srv1".into(),
            cpu_steal_percent: Some(8.2),
            mem_available_bytes: Some(10 * (1 << 30)),
            disk_used_percent: Some(37.0),
            unhealthy_services: Some(7),
            maintenance: Maintenance::Last {
                at: now() - chrono::Duration::days(3),
                freed_bytes: 257 << 20,
            },
            gpu_vram_free_bytes: None,
        }
    }

    #[test]
    fn the_roadmap_vm_scores_with_reasons() {
        let card = score(&roadmap_vm(), now());
        let points: Vec<u32> = card.dimensions.iter().map(|d| d.points).collect();
        assert_eq!(points, [10, 20, 15, 2, 15, 10]);
        assert_eq!(card.score, 72);
        assert_eq!(
            card.dimensions[0].explanation,
            "CPU steal 8.2% (10/20: the host is oversubscribed)"
        );
        assert_eq!(card.dimensions[3].explanation, "7 unhealthy (2/20)");
        assert_eq!(
            card.best_action(),
            Some((18, "Restart 7 unhealthy containers on srv1"))
        );
    }

    #[test]
    fn unknown_dimensions_do_not_count_and_gpus_use_vram() {
        let mut i = roadmap_vm();
        i.unhealthy_services = None;
        i.maintenance = Maintenance::Unknown;
        i.gpu_vram_free_bytes = Some(3 * (1 << 30));
        let card = score(&i, now());
        assert!(!card.dimensions[3].known && !card.dimensions[4].known);
        assert_eq!(card.dimensions[5].points, 4);
        assert!(card.dimensions[5].explanation.contains("VRAM"));
        // (10 + 20 + 15 + 4) of (20 + 20 + 15 + 10) = 49/65 → 75.
        assert_eq!(card.score, 75);
        let empty = ScoreInput {
            node: "x".into(),
            cpu_steal_percent: None,
            mem_available_bytes: None,
            disk_used_percent: None,
            unhealthy_services: None,
            maintenance: Maintenance::Unknown,
            gpu_vram_free_bytes: None,
        };
        assert_eq!(score(&empty, now()).score, 0);
    }

    #[test]
    fn a_healthy_node_scores_100_and_has_nothing_to_do() {
        let i = ScoreInput {
            node: "nas".into(),
            cpu_steal_percent: Some(0.1),
            mem_available_bytes: Some(20 << 30),
            disk_used_percent: Some(12.0),
            unhealthy_services: Some(0),
            maintenance: Maintenance::Last {
                at: now(),
                freed_bytes: 1,
            },
            gpu_vram_free_bytes: None,
        };
        let card = score(&i, now());
        assert_eq!(card.score, 100);
        assert_eq!(card.best_action(), None);
    }
}
