//! A tiny in-memory driver: engines on a virtual clock, one shared event log standing in for the
//! store plus sync, and a recorder as the `Runtime`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use alerting::election::Member;
use alerting::{Config, Engine, Notification, Runtime, Timer};
use chrono::{DateTime, TimeZone, Utc};
use sync::{Event, NewEvent, Severity};

/// What one engine asked for.
#[derive(Default)]
pub struct Rec {
    pub events: Vec<NewEvent>,
    pub notes: Vec<Notification>,
    pub timers: Vec<(Timer, Duration)>,
}

impl Runtime for Rec {
    fn write_event(&mut self, event: NewEvent) {
        self.events.push(event);
    }
    fn notify(&mut self, n: Notification) {
        self.notes.push(n);
    }
    fn submit_after(&mut self, timer: Timer, after: Duration) {
        self.timers.push((timer, after));
    }
}

pub fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000, 0).unwrap()
}

pub struct Node {
    pub name: String,
    pub engine: Engine,
    pub rt: Rec,
    pub alive: bool,
    pub transient: bool,
    pub prio: i64,
    /// Notifications handed to the driver and not yet reported.
    pub pending: Vec<Notification>,
    /// Every notification this node performed.
    pub performed: Vec<Notification>,
}

/// Nodes with a shared event log. `links` says who receives whose events (a partition cuts it).
pub struct World {
    pub now: DateTime<Utc>,
    pub nodes: Vec<Node>,
    pub log: Vec<Event>,
    pub cut: BTreeSet<(usize, usize)>,
}

pub fn member(name: &str, live: bool, transient: bool, prio: i64) -> Member {
    Member {
        name: name.into(),
        live,
        transient,
        alerter_priority: prio,
    }
}

impl World {
    /// Nodes `(name, transient, priority)` with the same config, all starting now.
    pub fn new(nodes: &[(&str, bool, i64)], config: &str) -> World {
        let cfg = Config::from_toml_str(config).unwrap();
        let now = t0();
        World {
            now,
            nodes: nodes
                .iter()
                .map(|(n, tr, p)| Node {
                    name: n.to_string(),
                    engine: Engine::new(n, *tr, *p, cfg.clone(), now),
                    rt: Rec::default(),
                    alive: true,
                    transient: *tr,
                    prio: *p,
                    pending: Vec::new(),
                    performed: Vec::new(),
                })
                .collect(),
            log: Vec::new(),
            cut: BTreeSet::new(),
        }
    }

    pub fn idx(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap()
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        a == b || !(self.cut.contains(&(a, b)) || self.cut.contains(&(b, a)))
    }

