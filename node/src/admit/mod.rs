//! Resource admission: "can this host take a job needing X of memory, Y of VRAM and Z of disk,
//! and keep its floors free?" — and, mesh-wide, "which node can?".
//!
//! The decision is a pure function of what was asked, what is available and the floors, so every
//! case is a unit test; [`gather`] collects the figures (fresh on this host, from the gossiped
//! summaries for the others).

pub mod gather;
pub mod size;

use serde::{Deserialize, Serialize};

pub use size::parse_size;

use size::format_signed;

use crate::output::format_size;

/// What must stay free after the job is loaded. Defaults: 2 GiB of memory (room for the OS and
/// page cache), 512 MiB of VRAM (the CUDA context and fragmentation), 5 GiB of disk (logs and
/// package updates keep working).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Floors {
    pub mem: u64,
    pub vram: u64,
    pub disk: u64,
}

impl Default for Floors {
    fn default() -> Self {
        Floors {
            mem: 2 << 30,
            vram: 512 << 20,
            disk: 5 << 30,
        }
    }
}

/// What the job needs; `None` is not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Request {
    pub mem: Option<u64>,
    pub vram: Option<u64>,
    pub disk: Option<u64>,
}

impl Request {
    pub fn is_empty(&self) -> bool {
        self.mem.is_none() && self.vram.is_none() && self.disk.is_none()
    }
}

/// What a host has available, per resource, or why that is unknown (no GPU, a probe error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Available {
    /// Memory available without swapping (MemAvailable).
    pub mem: Result<u64, String>,
    /// Free VRAM on the GPU with the most free: a job must fit on one GPU.
    pub vram: Result<u64, String>,
    /// Bytes available to an unprivileged writer on the filesystem in question.
    pub disk: Result<u64, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Memory,
    Vram,
    Disk,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::Vram => "vram",
            Resource::Disk => "disk",
        }
    }
}

/// One resource's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub resource: Resource,
    pub ok: bool,
    pub needed_bytes: u64,
    pub available_bytes: Option<u64>,
    /// What would be left after the job: negative when it does not fit at all.
    pub remaining_bytes: Option<i64>,
    pub floor_bytes: u64,
    pub reason: String,
}

/// The answer: yes or no, why, and each resource's numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub admit: bool,
    /// The failing checks' reasons for a no, every check's for a yes, joined by ` | `.
    pub reason: String,
    pub checks: Vec<Check>,
}

fn check(resource: Resource, needed: u64, available: &Result<u64, String>, floor: u64) -> Check {
    let name = resource.as_str();
    let need = format_size(needed);
    let available = match available {
        Ok(a) => *a,
        Err(why) => {
            return Check {
                resource,
                ok: false,
                needed_bytes: needed,
                available_bytes: None,
                remaining_bytes: None,
                floor_bytes: floor,
                reason: format!("{name}: needs {need} but {why}"),
            };
        }
    };
    let remaining = i128::from(available) - i128::from(needed);
    let (ok, reason) = if remaining < 0 {
        (
            false,
            format!(
                "{name}: needs {need} but only {} is available (short by {})",
                format_size(available),
                format_signed(-remaining)
            ),
        )
    } else if remaining < i128::from(floor) {
        (
            false,
            format!(
                "{name}: needs {need} of {} available; {} would remain, under the {} floor",
                format_size(available),
                format_signed(remaining),
                format_size(floor)
            ),
        )
    } else {
        (
            true,
            format!(
                "{name}: needs {need} of {} available; {} would remain (floor {})",
                format_size(available),
                format_signed(remaining),
                format_size(floor)
            ),
        )
    };
    Check {
        resource,
        ok,
        needed_bytes: needed,
        available_bytes: Some(available),
        remaining_bytes: Some(i64::try_from(remaining).unwrap_or(i64::MIN)),
        floor_bytes: floor,
        reason,
    }
}

