//! The `labmesh_node_*`, `labmesh_probe_*` and `labmesh_containers*` series: this host's resources
//! from the latest local sample (see [`crate::probes`]). Percentages become ratios (0–1).

use prometheus_client::registry::Unit;

use crate::metrics::{Out, label, ratio};
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
