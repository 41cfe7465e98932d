//! Rules from TOML: the `[[rule]]` tables, their validation, and the shipped defaults.
//!
//! The shipped defaults are TOML too (`default-rules.toml`), parsed by the same code, so what
//! the docs show is what runs. A user rule with a default's name overrides the fields it sets
//! (a different `kind` replaces the rule); `enabled = false` turns it off. Unknown keys are
//! refused: a typo must not silently do nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sync::Severity;

use crate::rules::{DiskFull, EventMatch, EventRule, Expect, Metric, Rule, RuleKind, Threshold};
use crate::util::parse_duration;

/// The shipped rules, as TOML.
pub const DEFAULT_RULES_TOML: &str = include_str!("../default-rules.toml");

/// Why a rule set was refused. Every message names the rule and the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error("alerting rules: {0}")]
    Toml(String),
    #[error("rule `{rule}`: {message}")]
    Invalid { rule: String, message: String },
}

fn invalid(rule: &str, message: impl Into<String>) -> RuleError {
    RuleError::Invalid {
        rule: rule.to_owned(),
        message: message.into(),
    }
}

/// One `[[rule]]` table as written. Every field is optional so that an override can set one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleToml {
    pub name: String,
    pub enabled: Option<bool>,
    /// `threshold`, `event`, `node_offline`, `expect` or `disk_full`.
    pub kind: Option<String>,
    pub severity: Option<String>,
    /// Text with `{node}`, `{service}`, `{source}`, `{mount}`, `{gpu}`, `{subject}`, `{value}`.
    pub summary: Option<String>,
    /// Extra labels for routing and silences, e.g. `{ team = "infra" }`.
    pub labels: Option<BTreeMap<String, String>>,
    // threshold
    pub metric: Option<String>,
    pub op: Option<String>,
    pub warn: Option<f64>,
    pub critical: Option<f64>,
    pub clear: Option<f64>,
    #[serde(rename = "for")]
    pub for_: Option<String>,
    // event
    pub types: Option<Vec<String>>,
    pub node: Option<String>,
    pub service: Option<String>,
    pub source: Option<String>,
    pub min_severity: Option<String>,
    pub field: Option<String>,
    pub above: Option<f64>,
    pub subject: Option<Vec<String>>,
    pub resolve_on: Option<Vec<String>>,
    pub resolve_after: Option<String>,
    // expect
    pub expect: Option<String>,
    // disk_full
    pub within: Option<String>,
    pub clear_within: Option<String>,
    pub window: Option<String>,
    pub min_history: Option<String>,
}

impl RuleToml {
    /// This table with `user`'s fields laid over it (same `kind`), or `user` alone when it
    /// names another kind.
    fn overlay(self, user: RuleToml) -> RuleToml {
        if user.kind.is_some() && user.kind != self.kind {
            return user;
        }
        let user_clear = user.clear.is_some();
        macro_rules! pick {
            ($($f:ident),*) => { RuleToml { name: user.name, $($f: user.$f.or(self.$f)),* } };
        }
        let mut merged = pick!(
            enabled,
            kind,
            severity,
            summary,
            labels,
            metric,
            op,
            warn,
            critical,
            clear,
            for_,
            types,
            node,
            service,
            source,
            min_severity,
            field,
            above,
            subject,
            resolve_on,
            resolve_after,
            expect,
            within,
            clear_within,
            window,
            min_history
        );
        // A default's clear level that the user's new raise level passed no longer makes
        // sense: fall back to "clear at the raise level" rather than refuse the override.
        if !user_clear && let Some(clear) = merged.clear {
            let below = merged.op.as_deref() == Some("below");
            let past = [merged.warn, merged.critical]
                .into_iter()
                .flatten()
                .any(|level| if below { clear < level } else { clear > level });
            if past {
                merged.clear = None;
            }
        }
        merged
    }
}

fn severity(rule: &str, text: &str) -> Result<Severity, RuleError> {
    text.parse().map_err(|_| {
        invalid(
            rule,
            format!("`{text}` is not a severity; use info, warning, error or critical"),
        )
    })
}

fn duration(
    rule: &str,
    field: &str,
    text: Option<&String>,
    default: Duration,
) -> Result<Duration, RuleError> {
    match text {
        None => Ok(default),
        Some(t) => parse_duration(t).map_err(|e| invalid(rule, format!("field `{field}`: {e}"))),
    }
}

impl TryFrom<RuleToml> for Rule {
    type Error = RuleError;

