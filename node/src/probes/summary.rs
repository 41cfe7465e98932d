//! The compact summary each node gossips under the chitchat key `summary`: a few hundred bytes
//! of JSON with short keys, enough for peers to rank nodes ("which one can take this job?")
//! without asking each one. Figures a node cannot measure are left out, never sent as 0.

use serde::{Deserialize, Serialize};

use super::HostSample;

/// Summary format version (`v`); a reader skips summaries of a version it does not know.
pub const VERSION: u32 = 1;

/// What one node tells the others about itself. Bytes and percentages; see [`score`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub v: u32,
    /// When the sample was taken, Unix seconds.
    pub t: i64,
    /// CPU busy %, all cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// CPU steal %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steal: Option<f64>,
    /// 1-minute load average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_avail: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_total: Option<u64>,
    /// Swap used, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_total: Option<u64>,
    /// SwapCached, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_cached: Option<u64>,
    /// Used % of the fullest real filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<f64>,
    /// Most bytes available on any one real filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free: Option<u64>,
    /// Number of NVIDIA GPUs (0 when none).
    pub gpus: u32,
    /// VRAM used and total, all GPUs together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_used: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_total: Option<u64>,
    /// Most free VRAM on any one GPU (a job that fits nowhere else must fit there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_free: Option<u64>,
    /// Unhealthy services. Placeholder: always 0 until the health checks fill it.
    pub unhealthy: u32,
    /// 0–100, see [`score`].
    pub score: u8,
}

impl Summary {
    pub fn from_sample(s: &HostSample) -> Summary {
        let mem = s.memory.ok();
        let disks = s.disks.ok().map(|d| &d.mounts);
        let gpus = s.gpu.ok().map(|g| &g.devices[..]).unwrap_or(&[]);
        let sum = |f: fn(&super::Gpu) -> Option<u64>| -> Option<u64> {
            let values: Vec<u64> = gpus.iter().filter_map(f).collect();
            (!values.is_empty()).then(|| values.iter().sum())
        };
        let mut out = Summary {
            v: VERSION,
            t: s.taken_at_ms.div_euclid(1000),
            cpu: s.cpu.ok().map(|c| round1(c.usage_pct)),
            steal: s.steal.ok().map(|c| round1(c.pct)),
            load: s.load.ok().map(|l| round1(l.one)),
            mem_avail: mem.map(|m| m.available_bytes),
            mem_total: mem.map(|m| m.total_bytes),
            swap: mem.map(|m| m.swap_used_bytes),
            swap_total: mem.map(|m| m.swap_total_bytes),
            swap_cached: mem.and_then(|m| m.swap_cached_bytes),
            disk: disks.and_then(|d| d.iter().map(|d| d.used_pct).reduce(f64::max)),
            disk_free: disks.and_then(|d| d.iter().map(|d| d.available_bytes).max()),
            gpus: gpus.len() as u32,
            vram_used: sum(|g| g.vram_used_bytes),
            vram_total: sum(|g| g.vram_total_bytes),
            vram_free: gpus.iter().filter_map(|g| g.vram_free_bytes).max(),
            // Containers whose own HEALTHCHECK says unhealthy: the services the host runs.
            unhealthy: s.docker.ok().map_or(0, |d| d.unhealthy),
            score: 0,
        };
        out.disk = out.disk.map(round1);
        out.score = score(&out);
        out
    }

