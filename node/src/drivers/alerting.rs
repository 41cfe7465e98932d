//! The alerting driver: owns the node's [`alerting::Engine`] and performs what it asks.
//!
//! Inputs, in the order the core expects: the retained log replayed at start, then every new
//! stored event (local or synced) as the event bus tells it, membership and gossiped summaries
//! every [`AlertingSettings::tick`], delivery results and timers. The engine's requests are
//! collected in an [`AccumulatingRuntime`] and performed after each call: events stored first
//! (durably), then timers armed, then notifications handed to the [`Notifier`], so a
//! `notification_attempted` record is durable before its send.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alerting::{AccumulatingRuntime, Alert, Engine, Member, Notification, Role, Timer};
use chrono::{DateTime, Utc};
use mesh::Mesh;
use mesh::liveness::Liveness;
use mesh::summary::Summary;
use serde::Serialize;
use sync::{Clock, EventStore, Query};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::drivers::bus::EventRx;
use crate::drivers::notify::Notifier;
use crate::util::{blocking, lock};

/// The gossip key naming the alerter this node sees (empty while none is settled).
pub const ALERTER_KEY: &str = "alerter";

/// The alerting driver's settings; each field's doc says what it trades.
#[derive(Debug, Clone)]
pub struct AlertingSettings {
    /// This node's name, and what it gossips about itself: a transient node is never the
    /// alerter; the highest priority among the others is.
    pub node: String,
    pub transient: bool,
    pub alerter_priority: i64,
    /// Rules, receivers, routes, maintenance windows, grouping and election timings.
    pub config: alerting::Config,
    /// How often membership and summaries are read from the mesh and the engine is ticked.
    /// Shorter reacts to a death sooner (it is part of failover) and wakes the agent more
    /// often. Default 1 s.
    pub tick: Duration,
}

/// What the API shows, refreshed after every engine step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// The settled alerter as this node sees it.
    pub alerter: Option<String>,
    pub role: Option<Role>,
    pub open: Vec<Alert>,
    pub silences: Vec<alerting::silence::Silence>,
    /// Expectations declared by events (`labmesh expect`), newest declaration per name.
    pub expectations: Vec<alerting::expectations::Expectation>,
}

/// The handle the API holds.
pub struct AlertingDriver {
    snapshot: Mutex<Snapshot>,
    store: Arc<EventStore>,
    clock: Arc<dyn Clock>,
    node: String,
    receivers: Vec<alerting::receiver::Receiver>,
}

impl AlertingDriver {
    pub fn snapshot(&self) -> Snapshot {
        lock(&self.snapshot).clone()
    }

