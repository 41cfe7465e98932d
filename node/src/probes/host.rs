//! Reading the host: `/proc` on Linux, sysinfo elsewhere ([`super::fallback`]). Holds what the
//! next sample needs: the previous CPU and network counters, the disk list, the NVML handle.

use std::time::Instant;

use super::proc::{self, CpuDeltaError, CpuTimes, NetCounters};
use super::{Cpu, Disks, Gpus, Interface, Load, Memory, Network, Probe, Steal, Uptime};

/// The OS-specific part of a sample.
pub(super) struct OsPart {
    pub cpu: Probe<Cpu>,
    pub steal: Probe<Steal>,
    pub load: Probe<Load>,
    pub memory: Probe<Memory>,
    pub uptime: Probe<Uptime>,
    pub network: Probe<Network>,
}

/// Everything but Docker.
pub(super) struct HostPart {
    pub cpu: Probe<Cpu>,
    pub steal: Probe<Steal>,
    pub load: Probe<Load>,
    pub memory: Probe<Memory>,
    pub uptime: Probe<Uptime>,
    pub network: Probe<Network>,
    pub disks: Probe<Disks>,
    pub gpu: Probe<Gpus>,
}

#[cfg(target_os = "linux")]
type OsProbe = ProcProbe;
#[cfg(not(target_os = "linux"))]
type OsProbe = super::fallback::SysinfoProbe;

pub(super) struct HostState {
    os: OsProbe,
    disks: super::disks::DiskProbe,
    gpu: super::gpu::GpuProbe,
}

impl HostState {
    pub fn new() -> HostState {
        HostState {
            os: OsProbe::new(),
            disks: super::disks::DiskProbe::new(),
            gpu: super::gpu::GpuProbe::new(),
        }
    }

    pub fn sample(&mut self) -> HostPart {
        let os = self.os.sample();
        HostPart {
            cpu: os.cpu,
            steal: os.steal,
            load: os.load,
            memory: os.memory,
            uptime: os.uptime,
            network: os.network,
            disks: self.disks.sample(),
            gpu: self.gpu.sample(),
        }
    }
}

/// Memory as of now.
pub(super) fn memory_now() -> Probe<Memory> {
    #[cfg(target_os = "linux")]
    {
        read_memory()
    }
    #[cfg(not(target_os = "linux"))]
    {
        super::fallback::memory_now()
    }
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(super) fn memory_from(m: &proc::MemInfo) -> Memory {
    Memory {
        total_bytes: m.total,
        available_bytes: m.available,
        used_bytes: m.total.saturating_sub(m.available),
        swap_total_bytes: m.swap_total,
        swap_used_bytes: m.swap_total.saturating_sub(m.swap_free),
        swap_cached_bytes: m.swap_cached,
    }
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn read_memory() -> Probe<Memory> {
    match read("/proc/meminfo").and_then(|t| proc::parse_meminfo(&t).map_err(|e| e.to_string())) {
        Ok(m) => Probe::Ok(memory_from(&m)),
        Err(e) => Probe::error(e),
    }
}

/// Network interfaces with rates against the previous reading; `lo` is left out.
pub(super) fn network_from(
    now: &[NetCounters],
    prev: Option<&(Instant, Vec<NetCounters>)>,
    at: Instant,
) -> Network {
    let interfaces = now
        .iter()
        .filter(|c| c.iface != "lo")
        .map(|c| {
            let rate = prev.and_then(|(t, before)| {
                proc::net_rate(before, c, at.duration_since(*t).as_secs_f64())
            });
            Interface {
                name: c.iface.clone(),
                rx_bytes: c.rx_bytes,
                tx_bytes: c.tx_bytes,
                rx_errors: c.rx_errors,
                tx_errors: c.tx_errors,
                rx_dropped: c.rx_dropped,
                tx_dropped: c.tx_dropped,
                rx_bytes_per_s: rate.map(|r| r.0),
                tx_bytes_per_s: rate.map(|r| r.1),
            }
        })
        .collect();
    Network { interfaces }
}

/// Linux: everything from `/proc`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(super) struct ProcProbe {
    prev_stat: Option<(Instant, CpuTimes)>,
    prev_net: Option<(Instant, Vec<NetCounters>)>,
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
impl ProcProbe {
    pub fn new() -> ProcProbe {
        let stat = read("/proc/stat")
            .ok()
            .and_then(|t| proc::parse_stat(&t).ok());
        let net = read("/proc/net/dev")
            .ok()
            .and_then(|t| proc::parse_net_dev(&t).ok());
        let now = Instant::now();
        ProcProbe {
            prev_stat: stat.map(|s| (now, s)),
            prev_net: net.map(|n| (now, n)),
        }
    }

    pub fn sample(&mut self) -> OsPart {
        let (cpu, steal) = self.cpu();
        OsPart {
            cpu,
            steal,
            load: match read("/proc/loadavg")
                .and_then(|t| proc::parse_loadavg(&t).map_err(|e| e.to_string()))
            {
                Ok(l) => Probe::Ok(Load {
                    one: l.one,
                    five: l.five,
                    fifteen: l.fifteen,
                }),
                Err(e) => Probe::error(e),
            },
            memory: read_memory(),
            uptime: match read("/proc/uptime")
                .and_then(|t| proc::parse_uptime(&t).map_err(|e| e.to_string()))
            {
                Ok(s) => Probe::Ok(Uptime { seconds: s as u64 }),
                Err(e) => Probe::error(e),
            },
            network: self.network(),
        }
    }

    fn cpu(&mut self) -> (Probe<Cpu>, Probe<Steal>) {
        let now = Instant::now();
        let current = match read("/proc/stat")
            .and_then(|t| proc::parse_stat(&t).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => return (Probe::error(&e), Probe::error(&e)),
        };
        let Some((then, earlier)) = self.prev_stat else {
            self.prev_stat = Some((now, current));
            let why =
                "first reading: CPU shares need two /proc/stat readings; the next sample has them";
            return (Probe::absent(why), Probe::absent(why));
        };
        match proc::cpu_share(&earlier, &current) {
            Ok(share) => {
                self.prev_stat = Some((now, current));
                let cpu = Probe::Ok(Cpu {
                    usage_pct: round2(share.busy_pct),
                    iowait_pct: share.iowait_pct.map(round2),
                    cores: current.cores,
                    interval_ms: now.duration_since(then).as_millis() as u64,
                });
                let steal = match share.steal_pct {
                    Some(p) => Probe::Ok(Steal { pct: round2(p) }),
                    None => Probe::absent("this kernel's /proc/stat has no steal column"),
                };
                (cpu, steal)
            }
            // Keep the older baseline: the next sample will have time to compare against.
            Err(e @ CpuDeltaError::NoTimePassed) => {
                (Probe::absent(e.to_string()), Probe::absent(e.to_string()))
            }
            Err(e @ CpuDeltaError::WentBackwards) => {
                self.prev_stat = Some((now, current));
                (Probe::error(e), Probe::error(e))
            }
        }
    }

    fn network(&mut self) -> Probe<Network> {
        let now = Instant::now();
        match read("/proc/net/dev").and_then(|t| proc::parse_net_dev(&t).map_err(|e| e.to_string()))
        {
            Ok(counters) => {
                let net = network_from(&counters, self.prev_net.as_ref(), now);
                self.prev_net = Some((now, counters));
                Probe::Ok(net)
            }
            Err(e) => Probe::error(e),
        }
    }
}

/// Two decimals are plenty for a percentage and keep the JSON short.
pub(super) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
