//! Settings: built-in defaults, then the TOML config file, then environment and flags.
//!
//! Every key of the config file is documented in `deploy/labmesh.example.toml` and can be
//! overridden by a flag or an environment variable (the binary's command line merges those two
//! into [`Overrides`]). Errors name the file, the line and the key.

mod alerting_tables;
mod file;
mod overrides;

pub use file::{
    AdmitSection, ConfigFile, LogSection, MeshSection, ProbesSection, StoreSection, WorkersSection,
};
pub use overrides::{AgentOverrides, FloorOverrides, Overrides, RemediationOverrides};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::admit::Floors;
use crate::drivers::workers::WorkerSettings;
use crate::error::UsageError;

pub const DEFAULT_API_ADDR: &str = "127.0.0.1:7371";

/// Everything resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_path: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub name: String,
    /// True when the name came from a flag, the environment or the config file (not the host
    /// name): then it must match this node's certificate.
    pub name_is_explicit: bool,
    pub api_addr: SocketAddr,
    pub max_event_bytes: usize,
    pub rescan_interval: Duration,
    pub settle: Duration,
    /// How far ahead of this node's clock a peer's event may be dated (timestamp or `hlc`).
    pub max_clock_ahead: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    pub mesh: MeshSettings,
    /// Events older than this many days are pruned (after being folded into the world state).
    pub retention_days: u32,
    /// Keep pruned days as `events-archive/YYYY-MM-DD.tar.zst` instead of only deleting them.
    pub archive_pruned: bool,
    /// Host names the API answers to besides IP literals, `localhost` and the node's name.
    pub api_allowed_hosts: Vec<String>,
    /// Reads need the API token too.
    pub api_read_token: bool,
    /// How often the agent samples the host (and republishes its gossip summary).
    pub probe_interval: Duration,
    /// How often the agent records its figures as a `host_sample` event (the digest's week).
    pub history_interval: Duration,
    /// What must stay free after an admitted job.
    pub floors: Floors,
    /// Health checks from `[[check]]` tables.
    pub checks: Vec<crate::checks::CheckDef>,
    pub workers: WorkerSettings,
    /// The unhealthy-container watchdog (`[remediation]`).
    pub remediation: crate::remediation::RemediationSettings,
    /// The alerting config (`[alerting]`, `[[rule]]`, `[[receiver]]`, `[[route]]`,
    /// `[[maintenance]]`), validated.
    pub alerting: alerting::Config,
}

/// The mesh part of the settings.
#[derive(Debug, Clone)]
pub struct MeshSettings {
    pub mesh_name: String,
    pub gossip_addr: SocketAddr,
    pub advertise_addr: Option<SocketAddr>,
    pub seeds: Vec<String>,
    pub join: Option<PathBuf>,
    pub transient: bool,
    pub role: String,
    pub alerter_priority: i64,
    pub gossip_interval: Duration,
    pub offline_after: Duration,
}

pub const DEFAULT_GOSSIP_ADDR: &str = "0.0.0.0:7370";

/// How the agent writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, text when it is.
    Auto,
    Json,
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(LogFormat::Auto),
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            _ => Err(format!("{s:?}: use auto, json or text")),
        }
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// `/var/lib/labmesh` as root, else `$XDG_DATA_HOME/labmesh` or `~/.local/share/labmesh`.
pub fn default_data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/labmesh");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(xdg).join("labmesh");
    }
    home()
        .map(|h| h.join(".local/share/labmesh"))
        .unwrap_or_else(|| PathBuf::from(".labmesh"))
}

fn default_config_path() -> Option<PathBuf> {
    if is_root() {
        return Some(PathBuf::from("/etc/labmesh/labmesh.toml"));
    }
    if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(xdg).join("labmesh/labmesh.toml"));
    }
    home().map(|h| h.join(".config/labmesh/labmesh.toml"))
}

/// The machine's host name, as `gethostname` reports it.
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Parses `250ms`, `30s`, `5m`, `2h`, `7d`, `1w` (or a plain number of seconds): one parser for
/// every duration in the config file, the alerting tables' included.
pub use alerting::util::parse_duration;

