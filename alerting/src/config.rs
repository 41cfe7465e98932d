//! The alerting part of the config file: knobs, `[[rule]]`, `[[receiver]]`, `[[route]]`,
//! `[[maintenance]]`. Every knob has a default; an empty config alerts with the shipped rules
//! and records alerts, and sends nothing until a receiver exists.
//!
//! ```toml
//! [alerting]
//! settle = "10s"
//! group_wait = "30s"
//!
//! [[receiver]]
//! kind = "ntfy"
//! topic = "homelab-alerts"
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::election::ElectionConfig;
use crate::receiver::{Receiver, ReceiverError, ReceiverToml};
use crate::route::{GroupTiming, Route, RouteError, RouteToml};
use crate::rules::{RuleError, RuleSet, RuleToml};
use crate::silence::{MaintenanceError, MaintenanceToml, MaintenanceWindow};
use crate::util::parse_duration;

/// `[alerting]`: the knobs. See [`ElectionConfig`], [`GroupTiming`], [`RetryPolicy`] and
/// [`PipelineConfig`] for what each one trades.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnobsToml {
    pub settle: Option<String>,
    /// The nodes that may be alerter, most preferred first (this node's own choice: what peers
    /// claim about themselves does not count).
    pub alerters: Option<Vec<String>>,
    pub group_wait: Option<String>,
    pub group_interval: Option<String>,
    pub repeat_interval: Option<String>,
    pub retry_initial: Option<String>,
    pub retry_max: Option<String>,
    pub retry_give_up_after: Option<String>,
    pub send_timeout: Option<String>,
    pub attempt_stale_after: Option<String>,
    /// Link to this mesh's web page, put in notifications.
    pub external_url: Option<String>,
    /// When the weekly digest goes out, local time: `"Mon 08:00"` (the default) or `"off"`.
    /// The node reads and checks it; the core only carries it.
    pub digest: Option<String>,
}

/// The alerting tables of a config file. The node may embed these fields in its own file
/// struct; [`Config::from_toml_str`] reads a file holding only them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingToml {
    #[serde(default)]
    pub alerting: KnobsToml,
    #[serde(default)]
    pub rule: Vec<RuleToml>,
    #[serde(default)]
    pub receiver: Vec<ReceiverToml>,
    #[serde(default)]
    pub route: Vec<RouteToml>,
    #[serde(default)]
    pub maintenance: Vec<MaintenanceToml>,
}

/// Why the alerting config was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("alerting config: {0}")]
    Toml(String),
    #[error("[alerting] `{field}`: {problem}")]
    Knob {
        field: &'static str,
        problem: String,
    },
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error(transparent)]
    Receiver(#[from] ReceiverError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Maintenance(#[from] MaintenanceError),
    #[error("receiver `{0}` is defined twice; give one of them another `name`")]
    DuplicateReceiver(String),
    #[error("route to `{0}`: no [[receiver]] has that name")]
    UnknownReceiver(String),
}

/// `alerters`: node names, each once.
fn alerters(names: Option<&[String]>) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(names) = names else {
        return Ok(None);
    };
    let bad = |problem: String| ConfigError::Knob {
        field: "alerters",
        problem,
    };
    if names.is_empty() {
        return Err(bad(
            "an empty list would leave nobody to send alerts; list the nodes that may (most preferred first), or remove the key to let every non-transient node".into(),
        ));
    }
    for (i, n) in names.iter().enumerate() {
        sync::event::validate_node(n).map_err(|e| bad(format!("{n:?}: {e}")))?;
        if names[..i].contains(n) {
            return Err(bad(format!("{n:?} is listed twice")));
        }
    }
    Ok(Some(names.to_vec()))
}

/// Everything the engine needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub election: ElectionConfig,
    pub rules: RuleSet,
    pub receivers: Vec<Receiver>,
    pub pipeline: PipelineConfig,
    pub maintenance: Vec<MaintenanceWindow>,
    /// `[alerting] digest`, as written, `"Mon 08:00"` when unset (the node parses it).
    pub digest: Option<String>,
}

impl Default for Config {
    /// The shipped rules, no receivers: alerts are recorded, nothing is sent.
    fn default() -> Self {
        // The shipped defaults are tested to parse; an empty table set cannot fail.
        Config::try_from(AlertingToml::default()).unwrap_or_else(|_| Config {
            election: ElectionConfig::default(),
            rules: RuleSet { rules: Vec::new() },
            receivers: Vec::new(),
            pipeline: PipelineConfig::default(),
            maintenance: Vec::new(),
            digest: None,
        })
    }
}

impl Config {
    /// Reads a TOML document holding only the alerting tables.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let t: AlertingToml = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        Config::try_from(t)
    }
}

fn knob(
    field: &'static str,
    v: &Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(t) => parse_duration(t).map_err(|problem| ConfigError::Knob { field, problem }),
    }
}

impl TryFrom<AlertingToml> for Config {
    type Error = ConfigError;