    fn try_from(t: RuleToml) -> Result<Rule, RuleError> {
        let n = t.name.as_str();
        if n.is_empty() {
            return Err(invalid("", "a rule needs a `name`"));
        }
        let sev = t.severity.as_deref().map(|s| severity(n, s)).transpose()?;
        // Fields each kind accepts beyond the common ones; anything else set is a mistake.
        let (kind, allowed): (RuleKind, &[&str]) = match t.kind.as_deref() {
            Some("threshold") => {
                let text = t
                    .metric
                    .as_deref()
                    .ok_or_else(|| invalid(n, "a threshold rule needs `metric`"))?;
                let metric = Metric::parse(text).ok_or_else(|| {
                    let names: Vec<_> = Metric::ALL.iter().map(|(n, _)| *n).collect();
                    invalid(
                        n,
                        format!("`{text}` is not a metric; use one of {}", names.join(", ")),
                    )
                })?;
                let below = match t.op.as_deref() {
                    None | Some("above") => false,
                    Some("below") => true,
                    Some(other) => {
                        return Err(invalid(
                            n,
                            format!("`op = \"{other}\"`: use \"above\" or \"below\""),
                        ));
                    }
                };
                let levels: Vec<f64> = [t.warn, t.critical].into_iter().flatten().collect();
                if levels.is_empty() {
                    return Err(invalid(n, "a threshold rule needs `warn` or `critical`"));
                }
                let mildest = if below {
                    levels.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                } else {
                    levels.iter().copied().fold(f64::INFINITY, f64::min)
                };
                let clear = t.clear.unwrap_or(mildest);
                if (below && clear < mildest) || (!below && clear > mildest) {
                    return Err(invalid(
                        n,
                        format!(
                            "`clear = {clear}` is past the raise level {mildest}; it must sit on the healthy side"
                        ),
                    ));
                }
                let th = Threshold {
                    metric,
                    below,
                    warn: t.warn,
                    critical: t.critical,
                    clear,
                    for_: duration(n, "for", t.for_.as_ref(), Duration::ZERO)?,
                };
                (
                    RuleKind::Threshold(th),
                    &["metric", "op", "warn", "critical", "clear", "for"],
                )
            }
            Some("event") => {
                let types = t.types.clone().unwrap_or_default();
                if types.is_empty() {
                    return Err(invalid(
                        n,
                        "an event rule needs `types`, e.g. [\"build_failed\"]",
                    ));
                }
                if t.field.is_some() != t.above.is_some() {
                    return Err(invalid(n, "`field` and `above` go together"));
                }
                let subject = t
                    .subject
                    .clone()
                    .unwrap_or_else(|| vec!["node".into(), "service".into()]);
                if let Some(bad) = subject.iter().find(|p| {
                    !["node", "service", "source", "correlation_id"].contains(&p.as_str())
                }) {
                    return Err(invalid(
                        n,
                        format!(
                            "`subject` part `{bad}`: use node, service, source or correlation_id"
                        ),
                    ));
                }
                let r = EventRule {
                    matcher: EventMatch {
                        types,
                        node: t.node.clone(),
                        service: t.service.clone(),
                        source: t.source.clone(),
                        min_severity: t
                            .min_severity
                            .as_deref()
                            .map(|s| severity(n, s))
                            .transpose()?,
                    },
                    field: t.field.clone(),
                    above: t.above,
                    severity: sev,
                    resolve_on: t.resolve_on.clone().unwrap_or_default(),
                    resolve_after: duration(
                        n,
                        "resolve_after",
                        t.resolve_after.as_ref(),
                        Duration::from_secs(3600),
                    )?,
                    subject,
                };
                (
                    RuleKind::Event(r),
                    &[
                        "types",
                        "node",
                        "service",
                        "source",
                        "min_severity",
                        "field",
                        "above",
                        "subject",
                        "resolve_on",
                        "resolve_after",
                    ],
                )
            }
            Some("node_offline") => (
                RuleKind::NodeOffline {
                    for_: duration(n, "for", t.for_.as_ref(), Duration::from_secs(60))?,
                },
                &["for"],
            ),
            Some("expect") => {
                let text = t.expect.as_deref().ok_or_else(|| {
                    invalid(
                        n,
                        "an expect rule needs `expect = \"NAME every 24h grace 1h\"`",
                    )
                })?;
                let mut e = Expect::parse(text).map_err(|m| invalid(n, m))?;
                e.types = t.types.clone().unwrap_or_default();
                (RuleKind::Expect(e), &["expect", "types"])
            }
            Some("disk_full") => {
                let d = DiskFull {
                    within: duration(
                        n,
                        "within",
                        t.within.as_ref(),
                        Duration::from_secs(7 * 86400),
                    )?,
                    clear_within: duration(
                        n,
                        "clear_within",
                        t.clear_within.as_ref(),
                        Duration::from_secs(10 * 86400),
                    )?,
                    window: duration(
                        n,
                        "window",
                        t.window.as_ref(),
                        Duration::from_secs(7 * 86400),
                    )?,
                    min_history: duration(
                        n,
                        "min_history",
                        t.min_history.as_ref(),
                        Duration::from_secs(86400),
                    )?,
                };
                if d.clear_within < d.within {
                    return Err(invalid(n, "`clear_within` must be at least `within`"));
                }
                (
                    RuleKind::DiskFull(d),
                    &["within", "clear_within", "window", "min_history"],
                )
            }
            Some(other) => {
                return Err(invalid(
                    n,
                    format!(
                        "`kind = \"{other}\"`: use threshold, event, node_offline, expect or disk_full"
                    ),
                ));
            }
            None => {
                return Err(invalid(
                    n,
                    "a new rule needs `kind` (threshold, event, node_offline, expect or disk_full)",
                ));
            }
        };
        let set: [(&str, bool); 21] = [
            ("metric", t.metric.is_some()),
            ("op", t.op.is_some()),
            ("warn", t.warn.is_some()),
            ("critical", t.critical.is_some()),
            ("clear", t.clear.is_some()),
            ("for", t.for_.is_some()),
            ("types", t.types.is_some()),
            ("node", t.node.is_some()),
            ("service", t.service.is_some()),
            ("source", t.source.is_some()),
            ("min_severity", t.min_severity.is_some()),
            ("field", t.field.is_some()),
            ("above", t.above.is_some()),
            ("subject", t.subject.is_some()),
            ("resolve_on", t.resolve_on.is_some()),
            ("resolve_after", t.resolve_after.is_some()),
            ("expect", t.expect.is_some()),
            ("within", t.within.is_some()),
            ("clear_within", t.clear_within.is_some()),
            ("window", t.window.is_some()),
            ("min_history", t.min_history.is_some()),
        ];
        if let Some((field, _)) = set
            .iter()
            .find(|(f, is_set)| *is_set && !allowed.contains(f))
        {
            return Err(invalid(
                n,
                format!(
                    "field `{field}` does not apply to a `{}` rule",
                    t.kind.as_deref().unwrap_or("")
                ),
            ));
        }
        Ok(Rule {
            name: t.name,
            kind,
            severity: sev,
            summary: t.summary,
            labels: t.labels.unwrap_or_default(),
        })
    }
}