/// Admission floors: flag or environment, else the config file, else `base`.
pub fn resolve_floors(
    flags: Option<&FloorOverrides>,
    file: &AdmitSection,
    base: Floors,
    from_file: &dyn Fn(&str) -> String,
) -> Result<Floors, UsageError> {
    let size = |flag: Option<&String>, file_value: &Option<String>, key: &str, default: u64| match (
        flag, file_value,
    ) {
        (Some(text), _) => crate::admit::parse_size(text)
            .map_err(|e| UsageError(format!("--{}: {e}", key.replace('_', "-")))),
        (None, Some(text)) => crate::admit::parse_size(text)
            .map_err(|e| UsageError(format!("{}: {e}", from_file(&format!("admit.{key}"))))),
        (None, None) => Ok(default),
    };
    Ok(Floors {
        mem: size(
            flags.and_then(|f| f.min_free_mem.as_ref()),
            &file.min_free_mem,
            "min_free_mem",
            base.mem,
        )?,
        vram: size(
            flags.and_then(|f| f.min_free_vram.as_ref()),
            &file.min_free_vram,
            "min_free_vram",
            base.vram,
        )?,
        disk: size(
            flags.and_then(|f| f.min_free_disk.as_ref()),
            &file.min_free_disk,
            "min_free_disk",
            base.disk,
        )?,
    })
}

/// The config file, parsed, with its `[[check]]` tables validated.
struct Loaded {
    path: Option<PathBuf>,
    file: ConfigFile,
    checks: Vec<crate::checks::CheckDef>,
    alerting: alerting::Config,
}

fn load_config(explicit: Option<&Path>) -> Result<Loaded, UsageError> {
    let (path, text) = read_config(explicit)?;
    let Some(path) = path else {
        return Ok(Loaded {
            path: None,
            file: ConfigFile::default(),
            checks: Vec::new(),
            alerting: alerting::Config::default(),
        });
    };
    let (file, checks, alerting) = parse_config(&text)
        .map_err(|e| UsageError(format!("config file {}: {e}", path.display())))?;
    Ok(Loaded {
        path: Some(path),
        file,
        checks,
        alerting,
    })
}

/// Parses and validates a config file's text: its keys, `[[check]]` and alerting tables. The
/// error names the line, column and key. (Also the config fuzz target.)
pub fn parse_config(
    text: &str,
) -> Result<(ConfigFile, Vec<crate::checks::CheckDef>, alerting::Config), String> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
    let checks = crate::checks::config::validate_all(text, &file.checks)
        .map_err(|e| crate::checks::config::describe(text, &e))?;
    let alerting = alerting_tables::validate_config(text, &file)?;
    Ok((file, checks, alerting))
}

/// The config file's path and text; no path when there is no file to read.
fn read_config(explicit: Option<&Path>) -> Result<(Option<PathBuf>, String), UsageError> {
    let (path, must_exist) = match explicit {
        Some(p) => (Some(p.to_owned()), true),
        None => (default_config_path(), false),
    };
    let Some(path) = path else {
        return Ok((None, String::new()));
    };
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok((Some(path), t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
            Ok((None, String::new()))
        }
        Err(e) => Err(UsageError(format!("config file {}: {e}", path.display()))),
    }
}

/// toml's message with a `line N, column M` prefix computed from its span.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().to_owned();
    match e.span() {
        Some(span) => {
            let (line, column) = crate::checks::config::line_col(text, span.start);
            let key = text.get(span.clone()).unwrap_or("").trim();
            format!("line {line}, column {column} (`{key}`): {message}")
        }
        None => message,
    }
}

