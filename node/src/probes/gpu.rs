//! NVIDIA GPUs through NVML, loaded at run time (nvml-wrapper opens `libnvidia-ml.so.1`): name,
//! VRAM used/total, utilisation, temperature for each device. A host without the library or the
//! driver reports `absent` with the reason, in well under a millisecond; nothing here ever stops
//! the other probes. On macOS, where there is no NVML, the GPUs come from `system_profiler`
//! ([`super::macos`]): model, Metal family, and VRAM only where a discrete GPU has its own.

use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;

use super::{Gpu, Gpus, Probe};

/// How long to wait before trying to load NVML again after it failed (a driver installed or
/// loaded after the agent started is picked up without a restart).
const RETRY_AFTER: Duration = Duration::from_secs(300);

pub struct GpuProbe {
    /// NVML, or the answer to give without it (the reason it is absent; on macOS, the GPUs
    /// `system_profiler` lists, read again when NVML would be retried).
    nvml: Result<Nvml, Probe<Gpus>>,
    tried: Instant,
}

/// What a failed `Nvml::init` means for the operator.
fn init_failure(e: &NvmlError) -> Probe<Gpus> {
    match e {
        NvmlError::LibloadingError(inner) => {
            let text = inner.to_string();
            if text.contains("No such file") || text.contains("cannot open") {
                Probe::absent("no NVIDIA GPU: libnvidia-ml.so.1 not found")
            } else {
                Probe::absent(format!(
                    "no NVIDIA GPU: cannot load libnvidia-ml.so.1: {text}"
                ))
            }
        }
        NvmlError::FailedToLoadSymbol(s) => Probe::error(format!(
            "libnvidia-ml.so.1 loaded but lacks {s} (driver too old for NVML v2?)"
        )),
        NvmlError::DriverNotLoaded => Probe::absent(
            "no NVIDIA GPU: libnvidia-ml.so.1 is installed but the driver is not loaded",
        ),
        NvmlError::LibraryNotFound => Probe::absent("no NVIDIA GPU: NVML library not found"),
        NvmlError::NoPermission => Probe::error(
            "NVML: no permission to talk to the NVIDIA driver (check /dev/nvidia* permissions)",
        ),
        other => Probe::error(format!("NVML init failed: {other}")),
    }
}

fn load() -> Result<Nvml, Probe<Gpus>> {
    if cfg!(target_os = "macos") {
        return Err(super::macos::gpus_now());
    }
    Nvml::init().map_err(|e| init_failure(&e))
}

impl Default for GpuProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl GpuProbe {
    pub fn new() -> GpuProbe {
        let nvml = load();
        if let Err(p) = &nvml {
            tracing::debug!(reason = p.reason().unwrap_or(""), "GPU probe");
        }
        GpuProbe {
            nvml,
            tried: Instant::now(),
        }
    }

    pub fn sample(&mut self) -> Probe<Gpus> {
        if self.nvml.is_err() && self.tried.elapsed() >= RETRY_AFTER {
            self.nvml = load();
            self.tried = Instant::now();
        }
        match &self.nvml {
            Ok(nvml) => devices(nvml),
            Err(probe) => probe.clone(),
        }
    }
}

fn devices(nvml: &Nvml) -> Probe<Gpus> {
    let count = match nvml.device_count() {
        Ok(c) => c,
        Err(e) => return Probe::error(format!("NVML: cannot count devices: {e}")),
    };
    if count == 0 {
        return Probe::absent("no NVIDIA GPU: NVML loaded but reports no device");
    }
    let devices = (0..count).map(|i| device(nvml, i)).collect();
    Probe::Ok(Gpus { devices })
}

/// One device; every query is separate, so one unsupported query (temperature on some
/// data-centre boards in some modes) leaves the others.
fn device(nvml: &Nvml, index: u32) -> Gpu {
    let mut gpu = Gpu {
        index,
        name: None,
        uuid: None,
        vram_total_bytes: None,
        vram_used_bytes: None,
        vram_free_bytes: None,
        utilization_pct: None,
        temperature_c: None,
        error: None,
    };
    let dev = match nvml.device_by_index(index) {
        Ok(d) => d,
        Err(e) => {
            gpu.error = Some(format!("NVML: device {index}: {e}"));
            return gpu;
        }
    };
    let mut first_error = |what: &str, e: NvmlError| {
        if gpu.error.is_none() {
            gpu.error = Some(format!("NVML: {what}: {e}"));
        }
    };
    let name = dev.name().map_err(|e| first_error("name", e)).ok();
    let uuid = dev.uuid().map_err(|e| first_error("uuid", e)).ok();
    let memory = dev.memory_info().map_err(|e| first_error("memory", e)).ok();
    let util = dev
        .utilization_rates()
        .map_err(|e| first_error("utilisation", e))
        .ok();
    let temp = dev
        .temperature(TemperatureSensor::Gpu)
        .map_err(|e| first_error("temperature", e))
        .ok();
    gpu.name = name;
    gpu.uuid = uuid;
    if let Some(m) = memory {
        gpu.vram_total_bytes = Some(m.total);
        gpu.vram_used_bytes = Some(m.used);
        gpu.vram_free_bytes = Some(m.free);
    }
    gpu.utilization_pct = util.map(|u| u.gpu);
    gpu.temperature_c = temp;
    gpu
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without an NVIDIA driver (CI, this machine) the answer is `absent` with a reason; with
    /// one, every device has a name and VRAM figures. Never a panic, never slow. On a Mac, the
    /// GPUs system_profiler lists, each named (unified memory has no VRAM figure).
    #[test]
    fn absent_or_real_devices() {
        let started = Instant::now();
        let mut probe = GpuProbe::new();
        let sample = probe.sample();
        if cfg!(target_os = "macos") {
            let gpus = sample.ok().expect("system_profiler lists this Mac's GPUs");
            assert!(!gpus.devices.is_empty());
            assert!(gpus.devices.iter().all(|d| d.name.is_some()));
            return;
        }
        match &sample {
            Probe::Absent { reason } => assert!(reason.starts_with("no NVIDIA GPU"), "{reason}"),
            Probe::Ok(g) => assert!(g.devices.iter().all(|d| d.vram_total_bytes.is_some())),
            Probe::Error { reason } => panic!("unexpected error: {reason}"),
        }
        if !std::path::Path::new("/dev/nvidiactl").exists() {
            assert_eq!(sample.status(), "absent");
            assert!(started.elapsed() < Duration::from_secs(2));
        }
    }
}