/// Admits when every requested resource fits and leaves at least its floor free.
pub fn decide(req: &Request, available: &Available, floors: &Floors) -> Decision {
    let mut checks = Vec::new();
    if let Some(n) = req.mem {
        checks.push(check(Resource::Memory, n, &available.mem, floors.mem));
    }
    if let Some(n) = req.vram {
        checks.push(check(Resource::Vram, n, &available.vram, floors.vram));
    }
    if let Some(n) = req.disk {
        checks.push(check(Resource::Disk, n, &available.disk, floors.disk));
    }
    let admit = checks.iter().all(|c| c.ok);
    let reasons: Vec<&str> = checks
        .iter()
        .filter(|c| c.ok == admit)
        .map(|c| c.reason.as_str())
        .collect();
    let reason = if checks.is_empty() {
        "nothing was asked for".to_owned()
    } else {
        reasons.join(" | ")
    };
    Decision {
        admit,
        reason,
        checks,
    }
}

/// A node to consider for a mesh-wide question.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub node: String,
    pub is_self: bool,
    pub score: Option<u8>,
    /// Seconds since its summary was taken, when known.
    pub age_s: Option<i64>,
    pub available: Available,
}

/// One node's answer in a mesh-wide question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    pub node: String,
    #[serde(rename = "self")]
    pub is_self: bool,
    pub score: Option<u8>,
    pub summary_age_s: Option<i64>,
    #[serde(flatten)]
    pub decision: Decision,
}