impl Settings {
    /// Resolves the settings: `over` (flags and environment), then the config file, then the
    /// defaults. `over.agent` is set for the agent; other commands share the rest.
    pub fn resolve(over: &Overrides) -> Result<Settings, UsageError> {
        let global = over;
        let agent = over.agent.as_ref();
        let Loaded {
            path: config_path,
            file,
            checks,
            alerting,
        } = load_config(global.config.as_deref())?;
        let from_file = |key: &str| match &config_path {
            Some(p) => format!("config file {}: `{key}`", p.display()),
            None => format!("`{key}`"),
        };
        let explicit = global
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .or(file.name.clone());
        let name_is_explicit = explicit.is_some();
        let data_dir = global
            .data_dir
            .clone()
            .filter(|d| !d.as_os_str().is_empty())
            .or(file.data_dir.clone())
            .unwrap_or_else(default_data_dir);
        // Without an explicit name, this node's certificate names it (it may have joined with a
        // bundle for another name than the host name); else the host name, in lower case.
        let name = match explicit {
            Some(n) => n,
            None => certs::NodeIdentity::load(&data_dir.join("certs"))
                .ok()
                .flatten()
                .map(|id| id.node().to_owned())
                .unwrap_or_else(|| host_name().to_ascii_lowercase()),
        };
        if let Err(e) = sync::event::validate_node(&name) {
            return Err(UsageError(format!(
                "node name: {e} (pass --name, set LABMESH_NAME, or set `name` in the config file)"
            )));
        }
        let api_addr = match global.api_addr.or(file.api_addr) {
            Some(a) => a,
            None => DEFAULT_API_ADDR
                .parse()
                .map_err(|_| UsageError("internal: bad default API address".into()))?,
        };
        let max_event_bytes = global
            .max_event_bytes
            .or(file.store.max_event_bytes)
            .unwrap_or(sync::event::DEFAULT_MAX_EVENT_BYTES);
        if max_event_bytes < 256 {
            return Err(UsageError(format!(
                "{}: {max_event_bytes} bytes is too small for any event; use at least 256 (default 65536)",
                from_file("store.max_event_bytes")
            )));
        }
        let duration =
            |flag: Option<&String>, file_value: &Option<String>, key: &str, default: Duration| {
                match flag.or(file_value.as_ref()) {
                    Some(text) => parse_duration(text)
                        .map_err(|e| UsageError(format!("{}: {e}", from_file(key)))),
                    None => Ok(default),
                }
            };
        let rescan_interval = duration(
            agent.and_then(|a| a.rescan_interval.as_ref()),
            &file.store.rescan_interval,
            "store.rescan_interval",
            Duration::from_secs(30),
        )?;
        if rescan_interval < Duration::from_millis(100) {
            return Err(UsageError(format!(
                "{}: must be at least 100ms",
                from_file("store.rescan_interval")
            )));
        }
        let settle = duration(
            agent.and_then(|a| a.settle.as_ref()),
            &file.store.settle,
            "store.settle",
            Duration::from_secs(5),
        )?;
        let max_clock_ahead = duration(
            agent.and_then(|a| a.max_clock_ahead.as_ref()),
            &file.store.max_clock_ahead,
            "store.max_clock_ahead",
            sync::store::DEFAULT_MAX_CLOCK_AHEAD,
        )?;
        let log_format = agent
            .and_then(|a| a.log_format)
            .or(file.log.format)
            .unwrap_or(LogFormat::Auto);
        let log_level = agent
            .and_then(|a| a.log_level.clone())
            .or(file.log.level.clone())
            .unwrap_or_else(|| "info".to_owned());
        let m = &file.mesh;
        let gossip_interval = duration(
            agent.and_then(|a| a.gossip_interval.as_ref()),
            &m.gossip_interval,
            "mesh.gossip_interval",
            Duration::from_millis(300),
        )?;
        if gossip_interval < Duration::from_millis(20) || gossip_interval > Duration::from_secs(60)
        {
            return Err(UsageError(format!(
                "{}: must be between 20ms and 60s (default 300ms)",
                from_file("mesh.gossip_interval")
            )));
        }
        let offline_after = duration(
            agent.and_then(|a| a.offline_after.as_ref()),
            &m.offline_after,
            "mesh.offline_after",
            Duration::from_secs(30),
        )?;
        let seeds = match agent.map(|a| a.seeds.clone()).filter(|s| !s.is_empty()) {
            Some(s) => s,
            None => m.seeds.clone().unwrap_or_default(),
        };
        let mesh = MeshSettings {
            mesh_name: agent
                .and_then(|a| a.mesh.clone())
                .or(m.name.clone())
                .unwrap_or_else(|| "labmesh".to_owned()),
            gossip_addr: match agent.and_then(|a| a.gossip_addr).or(m.gossip_addr) {
                Some(a) => a,
                None => DEFAULT_GOSSIP_ADDR
                    .parse()
                    .map_err(|_| UsageError("internal: bad default gossip address".into()))?,
            },
            advertise_addr: agent.and_then(|a| a.advertise_addr).or(m.advertise_addr),
            seeds: seeds.into_iter().filter(|s| !s.trim().is_empty()).collect(),
            join: agent.and_then(|a| a.join.clone()),
            transient: agent.is_some_and(|a| a.transient) || m.transient.unwrap_or(false),
            role: agent
                .and_then(|a| a.role.clone())
                .or(m.role.clone())
                .unwrap_or_else(|| "peer".to_owned()),
            alerter_priority: agent
                .and_then(|a| a.alerter_priority)
                .or(m.alerter_priority)
                .unwrap_or(0),
            gossip_interval,
            offline_after,
        };
        let retention_days = agent
            .and_then(|a| a.retention_days)
            .or(file.store.retention_days)
            .unwrap_or(30);
        if retention_days == 0 {
            return Err(UsageError(format!(
                "{}: must be at least 1 day (default 30)",
                from_file("store.retention_days")
            )));
        }
        let mut api_allowed_hosts: Vec<String> = agent
            .map(|a| a.api_allowed_hosts.clone())
            .filter(|h| !h.is_empty())
            .or_else(|| file.api_allowed_hosts.clone())
            .unwrap_or_default();
        for host in &mut api_allowed_hosts {
            *host = host.trim().to_ascii_lowercase();
            if host.is_empty() || host.contains(['/', ' ', '@']) {
                return Err(UsageError(format!(
                    "{}: {host:?} is not a host name; list names such as \"labmesh.home.lan\"",
                    from_file("api_allowed_hosts")
                )));
            }
        }
        let api_read_token = agent
            .and_then(|a| a.api_read_token)
            .or(file.api_read_token)
            .unwrap_or(false);
        let archive_pruned = agent
            .and_then(|a| a.archive_pruned)
            .or(file.store.archive)
            .unwrap_or(false);
        let probe_interval = duration(
            agent.and_then(|a| a.probe_interval.as_ref()),
            &file.probes.interval,
            "probes.interval",
            Duration::from_secs(10),
        )?;
        if probe_interval < Duration::from_secs(1) || probe_interval > Duration::from_secs(3600) {
            return Err(UsageError(format!(
                "{}: must be between 1s and 1h (default 10s)",
                from_file("probes.interval")
            )));
        }
        let history_interval = duration(
            agent.and_then(|a| a.history_interval.as_ref()),
            &file.probes.history_interval,
            "probes.history_interval",
            Duration::from_secs(3600),
        )?;
        if history_interval < Duration::from_secs(1)
            || history_interval > Duration::from_secs(86_400)
        {
            return Err(UsageError(format!(
                "{}: must be between 1s and 1d (default 1h)",
                from_file("probes.history_interval")
            )));
        }
        let floors = resolve_floors(
            agent.map(|a| &a.floors),
            &file.admit,
            Floors::default(),
            &from_file,
        )?;
        let workers = WorkerSettings {
            default_interval: duration(
                agent.and_then(|a| a.worker_interval.as_ref()),
                &file.workers.default_interval,
                "workers.default_interval",
                Duration::from_secs(30),
            )?,
            missed_intervals: agent
                .and_then(|a| a.worker_missed_intervals)
                .or(file.workers.missed_intervals)
                .unwrap_or(2),
        };
        if workers.default_interval < Duration::from_millis(100) {
            return Err(UsageError(format!(
                "{}: must be at least 100ms (default 30s)",
                from_file("workers.default_interval")
            )));
        }
        if workers.missed_intervals == 0 {
            return Err(UsageError(format!(
                "{}: must be at least 1 (default 2)",
                from_file("workers.missed_intervals")
            )));
        }
        let remediation = {
            let flags = agent.map(|a| &a.remediation);
            let section = &file.remediation;
            let defaults = crate::remediation::RemediationSettings::default();
            let mut containers = section.containers.clone().unwrap_or_default();
            containers.extend(flags.map(|f| f.containers.clone()).unwrap_or_default());
            containers.sort();
            containers.dedup();
            let r = crate::remediation::RemediationSettings {
                enabled: !flags.is_some_and(|f| f.off) && section.enabled.unwrap_or(true),
                unhealthy_streak: flags
                    .and_then(|f| f.unhealthy_streak)
                    .or(section.unhealthy_streak)
                    .unwrap_or(defaults.unhealthy_streak),
                cooldown: duration(
                    flags.and_then(|f| f.cooldown.as_ref()),
                    &section.cooldown,
                    "remediation.cooldown",
                    defaults.cooldown,
                )?,
                max_per_hour: flags
                    .and_then(|f| f.max_per_hour)
                    .or(section.max_per_hour)
                    .unwrap_or(defaults.max_per_hour),
                containers,
            };
            if r.unhealthy_streak < 1 {
                return Err(UsageError(format!(
                    "{}: must be at least 1 (default 3)",
                    from_file("remediation.unhealthy_streak")
                )));
            }
            if r.max_per_hour < 1 {
                return Err(UsageError(format!(
                    "{}: must be at least 1 (default 3; `enabled = false` turns restarts off)",
                    from_file("remediation.max_per_hour")
                )));
            }
            r
        };
        Ok(Settings {
            remediation,
            alerting,
            probe_interval,
            history_interval,
            floors,
            checks,
            workers,
            retention_days,
            archive_pruned,
            api_allowed_hosts,
            api_read_token,
            mesh,
            name_is_explicit,
            config_path,
            data_dir,
            name,
            api_addr,
            max_event_bytes,
            rescan_interval,
            settle,
            max_clock_ahead,
            log_format,
            log_level,
        })
    }

    pub fn store_config(&self) -> sync::StoreConfig {
        let mut cfg = sync::StoreConfig::new(&self.data_dir, &self.name);
        cfg.max_event_bytes = self.max_event_bytes;
        cfg.settle = self.settle;
        cfg.max_clock_ahead = self.max_clock_ahead;
        if let Some(offset) = std::env::var("LABMESH_CLOCK_OFFSET_MS")
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
        {
            cfg.clock = std::sync::Arc::new(sync::SystemClock { offset_ms: offset });
            sync::clock::set_offset_ms(offset);
        }
        cfg
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.data_dir.join("certs")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join("state")
    }

    pub fn token_path(&self) -> PathBuf {
        self.data_dir.join("api-token")
    }
}

#[cfg(test)]
mod tests;
