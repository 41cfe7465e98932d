//! The `labmesh_node_*`, `labmesh_probe_*` and `labmesh_containers*` series: this host's resources
//! from the latest local sample (see [`crate::probes`]). Percentages become ratios (0–1).

use prometheus_client::registry::Unit;

use crate::api::metrics::{Out, label, ratio};
use crate::probes::HostSample;

/// Docker's container states, always listed (0 when none) so the series do not come and go.
const CONTAINER_STATES: [&str; 7] = [
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
];

pub fn host(out: &mut Out, s: &HostSample) {
    let bytes = || Some(Unit::Bytes);
    if let Some(c) = s.cpu.ok() {
        out.gauge(
            "node_cpu",
            "Share of all CPU time (every core together) busy, not idle and not waiting for I/O, over the last probe interval",
            ratio(),
            c.usage_pct / 100.0,
        );
        out.gauge("node_cpus", "CPU cores", None, f64::from(c.cores));
    }
    if let Some(st) = s.steal.ok() {
        out.gauge(
            "node_cpu_steal",
            "Share of CPU time the hypervisor gave to other guests while this one wanted it, over the last probe interval",
            ratio(),
            st.pct / 100.0,
        );
    }
    if let Some(l) = s.load.ok() {
        out.gauge("node_load1", "1-minute load average", None, l.one);
        out.gauge("node_load5", "5-minute load average", None, l.five);
        out.gauge("node_load15", "15-minute load average", None, l.fifteen);
    }
    if let Some(m) = s.memory.ok() {
        out.gauge(
            "node_memory_total",
            "Physical memory",
            bytes(),
            m.total_bytes as f64,
        );
        out.gauge(
            "node_memory_available",
            "Memory new work can get without swapping (Linux MemAvailable)",
            bytes(),
            m.available_bytes as f64,
        );
        out.gauge(
            "node_swap_total",
            "Swap space",
            bytes(),
            m.swap_total_bytes as f64,
        );
        out.gauge(
            "node_swap_used",
            "Swap space in use",
            bytes(),
            m.swap_used_bytes as f64,
        );
        if let Some(c) = m.swap_cached_bytes {
            out.gauge(
                "node_swap_cached",
                "Swapped pages also still in RAM (Linux SwapCached): high after memory pressure",
                bytes(),
                c as f64,
            );
        }
    }
    if let Some(u) = s.uptime.ok() {
        out.gauge(
            "node_uptime",
            "Time since the host booted",
            Some(Unit::Seconds),
            u.seconds as f64,
        );
    }
    if let Some(d) = s.disks.ok() {
        let each = |f: fn(&crate::probes::Disk) -> u64| {
            d.mounts
                .iter()
                .map(move |m| (m.mount.clone(), f(m) as f64))
                .collect::<Vec<_>>()
        };
        out.gauges_by(
            "node_disk_size",
            "Size of a real filesystem",
            bytes(),
            "mount",
            each(|m| m.total_bytes),
        );
        out.gauges_by(
            "node_disk_available",
            "Space an unprivileged writer can still use on a filesystem (excludes the root reserve)",
            bytes(),
            "mount",
            each(|m| m.available_bytes),
        );
    }
    if let Some(n) = s.network.ok() {
        let each = |f: fn(&crate::probes::Interface) -> u64| {
            n.interfaces
                .iter()
                .map(move |i| (label("interface", i.name.clone()), f(i)))
                .collect::<Vec<_>>()
        };
        out.counters(
            "node_network_receive",
            "Bytes received by a network interface (kernel counter, since boot or since the interface appeared)",
            bytes(),
            each(|i| i.rx_bytes),
        );
        out.counters(
            "node_network_transmit",
            "Bytes sent by a network interface (kernel counter, since boot or since the interface appeared)",
            bytes(),
            each(|i| i.tx_bytes),
        );
    }
    if let Some(g) = s.gpu.ok() {
        let each = |f: fn(&crate::probes::Gpu) -> Option<u64>| {
            g.devices
                .iter()
                .filter_map(move |d| f(d).map(|v| (d.index.to_string(), v as f64)))
                .collect::<Vec<_>>()
        };
        out.gauges_by(
            "node_gpu_memory_used",
            "VRAM in use on an NVIDIA GPU (by index)",
            bytes(),
            "gpu",
            each(|d| d.vram_used_bytes),
        );
        out.gauges_by(
            "node_gpu_memory_total",
            "VRAM of an NVIDIA GPU (by index)",
            bytes(),
            "gpu",
            each(|d| d.vram_total_bytes),
        );
        out.gauges_by(
            "node_gpu_utilization",
            "Share of time a kernel ran on an NVIDIA GPU, over the driver's sample period",
            ratio(),
            "gpu",
            g.devices
                .iter()
                .filter_map(|d| {
                    d.utilization_pct
                        .map(|u| (d.index.to_string(), f64::from(u) / 100.0))
                })
                .collect::<Vec<_>>(),
        );
    }
    if let Some(d) = s.docker.ok() {
        let count = |state: &str| d.containers.iter().filter(|c| c.state == state).count();
        out.gauges_by(
            "containers",
            "Docker containers by state",
            None,
            "state",
            CONTAINER_STATES.map(|st| (st.to_owned(), count(st) as f64)),
        );
        out.gauge(
            "containers_unhealthy",
            "Docker containers whose health check reports unhealthy",
            None,
            f64::from(d.unhealthy),
        );
    }
    out.gauge(
        "node_sample_timestamp",
        "When the latest host sample was taken (Unix time)",
        Some(Unit::Seconds),
        s.taken_at_ms as f64 / 1000.0,
    );
}

