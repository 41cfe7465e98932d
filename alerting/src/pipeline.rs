//! From firing alerts to notifications: routing, grouping, mutes, the ledger, retries.
//!
//! The pipeline runs on every node (so a new alerter starts warm) but sends only while its
//! node is the alerter. Each call to [`Pipeline::advance`] recomputes the groups from the alert
//! book and decides, per group, whether something is due:
//!
//! - **new items** (a firing episode at a severity this receiver was not told, or a resolution
//!   of one it was told): due `group_wait` after the group appeared, then no sooner than
//!   `group_interval` after the group's last send (any node's, from the ledger).
//! - **reminder**: everything told, still firing: due `repeat_interval` after the last send.
//!
//! Before sending, the pipeline writes a `notification_attempted` record (the driver stores it
//! before it performs the send), then `notification_sent` or `notification_failed` with the
//! retry time (exponential backoff, capped, with a give-up budget). Any node skips items a
//! `notification_sent` covers, and waits while a live node's attempt is fresh, so a failover or
//! a healed partition does not send again, and a receiver that was down does not get one copy
//! per node when it returns.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use sync::Severity;
use sync::event::format_timestamp;

pub use crate::config::{PipelineConfig, RetryPolicy};
use crate::ledger::{self, Item, Ledger, Stage};
use crate::message::{MessageAlert, NotificationMessage};
use crate::route::routes_for;
use crate::runtime::{Notification, Runtime};
use crate::silence::Suppressions;
use crate::state::{Alert, Status};
use crate::util::{Labels, after, stable_hash};

#[derive(Debug, Clone)]
enum OutState {
    InFlight { deadline: DateTime<Utc> },
    Waiting { retry_at: DateTime<Utc> },
}

/// A notification this node started and has not finished.
#[derive(Debug, Clone)]
struct Outgoing {
    receiver: String,
    group: String,
    items: Vec<Item>,
    message: NotificationMessage,
    attempt: u32,
    first_at: DateTime<Utc>,
    state: OutState,
}

/// One group's work in one pass: its alerts, each with the labels routes and silences see.
struct GroupWork<'a> {
    route: usize,
    labels: Labels,
    members: Vec<&'a (&'a Alert, Labels)>,
}

/// The pipeline of one node.
#[derive(Debug, Clone)]
pub struct Pipeline {
    me: String,
    cfg: PipelineConfig,
    pub ledger: Ledger,
    pub suppressions: Suppressions,
    /// Group key → when it appeared, and when this node last started a notification for it
    /// (the ledger knows sends; this also covers an attempt still in flight).
    groups: BTreeMap<String, (DateTime<Utc>, Option<DateTime<Utc>>)>,
    out: BTreeMap<String, Outgoing>,
    seq: u64,
    mode: Mode,
}

/// What the pipeline may do in this pass, from the node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The alerter: send.
    Send,
    /// Settling: send nothing new, keep own retries for when the view is stable again.
    Hold,
    /// Someone else alerts: hand own pending retries over (a `notification_failed` marked
    /// `handed_over`), so the alerter need not wait for them to go stale.
    HandOver,
}

