//! Host probes: CPU (with steal), load, memory (with swap and SwapCached), uptime, disks,
//! network, NVIDIA GPUs and Docker containers, gathered into one [`HostSample`].
//!
//! Every probe answers on its own: one that cannot run (no GPU, no Docker, a `/proc` file that
//! does not parse) reports `absent` or `error` with a reason, as data, and the others go on.
//! On Linux the figures come from `/proc` (pure parsers in [`proc`]); on macOS memory and swap
//! from `vm_stat` and `sysctl`, GPUs from `system_profiler` (pure parsers in [`macos`], tested
//! with recorded outputs), the rest from sysinfo; CPU steal is reported absent there.

pub mod disks;
pub mod docker;
mod fallback;
pub mod gpu;
mod host;
pub mod macos;
pub mod proc;
pub mod summary;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long after [`Prober::new`] a first sample has CPU shares worth reading (two `/proc/stat`
/// readings this far apart).
pub const FIRST_SAMPLE_AFTER: Duration = Duration::from_millis(200);

/// How long the blocking host probes may take before a sample reports them as stuck.
const HOST_LIMIT: Duration = Duration::from_secs(30);

/// One probe's answer. Serialized with a `status` field beside the figures:
/// `{"status":"ok",...}`, `{"status":"absent","reason":"..."}` (nothing to measure here: no
/// GPU, no Docker) or `{"status":"error","reason":"..."}` (something to measure, but it failed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Probe<T> {
    Ok(T),
    Absent { reason: String },
    Error { reason: String },
}

impl<T> Probe<T> {
    pub fn ok(&self) -> Option<&T> {
        match self {
            Probe::Ok(v) => Some(v),
            _ => None,
        }
    }

    pub fn absent(reason: impl Into<String>) -> Self {
        Probe::Absent {
            reason: reason.into(),
        }
    }

    pub fn error(reason: impl std::fmt::Display) -> Self {
        Probe::Error {
            reason: reason.to_string(),
        }
    }

    /// `ok`, `absent` or `error`.
    pub fn status(&self) -> &'static str {
        match self {
            Probe::Ok(_) => "ok",
            Probe::Absent { .. } => "absent",
            Probe::Error { .. } => "error",
        }
    }

    /// The reason of an `absent` or `error` answer.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Probe::Ok(_) => None,
            Probe::Absent { reason } | Probe::Error { reason } => Some(reason),
        }
    }
}