/// `labmesh_probe_up` and `labmesh_probe_absent` for every probe, so a failing probe shows
/// instead of its series silently vanishing. Without a sample (probes off or not run yet) every
/// probe is down.
pub fn probes(out: &mut Out, s: Option<&HostSample>) {
    let statuses: Vec<(&str, &str)> = match s {
        Some(s) => vec![
            ("cpu", s.cpu.status()),
            ("steal", s.steal.status()),
            ("load", s.load.status()),
            ("memory", s.memory.status()),
            ("uptime", s.uptime.status()),
            ("disks", s.disks.status()),
            ("network", s.network.status()),
            ("gpu", s.gpu.status()),
            ("docker", s.docker.status()),
        ],
        None => Vec::new(),
    };
    out.gauges_by(
        "probe_up",
        "1 when the host probe answered with figures, 0 when it failed or had nothing to measure (see labmesh_probe_absent)",
        None,
        "probe",
        statuses
            .iter()
            .map(|(p, st)| ((*p).to_owned(), f64::from(u8::from(*st == "ok")))),
    );
    out.gauges_by(
        "probe_absent",
        "1 when the host probe has nothing to measure here (no NVIDIA GPU, no Docker, no steal figure off Linux): not a failure",
        None,
        "probe",
        statuses
            .iter()
            .map(|(p, st)| ((*p).to_owned(), f64::from(u8::from(*st == "absent")))),
    );
    out.gauge(
        "probes_sampled",
        "1 when the agent has a host sample (probes on and the first sample taken)",
        None,
        f64::from(u8::from(s.is_some())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::metrics::to_prometheus_text;

    fn sample() -> HostSample {
        serde_json::from_value(serde_json::json!({
            "node": "gpu1", "taken_at": "2026-11-30T05:00:00Z", "taken_at_ms": 1_796_014_800_000_i64,
            "os": "linux",
            "cpu": {"status": "ok", "usage_pct": 25.0, "iowait_pct": null, "cores": 16, "interval_ms": 1000},
            "steal": {"status": "ok", "pct": 1.5},
            "load": {"status": "ok", "one": 1.0, "five": 0.5, "fifteen": 0.25},
            "memory": {"status": "error", "reason": "/proc/meminfo: no MemAvailable"},
            "uptime": {"status": "ok", "seconds": 3600},
            "disks": {"status": "ok", "mounts": [{"mount": "/", "device": "/dev/vda1", "fs": "ext4",
                "total_bytes": 1000, "used_bytes": 400, "available_bytes": 500, "used_pct": 44.4}]},
            "network": {"status": "ok", "interfaces": [{"name": "eth0", "rx_bytes": 10, "tx_bytes": 20,
                "rx_errors": 0, "tx_errors": 0, "rx_dropped": 0, "tx_dropped": 0,
                "rx_bytes_per_s": null, "tx_bytes_per_s": null}]},
            "gpu": {"status": "ok", "devices": [
                {"index": 0, "name": "H200", "uuid": null, "vram_total_bytes": 1000, "vram_used_bytes": 250,
                 "vram_free_bytes": 750, "utilization_pct": 50, "temperature_c": 40, "error": null},
                {"index": 1, "name": "H200", "uuid": null, "vram_total_bytes": 1000, "vram_used_bytes": null,
                 "vram_free_bytes": null, "utilization_pct": null, "temperature_c": null, "error": "lost"}]},
            "docker": {"status": "ok", "host": "unix:///var/run/docker.sock", "running": 1, "unhealthy": 1,
                "containers": [
                    {"name": "db", "image": null, "state": "running", "health": "unhealthy", "failing_streak": 3,
                     "restart_count": 0, "started_at": null, "uptime_s": 5, "exit_code": null, "oom_killed": null, "error": null},
                    {"name": "job", "image": null, "state": "exited", "health": null, "failing_streak": null,
                     "restart_count": 0, "started_at": null, "uptime_s": null, "exit_code": 0, "oom_killed": false, "error": null}]}
        }))
        .unwrap()
    }

    #[test]
    fn gpus_containers_and_a_failed_probe_become_series() {
        let s = sample();
        let mut out = Out::new();
        host(&mut out, &s);
        probes(&mut out, Some(&s));
        let text = to_prometheus_text(&out.encode().unwrap());
        for line in [
            "labmesh_node_cpu_ratio 0.25",
            "labmesh_node_cpu_steal_ratio 0.015",
            "labmesh_node_gpu_memory_used_bytes{gpu=\"0\"} 250.0",
            "labmesh_node_gpu_memory_total_bytes{gpu=\"1\"} 1000.0",
            "labmesh_node_gpu_utilization_ratio{gpu=\"0\"} 0.5",
            "labmesh_containers{state=\"running\"} 1.0",
            "labmesh_containers{state=\"exited\"} 1.0",
            "labmesh_containers{state=\"dead\"} 0.0",
            "labmesh_containers_unhealthy 1.0",
            "labmesh_node_disk_available_bytes{mount=\"/\"} 500.0",
            "labmesh_node_network_transmit_bytes_total{interface=\"eth0\"} 20",
            "# TYPE labmesh_node_network_receive_bytes_total counter",
            "labmesh_probe_up{probe=\"memory\"} 0.0",
            "labmesh_probe_absent{probe=\"memory\"} 0.0",
            "labmesh_probe_up{probe=\"gpu\"} 1.0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // The failed probe's figures are left out, never exported as 0.
        assert!(!text.contains("labmesh_node_memory_"), "{text}");
        assert!(!text.contains("gpu_memory_used_bytes{gpu=\"1\"}"), "{text}");
    }
}
