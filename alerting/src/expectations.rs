//! Expectations declared at run time (`labmesh expect NAME --every 24h --grace 1h`): stored as
//! `expectation_set` events so they replicate, and turned by the engine into `expect` rules
//! named `expect:NAME` (an event with source NAME must appear in every window).
//! `labmesh expect NAME --remove` stores an `expectation_cleared` event: the newest of a name's
//! declarations and removals wins, whatever order they arrive in, on every node and after a
//! restart. [`Expectations`] is that rule; the engine feeds it every stored event.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sync::{Event, NewEvent, Severity};

use crate::rules::{Expect, Rule, RuleKind};

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
pub fn rule(name: &str, every: &str, grace: Option<&str>) -> Result<Rule, String> {
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(format!(
            "{name:?}: the name must be one word (the events' source)"
        ));
    }
    let text = match grace {
        Some(g) => format!("{name} every {every} grace {g}"),
        None => format!("{name} every {every}"),
    };
    let expect = Expect::parse(&text)?;
    Ok(Rule {
        name: rule_name(name),
        kind: RuleKind::Expect(expect),
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
pub fn from_event(e: &Event) -> Option<(Expectation, Rule)> {
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

/// What an event did to the declared expectations.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Add or replace this rule; its window starts at the declaration.
    Set(Box<Rule>, DateTime<Utc>),
    /// Drop the rule of this name; its open alerts resolve at the time given.
    Removed(String, DateTime<Utc>),
}

/// The declared expectations, newest declaration per name, and the newest removal per name.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    declared: Vec<Expectation>,
    cleared: BTreeMap<String, DateTime<Utc>>,
}

impl Expectations {
    /// Learns an `expectation_set` or `expectation_cleared` event (any other event is
    /// ignored); the newer of a declaration and a removal wins whatever order they arrive in.
    pub fn on_event(&mut self, e: &Event) -> Option<Change> {
        if let Some((name, at)) = cleared_by(e) {
            let newest = self.cleared.entry(name.to_owned()).or_insert(at);
            *newest = (*newest).max(at);
            let before = self.declared.len();
            self.declared
                .retain(|x| !(x.name == name && x.declared_at <= at));
            if self.declared.len() == before {
                return None;
            }
            tracing::info!(name, "alerting: expectation removed");
            return Some(Change::Removed(rule_name(name), at));
        }
        let (x, rule) = from_event(e)?;
        if self
            .cleared
            .get(&x.name)
            .is_some_and(|c| *c >= x.declared_at)
        {
            return None; // removed after this declaration
        }
        match self.declared.iter_mut().find(|o| o.name == x.name) {
            Some(o) if o.declared_at > x.declared_at => return None,
            Some(o) => *o = x.clone(),
            None => self.declared.push(x.clone()),
        }
        tracing::info!(rule = %rule.name, "alerting: expectation declared");
        Some(Change::Set(Box::new(rule), x.declared_at))
    }

    /// The declared expectations, in the order they were first declared.
    pub fn list(&self) -> &[Expectation] {
        &self.declared
    }

    /// Whether an expectation of this name is declared.
    pub fn contains(&self, name: &str) -> bool {
        self.declared.iter().any(|x| x.name == name)
    }
}
