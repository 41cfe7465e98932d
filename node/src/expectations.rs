//! Expectations declared at run time (`labmesh expect NAME --every 24h --grace 1h`): stored as
//! `expectation_set` events so they replicate, and turned by the alerting driver into `expect`
//! rules named `expect:NAME` (an event with source NAME must appear in every window).
//! `labmesh expect NAME --remove` stores an `expectation_cleared` event: the newest of a name's
//! declarations and removals wins, on every node and after a restart.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sync::{Event, NewEvent, Severity};

/// The event type of a declaration.
pub const EVENT_TYPE: &str = "expectation_set";
/// The event type of a removal.
pub const CLEARED_TYPE: &str = "expectation_cleared";
/// The source of declaration events.
pub const SOURCE: &str = "labmesh-expect";

/// One declaration, as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expectation {
    pub name: String,
    pub every: String,
    pub grace: Option<String>,
    pub rule: String,
    pub declared_at: DateTime<Utc>,
    pub declared_by: String,
}

/// Checks a declaration; returns the rule it becomes.
pub fn rule(name: &str, every: &str, grace: Option<&str>) -> Result<alerting::rules::Rule, String> {
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(format!(
            "{name:?}: the name must be one word (the events' source)"
        ));
    }
    let text = match grace {
        Some(g) => format!("{name} every {every} grace {g}"),
        None => format!("{name} every {every}"),
    };
    let expect = alerting::rules::Expect::parse(&text)?;
    Ok(alerting::rules::Rule {
        name: rule_name(name),
        kind: alerting::rules::RuleKind::Expect(expect),
        severity: None,
        summary: None,
        labels: Default::default(),
    })
}

/// The event that declares an expectation (validated first).
pub fn event(name: &str, every: &str, grace: Option<&str>) -> Result<NewEvent, String> {
    rule(name, every, grace)?;
    let mut e = NewEvent::new(EVENT_TYPE, Severity::Info, SOURCE);
    e.payload.insert("name".into(), name.into());
    e.payload.insert("every".into(), every.into());
    if let Some(g) = grace {
        e.payload.insert("grace".into(), g.into());
    }
    Ok(e)
}

/// The event that removes the expectation `name`.
pub fn clear_event(name: &str) -> NewEvent {
    let mut e = NewEvent::new(CLEARED_TYPE, Severity::Info, SOURCE);
    e.payload.insert("name".into(), name.into());
    e
}

/// The name an `expectation_cleared` event removes, and when; `None` for other events.
pub fn cleared_by(e: &Event) -> Option<(&str, DateTime<Utc>)> {
    if e.event_type != CLEARED_TYPE {
        return None;
    }
    Some((e.payload.get("name")?.as_str()?, e.timestamp))
}

/// The rule name of the expectation `name`.
pub fn rule_name(name: &str) -> String {
    format!("expect:{name}")
}

/// A stored declaration and its rule; `None` for other events or a payload that does not parse.
pub fn from_event(e: &Event) -> Option<(Expectation, alerting::rules::Rule)> {
    if e.event_type != EVENT_TYPE {
        return None;
    }
    let name = e.payload.get("name")?.as_str()?;
    let every = e.payload.get("every")?.as_str()?;
    let grace = e.payload.get("grace").and_then(|g| g.as_str());
    let rule = match rule(name, every, grace) {
        Ok(r) => r,
        Err(err) => {
            tracing::warn!(id = %e.id, error = %err, "alerting: ignoring an expectation");
            return None;
        }
    };
    let x = Expectation {
        name: name.to_owned(),
        every: every.to_owned(),
        grace: grace.map(str::to_owned),
        rule: rule.name.clone(),
        declared_at: e.timestamp,
        declared_by: e.node.clone(),
    };
    Some((x, rule))
}