fn min_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Pipeline {
    pub fn new(me: &str, cfg: PipelineConfig, suppressions: Suppressions) -> Self {
        Pipeline {
            me: me.to_owned(),
            cfg,
            ledger: Ledger::default(),
            suppressions,
            groups: BTreeMap::new(),
            out: BTreeMap::new(),
            seq: 0,
            mode: Mode::Hold,
        }
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// Learns ledger and silence events.
    pub fn on_event(&mut self, e: &sync::Event) {
        self.ledger.on_event(e);
        self.suppressions.on_event(e);
    }

    /// Writes a ledger record and applies it here at once.
    fn record(
        &mut self,
        kind: &str,
        sev: Severity,
        id: &str,
        p: serde_json::Map<String, serde_json::Value>,
        now: DateTime<Utc>,
        rt: &mut impl Runtime,
    ) {
        self.ledger.apply(kind, &self.me, now, &p);
        rt.write_event(ledger::event(kind, sev, id, p));
    }

    fn start(&mut self, id: String, o: Outgoing, now: DateTime<Utc>, rt: &mut impl Runtime) {
        let deadline = after(now, self.cfg.send_timeout);
        let mut p = ledger::payload(&id, &o.receiver, &o.group, o.attempt, &o.items);
        p.insert("deadline".into(), json!(format_timestamp(deadline)));
        self.record(
            ledger::NOTIFICATION_ATTEMPTED,
            Severity::Info,
            &id,
            p,
            now,
            rt,
        );
        rt.notify(Notification {
            id: id.clone(),
            attempt: o.attempt,
            receiver: o.receiver.clone(),
            message: o.message.clone(),
            deadline,
        });
        self.out.insert(
            id,
            Outgoing {
                state: OutState::InFlight { deadline },
                ..o
            },
        );
    }

    /// The driver's report on a send (its latest attempt). Returns false when nothing was
    /// waiting for it.
    pub fn on_result(
        &mut self,
        id: &str,
        result: Result<(), String>,
        now: DateTime<Utc>,
        rt: &mut impl Runtime,
    ) -> bool {
        self.on_attempt_result(id, None, result, now, rt)
    }

    /// The driver's report on attempt `attempt` (any attempt when `None`) of a send. A report
    /// that comes after the core gave the attempt up at its deadline, or after the next attempt
    /// started, is stale and ignored: counting it would record a second failure for one
    /// attempt, or fail a retry still in flight and send it once more. Returns whether it
    /// counted.
    pub fn on_attempt_result(
        &mut self,
        id: &str,
        attempt: Option<u32>,
        result: Result<(), String>,
        now: DateTime<Utc>,
        rt: &mut impl Runtime,
    ) -> bool {
        let current = self.out.get(id).is_some_and(|o| {
            matches!(o.state, OutState::InFlight { .. }) && attempt.is_none_or(|a| a == o.attempt)
        });
        if !current {
            return false;
        }
        let Some(mut o) = self.out.remove(id) else {
            return false;
        };
        let p = ledger::payload(id, &o.receiver, &o.group, o.attempt, &o.items);
        match result {
            Ok(()) => self.record(ledger::NOTIFICATION_SENT, Severity::Info, id, p, now, rt),
            Err(error) => {
                let give_up = after(o.first_at, self.cfg.retry.give_up_after) <= now;
                if give_up || self.mode == Mode::HandOver {
                    let p = ledger::with_failure(p, &error, None, give_up, !give_up);
                    self.record(ledger::NOTIFICATION_FAILED, Severity::Error, id, p, now, rt);
                } else {
                    let retry_at = after(now, self.cfg.retry.backoff(o.attempt));
                    let p = ledger::with_failure(p, &error, Some(retry_at), false, false);
                    self.record(
                        ledger::NOTIFICATION_FAILED,
                        Severity::Warning,
                        id,
                        p,
                        now,
                        rt,
                    );
                    o.state = OutState::Waiting { retry_at };
                    self.out.insert(id.to_owned(), o);
                }
            }
        }
        true
    }

    /// One pass: retries, hand-over, groups. Returns when the next pass has work.
    pub fn advance<'a>(
        &mut self,
        alerts: impl Iterator<Item = &'a Alert>,
        mode: Mode,
        is_live: &dyn Fn(&str) -> bool,
        now: DateTime<Utc>,
        rt: &mut impl Runtime,
    ) -> Option<DateTime<Utc>> {
        self.mode = mode;
        let mut wake = self.own_work(now, rt);
        // Labels once per alert and pass: every step of every node runs this over all firing
        // alerts, and cloning them per use was most of an engine's cost at 100+ nodes.
        let labeled: Vec<(&Alert, Labels)> = alerts.map(|a| (a, match_labels(a))).collect();
        let mut work: BTreeMap<String, GroupWork> = BTreeMap::new();
        for al in &labeled {
            let (a, labels) = al;
            for ri in routes_for(&self.cfg.routes, labels, a.severity) {
                let route = &self.cfg.routes[ri];
                let gl = route.group_labels(labels);
                let key = group_key(&route.receiver, ri, &gl);
                work.entry(key)
                    .or_insert_with(|| GroupWork {
                        route: ri,
                        labels: gl,
                        members: Vec::new(),
                    })
                    .members
                    .push(al);
            }
        }
        self.groups.retain(|k, _| work.contains_key(k));
        for (key, g) in work {
            wake = min_opt(wake, self.group_pass(&key, g, is_live, now, rt));
        }
        wake
    }

    /// Deadlines, retries and hand-over of this node's own notifications.
    fn own_work(&mut self, now: DateTime<Utc>, rt: &mut impl Runtime) -> Option<DateTime<Utc>> {
        let overdue: Vec<String> = self
            .out
            .iter()
            .filter(|(_, o)| matches!(o.state, OutState::InFlight { deadline } if deadline <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in overdue {
            self.on_result(
                &id,
                Err("no result before the send deadline".into()),
                now,
                rt,
            );
        }
        let waiting: Vec<String> = self
            .out
            .iter()
            .filter(|(_, o)| match (o.state.clone(), self.mode) {
                (OutState::Waiting { .. }, Mode::HandOver) => true,
                (OutState::Waiting { retry_at }, Mode::Send) => retry_at <= now,
                _ => false,
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in waiting {
            let Some(mut o) = self.out.remove(&id) else {
                continue;
            };
            if self.mode == Mode::HandOver {
                let p = ledger::payload(&id, &o.receiver, &o.group, o.attempt, &o.items);
                let p = ledger::with_failure(p, "no longer the alerter", None, false, true);
                self.record(
                    ledger::NOTIFICATION_FAILED,
                    Severity::Warning,
                    &id,
                    p,
                    now,
                    rt,
                );
                continue;
            }
            o.items
                .retain(|i| !self.ledger.is_sent(&i.episode, &o.receiver, i.stage));
            if o.items.is_empty() {
                continue; // another node got it through meanwhile
            }
            o.attempt += 1;
            self.start(id, o, now, rt);
        }
        // While holding, retries wait for the role (the engine's settle timer re-runs us).
        let sending = self.mode == Mode::Send;
        self.out
            .values()
            .filter_map(|o| match o.state {
                OutState::InFlight { deadline } => Some(deadline),
                OutState::Waiting { retry_at } => sending.then_some(retry_at),
            })
            .min()
    }

    fn group_pass(
        &mut self,
        key: &str,
        g: GroupWork,
        is_live: &dyn Fn(&str) -> bool,
        now: DateTime<Utc>,
        rt: &mut impl Runtime,
    ) -> Option<DateTime<Utc>> {
        let route = self.cfg.routes[g.route].clone();
        let rcv = route.receiver.as_str();
        let stale = self.cfg.attempt_stale_after;
        let mut wake: Option<DateTime<Utc>> = None;
        let (mut new_items, mut shown, mut told) = (Vec::new(), Vec::new(), Vec::new());
        let mut any_firing = false;
        for (a, labels) in g.members.iter().map(|al| (al.0, &al.1)) {
            let item = |stage| Item {
                episode: a.episode.clone(),
                fingerprint: a.fingerprint.clone(),
                stage,
            };
            let stage = match a.status {
                Status::Firing => Stage::Firing(a.severity),
                Status::Resolved
                    if route.send_resolved
                        && (self.ledger.told_firing(&a.episode, rcv)
                            || (self.ledger.tried_firing(&a.episode, rcv)
                                && !self
                                    .ledger
                                    .firing_pending(&a.episode, rcv, stale, is_live, now))) =>
                {
                    Stage::Resolved
                }
                _ => continue,
            };
            any_firing |= a.status == Status::Firing;
            if let Some((_, until)) = self.suppressions.muted(labels, now) {
                wake = min_opt(wake, Some(until));
                continue;
            }
            if self.ledger.is_sent(&a.episode, rcv, stage)
                || self.ledger.given_up(&a.episode, rcv, stage)
            {
                if a.status == Status::Firing {
                    told.push(a);
                    shown.push((a, false));
                }
                continue;
            }
            if let Some(until) = self
                .ledger
                .busy_until(&a.episode, rcv, stage, stale, is_live, now)
            {
                wake = min_opt(wake, Some(until));
                continue;
            }
            new_items.push(item(stage));
            shown.push((a, true));
        }
        if !any_firing && new_items.is_empty() {
            self.groups.remove(key);
            return wake;
        }
        let (created, flushed) = *self.groups.entry(key.to_owned()).or_insert((now, None));
        let last = self.ledger.group_last(rcv, key).max(flushed);
        let (due, repeat) = if !new_items.is_empty() {
            let first = after(created, route.timing.group_wait);
            (
                last.map_or(first, |l| first.max(after(l, route.timing.group_interval))),
                false,
            )
        } else if !told.is_empty() {
            let mut last_told = None;
            for a in &told {
                let (n, at) = self.ledger.sends(&a.episode, rcv);
                last_told = last_told.max(at);
                let stage = Stage::Repeat(n);
                if let Some(until) = self
                    .ledger
                    .busy_until(&a.episode, rcv, stage, stale, is_live, now)
                {
                    return min_opt(wake, Some(until));
                }
                new_items.push(Item {
                    episode: a.episode.clone(),
                    fingerprint: a.fingerprint.clone(),
                    stage,
                });
            }
            match last_told {
                Some(l) => (after(l, route.timing.repeat_interval), true),
                None => return wake,
            }
        } else {
            return wake;
        };
        if self.mode != Mode::Send {
            return wake; // a change of role re-runs the pass
        }
        if due > now {
            return min_opt(wake, Some(due));
        }
        if let Some(g) = self.groups.get_mut(key) {
            g.1 = Some(now);
        }
        self.seq += 1;
        let id = stable_hash(&[
            "notification",
            &self.me,
            key,
            &now.timestamp_millis().to_string(),
            &self.seq.to_string(),
        ]);
        let valid_until = after(
            now,
            route.timing.repeat_interval + route.timing.group_interval,
        );
        // Built only now: most passes send nothing.
        let shown = shown
            .into_iter()
            .map(|(a, new)| MessageAlert::from_alert(a, new))
            .collect();
        let message = NotificationMessage::new(
            rcv,
            key,
            g.labels,
            shown,
            &self.me,
            now,
            valid_until,
            self.cfg.external_url.clone(),
            repeat,
        );
        let o = Outgoing {
            receiver: rcv.to_owned(),
            group: key.to_owned(),
            items: new_items,
            message,
            attempt: 1,
            first_at: now,
            state: OutState::InFlight { deadline: now },
        };
        self.start(id, o, now, rt);
        min_opt(wake, Some(after(now, route.timing.group_interval)))
    }
}

/// The labels routes and silences see: the alert's own plus `severity`.
fn match_labels(a: &Alert) -> Labels {
    let mut l = a.labels.clone();
    l.insert("severity".into(), a.severity.as_str().into());
    l.insert("rule".into(), a.rule.clone());
    l
}

/// A group's key: receiver, route index and the grouping label values. The same on every node
/// with the same routes, so the ledger's "last sent to this group" carries over a failover.
fn group_key(receiver: &str, route: usize, labels: &Labels) -> String {
    let values: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{receiver}#{route}{{{}}}", values.join(","))
}

#[cfg(test)]
#[path = "unit_tests/pipeline.rs"]
mod tests;