/// Everything the probes saw at one moment. Sizes in bytes, shares in percent (0–100).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSample {
    pub node: String,
    /// RFC 3339, UTC.
    pub taken_at: String,
    /// Milliseconds since the Unix epoch (same moment as `taken_at`).
    pub taken_at_ms: i64,
    pub os: String,
    pub cpu: Probe<Cpu>,
    pub steal: Probe<Steal>,
    pub load: Probe<Load>,
    pub memory: Probe<Memory>,
    pub uptime: Probe<Uptime>,
    pub disks: Probe<Disks>,
    pub network: Probe<Network>,
    pub gpu: Probe<Gpus>,
    pub docker: Probe<Docker>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// Share of all CPU time (every core together) not idle and not waiting for I/O.
    pub usage_pct: f64,
    pub iowait_pct: Option<f64>,
    pub cores: u32,
    /// Time between the two readings the figures come from.
    pub interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Steal {
    /// Share of CPU time the hypervisor gave to other guests while this one wanted it.
    pub pct: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Load {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub total_bytes: u64,
    /// What new work can get without swapping (Linux `MemAvailable`).
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    /// Swap pages also still in RAM (Linux only): high means recent memory pressure.
    pub swap_cached_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uptime {
    pub seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disks {
    pub mounts: Vec<Disk>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    pub mount: String,
    pub device: String,
    pub fs: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    /// What an unprivileged writer can still use (excludes the root reserve).
    pub available_bytes: u64,
    /// `used / (used + available)`, as `df` computes Use%.
    pub used_pct: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub interfaces: Vec<Interface>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
    /// Bytes per second since the previous sample (absent on the first).
    pub rx_bytes_per_s: Option<f64>,
    pub tx_bytes_per_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpus {
    pub devices: Vec<Gpu>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub index: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub vram_total_bytes: Option<u64>,
    pub vram_used_bytes: Option<u64>,
    pub vram_free_bytes: Option<u64>,
    /// Share of time a kernel ran, over the driver's last sample period.
    pub utilization_pct: Option<u32>,
    pub temperature_c: Option<u32>,
    /// The first query that failed for this device, if any.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Docker {
    /// The engine's address (`unix:///var/run/docker.sock`, or DOCKER_HOST).
    pub host: String,
    pub running: u32,
    /// Containers whose health check reports `unhealthy`.
    pub unhealthy: u32,
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub image: Option<String>,
    /// created, running, paused, restarting, removing, exited or dead.
    pub state: String,
    /// starting, healthy or unhealthy; `None` without a health check.
    pub health: Option<String>,
    /// Consecutive failed health checks.
    pub failing_streak: Option<i64>,
    pub restart_count: Option<i64>,
    pub started_at: Option<String>,
    /// Seconds since it started, while running.
    pub uptime_s: Option<u64>,
    pub exit_code: Option<i64>,
    pub oom_killed: Option<bool>,
    /// Set when inspecting this container failed (it may have just been removed).
    pub error: Option<String>,
    /// The container opted in to restarts when its health check keeps failing (label
    /// `labmesh.restart=on-unhealthy`; `[remediation] containers` opts in by name too).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restart_on_unhealthy: bool,
    /// The last health-check outputs the engine kept, oldest first (each trimmed to a line).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_log: Vec<String>,
}

/// The label by which a container opts in to restarts when unhealthy.
pub const RESTART_LABEL: (&str, &str) = ("labmesh.restart", "on-unhealthy");

/// Takes samples, keeping what the next sample needs (the previous `/proc/stat` and
/// `/proc/net/dev` readings, the NVML handle). Cheap to clone; clones share that state.
#[derive(Clone)]
pub struct Prober {
    node: String,
    state: Arc<Mutex<host::HostState>>,
}

impl Prober {
    /// Reads the first CPU and network counters, so the next sample has a baseline; loads NVML.
    pub fn new(node: &str) -> Prober {
        Prober {
            node: node.to_owned(),
            state: Arc::new(Mutex::new(host::HostState::new())),
        }
    }

    /// The host part of a sample (everything but Docker). Blocking: `/proc`, statvfs, NVML.
    /// When an earlier sample is still stuck (a hung mount), every probe says so at once
    /// instead of queueing behind it.
    pub fn sample_host(&self) -> HostSample {
        let now = chrono::Utc::now();
        let mut state = match self.state.try_lock() {
            Ok(s) => s,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                return self.failed("an earlier host sample is still running (a hung mount?)");
            }
        };
        let h = state.sample();
        HostSample {
            node: self.node.clone(),
            taken_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            taken_at_ms: now.timestamp_millis(),
            os: std::env::consts::OS.to_owned(),
            cpu: h.cpu,
            steal: h.steal,
            load: h.load,
            memory: h.memory,
            uptime: h.uptime,
            disks: h.disks,
            network: h.network,
            gpu: h.gpu,
            docker: Probe::absent("not sampled"),
        }
    }

    /// A full sample: the host part on a blocking thread, Docker through its socket, each
    /// bounded in time so one stuck probe (a hung NFS mount, a wedged engine) never stalls the
    /// caller forever.
    pub async fn sample(&self) -> HostSample {
        let prober = self.clone();
        let host = tokio::time::timeout(
            HOST_LIMIT,
            tokio::task::spawn_blocking(move || prober.sample_host()),
        );
        let docker = docker::sample(Duration::from_secs(10));
        let (host, docker) = tokio::join!(host, docker);
        let mut sample = match host {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => self.failed(&format!("the probe thread failed: {e}")),
            Err(_) => self.failed(&format!(
                "the host probes did not finish within {} s (a hung mount?)",
                HOST_LIMIT.as_secs()
            )),
        };
        sample.docker = docker;
        sample
    }

    /// A sample in which every probe reports the same error.
    fn failed(&self, reason: &str) -> HostSample {
        let now = chrono::Utc::now();
        HostSample {
            node: self.node.clone(),
            taken_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            taken_at_ms: now.timestamp_millis(),
            os: std::env::consts::OS.to_owned(),
            cpu: Probe::error(reason),
            steal: Probe::error(reason),
            load: Probe::error(reason),
            memory: Probe::error(reason),
            uptime: Probe::error(reason),
            disks: Probe::error(reason),
            network: Probe::error(reason),
            gpu: Probe::error(reason),
            docker: Probe::error(reason),
        }
    }
}

/// Memory as of now (one read of `/proc/meminfo` on Linux): admission wants it fresh.
pub fn memory_now() -> Probe<Memory> {
    host::memory_now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_serializes_with_status_beside_the_figures() {
        let ok: Probe<Steal> = Probe::Ok(Steal { pct: 8.5 });
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"status":"ok","pct":8.5}"#
        );
        let absent: Probe<Gpus> = Probe::absent("no NVIDIA GPU: libnvidia-ml.so.1 not found");
        let text = serde_json::to_string(&absent).unwrap();
        assert_eq!(
            text,
            r#"{"status":"absent","reason":"no NVIDIA GPU: libnvidia-ml.so.1 not found"}"#
        );
        let back: Probe<Gpus> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, absent);
    }

    #[test]
    fn a_stuck_sample_is_reported_not_waited_for() {
        let prober = Prober::new("testnode");
        let _held = prober.state.lock().unwrap();
        let s = prober.sample_host();
        assert_eq!(s.memory.status(), "error");
        assert!(
            s.cpu.reason().unwrap().contains("still running"),
            "{:?}",
            s.cpu
        );
    }

    #[test]
    fn a_real_sample_has_memory_and_never_panics() {
        let prober = Prober::new("testnode");
        std::thread::sleep(Duration::from_millis(50));
        let s = prober.sample_host();
        let mem = s.memory.ok().expect("memory on the test machine");
        assert!(mem.total_bytes > 0 && mem.available_bytes <= mem.total_bytes);
        // Serializes to JSON and back.
        let text = serde_json::to_string(&s).unwrap();
        let back: HostSample = serde_json::from_str(&text).unwrap();
        assert_eq!(back.node, "testnode");
    }
}
