//! The key-values each node publishes in chitchat. Every value is small (a few bytes to a few
//! dozen; the host summary a few hundred): they ride in gossip deltas, so the whole set stays
//! under 1 KB per node.
//! Each node writes only its own keys; everyone reads everyone's.

use std::collections::BTreeMap;

/// Free-form role from the config (`workstation`, `vm`, `laptop`, ...). Default `peer`.
pub const ROLE: &str = "role";
/// labmesh version, e.g. `0.1.0`: mixed versions show in `labmesh status`.
pub const VERSION: &str = "version";
/// `linux`, `macos`, ... (Rust's `std::env::consts::OS`).
pub const OS: &str = "os";
/// The node's QUIC/gossip address as peers should dial it, `IP:PORT`.
pub const GOSSIP_ADDR: &str = "gossip_addr";
/// The node's HTTP API address, `IP:PORT` (loopback unless configured).
pub const API_ADDR: &str = "api_addr";
/// `true` for nodes that are often away (laptops): their absence is normal, they never page.
pub const TRANSIENT: &str = "transient";
/// Integer; the alerter is the live non-transient node with the highest value, then smallest
/// name.
pub const ALERTER_PRIORITY: &str = "alerter_priority";
/// Compute backend: `cuda`, `metal` or `cpu`.
pub const BACKEND: &str = "backend";
/// `up` while running; `left` is published just before a graceful shutdown.
pub const STATUS: &str = "status";
pub const STATUS_UP: &str = "up";
pub const STATUS_LEFT: &str = "left";
/// Prefix of revocation records (`rev.<first 16 hex of the fingerprint>` = signed record JSON),
/// re-published by every node that learns one so revocations spread without the CA holder.
pub const REVOCATION_PREFIX: &str = "rev.";
/// The names of the nodes this node hears directly, sorted and comma-separated; republished
/// when the set changes. An observer counts a node it cannot hear itself as up while more than
/// half of the other nodes it hears say they hear it (`liveness::vouch`).
pub const REACH: &str = "reach";
/// The node's live host summary: compact JSON with short keys (CPU, steal, memory, swap, disk,
/// VRAM, a 0–100 score), replaced every probe interval; a few hundred bytes at most. Its
/// format and its one reader are [`crate::summary::Summary`].
pub const SUMMARY: &str = "summary";

/// What a node says about itself (published once at start; `status` changes at shutdown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub role: String,
    pub version: String,
    pub os: String,
    pub gossip_addr: String,
    pub api_addr: String,
    pub transient: bool,
    pub alerter_priority: i64,
    pub backend: String,
}

impl NodeInfo {
    pub fn key_values(&self) -> Vec<(String, String)> {
        vec![
            (ROLE.into(), self.role.clone()),
            (VERSION.into(), self.version.clone()),
            (OS.into(), self.os.clone()),
            (GOSSIP_ADDR.into(), self.gossip_addr.clone()),
            (API_ADDR.into(), self.api_addr.clone()),
            (TRANSIENT.into(), self.transient.to_string()),
            (ALERTER_PRIORITY.into(), self.alerter_priority.to_string()),
            (BACKEND.into(), self.backend.clone()),
            (STATUS.into(), STATUS_UP.into()),
        ]
    }

    /// Reads what a peer published; missing keys become empty/defaults.
    pub fn from_key_values(kv: &BTreeMap<String, String>) -> NodeInfo {
        let get = |k: &str| kv.get(k).cloned().unwrap_or_default();
        NodeInfo {
            role: get(ROLE),
            version: get(VERSION),
            os: get(OS),
            gossip_addr: get(GOSSIP_ADDR),
            api_addr: get(API_ADDR),
            transient: get(TRANSIENT) == "true",
            alerter_priority: get(ALERTER_PRIORITY).parse().unwrap_or(0),
            backend: get(BACKEND),
        }
    }
}

/// The compute backend this machine offers: `metal` on macOS, `cuda` when an NVIDIA driver is
/// present, else `cpu`.
pub fn detect_backend() -> &'static str {
    if cfg!(target_os = "macos") {
        "metal"
    } else if std::path::Path::new("/dev/nvidiactl").exists()
        || std::path::Path::new("/proc/driver/nvidia/version").exists()
    {
        "cuda"
    } else {
        "cpu"
    }
}
