//! The alert state machine, one per (rule, subject): inactive → pending → firing → resolved.
//!
//! - **pending**: raised, waiting out the rule's `for` (a one-sample spike never fires).
//! - **firing**: an *episode* with a stable id. Severity only rises within an episode (warning →
//!   critical escalates; the way back down ends the episode only at the clear level), so a value
//!   hovering between levels cannot flap the alert.
//! - **resolved**: the value crossed the clear level, a resolving event came, or an event alert
//!   went quiet for `resolve_after`.
//!
//! Every node runs this machine over the same inputs (a warm shadow on followers), but only
//! the node allowed to record writes the `alert_firing` / `alert_resolved` events. Those events
//! are also an input: a node adopts the episode id another node recorded for the same alert, so
//! after a failover the new alerter continues the same episode and the ledger recognises what
//! was already sent. Replaying the event log on start rebuilds the same book.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sync::event::format_timestamp;
use sync::{Event, NewEvent, Severity};

use crate::rules::{Condition, Observation};
use crate::util::{Labels, after, payload_str, payload_time, stable_hash};
use crate::{EVENT_SERVICE, EVENT_SOURCE};

pub const ALERT_FIRING: &str = "alert_firing";
pub const ALERT_RESOLVED: &str = "alert_resolved";

/// How long a resolved episode stays in the book: long enough for its "resolved" notification
/// (grouping plus retries), short enough to keep memory flat.
const RESOLVED_KEEP: Duration = Duration::from_secs(24 * 3600);
/// How long the ids of closed episodes are remembered, to ignore late copies of their firing
/// events: beyond event retention (30 days) they cannot come back.
const CLOSED_KEEP: Duration = Duration::from_secs(40 * 86400);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Firing,
    Resolved,
}

/// One alert episode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub rule: String,
    pub subject: String,
    /// Stable hash of rule and subject: the same on every node, for every episode.
    pub fingerprint: String,
    /// This episode's id (also the `correlation_id` of its events).
    pub episode: String,
    pub labels: Labels,
    pub severity: Severity,
    pub summary: String,
    pub status: Status,
    /// When the condition was first raised (start of pending).
    pub raised_at: DateTime<Utc>,
    /// When it started firing.
    pub started_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The last input that raised it (event alerts resolve `resolve_after` later).
    pub last_raise_at: DateTime<Utc>,
    /// The highest severity an `alert_firing` event records for this episode (any node's).
    pub recorded: Option<Severity>,
    pub resolved_recorded: bool,
}

pub fn fingerprint(rule: &str, subject: &str) -> String {
    stable_hash(&["alert", rule, subject])
}

impl Alert {
    fn event(&self, event_type: &str, severity: Severity) -> NewEvent {
        let mut payload = Map::new();
        payload.insert("rule".into(), json!(self.rule));
        payload.insert("subject".into(), json!(self.subject));
        payload.insert("severity".into(), json!(self.severity.as_str()));
        payload.insert("summary".into(), json!(self.summary));
        payload.insert(
            "started_at".into(),
            json!(format_timestamp(self.started_at)),
        );
        if let Some(at) = self.resolved_at {
            payload.insert("resolved_at".into(), json!(format_timestamp(at)));
        }
        payload.insert("fingerprint".into(), json!(self.fingerprint));
        payload.insert("episode".into(), json!(self.episode));
        payload.insert("labels".into(), json!(self.labels));
        let service = self.labels.get("service").map_or("all", String::as_str);
        NewEvent::new(event_type, severity, EVENT_SOURCE)
            .service(if service.is_empty() {
                EVENT_SERVICE
            } else {
                service
            })
            .correlation_id(&self.episode)
            .payload(payload)
    }

    /// The `alert_firing` event (severity = the alert's).
    pub fn firing_event(&self) -> NewEvent {
        self.event(ALERT_FIRING, self.severity)
    }

    /// The `alert_resolved` event (severity info; the payload keeps the episode's severity).
    pub fn resolved_event(&self) -> NewEvent {
        self.event(ALERT_RESOLVED, Severity::Info)
    }
}

