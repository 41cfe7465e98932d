//! Hosts without `/proc` (macOS): CPU, load, memory, uptime and network from sysinfo. CPU steal
//! is a Linux `/proc/stat` column, so it is reported absent here. On macOS, memory and swap come
//! from `vm_stat` and `sysctl` ([`super::macos`]) as Activity Monitor counts them, and from
//! sysinfo only when those commands fail.
//!
//! Compiled on every OS (only used off Linux) so that Linux CI type-checks and tests it too.

#![cfg_attr(target_os = "linux", allow(dead_code))]

use std::time::Instant;

use sysinfo::{Networks, System};

use super::host::{OsPart, network_from, round2};
use super::proc::NetCounters;
use super::{Cpu, Load, Memory, Network, Probe, Uptime};

pub(super) struct SysinfoProbe {
    sys: Result<System, String>,
    /// When CPU usage was last refreshed (sysinfo computes it since then).
    cpu_refreshed: Instant,
    networks: Result<Networks, String>,
    prev_net: Option<(Instant, Vec<NetCounters>)>,
}

fn system() -> Result<System, String> {
    System::new().map_err(|e| format!("sysinfo: {e}"))
}

impl SysinfoProbe {
    pub fn new() -> SysinfoProbe {
        let mut sys = system();
        if let Ok(s) = &mut sys {
            s.refresh_cpu_usage();
        }
        let mut networks = Networks::new_with_refreshed_list().map_err(|e| format!("sysinfo: {e}"));
        let now = Instant::now();
        let prev_net = networks.as_mut().ok().map(|n| (now, counters(n)));
        SysinfoProbe {
            sys,
            cpu_refreshed: now,
            networks,
            prev_net,
        }
    }

    pub fn sample(&mut self) -> OsPart {
        let steal = Probe::absent("CPU steal is read from /proc/stat, on Linux only");
        let (cpu, memory) = match &mut self.sys {
            Ok(sys) => {
                sys.refresh_cpu_usage();
                let now = Instant::now();
                let interval_ms = now.duration_since(self.cpu_refreshed).as_millis() as u64;
                self.cpu_refreshed = now;
                let cpu = Probe::Ok(Cpu {
                    usage_pct: round2(f64::from(sys.global_cpu_usage()).clamp(0.0, 100.0)),
                    iowait_pct: None,
                    cores: sys.cpus().len() as u32,
                    interval_ms,
                });
                (cpu, Probe::Ok(memory(sys)))
            }
            Err(e) => (
                Probe::error(&*e),
                macos_memory().map_or_else(|| Probe::error(&*e), Probe::Ok),
            ),
        };
        OsPart {
            cpu,
            steal,
            load: match System::load_average() {
                Ok(l) => Probe::Ok(Load {
                    one: l.one,
                    five: l.five,
                    fifteen: l.fifteen,
                }),
                Err(e) => Probe::error(format!("load average: {e}")),
            },
            memory,
            uptime: match System::uptime() {
                Ok(s) => Probe::Ok(Uptime { seconds: s }),
                Err(e) => Probe::error(format!("uptime: {e}")),
            },
            network: self.network(),
        }
    }

    fn network(&mut self) -> Probe<Network> {
        let networks = match &mut self.networks {
            Ok(n) => n,
            Err(e) => return Probe::error(&*e),
        };
        networks.refresh(true);
        let now = Instant::now();
        let current = counters(networks);
        let net = network_from(&current, self.prev_net.as_ref(), now);
        self.prev_net = Some((now, current));
        Probe::Ok(net)
    }
}

/// On macOS, memory from `vm_stat` and `sysctl`; `None` elsewhere or when they fail.
fn macos_memory() -> Option<Memory> {
    if !cfg!(target_os = "macos") {
        return None;
    }
    super::macos::memory_now()
        .map_err(|e| tracing::debug!(error = %e, "macOS memory commands failed; using sysinfo"))
        .ok()
}

/// Memory as of now: on macOS from `vm_stat` and `sysctl` when they answer, else from sysinfo.
fn memory(sys: &mut System) -> Memory {
    if let Some(m) = macos_memory() {
        return m;
    }
    sys.refresh_memory();
    memory_of(sys)
}

fn memory_of(sys: &System) -> Memory {
    let total = sys.total_memory();
    let available = sys.available_memory().min(total);
    Memory {
        total_bytes: total,
        available_bytes: available,
        used_bytes: total - available,
        swap_total_bytes: sys.total_swap(),
        swap_used_bytes: sys.used_swap(),
        swap_cached_bytes: None,
    }
}

fn counters(networks: &Networks) -> Vec<NetCounters> {
    networks
        .iter()
        .map(|(name, d)| NetCounters {
            iface: name.to_string_lossy().into_owned(),
            rx_bytes: d.total_received(),
            rx_packets: d.total_packets_received(),
            rx_errors: d.total_errors_on_received(),
            rx_dropped: 0,
            tx_bytes: d.total_transmitted(),
            tx_packets: d.total_packets_transmitted(),
            tx_errors: d.total_errors_on_transmitted(),
            tx_dropped: 0,
        })
        .collect()
}

/// Memory as of now: on macOS from `vm_stat` and `sysctl` when they answer, else from sysinfo.
pub(super) fn memory_now() -> Probe<Memory> {
    if let Some(m) = macos_memory() {
        return Probe::Ok(m);
    }
    match system() {
        Ok(mut sys) => {
            sys.refresh_memory();
            Probe::Ok(memory_of(&sys))
        }
        Err(e) => Probe::error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The macOS path, run on Linux: figures present, steal absent with a reason.
    #[test]
    fn sysinfo_fallback_reports_figures_and_steal_absent() {
        let mut probe = SysinfoProbe::new();
        std::thread::sleep(std::time::Duration::from_millis(250));
        let part = probe.sample();
        let cpu = part.cpu.ok().expect("cpu");
        assert!((0.0..=100.0).contains(&cpu.usage_pct));
        assert!(cpu.cores > 0);
        assert_eq!(part.steal.status(), "absent");
        assert!(part.steal.reason().unwrap_or("").contains("Linux only"));
        let mem = part.memory.ok().expect("memory");
        assert!(mem.total_bytes > 0);
        assert!(part.load.ok().is_some() && part.uptime.ok().is_some());
        assert!(memory_now().ok().is_some());
    }
}
