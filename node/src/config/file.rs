//! The config file's shape, section by section, as serde reads it. Every key is documented in
//! `deploy/labmesh.example.toml`; [`super::Settings::resolve`] validates the values.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::LogFormat;

/// The config file's shape. Unknown keys are errors: a typo must not silently do nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub name: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub api_addr: Option<SocketAddr>,
    /// Host names (besides IP literals, `localhost` and this node's name) the API answers to.
    pub api_allowed_hosts: Option<Vec<String>>,
    /// Reads need the API token too (for an API on a LAN address).
    pub api_read_token: Option<bool>,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub mesh: MeshSection,
    #[serde(default)]
    pub probes: ProbesSection,
    #[serde(default)]
    pub admit: AdmitSection,
    #[serde(default)]
    pub workers: WorkersSection,
    #[serde(default)]
    pub remediation: RemediationSection,
    /// `[[check]]` tables (validated by `checks::config`, which needs their spans).
    #[serde(default, rename = "check")]
    pub checks: Vec<toml::Spanned<crate::checks::config::RawCheck>>,
    /// `[alerting]` knobs (validated by `alerting::Config`).
    #[serde(default)]
    pub alerting: alerting::config::KnobsToml,
    #[serde(default)]
    pub rule: Vec<toml::Spanned<alerting::rules::RuleToml>>,
    #[serde(default)]
    pub receiver: Vec<toml::Spanned<alerting::receiver::ReceiverToml>>,
    #[serde(default)]
    pub route: Vec<toml::Spanned<alerting::route::RouteToml>>,
    #[serde(default)]
    pub maintenance: Vec<toml::Spanned<alerting::silence::MaintenanceToml>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbesSection {
    pub interval: Option<String>,
    pub history_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmitSection {
    pub min_free_mem: Option<String>,
    pub min_free_vram: Option<String>,
    pub min_free_disk: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersSection {
    pub default_interval: Option<String>,
    pub missed_intervals: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemediationSection {
    pub enabled: Option<bool>,
    pub containers: Option<Vec<String>>,
    pub unhealthy_streak: Option<i64>,
    pub cooldown: Option<String>,
    pub max_per_hour: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshSection {
    pub name: Option<String>,
    pub gossip_addr: Option<SocketAddr>,
    pub advertise_addr: Option<SocketAddr>,
    pub seeds: Option<Vec<String>>,
    pub transient: Option<bool>,
    pub role: Option<String>,
    pub alerter_priority: Option<i64>,
    pub gossip_interval: Option<String>,
    pub offline_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub max_event_bytes: Option<usize>,
    pub rescan_interval: Option<String>,
    pub settle: Option<String>,
    pub max_clock_ahead: Option<String>,
    pub retention_days: Option<u32>,
    pub archive: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
}