/// A firing, recorded episode as an `alert_firing` or `alert_resolved` event describes it.
fn alert_from_event(
    rule: &str,
    subject: &str,
    episode: &str,
    sev: Severity,
    started_at: DateTime<Utc>,
    e: &Event,
) -> Alert {
    let p = &e.payload;
    let labels = p
        .get("labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    Alert {
        rule: rule.to_owned(),
        subject: subject.to_owned(),
        fingerprint: fingerprint(rule, subject),
        episode: episode.to_owned(),
        labels,
        severity: sev,
        summary: payload_str(p, "summary").unwrap_or_default().to_owned(),
        status: Status::Firing,
        raised_at: started_at,
        started_at,
        resolved_at: None,
        last_raise_at: e.timestamp.max(started_at),
        recorded: Some(sev),
        resolved_recorded: false,
    }
}

/// What one (rule, subject) holds.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// The open episode (pending or firing), and any other open episodes of the same alert that
    /// another alerter recorded during a partition: they resolve together.
    open: Vec<Alert>,
    last_obs_at: Option<DateTime<Utc>>,
    for_: Duration,
    resolve_after: Option<Duration>,
}

/// All alert states of this node.
#[derive(Debug, Clone)]
pub struct AlertBook {
    me: String,
    slots: BTreeMap<(String, String), Slot>,
    /// Recently resolved episodes, by episode id.
    resolved: BTreeMap<String, Alert>,
    /// Episodes known to be closed (resolved by anyone), with when.
    closed: BTreeMap<String, DateTime<Utc>>,
}

impl AlertBook {
    pub fn new(me: &str) -> Self {
        AlertBook {
            me: me.to_owned(),
            slots: BTreeMap::new(),
            resolved: BTreeMap::new(),
            closed: BTreeMap::new(),
        }
    }

    /// Feeds one observation. `resolve_after` is the rule's quiet time for event alerts.
    pub fn observe(
        &mut self,
        obs: Observation,
        resolve_after: Option<Duration>,
        now: DateTime<Utc>,
    ) {
        let key = (obs.rule.clone(), obs.subject.clone());
        let slot = self.slots.entry(key).or_default();
        if slot.last_obs_at.is_some_and(|t| obs.at < t) {
            return; // an older input arriving late says nothing about now
        }
        slot.last_obs_at = Some(obs.at);
        slot.for_ = obs.for_;
        slot.resolve_after = resolve_after;
        match (obs.condition, slot.open.first_mut()) {
            (Condition::Raise(sev), None) => {
                let fp = fingerprint(&obs.rule, &obs.subject);
                let start = obs
                    .start_key
                    .clone()
                    .unwrap_or_else(|| format!("{}@{}", obs.at.timestamp_millis(), self.me));
                if self
                    .closed
                    .contains_key(&stable_hash(&["episode", &fp, &start]))
                {
                    return; // this very event's episode was already resolved
                }
                slot.open.push(Alert {
                    episode: stable_hash(&["episode", &fp, &start]),
                    fingerprint: fp,
                    rule: obs.rule,
                    subject: obs.subject,
                    labels: obs.labels,
                    severity: sev,
                    summary: obs.summary,
                    status: Status::Pending,
                    raised_at: obs.at,
                    started_at: obs.at,
                    resolved_at: None,
                    last_raise_at: obs.at,
                    recorded: None,
                    resolved_recorded: false,
                });
            }
            (Condition::Raise(sev), Some(a)) => {
                a.severity = a.severity.max(sev);
                a.summary = obs.summary;
                a.labels = obs.labels;
                a.last_raise_at = obs.at;
            }
            (Condition::Hold, _) | (Condition::Clear, None) => {}
            (Condition::Clear, Some(a)) if a.status == Status::Pending => {
                slot.open.clear();
            }
            (Condition::Clear, Some(_)) => {
                let at = obs.at.max(slot.open[0].started_at);
                for mut a in std::mem::take(&mut slot.open) {
                    a.status = Status::Resolved;
                    a.resolved_at = Some(at);
                    self.closed.insert(a.episode.clone(), at);
                    self.resolved.insert(a.episode.clone(), a);
                }
            }
        }
        // Only this slot can have changed: ticking every slot here made each observation
        // cost O(alerts), and the watchdog observes every member on every step (O(N²) per step
        // at N nodes, which kept 300-node simulations from finishing).
        Self::tick_slot(slot, &mut self.closed, &mut self.resolved, now);
    }

