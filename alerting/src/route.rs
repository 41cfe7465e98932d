//! Routing: which receivers hear about which alerts, and how they are grouped and paced.
//!
//! Routes are tried in order; the first that matches takes the alert, unless it says
//! `continue = true`, in which case later routes are tried too. With no `[[route]]` at all,
//! every receiver gets every alert of severity warning and above, so a three-line receiver
//! works on its own.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sync::Severity;

use crate::silence::labels_match;
use crate::util::{Labels, parse_duration};

/// Grouping and pacing, as Alertmanager's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupTiming {
    /// Wait this long after a group's first alert before its first notification, so alerts that
    /// start together (a host going down) arrive as one message. Longer: fewer messages;
    /// shorter: earlier news. Default 30 s.
    pub group_wait: Duration,
    /// Then at most one notification per group per this interval, whatever flaps inside it.
    /// Default 5 min.
    pub group_interval: Duration,
    /// Remind about alerts still firing after this long. Default 4 h: long enough not to nag,
    /// short enough that a forgotten alert resurfaces the same day.
    pub repeat_interval: Duration,
}

impl Default for GroupTiming {
    fn default() -> Self {
        GroupTiming {
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
        }
    }
}

/// `[[route]]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteToml {
    pub receiver: String,
    /// Only alerts at least this severe.
    pub min_severity: Option<String>,
    /// Label globs (`node`, `service`, `rule`, `severity`, ...); all must match.
    #[serde(default)]
    pub matchers: Labels,
    /// Labels whose values split alerts into groups (default `["rule"]`).
    pub group_by: Option<Vec<String>>,
    pub group_wait: Option<String>,
    pub group_interval: Option<String>,
    pub repeat_interval: Option<String>,
    /// Tell this receiver when alerts resolve (default true).
    pub send_resolved: Option<bool>,
    /// Keep trying later routes after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
}

/// A validated route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub receiver: String,
    pub min_severity: Severity,
    pub matchers: Labels,
    pub group_by: Vec<String>,
    pub timing: GroupTiming,
    pub send_resolved: bool,
    pub continue_: bool,
}

/// Why a route was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("route to `{receiver}`: {problem}")]
pub struct RouteError {
    pub receiver: String,
    pub problem: String,
}

impl Route {
    /// A route from its TOML, with `defaults` for the timing it does not set.
    pub fn from_toml(t: RouteToml, defaults: GroupTiming) -> Result<Route, RouteError> {
        let err = |problem: String| RouteError {
            receiver: t.receiver.clone(),
            problem,
        };
        let dur = |field: &str, v: &Option<String>, d: Duration| match v {
            None => Ok(d),
            Some(text) => parse_duration(text).map_err(|e| err(format!("field `{field}`: {e}"))),
        };
        let timing = GroupTiming {
            group_wait: dur("group_wait", &t.group_wait, defaults.group_wait)?,
            group_interval: dur("group_interval", &t.group_interval, defaults.group_interval)?,
            repeat_interval: dur(
                "repeat_interval",
                &t.repeat_interval,
                defaults.repeat_interval,
            )?,
        };
        if timing.group_interval.is_zero() {
            return Err(err("`group_interval` must be longer than zero".into()));
        }
        let min_severity = match &t.min_severity {
            None => Severity::Warning,
            Some(s) => s.parse().map_err(|_| {
                err(format!(
                    "`min_severity = \"{s}\"`: use info, warning, error or critical"
                ))
            })?,
        };
        Ok(Route {
            receiver: t.receiver.clone(),
            min_severity,
            matchers: t.matchers.clone(),
            group_by: t.group_by.clone().unwrap_or_else(|| vec!["rule".into()]),
            timing,
            send_resolved: t.send_resolved.unwrap_or(true),
            continue_: t.continue_,
        })
    }

    /// The catch-all route used for each receiver when no route is configured.
    pub fn catch_all(receiver: &str, timing: GroupTiming) -> Route {
        Route {
            receiver: receiver.to_owned(),
            min_severity: Severity::Warning,
            matchers: Labels::new(),
            group_by: vec!["rule".into()],
            timing,
            send_resolved: true,
            continue_: true,
        }
    }

    pub fn matches(&self, labels: &Labels, severity: Severity) -> bool {
        severity >= self.min_severity && labels_match(&self.matchers, labels)
    }

    /// The group of an alert on this route: its `group_by` label values.
    pub fn group_labels(&self, labels: &Labels) -> Labels {
        self.group_by
            .iter()
            .map(|k| (k.clone(), labels.get(k).cloned().unwrap_or_default()))
            .collect()
    }
}

/// The indexes of the routes an alert takes, in order.
pub fn routes_for(routes: &[Route], labels: &Labels, severity: Severity) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        if r.matches(labels, severity) {
            out.push(i);
            if !r.continue_ {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(toml_text: &str) -> Route {
        Route::from_toml(toml::from_str(toml_text).unwrap(), GroupTiming::default()).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn first_match_wins_unless_continue() {
        let routes = vec![
            route(
                "receiver = \"pager\"\nmin_severity = \"critical\"\ncontinue = true\ngroup_wait = \"0s\"",
            ),
            route("receiver = \"gpu-team\"\nmatchers = { service = \"ollama*\" }"),
            route("receiver = \"chat\""),
        ];
        assert_eq!(routes[0].timing.group_wait, Duration::ZERO);
        assert_eq!(routes[1].timing.group_interval, Duration::from_secs(300));
        let ollama = labels(&[("service", "ollama"), ("node", "ws")]);
        assert_eq!(routes_for(&routes, &ollama, Severity::Critical), [0, 1]);
        assert_eq!(routes_for(&routes, &ollama, Severity::Warning), [1]);
        assert_eq!(
            routes_for(&routes, &labels(&[("node", "vm1")]), Severity::Error),
            [2]
        );
        assert!(routes_for(&routes, &labels(&[]), Severity::Info).is_empty());
    }

    #[test]
    fn mistakes_name_the_route() {
        let bad: RouteToml = toml::from_str("receiver = \"x\"\nmin_severity = \"loud\"").unwrap();
        let e = Route::from_toml(bad, GroupTiming::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("route to `x`: `min_severity = \"loud\"`"),
            "{e}"
        );
        assert!(toml::from_str::<RouteToml>("receiver = \"x\"\nmatcher = {}").is_err());
    }
}
