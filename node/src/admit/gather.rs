//! Where admission's figures come from: this host measured now, or the others' gossiped
//! summaries (at most one probe interval old).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mesh::{Liveness, PeerStatus};

use serde_json::{Value, json};

use super::{Available, Candidate, Floors, Request};
use crate::probes::{self, Gpus, Probe};
use mesh::summary::Summary;

/// Free VRAM on the GPU that has the most, or why there is no figure.
pub fn vram_from(gpu: &Probe<Gpus>) -> Result<u64, String> {
    match gpu {
        Probe::Ok(g) => g
            .devices
            .iter()
            .filter_map(|d| d.vram_free_bytes)
            .max()
            .ok_or_else(|| "no GPU reported its free VRAM".to_owned()),
        Probe::Absent { reason } | Probe::Error { reason } => Err(reason.clone()),
    }
}

/// This host: memory read now, VRAM from `gpu` (the latest sample), disk on the filesystem that
/// would hold `path` (measured now). Also returns the path actually measured (the nearest
/// existing folder).
pub fn local(gpu: &Probe<Gpus>, path: &Path) -> (Available, Option<PathBuf>) {
    let mem = match probes::memory_now() {
        Probe::Ok(m) => Ok(m.available_bytes),
        other => Err(format!(
            "memory unknown: {}",
            other.reason().unwrap_or("no figure")
        )),
    };
    let (disk, measured) = match probes::disks::space_for(path) {
        Ok((at, space)) => (Ok(space.available), Some(at)),
        Err(e) => (Err(format!("disk unknown: {e}")), None),
    };
    let available = Available {
        mem,
        vram: vram_from(gpu),
        disk,
    };
    (available, measured)
}

/// The answer about this host, as `GET /v1/admit` gives it (and `labmesh admit` prints when no
/// agent runs).
pub fn answer_here(
    node: &str,
    req: &Request,
    floors: &Floors,
    gpu: &Probe<Gpus>,
    path: &Path,
) -> Value {
    let (available, measured) = local(gpu, path);
    let decision = super::decide(req, &available, floors);
    json!({
        "node": node,
        "admit": decision.admit,
        "reason": decision.reason,
        "checks": decision.checks,
        "path": path,
        "measured_path": measured,
        "floors": floors,
    })
}

/// A peer's figures from its summary. Disk is the most space free on any one of its
/// filesystems (a peer's paths are not known here).
pub fn from_summary(s: &Summary) -> Available {
    let unknown = |what: &str| format!("its summary has no {what} figure");
    Available {
        mem: s.mem_avail.ok_or_else(|| unknown("memory")),
        vram: if s.gpus == 0 {
            Err("no NVIDIA GPU".to_owned())
        } else {
            s.vram_free.ok_or_else(|| unknown("VRAM"))
        },
        disk: s.disk_free.ok_or_else(|| unknown("disk")),
    }
}

fn candidate(node: &str, is_self: bool, kv: &BTreeMap<String, String>, now_s: i64) -> Candidate {
    let missing = |why: &str| Available {
        mem: Err(why.to_owned()),
        vram: Err(why.to_owned()),
        disk: Err(why.to_owned()),
    };
    match kv.get(mesh::keys::SUMMARY).map(|t| Summary::parse(t)) {
        Some(Some(s)) => Candidate {
            node: node.to_owned(),
            is_self,
            score: Some(s.score),
            age_s: Some((now_s - s.t).max(0)),
            available: from_summary(&s),
        },
        Some(None) => Candidate {
            node: node.to_owned(),
            is_self,
            score: None,
            age_s: None,
            available: missing("its summary is not one this version reads"),
        },
        None => Candidate {
            node: node.to_owned(),
            is_self,
            score: None,
            age_s: None,
            available: missing("it gossips no summary yet (just started, or an older labmesh)"),
        },
    }
}

/// This node and every live peer, from what the mesh gossips. Peers that are not alive are
/// left out: a job sent there would not start.
pub fn candidates(
    self_node: &str,
    self_kv: &BTreeMap<String, String>,
    peers: &[PeerStatus],
    now_s: i64,
) -> Vec<Candidate> {
    let mut out = vec![candidate(self_node, true, self_kv, now_s)];
    for p in peers.iter().filter(|p| p.liveness == Liveness::Alive) {
        out.push(candidate(&p.node, false, &p.key_values, now_s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(node: &str, liveness: Liveness, summary: Option<&str>) -> PeerStatus {
        let mut kv = BTreeMap::new();
        if let Some(s) = summary {
            kv.insert(mesh::keys::SUMMARY.to_owned(), s.to_owned());
        }
        PeerStatus {
            node: node.into(),
            liveness,
            last_heartbeat_age_ms: 0,
            since_ms: 0,
            generation: 1,
            gossip_addr: "127.0.0.1:7370".parse().unwrap(),
            transient: false,
            vouched: false,
            key_values: kv,
        }
    }

    #[test]
    fn candidates_from_gossip() {
        let gpu_box = r#"{"v":1,"t":1000,"mem_avail":34359738368,"disk_free":1000,"gpus":1,"vram_free":8589934592,"unhealthy":0,"score":90}"#;
        let peers = vec![
            peer("gpu", Liveness::Alive, Some(gpu_box)),
            peer("gone", Liveness::Dead, Some(gpu_box)),
            peer("old", Liveness::Alive, None),
        ];
        let me: BTreeMap<String, String> = BTreeMap::new();
        let c = candidates("me", &me, &peers, 1010);
        let names: Vec<&str> = c.iter().map(|c| c.node.as_str()).collect();
        assert_eq!(names, ["me", "gpu", "old"]);
        assert_eq!(c[1].available.vram, Ok(8 << 30));
        assert_eq!(c[1].available.mem, Ok(32 << 30));
        assert_eq!(c[1].age_s, Some(10));
        assert_eq!(c[1].score, Some(90));
        assert!(
            c[2].available
                .mem
                .as_ref()
                .unwrap_err()
                .contains("no summary")
        );
    }

    #[test]
    fn no_gpu_in_a_summary_says_so() {
        let s = Summary::parse(r#"{"v":1,"t":0,"mem_avail":1,"gpus":0,"unhealthy":0,"score":50}"#)
            .unwrap();
        let a = from_summary(&s);
        assert_eq!(a.vram, Err("no NVIDIA GPU".to_owned()));
        assert!(a.disk.unwrap_err().contains("no disk figure"));
    }

    #[test]
    fn local_figures_are_real() {
        let no_gpu = Probe::absent("no NVIDIA GPU: libnvidia-ml.so.1 not found");
        let (a, at) = local(&no_gpu, Path::new("/"));
        assert!(a.mem.unwrap() > 0);
        assert!(a.disk.is_ok());
        assert_eq!(at.as_deref(), Some(Path::new("/")));
        assert_eq!(
            a.vram,
            Err("no NVIDIA GPU: libnvidia-ml.so.1 not found".to_owned())
        );
    }
}