    /// Ends every open episode of `rule` at `at` (the rule was removed): firing ones resolve,
    /// pending ones are dropped.
    pub fn resolve_rule(&mut self, rule: &str, at: DateTime<Utc>) {
        for ((r, _), slot) in self.slots.iter_mut() {
            if r != rule {
                continue;
            }
            slot.last_obs_at = Some(slot.last_obs_at.map_or(at, |t| t.max(at)));
            for mut a in std::mem::take(&mut slot.open) {
                if a.status != Status::Firing {
                    continue;
                }
                let at = at.max(a.started_at);
                a.status = Status::Resolved;
                a.resolved_at = Some(at);
                self.closed.insert(a.episode.clone(), at);
                self.resolved.insert(a.episode.clone(), a);
            }
        }
    }

    /// Time-driven transitions: pending → firing after `for`; event alerts resolve when quiet.
    pub fn tick(&mut self, now: DateTime<Utc>) {
        for slot in self.slots.values_mut() {
            Self::tick_slot(slot, &mut self.closed, &mut self.resolved, now);
        }
        self.slots
            .retain(|_, s| !s.open.is_empty() || s.last_obs_at.is_some());
    }

    fn tick_slot(
        slot: &mut Slot,
        closed: &mut BTreeMap<String, DateTime<Utc>>,
        resolved: &mut BTreeMap<String, Alert>,
        now: DateTime<Utc>,
    ) {
        let Some(a) = slot.open.first_mut() else {
            return;
        };
        if a.status == Status::Pending && after(a.raised_at, slot.for_) <= now {
            a.status = Status::Firing;
            a.started_at = after(a.raised_at, slot.for_);
        }
        if let Some(quiet) = slot.resolve_after
            && after(a.last_raise_at, quiet) <= now
        {
            let at = after(a.last_raise_at, quiet);
            let was_firing = a.status == Status::Firing;
            for mut a in std::mem::take(&mut slot.open) {
                if was_firing {
                    a.status = Status::Resolved;
                    a.resolved_at = Some(at);
                    closed.insert(a.episode.clone(), at);
                    resolved.insert(a.episode.clone(), a);
                }
            }
        }
    }