    /// Each live node's membership view: every node, live when alive and linked.
    pub fn gossip(&mut self) {
        let now = self.now;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive {
                continue;
            }
            let view: Vec<Member> = (0..self.nodes.len())
                .map(|j| {
                    let live = self.nodes[j].alive && self.linked(i, j);
                    let m = &self.nodes[j];
                    member(&m.name, live, m.transient, m.prio)
                })
                .collect();
            let n = &mut self.nodes[i];
            n.engine.on_membership(view, now, &mut n.rt);
        }
        self.flush();
    }

    /// Stores what engines wrote and delivers it (and anything they write in turn) to every
    /// live linked node; moves notifications to `pending`.
    pub fn flush(&mut self) {
        loop {
            let mut new = Vec::new();
            for i in 0..self.nodes.len() {
                let n = &mut self.nodes[i];
                for ne in n.rt.events.drain(..) {
                    new.push((i, ne.into_event(&n.name, self.now).unwrap()));
                }
                let notes: Vec<Notification> = n.rt.notes.drain(..).collect();
                n.performed.extend(notes.iter().cloned());
                n.pending.extend(notes);
                assert!(
                    n.rt.timers.iter().all(|(_, d)| !d.is_zero()),
                    "a zero wait would spin the driver: {:?}",
                    n.rt.timers
                );
                n.rt.timers.clear();
            }
            if new.is_empty() {
                return;
            }
            for (from, e) in new {
                self.log.push(e.clone());
                self.deliver_from(from, &e);
            }
        }
    }

    fn deliver_from(&mut self, from: usize, e: &Event) {
        let now = self.now;
        for j in 0..self.nodes.len() {
            if self.nodes[j].alive && self.linked(from, j) {
                let n = &mut self.nodes[j];
                n.engine.on_event(e, now, &mut n.rt);
            }
        }
    }

    /// An event written on `node` by some script (stored there and synced to linked nodes).
    pub fn emit(
        &mut self,
        node: &str,
        kind: &str,
        source: &str,
        payload: serde_json::Value,
    ) -> Event {
        let i = self.idx(node);
        let e = NewEvent::new(kind, Severity::Error, source)
            .payload(payload.as_object().cloned().unwrap_or_default())
            .into_event(node, self.now)
            .unwrap();
        self.log.push(e.clone());
        self.deliver_from(i, &e);
        self.flush();
        e
    }

    /// Delivers an event made elsewhere, as if written on its node now.
    pub fn inject(&mut self, e: &Event) {
        let i = self.idx(&e.node);
        self.log.push(e.clone());
        self.deliver_from(i, e);
        self.flush();
    }

    /// Restarts a node: a fresh engine that replays the whole log, as the agent does at start.
    pub fn restart(&mut self, name: &str, config: &str) {
        let i = self.idx(name);
        let now = self.now;
        let cfg = Config::from_toml_str(config).unwrap();
        let n = &mut self.nodes[i];
        n.engine = Engine::new(&n.name, n.transient, n.prio, cfg, now);
        n.pending.clear();
        n.engine.on_events(self.log.iter(), now, &mut n.rt);
        self.flush();
        self.gossip();
    }

    /// Sends every event of the log to every live node (a healed partition catching up).
    pub fn resync(&mut self) {
        let now = self.now;
        let log = self.log.clone();
        for n in self.nodes.iter_mut().filter(|n| n.alive) {
            n.engine.on_events(log.iter(), now, &mut n.rt);
        }
        self.flush();
    }

    /// Advances the clock in steps of `step`, ticking every live node; sends complete at once
    /// with `ok` unless `hold` names the node (its sends stay pending).
    pub fn run_for(&mut self, total: Duration, step: Duration, ok: bool, hold: &[&str]) {
        let end = self.now + chrono::Duration::from_std(total).unwrap();
        while self.now < end {
            self.now += chrono::Duration::from_std(step).unwrap();
            let now = self.now;
            for n in self.nodes.iter_mut().filter(|n| n.alive) {
                n.engine.tick(now, &mut n.rt);
            }
            self.flush();
            self.complete(ok, hold);
        }
    }

    /// Reports every pending send of the live nodes not in `hold`.
    pub fn complete(&mut self, ok: bool, hold: &[&str]) {
        let now = self.now;
        for n in self
            .nodes
            .iter_mut()
            .filter(|n| n.alive && !hold.contains(&n.name.as_str()))
        {
            for note in std::mem::take(&mut n.pending) {
                let result = if ok {
                    Ok(())
                } else {
                    Err("503 Service Unavailable".into())
                };
                n.engine.on_delivery(&note.id, result, now, &mut n.rt);
            }
        }
        self.flush();
    }

    pub fn of_type(&self, kind: &str) -> Vec<&Event> {
        self.log.iter().filter(|e| e.event_type == kind).collect()
    }

    /// Notifications performed that carry an alert of `rule`.
    pub fn performed_for(&self, rule: &str) -> Vec<(&str, &Notification)> {
        self.performed()
            .into_iter()
            .filter(|(_, n)| n.message.alerts.iter().any(|a| a.rule == rule))
            .collect()
    }

    pub fn performed(&self) -> Vec<(&str, &Notification)> {
        self.nodes
            .iter()
            .flat_map(|n| n.performed.iter().map(move |p| (n.name.as_str(), p)))
            .collect()
    }
}