    fn try_from(t: AlertingToml) -> Result<Config, ConfigError> {
        let k = &t.alerting;
        let d = GroupTiming::default();
        let timing = GroupTiming {
            group_wait: knob("group_wait", &k.group_wait, d.group_wait)?,
            group_interval: knob("group_interval", &k.group_interval, d.group_interval)?,
            repeat_interval: knob("repeat_interval", &k.repeat_interval, d.repeat_interval)?,
        };
        let r = RetryPolicy::default();
        let p = PipelineConfig::default();
        let retry = RetryPolicy {
            initial: knob("retry_initial", &k.retry_initial, r.initial)?,
            max: knob("retry_max", &k.retry_max, r.max)?,
            give_up_after: knob(
                "retry_give_up_after",
                &k.retry_give_up_after,
                r.give_up_after,
            )?,
        };
        let send_timeout = knob("send_timeout", &k.send_timeout, p.send_timeout)?;
        let attempt_stale_after = knob(
            "attempt_stale_after",
            &k.attempt_stale_after,
            p.attempt_stale_after,
        )?;
        if attempt_stale_after <= send_timeout {
            return Err(ConfigError::Knob {
                field: "attempt_stale_after",
                problem: "must be longer than `send_timeout`, or a slow send is duplicated by another node".into(),
            });
        }
        let mut receivers: Vec<Receiver> = Vec::new();
        for rt in t.receiver {
            let r = Receiver::try_from(rt)?;
            if receivers.iter().any(|x| x.name == r.name) {
                return Err(ConfigError::DuplicateReceiver(r.name));
            }
            receivers.push(r);
        }
        let routes = if t.route.is_empty() {
            receivers
                .iter()
                .map(|r| Route::catch_all(&r.name, timing))
                .collect()
        } else {
            let mut routes = Vec::new();
            for rt in t.route {
                if !receivers.iter().any(|r| r.name == rt.receiver) {
                    return Err(ConfigError::UnknownReceiver(rt.receiver));
                }
                routes.push(Route::from_toml(rt, timing)?);
            }
            routes
        };
        let maintenance = t
            .maintenance
            .into_iter()
            .map(MaintenanceWindow::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            election: ElectionConfig {
                settle: knob("settle", &k.settle, ElectionConfig::default().settle)?,
                alerters: alerters(k.alerters.as_deref())?,
            },
            rules: RuleSet::with_overrides(t.rule)?,
            receivers,
            pipeline: PipelineConfig {
                routes,
                retry,
                send_timeout,
                attempt_stale_after,
                external_url: k.external_url.clone(),
            },
            maintenance,
            digest: Some(k.digest.clone().unwrap_or_else(|| "Mon 08:00".to_owned())),
        })
    }
}

/// Retries of a failed send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First retry after this; each next one waits twice as long. Default 10 s: a receiver
    /// that blipped is back, and a restarting one is not hammered.
    pub initial: Duration,
    /// Cap on the wait between retries. Default 5 min: a receiver that comes back is used
    /// within minutes.
    pub max: Duration,
    /// Give up (a final `notification_failed`) this long after the first attempt. Default 4 h,
    /// the repeat interval: a reminder would be due by then anyway.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            give_up_after: Duration::from_secs(4 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Pipeline knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub routes: Vec<Route>,
    pub retry: RetryPolicy,
    /// The driver abandons a send after this and reports it failed. Default 30 s.
    pub send_timeout: Duration,
    /// How long other nodes wait for an attempt without an outcome (or for a scheduled retry)
    /// before they presume its node dead and send themselves. Longer than `send_timeout`.
    /// Longer: fewer duplicates after a crash mid-send; shorter: less delay. Default 2 min.
    pub attempt_stale_after: Duration,
    /// Link to the labmesh web page, put in messages.
    pub external_url: Option<String>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            routes: Vec::new(),
            retry: RetryPolicy::default(),
            send_timeout: Duration::from_secs(30),
            attempt_stale_after: Duration::from_secs(120),
            external_url: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_config_has_the_defaults_and_no_receivers() {
        let c = Config::from_toml_str("").unwrap();
        assert!(c.receivers.is_empty() && c.pipeline.routes.is_empty());
        assert_eq!(c.election.settle, Duration::from_secs(10));
        assert!(c.rules.get("disk_used").is_some());
        assert_eq!(c, Config::default());
    }

    #[test]
    fn a_lone_receiver_gets_a_catch_all_route() {
        let c = Config::from_toml_str(
            "[alerting]\ngroup_wait = \"10s\"\n[[receiver]]\nkind = \"ntfy\"\ntopic = \"lab\"\n",
        )
        .unwrap();
        assert_eq!(c.pipeline.routes.len(), 1);
        assert_eq!(c.pipeline.routes[0].receiver, "ntfy");
        assert_eq!(
            c.pipeline.routes[0].timing.group_wait,
            Duration::from_secs(10)
        );
    }

    #[test]
    fn cross_references_and_knobs_are_checked() {
        let e = Config::from_toml_str(
            "[[receiver]]\nkind = \"ntfy\"\ntopic = \"a\"\n[[route]]\nreceiver = \"phone\"\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "route to `phone`: no [[receiver]] has that name"
        );
        let e = Config::from_toml_str("[[receiver]]\nkind = \"ntfy\"\ntopic = \"a\"\n[[receiver]]\nkind = \"ntfy\"\ntopic = \"b\"\n").unwrap_err();
        assert!(matches!(e, ConfigError::DuplicateReceiver(_)));
        let e = Config::from_toml_str("[alerting]\nsend_timeout = \"5m\"\n").unwrap_err();
        assert!(e.to_string().contains("attempt_stale_after"));
        let e = Config::from_toml_str("[alerting]\nsetle = \"1s\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `setle`"));
    }
}
