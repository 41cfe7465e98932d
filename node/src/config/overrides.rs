//! What the command line (flags and their environment variables) says, as plain data: the
//! binary's `cli` fills these, [`crate::config::Settings::resolve`] lays them over the config
//! file and the defaults. No clap here: the library does not know how its caller parsed them.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Overrides every command accepts.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub name: Option<String>,
    pub api_addr: Option<SocketAddr>,
    pub max_event_bytes: Option<usize>,
    /// Set for `labmesh agent` and `labmesh join`.
    pub agent: Option<AgentOverrides>,
}

/// Overrides of the agent's settings (`labmesh agent` flags). Durations and sizes stay text:
/// they are parsed with the config file's parsers, so an error reads the same either way.
#[derive(Debug, Clone, Default)]
pub struct AgentOverrides {
    pub gossip_addr: Option<SocketAddr>,
    pub advertise_addr: Option<SocketAddr>,
    pub seeds: Vec<String>,
    pub join: Option<PathBuf>,
    pub transient: bool,
    pub role: Option<String>,
    pub alerter_priority: Option<i64>,
    pub mesh: Option<String>,
    pub gossip_interval: Option<String>,
    pub offline_after: Option<String>,
    pub rescan_interval: Option<String>,
    pub settle: Option<String>,
    pub max_clock_ahead: Option<String>,
    pub retention_days: Option<u32>,
    pub archive_pruned: Option<bool>,
    pub api_allowed_hosts: Vec<String>,
    pub api_read_token: Option<bool>,
    pub log_format: Option<super::LogFormat>,
    pub log_level: Option<String>,
    pub probe_interval: Option<String>,
    pub history_interval: Option<String>,
    pub floors: FloorOverrides,
    pub worker_interval: Option<String>,
    pub worker_missed_intervals: Option<u32>,
    pub remediation: RemediationOverrides,
}

/// The unhealthy-container watchdog from flags (`--restart-unhealthy NAME`, ...).
#[derive(Debug, Clone, Default)]
pub struct RemediationOverrides {
    pub off: bool,
    pub containers: Vec<String>,
    pub unhealthy_streak: Option<i64>,
    pub cooldown: Option<String>,
    pub max_per_hour: Option<u32>,
}

/// Admission floors from flags (`--min-free-mem 2G`, ...).
#[derive(Debug, Clone, Default)]
pub struct FloorOverrides {
    pub min_free_mem: Option<String>,
    pub min_free_vram: Option<String>,
    pub min_free_disk: Option<String>,
}
