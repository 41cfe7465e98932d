//! The alerting core of one node, composed: election, rules, watchdogs, alert states and the
//! notification pipeline, behind one sans-IO API.
//!
//! The driver feeds inputs — membership snapshots, gossiped summaries, every stored event (its
//! own and its peers', including the replay of the retained log at start), delivery results,
//! timers — each with `now`, and performs what the core asks through [`Runtime`]: write an
//! event, send a notification, call back after a delay. Nothing here reads a clock, a file or a
//! socket, so the agent, the turmoil simulation and the tests run the same code.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sync::Event;

use crate::EVENT_SOURCE;
use crate::config::Config;
use crate::election::{Election, Member, Role};
use crate::expectations::{Change, Expectation, Expectations};
use crate::pipeline::{Mode, Pipeline};
use crate::receiver::Receiver;
use crate::rules::{Condition, RuleKind, RuleSet};
use crate::runtime::{Runtime, Timer};
use crate::silence::{Silence, Suppressions};
use crate::state::{Alert, AlertBook};
use crate::summary::NodeSummary;
use crate::util::until;
use crate::watchdog::Watchdogs;

/// How long the engine gathers newly stored events before one evaluation
/// ([`Engine::on_stored`]). Synced events land in bursts (a healed partition's `alert_firing`
/// with the `notification_sent` that covers it); evaluated one by one, the engine would see
/// the other side's alert before its ledger and page again. Long enough for the store to
/// index the rest of a received batch; short next to any `group_wait`.
pub const BURST_WINDOW: Duration = Duration::from_millis(50);

/// The alerting core of one node.
#[derive(Debug)]
pub struct Engine {
    me: String,
    rules: RuleSet,
    receivers: Vec<Receiver>,
    election: Election,
    watch: Watchdogs,
    book: AlertBook,
    pipeline: Pipeline,
    armed: BTreeMap<Timer, DateTime<Utc>>,
    /// How long disk samples are kept (the longest disk_full window).
    disk_keep: Duration,
    /// Nodes whose disks the projection learns from `host_sample` events.
    sampled: std::collections::BTreeSet<String>,
    /// Expectations declared by events (`labmesh expect`), turned into rules.
    expectations: Expectations,
    /// Stored events waiting for the burst timer.
    burst: Vec<Arc<Event>>,
}

impl Engine {
    /// A node named `me` starting at `now`. `transient` and `alerter_priority` are its own
    /// settings (what it gossips).
    pub fn new(
        me: &str,
        transient: bool,
        alerter_priority: i64,
        config: Config,
        now: DateTime<Utc>,
    ) -> Engine {
        let disk_keep = config
            .rules
            .rules
            .iter()
            .filter_map(|r| match &r.kind {
                RuleKind::DiskFull(d) => Some(d.window),
                _ => None,
            })
            .max()
            .unwrap_or(Duration::ZERO);
        Engine {
            me: me.to_owned(),
            election: Election::new(me, transient, alerter_priority, config.election, now),
            watch: Watchdogs::new(now),
            book: AlertBook::new(me),
            pipeline: Pipeline::new(me, config.pipeline, Suppressions::new(config.maintenance)),
            rules: config.rules,
            receivers: config.receivers,
            armed: BTreeMap::new(),
            disk_keep,
            sampled: Default::default(),
            expectations: Expectations::default(),
            burst: Vec::new(),
        }
    }

    /// Adds a rule, or replaces the one with its name, at run time (an expectation declared by
    /// an event). An expect rule's window starts at `since` unless its job reported later.
    pub fn set_rule(&mut self, rule: crate::rules::Rule, since: DateTime<Utc>) {
        if matches!(rule.kind, RuleKind::Expect(_)) {
            self.watch.seed_expect(&rule.name, since);
        }
        match self.rules.rules.iter_mut().find(|r| r.name == rule.name) {
            Some(r) => *r = rule,
            None => self.rules.rules.push(rule),
        }
    }

    /// Drops a rule added at run time (a cleared expectation). Its open alerts resolve at
    /// `at`: an alert of a rule that no longer exists would otherwise stay open forever. The
    /// next step records and sends the resolution like any other. Returns whether it existed.
    pub fn remove_rule(&mut self, name: &str, at: DateTime<Utc>) -> bool {
        let Some(pos) = self.rules.rules.iter().position(|r| r.name == name) else {
            return false;
        };
        self.rules.rules.remove(pos);
        self.book.resolve_rule(name, at);
        true
    }

