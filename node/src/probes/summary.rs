//! This host's gossiped summary ([`mesh::summary::Summary`]) from a probe sample. The score is
//! left to [`crate::score`]: a summary is scored with the node's own services and cleanup.

use mesh::summary::{Summary, VERSION};

use super::HostSample;

/// The summary of a sample, with score 0 until [`crate::score`] fills it.
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
    out
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_containers_reach_the_gossiped_summary() {
        let mut sample = crate::probes::Prober::new("n1").failed("test");
        sample.docker = super::super::Probe::Ok(super::super::Docker {
            host: "unix:///var/run/docker.sock".to_owned(),
            running: 3,
            unhealthy: 2,
            containers: Vec::new(),
        });
        assert_eq!(from_sample(&sample).unhealthy, 2);
    }
}