    /// Writes a `silence_set` event (the engine picks it up like any stored event).
    pub fn add_silence(&self, silence: &alerting::silence::Silence) -> Result<(), String> {
        self.store
            .append(silence.to_event())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Writes a `silence_cleared` event.
    pub fn clear_silence(&self, id: &str) -> Result<(), String> {
        self.store
            .append(alerting::silence::clear_event(id))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Writes an `expectation_set` event (the engine turns it into an expect rule).
    pub fn add_expectation(
        &self,
        name: &str,
        every: &str,
        grace: Option<&str>,
    ) -> Result<(), Result<String, String>> {
        let event = alerting::expectations::event(name, every, grace).map_err(Ok)?;
        self.store
            .append(event)
            .map(|_| ())
            .map_err(|e| Err(e.to_string()))
    }

    /// Writes an `expectation_cleared` event. `Ok(false)` when no expectation has that name.
    pub fn clear_expectation(&self, name: &str) -> Result<bool, String> {
        if !lock(&self.snapshot)
            .expectations
            .iter()
            .any(|x| x.name == name)
        {
            return Ok(false);
        }
        self.store
            .append(alerting::expectations::clear_event(name))
            .map(|_| true)
            .map_err(|e| e.to_string())
    }

    /// Sends `title` and `text` (the digest) through the receiver `name` now.
    pub async fn send_text(
        &self,
        name: &str,
        title: &str,
        text: &str,
    ) -> Result<(), Result<String, String>> {
        let r = self
            .receivers
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Ok(format!("no receiver named {name:?}")))?;
        let now = self.clock.now();
        let mut msg = alerting::NotificationMessage::new(
            name,
            "digest",
            Default::default(),
            Vec::new(),
            &self.node,
            now,
            now,
            None,
            false,
        );
        msg.title = title.to_owned();
        msg.text = text.to_owned();
        crate::drivers::notify::send_message(r, &msg, Duration::from_secs(30))
            .await
            .map_err(Err)
    }

    /// The configured receivers' names.
    pub fn receiver_names(&self) -> Vec<String> {
        self.receivers.iter().map(|r| r.name.clone()).collect()
    }

    pub fn node(&self) -> &str {
        &self.node
    }
}

/// Maps a gossiped summary onto what the rules read. The gossip carries only the fullest
/// filesystem's used percentage, so it becomes one disk named `fullest` (in basis points).
pub fn node_summary(node: &str, s: &Summary) -> Option<alerting::NodeSummary> {
    let at = DateTime::<Utc>::from_timestamp(s.t, 0)?;
    let mut out = alerting::NodeSummary::new(node, at);
    out.cpu_percent = s.cpu;
    out.cpu_steal_percent = s.steal;
    out.mem_available_bytes = s.mem_avail;
    out.mem_total_bytes = s.mem_total;
    out.swap_used_bytes = s.swap;
    if let Some(pct) = s.disk {
        out.disks.push(alerting::DiskUsage {
            mount: "fullest".into(),
            used_bytes: (pct.clamp(0.0, 100.0) * 100.0) as u64,
            total_bytes: 10_000,
        });
    }
    if let (Some(used), Some(total)) = (s.vram_used, s.vram_total) {
        out.gpus.push(alerting::GpuUsage {
            name: "gpus".into(),
            vram_used_bytes: used,
            vram_total_bytes: total,
        });
    }
    Some(out)
}

/// A send's outcome: notification id, attempt, result.
type Outcome = (String, u32, Result<(), String>);

struct Loop {
    engine: Engine,
    store: Arc<EventStore>,
    mesh: Arc<Mesh>,
    clock: Arc<dyn Clock>,
    notifier: Arc<dyn Notifier>,
    handle: Arc<AlertingDriver>,
    tick: Duration,
    timers_tx: UnboundedSender<Timer>,
    results_tx: UnboundedSender<Outcome>,
    last_summary: BTreeMap<String, String>,
    published: Option<String>,
}

/// Starts the driver; returns the API handle and the task. The task ends when `stop` turns
/// true, at once (nothing of a later step runs).
pub fn start(
    settings: AlertingSettings,
    store: Arc<EventStore>,
    mesh: Arc<Mesh>,
    clock: Arc<dyn Clock>,
    notifier: Arc<dyn Notifier>,
    events: EventRx,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Arc<AlertingDriver>, tokio::task::JoinHandle<()>) {
    let config = settings.config;
    let handle = Arc::new(AlertingDriver {
        snapshot: Mutex::new(Snapshot::default()),
        store: store.clone(),
        clock: clock.clone(),
        node: settings.node.clone(),
        receivers: config.receivers.clone(),
    });
    let receivers: Vec<String> = config.receivers.iter().map(|r| r.name.clone()).collect();
    let engine = Engine::new(
        &settings.node,
        settings.transient,
        settings.alerter_priority,
        config,
        clock.now(),
    );
    tracing::info!(receivers = ?receivers, rules = engine.rules().rules.len(), "alerting configured");
    let (timers_tx, timers_rx) = unbounded_channel();
    let (results_tx, results_rx) = unbounded_channel();
    let lp = Loop {
        engine,
        store,
        mesh,
        clock,
        notifier,
        handle: handle.clone(),
        tick: settings.tick,
        timers_tx,
        results_tx,
        last_summary: BTreeMap::new(),
        published: None,
    };
    let task = tokio::spawn(lp.run(events, timers_rx, results_rx, stop));
    (handle, task)
}

impl Loop {
    /// Runs one engine call, then performs what it asked in the order the engine's contract
    /// needs: its events stored (durable: a `notification_attempted` record before the send
    /// it covers), its timers armed, its notifications dispatched; then refreshes the snapshot.
    fn step(&mut self, f: impl FnOnce(&mut Engine, DateTime<Utc>, &mut AccumulatingRuntime)) {
        let now = self.clock.now();
        let mut out = AccumulatingRuntime::default();
        f(&mut self.engine, now, &mut out);
        self.perform(out, now);
        let role = self.engine.role(now);
        let alerter = match &role {
            Role::Alerter => Some(self.engine.name().to_owned()),
            Role::Follower { alerter } => Some(alerter.clone()),
            _ => None,
        };
        let mut snap = lock(&self.handle.snapshot);
        snap.alerter = alerter;
        snap.role = Some(role);
        snap.open = self.engine.open_alerts().cloned().collect();
        snap.silences = self.engine.silences(now).cloned().collect();
        snap.expectations = self.engine.expectations().to_vec();
    }