    /// A new membership snapshot (this node may be in it or not).
    pub fn on_membership(
        &mut self,
        members: Vec<Member>,
        now: DateTime<Utc>,
        rt: &mut impl Runtime,
    ) {
        self.election.on_membership(members, now);
        self.step(now, rt);
    }

    /// A node's gossiped summary.
    pub fn on_summary(&mut self, summary: &NodeSummary, now: DateTime<Utc>, rt: &mut impl Runtime) {
        // A node that records host samples projects from those (per mount, kept in the event
        // log across restarts); the summary's one "fullest" figure would be a second
        // projection of the same disk.
        if !self.sampled.contains(&summary.node) {
            self.watch.record_summary(summary, self.disk_keep);
        }
        for rule in &self.rules.rules {
            for obs in rule.observe_summary(summary) {
                self.book.observe(obs, None, now);
            }
        }
        self.step(now, rt);
    }

    /// A stored event, from any node, in any order, any number of times. Events this crate
    /// wrote itself update the alert book and the ledger but are never matched by rules (a rule
    /// on `notification_failed` would feed on itself).
    pub fn on_event(&mut self, e: &Event, now: DateTime<Utc>, rt: &mut impl Runtime) {
        self.on_events(std::iter::once(e), now, rt);
    }

    /// Many events at once (the replay at start), with one evaluation at the end. Expectation
    /// declarations and removals among them are applied first, so a job's report in the same
    /// batch meets its rule.
    pub fn on_events<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a Event>,
        now: DateTime<Utc>,
        rt: &mut impl Runtime,
    ) {
        let events: Vec<&Event> = events.into_iter().collect();
        for e in &events {
            self.apply_expectation(e);
        }
        for e in events {
            self.ingest(e, now);
        }
        self.step(now, rt);
    }

    /// An event that just entered the store (any node's, as the driver's event bus tells
    /// it). Held until the burst timer ([`BURST_WINDOW`]) so that what was stored together
    /// is evaluated together.
    pub fn on_stored(&mut self, e: Arc<Event>, _now: DateTime<Utc>, rt: &mut impl Runtime) {
        if self.burst.is_empty() {
            rt.submit_after(Timer::Burst, BURST_WINDOW);
        }
        self.burst.push(e);
    }

    /// Stored events waiting for the burst timer.
    pub fn pending_events(&self) -> usize {
        self.burst.len()
    }

    /// Applies an expectation event to the rules.
    fn apply_expectation(&mut self, e: &Event) {
        match self.expectations.on_event(e) {
            Some(Change::Set(rule, since)) => self.set_rule(*rule, since),
            Some(Change::Removed(rule, at)) => {
                self.remove_rule(&rule, at);
            }
            None => {}
        }
    }

    fn ingest(&mut self, e: &Event, now: DateTime<Utc>) {
        if let Some(s) = crate::digest::host_sample(e) {
            self.disk_history(&s);
        }
        self.election.on_event(e);
        self.pipeline.on_event(e);
        let rules = &self.rules;
        self.book.on_event(e, |r| rules.get(r).is_some());
        if e.source == EVENT_SOURCE {
            return;
        }
        for rule in &self.rules.rules {
            if let Some(obs) = rule.observe_event(e) {
                self.book.observe(obs, rule.resolve_after(), now);
            }
            if let Some(mut obs) = self.watch.on_event(rule, e) {
                // A job's report clears its alert even when it arrives after the deadline
                // observation (a late sync of a backup that did run in time).
                obs.at = obs.at.max(now);
                self.book.observe(obs, None, now);
            }
        }
    }

    /// Feeds a `host_sample`'s disks to the disk-full projection. The replay of the log at
    /// start brings the week back, so a restart does not wait a day before projecting again.
    fn disk_history(&mut self, s: &crate::digest::HostSample) {
        let mut summary = NodeSummary::new(&s.node, s.at);
        summary.disks = s
            .disks
            .iter()
            .filter_map(|d| {
                Some(crate::summary::DiskUsage {
                    mount: d.mount.clone(),
                    used_bytes: d.used_bytes?,
                    total_bytes: d.total_bytes.filter(|t| *t > 0)?,
                })
            })
            .collect();
        if summary.disks.is_empty() {
            return;
        }
        self.sampled.insert(s.node.clone());
        self.watch.record_summary(&summary, self.disk_keep);
    }

    /// The driver's report on a notification's latest attempt. Unknown ids (a previous
    /// process) and reports on an attempt the core already gave up at its deadline are ignored.
    pub fn on_delivery(
        &mut self,
        id: &str,
        result: Result<(), String>,
        now: DateTime<Utc>,
        rt: &mut impl Runtime,
    ) {
        self.pipeline.on_result(id, result, now, rt);
        self.step(now, rt);
    }

    /// [`Engine::on_delivery`] for one attempt ([`Notification::attempt`]): a late report of
    /// an earlier attempt is ignored, so it cannot fail the retry that is under way.
    pub fn on_attempt_delivery(
        &mut self,
        id: &str,
        attempt: u32,
        result: Result<(), String>,
        now: DateTime<Utc>,
        rt: &mut impl Runtime,
    ) {
        self.pipeline
            .on_attempt_result(id, Some(attempt), result, now, rt);
        self.step(now, rt);
    }

    /// A timer submitted through [`Runtime::submit_after`] is due.
    pub fn on_timer(&mut self, timer: Timer, now: DateTime<Utc>, rt: &mut impl Runtime) {
        if timer == Timer::Burst {
            // An early call only evaluates sooner; the next stored event arms it again.
            let burst = std::mem::take(&mut self.burst);
            self.on_events(burst.iter().map(|e| e.as_ref()), now, rt);
            return;
        }
        if self.armed.get(&timer).is_some_and(|at| *at <= now) {
            self.armed.remove(&timer);
        }
        self.step(now, rt);
    }

    /// Re-evaluates at `now` without new input (the driver may call it on any tick).
    pub fn tick(&mut self, now: DateTime<Utc>, rt: &mut impl Runtime) {
        self.step(now, rt);
    }

    fn step(&mut self, now: DateTime<Utc>, rt: &mut impl Runtime) {
        let role = self.election.role(now);
        let isolated = role == Role::Isolated;
        let watch_obs = self.watch.evaluate(
            self.rules.rules.iter(),
            self.election.members(),
            &self.me,
            isolated,
            now,
        );
        for obs in watch_obs {
            if isolated
                && obs.condition != Condition::Clear
                && obs.labels.get("node").is_some_and(|n| *n != self.me)
            {
                continue;
            }
            self.book.observe(obs, None, now);
        }
        self.book.tick(now);
        if let Some(ev) = self.election.poll(now) {
            rt.write_event(ev);
        }
        let me = self.me.clone();
        let may_record = |a: &Alert| match &role {
            Role::Alerter => true,
            Role::Isolated => a.labels.get("node") == Some(&me),
            _ => false,
        };
        for ev in self.book.take_records(may_record) {
            rt.write_event(ev);
        }
        let election = &self.election;
        let mode = match role {
            Role::Alerter => Mode::Send,
            Role::Settling { .. } => Mode::Hold,
            Role::Follower { .. } | Role::Isolated => Mode::HandOver,
        };
        let notify_at =
            self.pipeline
                .advance(self.book.alerts(), mode, &|n| election.is_live(n), now, rt);
        self.book.prune(now);
        self.pipeline.ledger.prune(now);
        self.pipeline.suppressions.prune(now);
        let settle = match role {
            Role::Settling { until } => Some(until),
            _ => None,
        };
        let alerts_at = [
            self.book.next_deadline(),
            self.watch.next_deadline(self.rules.rules.iter(), now),
        ]
        .into_iter()
        .flatten()
        .min();
        self.arm(Timer::Settle, settle, now, rt);
        self.arm(Timer::Alerts, alerts_at, now, rt);
        self.arm(Timer::Notify, notify_at, now, rt);
    }

    /// Submits `timer` for `at` unless an earlier or equal one is still outstanding.
    fn arm(
        &mut self,
        timer: Timer,
        at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        rt: &mut impl Runtime,
    ) {
        // Anything due at or before `now` was handled by this step; never ask for a zero wait
        // (a deadline that stays in the past would spin the driver).
        let Some(at) = at.filter(|at| *at > now) else {
            return;
        };
        if self.armed.get(&timer).is_some_and(|a| *a <= at && *a > now) {
            return;
        }
        self.armed.insert(timer, at);
        rt.submit_after(timer, until(now, at));
    }

    /// This node's role at `now`.
    pub fn role(&self, now: DateTime<Utc>) -> Role {
        self.election.role(now)
    }

    /// Firing and recently resolved alerts.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.book.alerts()
    }

    /// Open alerts, pending included.
    pub fn open_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.book.open()
    }

    /// The receiver a [`Notification`] names (to build its request).
    pub fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.name == name)
    }

    /// Silences in force or scheduled.
    pub fn silences(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Silence> {
        self.pipeline.suppressions.silences(now)
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Expectations declared by events, newest declaration per name.
    pub fn expectations(&self) -> &[Expectation] {
        self.expectations.list()
    }

    pub fn name(&self) -> &str {
        &self.me
    }
}