/// Every candidate's decision, best first: nodes that admit before those that do not, then the
/// higher health score, then the most memory left, then the name.
pub fn rank(candidates: &[Candidate], req: &Request, floors: &Floors) -> Vec<Ranked> {
    let mut out: Vec<(Ranked, i64)> = candidates
        .iter()
        .map(|c| {
            let decision = decide(req, &c.available, floors);
            let mem_left = c.available.mem.as_ref().map_or(i64::MIN, |m| {
                i64::try_from(i128::from(*m) - i128::from(req.mem.unwrap_or(0))).unwrap_or(0)
            });
            let ranked = Ranked {
                node: c.node.clone(),
                is_self: c.is_self,
                score: c.score,
                summary_age_s: c.age_s,
                decision,
            };
            (ranked, mem_left)
        })
        .collect();
    out.sort_by(|(a, am), (b, bm)| {
        b.decision
            .admit
            .cmp(&a.decision.admit)
            .then(b.score.unwrap_or(0).cmp(&a.score.unwrap_or(0)))
            .then(bm.cmp(am))
            .then(a.node.cmp(&b.node))
    });
    out.into_iter().map(|(r, _)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn avail(mem: u64, vram: Result<u64, String>, disk: u64) -> Available {
        Available {
            mem: Ok(mem),
            vram,
            disk: Ok(disk),
        }
    }

    #[test]
    fn fits_with_room_to_spare() {
        let req = Request {
            mem: Some(8 * GIB),
            ..Request::default()
        };
        let d = decide(&req, &avail(23 * GIB, Ok(0), 0), &Floors::default());
        assert!(d.admit, "{d:?}");
        assert_eq!(
            d.reason,
            "memory: needs 8 GiB of 23 GiB available; 15 GiB would remain (floor 2 GiB)"
        );
        assert_eq!(d.checks[0].remaining_bytes, Some(15 * GIB as i64));
    }

    #[test]
    fn the_roadmaps_llm_warning() {
        // Loading a 7.8 GiB model with 9 GiB available leaves 1.2 GiB: under the 2 GiB floor.
        let req = Request {
            mem: Some(8_375_186_227),
            ..Request::default()
        };
        let d = decide(&req, &avail(9 * GIB, Ok(0), 0), &Floors::default());
        assert!(!d.admit);
        assert_eq!(
            d.reason,
            "memory: needs 7.8 GiB of 9 GiB available; 1.2 GiB would remain, under the 2 GiB floor"
        );
    }

    #[test]
    fn does_not_fit_at_all_names_the_numbers() {
        let req = Request {
            mem: Some(100 << 40),
            ..Request::default()
        };
        let d = decide(&req, &avail(22 * GIB, Ok(0), 0), &Floors::default());
        assert!(!d.admit);
        assert_eq!(
            d.reason,
            "memory: needs 100 TiB but only 22 GiB is available (short by 100 TiB)"
        );
        assert!(d.checks[0].remaining_bytes.unwrap() < 0);
    }

    #[test]
    fn exactly_at_the_floor_is_admitted() {
        let req = Request {
            disk: Some(15 * GIB),
            ..Request::default()
        };
        let d = decide(&req, &avail(0, Ok(0), 20 * GIB), &Floors::default());
        assert!(d.admit, "{d:?}");
    }

    #[test]
    fn no_gpu_means_no_for_a_vram_request_only() {
        let no_gpu = Err("no NVIDIA GPU: libnvidia-ml.so.1 not found".to_owned());
        let req = Request {
            mem: Some(GIB),
            vram: Some(6 * GIB),
            disk: None,
        };
        let d = decide(
            &req,
            &avail(16 * GIB, no_gpu.clone(), 0),
            &Floors::default(),
        );
        assert!(!d.admit);
        assert_eq!(
            d.reason, "vram: needs 6 GiB but no NVIDIA GPU: libnvidia-ml.so.1 not found",
            "only the failing checks are in a no"
        );
        assert!(d.checks[0].ok && !d.checks[1].ok);
        let mem_only = Request {
            mem: Some(GIB),
            ..Request::default()
        };
        assert!(decide(&mem_only, &avail(16 * GIB, no_gpu, 0), &Floors::default()).admit);
    }

    #[test]
    fn every_resource_must_pass_and_floors_are_configurable() {
        let req = Request {
            mem: Some(4 * GIB),
            vram: Some(6 * GIB),
            disk: Some(20 * GIB),
        };
        let a = avail(8 * GIB, Ok(7 * GIB), 100 * GIB);
        let d = decide(&req, &a, &Floors::default());
        assert!(d.admit, "{d:?}");
        assert_eq!(d.reason.matches(" | ").count(), 2, "{}", d.reason);
        assert!(d.reason.starts_with("memory: ") && d.reason.contains(" | disk: "));
        let strict_vram = Floors {
            vram: 2 * GIB,
            ..Floors::default()
        };
        let d = decide(&req, &a, &strict_vram);
        assert!(!d.admit);
        assert_eq!(
            d.reason,
            "vram: needs 6 GiB of 7 GiB available; 1 GiB would remain, under the 2 GiB floor"
        );
    }

    #[test]
    fn mesh_ranking_puts_nodes_that_fit_first() {
        let c = |node: &str, score: u8, mem: u64, vram: Result<u64, String>| Candidate {
            node: node.into(),
            is_self: node == "nas",
            score: Some(score),
            age_s: Some(3),
            available: avail(mem, vram, 500 * GIB),
        };
        let candidates = vec![
            c("nas", 95, 30 * GIB, Err("no NVIDIA GPU".into())),
            c("gpu-small", 60, 12 * GIB, Ok(7 * GIB)),
            c("gpu-big", 80, 60 * GIB, Ok(22 * GIB)),
            c("gpu-twin", 80, 61 * GIB, Ok(22 * GIB)),
        ];
        let req = Request {
            mem: Some(8 * GIB),
            vram: Some(6 * GIB),
            disk: None,
        };
        let ranked = rank(&candidates, &req, &Floors::default());
        let order: Vec<&str> = ranked.iter().map(|r| r.node.as_str()).collect();
        assert_eq!(order, ["gpu-twin", "gpu-big", "gpu-small", "nas"]);
        // Equal scores: the one with more memory left first. gpu-small fits (1 GiB of VRAM
        // left is over the 512 MiB floor) but scores lower; nas has no GPU.
        assert!(ranked[..3].iter().all(|r| r.decision.admit));
        assert!(!ranked[3].decision.admit);
        assert!(ranked[3].decision.reason.contains("no NVIDIA GPU"));
    }
}