    /// The next time [`AlertBook::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.slots
            .values()
            .filter_map(|s| {
                let a = s.open.first()?;
                let fire = (a.status == Status::Pending).then(|| after(a.raised_at, s.for_));
                let quiet = s.resolve_after.map(|q| after(a.last_raise_at, q));
                fire.into_iter().chain(quiet).min()
            })
            .min()
    }

    /// Learns from `alert_firing` / `alert_resolved` events, this node's echoes included.
    /// `known_rule` filters out alerts of rules this node does not run.
    pub fn on_event(&mut self, e: &Event, known_rule: impl Fn(&str) -> bool) {
        let firing = e.event_type == ALERT_FIRING;
        if !firing && e.event_type != ALERT_RESOLVED {
            return;
        }
        let p = &e.payload;
        let (Some(rule), Some(subject), Some(episode)) = (
            payload_str(p, "rule"),
            payload_str(p, "subject"),
            payload_str(p, "episode"),
        ) else {
            return;
        };
        // A resolution is applied even for a rule this node no longer runs (a removed
        // expectation): it only closes what is already here.
        if firing && !known_rule(rule) {
            return;
        }
        let key = (rule.to_owned(), subject.to_owned());
        if !firing {
            let at = payload_time(p, "resolved_at").unwrap_or(e.timestamp);
            self.closed.insert(episode.to_owned(), at);
            if let Some(a) = self.resolved.get_mut(episode) {
                a.resolved_recorded = true;
                a.recorded = a.recorded.or(Some(a.severity));
            }
            if let Some(slot) = self.slots.get_mut(&key)
                && let Some(pos) = slot.open.iter().position(|a| a.episode == episode)
            {
                let mut a = slot.open.remove(pos);
                a.status = Status::Resolved;
                a.resolved_at = Some(at);
                a.recorded = a.recorded.or(Some(a.severity));
                a.resolved_recorded = true;
                self.resolved.insert(a.episode.clone(), a);
            } else if !self.resolved.contains_key(episode) {
                // The resolution came first (a sync delivers in hash order, not time order)
                // or alone: its firing will be ignored as closed, so keep the episode from
                // this event, or its resolution could never be notified.
                let sev = payload_str(p, "severity")
                    .and_then(|s| s.parse::<Severity>().ok())
                    .unwrap_or(e.severity);
                let started_at = payload_time(p, "started_at").unwrap_or(e.timestamp);
                let mut a = alert_from_event(rule, subject, episode, sev, started_at, e);
                a.status = Status::Resolved;
                a.resolved_at = Some(at);
                a.resolved_recorded = true;
                self.resolved.insert(a.episode.clone(), a);
            }
            return;
        }
        if self.closed.contains_key(episode) {
            return;
        }
        let sev = payload_str(p, "severity")
            .and_then(|s| s.parse::<Severity>().ok())
            .unwrap_or(e.severity);
        let started_at = payload_time(p, "started_at").unwrap_or(e.timestamp);
        let slot = self.slots.entry(key).or_default();
        if let Some(a) = slot.open.iter_mut().find(|a| a.episode == episode) {
            a.recorded = a.recorded.max(Some(sev));
            a.severity = a.severity.max(sev);
            a.status = Status::Firing;
            return;
        }
        match slot.open.first_mut() {
            // Our own episode is not public yet: take the recorded one instead.
            Some(a) if a.recorded.is_none() => {
                a.episode = episode.to_owned();
                a.started_at = started_at;
                a.status = Status::Firing;
                a.recorded = Some(sev);
                a.severity = a.severity.max(sev);
            }
            // Two recorded episodes of one alert (a partition): keep both, resolve them together.
            Some(_) | None => {
                slot.open
                    .push(alert_from_event(rule, subject, episode, sev, started_at, e));
            }
        }
    }

    /// The events this node should write now: `alert_firing` for firing episodes not recorded
    /// at their severity, `alert_resolved` for recorded episodes that ended. `may_record`
    /// decides per alert (an isolated laptop records only its own). Marks them recorded.
    pub fn take_records(&mut self, may_record: impl Fn(&Alert) -> bool) -> Vec<NewEvent> {
        let mut out = Vec::new();
        for slot in self.slots.values_mut() {
            for a in slot.open.iter_mut() {
                if a.status == Status::Firing && a.recorded < Some(a.severity) && may_record(a) {
                    out.push(a.firing_event());
                    a.recorded = Some(a.severity);
                }
            }
        }
        for a in self.resolved.values_mut() {
            if a.recorded.is_some() && !a.resolved_recorded && may_record(a) {
                out.push(a.resolved_event());
                a.resolved_recorded = true;
            }
        }
        out
    }

    /// Firing and recently resolved episodes (pending ones are nobody's business yet).
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.slots
            .values()
            .flat_map(|s| s.open.iter())
            .filter(|a| a.status == Status::Firing)
            .chain(self.resolved.values())
    }

    /// Every open episode, pending included (for status pages).
    pub fn open(&self) -> impl Iterator<Item = &Alert> {
        self.slots.values().flat_map(|s| s.open.iter())
    }

    /// Is (rule, subject) pending or firing?
    pub fn is_open(&self, rule: &str, subject: &str) -> bool {
        self.slots
            .get(&(rule.to_owned(), subject.to_owned()))
            .is_some_and(|s| !s.open.is_empty())
    }

    /// Drops what is too old to matter.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.resolved
            .retain(|_, a| a.resolved_at.is_none_or(|t| after(t, RESOLVED_KEEP) > now));
        self.closed.retain(|_, t| after(*t, CLOSED_KEEP) > now);
    }
}

#[cfg(test)]
#[path = "unit_tests/state.rs"]
mod tests;