    /// The gossiped text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a peer's summary; `None` for garbage or an unknown version.
    pub fn parse(text: &str) -> Option<Summary> {
        serde_json::from_str::<Summary>(text)
            .ok()
            .filter(|s| s.v == VERSION)
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// A 0–100 health score: higher is a host with more room and less contention. The sum of six
/// parts (adapted from the VM score card of the observability roadmap, without its maintenance
/// part; shares instead of absolute gigabytes so that small and large hosts compare fairly):
///
/// | part | points | full marks | then |
/// |---|---|---|---|
/// | CPU busy | 10 | < 50 % | < 80 % 6, < 95 % 3, else 0 |
/// | CPU steal | 15 | < 2 % | < 5 % 11, < 10 % 7, else 3 |
/// | memory available | 25 | ≥ 50 % of total | ≥ 25 % 18, ≥ 10 % 8, else 0 |
/// | swap used | 10 | < 25 % of swap (or no swap) | < 50 % 6, < 80 % 3, else 0 |
/// | fullest filesystem | 20 | < 70 % used | < 85 % 12, < 95 % 5, else 0 |
/// | unhealthy services | 20 | 0 | 1–2 15, 3–5 8, else 2 |
///
/// A figure the node cannot measure (steal off Linux, no disks listed) gets full marks: the score
/// ranks what is known, it does not punish a platform.
pub fn score(s: &Summary) -> u8 {
    let cpu = match s.cpu {
        None => 10,
        Some(c) if c < 50.0 => 10,
        Some(c) if c < 80.0 => 6,
        Some(c) if c < 95.0 => 3,
        Some(_) => 0,
    };
    let steal = match s.steal {
        None => 15,
        Some(p) if p < 2.0 => 15,
        Some(p) if p < 5.0 => 11,
        Some(p) if p < 10.0 => 7,
        Some(_) => 3,
    };
    let memory = match (s.mem_avail, s.mem_total) {
        (Some(a), Some(t)) if t > 0 => {
            let share = a as f64 / t as f64;
            if share >= 0.5 {
                25
            } else if share >= 0.25 {
                18
            } else if share >= 0.10 {
                8
            } else {
                0
            }
        }
        _ => 25,
    };
    let swap = match (s.swap, s.swap_total) {
        (Some(u), Some(t)) if t > 0 => {
            let share = u as f64 / t as f64;
            if share < 0.25 {
                10
            } else if share < 0.5 {
                6
            } else if share < 0.8 {
                3
            } else {
                0
            }
        }
        _ => 10,
    };
    let disk = match s.disk {
        None => 20,
        Some(d) if d < 70.0 => 20,
        Some(d) if d < 85.0 => 12,
        Some(d) if d < 95.0 => 5,
        Some(_) => 0,
    };
    let services = match s.unhealthy {
        0 => 20,
        1..=2 => 15,
        3..=5 => 8,
        _ => 2,
    };
    cpu + steal + memory + swap + disk + services
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Summary {
        Summary {
            v: VERSION,
            t: 1_764_473_000,
            cpu: Some(12.0),
            steal: Some(0.5),
            load: Some(0.4),
            mem_avail: Some(12 << 30),
            mem_total: Some(16 << 30),
            swap: Some(0),
            swap_total: Some(4 << 30),
            swap_cached: Some(0),
            disk: Some(41.0),
            disk_free: Some(300 << 30),
            gpus: 0,
            ..Summary::default()
        }
    }

    #[test]
    fn an_idle_roomy_host_scores_100_and_a_struggling_one_low() {
        assert_eq!(score(&healthy()), 100);
        let mut s = healthy();
        s.steal = Some(8.2); // the roadmap's VM: 7
        s.mem_avail = Some(3 << 30); // 18.75 %: 8
        s.swap = Some(1_400 << 20); // 34 % of 4 GiB: 6
        s.disk = Some(37.0); // 20
        s.cpu = Some(85.0); // 3
        s.unhealthy = 7; // 2
        assert_eq!(score(&s), 3 + 7 + 8 + 6 + 20 + 2);
    }

    #[test]
    fn unhealthy_containers_reach_the_gossiped_summary() {
        let mut sample = crate::probes::Prober::new("n1").failed("test");
        sample.docker = super::super::Probe::Ok(super::super::Docker {
            host: "unix:///var/run/docker.sock".to_owned(),
            running: 3,
            unhealthy: 2,
            containers: Vec::new(),
        });
        assert_eq!(Summary::from_sample(&sample).unhealthy, 2);
    }

    #[test]
    fn unknown_figures_get_full_marks() {
        let s = Summary {
            v: VERSION,
            ..Summary::default()
        };
        assert_eq!(score(&s), 100);
    }

    #[test]
    fn the_gossiped_text_stays_small_and_round_trips() {
        let mut s = healthy();
        // Worst case: every field present with large values.
        s.gpus = 8;
        s.vram_used = Some((8 * 141) << 30);
        s.vram_total = Some((8 * 141) << 30);
        s.vram_free = Some(141 << 30);
        s.mem_total = Some(2 << 40);
        s.disk_free = Some(100 << 40);
        s.cpu = Some(100.0);
        s.load = Some(1234.5);
        s.score = score(&s);
        let text = s.to_json();
        assert!(text.len() < 400, "{} bytes: {text}", text.len());
        assert_eq!(Summary::parse(&text), Some(s));
        assert_eq!(
            Summary::parse(r#"{"v":99,"t":0,"gpus":0,"unhealthy":0,"score":1}"#),
            None
        );
        assert_eq!(Summary::parse("not json"), None);
    }
}