/// `[[rule]]` tables alone, as in a rules file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<RuleToml>,
}

/// Parses `[[rule]]` tables from TOML text (unknown keys refused, with line and column).
pub fn parse_rules_toml(text: &str) -> Result<Vec<RuleToml>, RuleError> {
    toml::from_str::<RulesFile>(text)
        .map(|f| f.rule)
        .map_err(|e| RuleError::Toml(e.to_string()))
}

/// The rules in force: defaults with user overrides, disabled ones dropped, in default order
/// then new user rules in their order.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// The shipped rules only.
    pub fn defaults() -> Result<RuleSet, RuleError> {
        RuleSet::with_overrides(Vec::new())
    }

    /// Defaults merged with the user's `[[rule]]` tables.
    pub fn with_overrides(user: Vec<RuleToml>) -> Result<RuleSet, RuleError> {
        let mut merged = parse_rules_toml(DEFAULT_RULES_TOML)?;
        let mut seen = std::collections::BTreeSet::new();
        for u in user {
            if !seen.insert(u.name.clone()) {
                return Err(invalid(
                    &u.name,
                    "is defined twice in the config; merge the two tables",
                ));
            }
            match merged.iter_mut().find(|m| m.name == u.name) {
                Some(slot) => *slot = std::mem::take(slot).overlay(u),
                None => merged.push(u),
            }
        }
        let mut rules = Vec::new();
        for t in merged {
            if t.enabled == Some(false) {
                continue;
            }
            rules.push(Rule::try_from(t)?);
        }
        Ok(RuleSet { rules })
    }

    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
#[path = "unit_tests/rule_toml.rs"]
mod tests;