    fn perform(&self, out: AccumulatingRuntime, now: DateTime<Utc>) {
        for event in out.events {
            // The fsync may block: other tasks move off this worker meanwhile.
            if let Err(e) = blocking(|| self.store.append(event)) {
                tracing::error!(error = %e, "alerting: cannot store an event");
            }
        }
        for (timer, after) in out.timers {
            let tx = self.timers_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(timer);
            });
        }
        for n in out.notifications {
            self.dispatch(n, now);
        }
    }

    fn dispatch(&self, n: Notification, now: DateTime<Utc>) {
        let timeout = (n.deadline - now)
            .to_std()
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(100));
        let delivery = self
            .notifier
            .deliver(&n, self.engine.receiver(&n.receiver), timeout);
        let tx = self.results_tx.clone();
        tokio::spawn(async move {
            let result = delivery.await;
            if let Err(e) = &result {
                tracing::warn!(receiver = %n.receiver, attempt = n.attempt, error = %e, "notification failed");
            } else {
                tracing::info!(receiver = %n.receiver, attempt = n.attempt, "notification sent");
            }
            let _ = tx.send((n.id, n.attempt, result));
        });
    }

    /// The membership snapshot: this node live, every peer not `Left`, live when alive or
    /// suspect; then the summaries that changed.
    async fn membership(&mut self) {
        let view = self.mesh.view().await;
        let me = mesh::keys::NodeInfo::from_key_values(&view.key_values);
        let mut members = vec![Member {
            name: view.node.clone(),
            live: true,
            transient: me.transient,
            alerter_priority: me.alerter_priority,
        }];
        let mut summaries = Vec::new();
        if let Some(text) = view.key_values.get(mesh::keys::SUMMARY) {
            summaries.push((view.node.clone(), text.clone()));
        }
        for p in &view.peers {
            if p.liveness == Liveness::Left {
                continue;
            }
            let info = mesh::keys::NodeInfo::from_key_values(&p.key_values);
            members.push(Member {
                name: p.node.clone(),
                live: p.liveness.is_up(),
                transient: info.transient,
                alerter_priority: info.alerter_priority,
            });
            if let Some(text) = p.key_values.get(mesh::keys::SUMMARY) {
                summaries.push((p.node.clone(), text.clone()));
            }
        }
        self.step(|e, now, fx| e.on_membership(members, now, fx));
        for (node, text) in summaries {
            if self.last_summary.get(&node) == Some(&text) {
                continue;
            }
            if let Some(s) = Summary::parse(&text).and_then(|s| node_summary(&node, &s)) {
                self.step(|e, now, fx| e.on_summary(&s, now, fx));
            }
            self.last_summary.insert(node, text);
        }
        let alerter = lock(&self.handle.snapshot).alerter.clone();
        if alerter != self.published {
            self.mesh
                .set_key(ALERTER_KEY, alerter.as_deref().unwrap_or(""))
                .await;
            self.published = alerter;
        }
    }

    async fn run(
        mut self,
        mut events: EventRx,
        mut timers: UnboundedReceiver<Timer>,
        mut results: UnboundedReceiver<Outcome>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        // Replay the retained log, oldest first, before anything new.
        let replay: Vec<sync::Event> = blocking(|| {
            self.store
                .query(&Query::default())
                .iter()
                .filter_map(|e| self.store.read_event(e).ok())
                .collect()
        });
        tracing::info!(events = replay.len(), "alerting: replayed the retained log");
        self.step(|e, now, fx| e.on_events(replay.iter(), now, fx));
        drop(replay);
        self.membership().await;
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // First: once stopped, nothing more of this engine runs.
                biased;
                _ = stop.changed() => break,
                Some(timer) = timers.recv() => self.step(|e, now, fx| e.on_timer(timer, now, fx)),
                Some((id, attempt, result)) = results.recv() => {
                    self.step(|e, now, fx| e.on_attempt_delivery(&id, attempt, result, now, fx));
                }
                Some(first) = events.recv() => {
                    // Only held for the burst timer: no evaluation, no snapshot to refresh.
                    let now = self.clock.now();
                    let mut out = AccumulatingRuntime::default();
                    self.engine.on_stored(first.event.clone(), now, &mut out);
                    while let Ok(more) = events.try_recv() {
                        self.engine.on_stored(more.event.clone(), now, &mut out);
                    }
                    self.perform(out, now);
                }
                _ = tick.tick() => {
                    self.membership().await;
                    self.step(|e, now, fx| e.tick(now, fx));
                }
            }
        }
    }
}
