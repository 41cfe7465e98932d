//! What the alerting core needs from a node's gossiped metrics summary.
//!
//! The mesh publishes a small live summary per node in its chitchat key-values; the node crate
//! maps it onto [`NodeSummary`]. Every measurement is optional: a Mac without `/proc/stat` has
//! no CPU steal, a VM has no GPU, and a missing number must never read as zero (which would
//! look healthy for "used" and alarming for "available").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One node's live measurements at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSummary {
    pub node: String,
    /// When the node sampled these values (its clock, as gossiped).
    pub at: DateTime<Utc>,
    /// Total CPU busy, percent of all cores (0–100).
    pub cpu_percent: Option<f64>,
    /// CPU steal, percent (time the hypervisor gave our vCPUs to someone else).
    pub cpu_steal_percent: Option<f64>,
    pub mem_available_bytes: Option<u64>,
    pub mem_total_bytes: Option<u64>,
    pub swap_used_bytes: Option<u64>,
    pub disks: Vec<DiskUsage>,
    pub gpus: Vec<GpuUsage>,
}

/// One mounted file system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskUsage {
    pub mount: String,
    pub used_bytes: u64,
    pub total_bytes: u64,
}

/// One GPU's memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuUsage {
    /// `gpu0`, `gpu1`, ... (NVML index order) or a model name; it becomes part of the subject.
    pub name: String,
    pub vram_used_bytes: u64,
    pub vram_total_bytes: u64,
}

impl NodeSummary {
    /// An empty summary (every measurement unknown), to fill field by field.
    pub fn new(node: &str, at: DateTime<Utc>) -> Self {
        NodeSummary {
            node: node.to_owned(),
            at,
            cpu_percent: None,
            cpu_steal_percent: None,
            mem_available_bytes: None,
            mem_total_bytes: None,
            swap_used_bytes: None,
            disks: Vec::new(),
            gpus: Vec::new(),
        }
    }

    /// Available memory as a percentage of total, when both are known and total is not zero.
    pub fn mem_available_percent(&self) -> Option<f64> {
        match (self.mem_available_bytes, self.mem_total_bytes) {
            (Some(avail), Some(total)) if total > 0 => Some(avail as f64 * 100.0 / total as f64),
            _ => None,
        }
    }
}

impl DiskUsage {
    pub fn used_percent(&self) -> Option<f64> {
        (self.total_bytes > 0).then(|| self.used_bytes as f64 * 100.0 / self.total_bytes as f64)
    }
}

impl GpuUsage {
    pub fn used_percent(&self) -> Option<f64> {
        (self.vram_total_bytes > 0)
            .then(|| self.vram_used_bytes as f64 * 100.0 / self.vram_total_bytes as f64)
    }
}
