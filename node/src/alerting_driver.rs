//! The alerting driver: owns the node's [`alerting::Engine`] and performs what it asks.
//!
//! Inputs, in the order the core expects: the retained log replayed at start, then every new
//! stored entry (local or synced), membership and gossiped summaries every second, delivery
//! results and timers. Outputs: events are appended to the store synchronously inside
//! [`Runtime::write_event`], and notifications are only dispatched after the engine call that
//! asked for them returns, so a `notification_attempted` record is durable before its send.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alerting::{Alert, Engine, Member, Notification, Role, Runtime, Timer};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sync::{Event, EventStore, IndexEntry, NewEvent, Query};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::peer::PeerRuntime;

/// How long the driver gathers newly stored events before one evaluation (see `Loop::burst`).
const BURST_WINDOW: Duration = Duration::from_millis(50);

/// The gossip key naming the alerter this node sees (empty while none is settled).
pub const ALERTER_KEY: &str = "alerter";

/// What the API shows, refreshed after every engine step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// The settled alerter as this node sees it.
    pub alerter: Option<String>,
    pub role: Option<Role>,
    pub open: Vec<Alert>,
    pub silences: Vec<alerting::silence::Silence>,
    /// Expectations declared by events (`labmesh expect`), newest declaration per name.
    pub expectations: Vec<crate::expectations::Expectation>,
}

/// The handle the API holds.
pub struct AlertingDriver {
    snapshot: Mutex<Snapshot>,
    store: Arc<EventStore>,
    node: String,
    receivers: Vec<alerting::receiver::Receiver>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Writes an `expectation_set` event (the driver turns it into an expect rule).
    pub fn add_expectation(
        &self,
        name: &str,
        every: &str,
        grace: Option<&str>,
    ) -> Result<(), Result<String, String>> {
        let event = crate::expectations::event(name, every, grace).map_err(Ok)?;
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
            .append(crate::expectations::clear_event(name))
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
        let now = Utc::now();
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
        let timeout = Duration::from_secs(30);
        let delivery = alerting::build_delivery(r, &crate::alerting_config::HostSecrets, &msg)
            .map_err(|e| Err(e.to_string()))?;
        match delivery {
            alerting::Delivery::Http(req) => crate::alerting_send::http(req, timeout).await,
            alerting::Delivery::Email(mail) => crate::alerting_send::email(mail, timeout).await,
        }
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

/// The engine's side effects, collected during one call.
struct Effects<'a> {
    store: &'a EventStore,
    timers: &'a UnboundedSender<Timer>,
    sends: Vec<Notification>,
}

impl Runtime for Effects<'_> {
    fn write_event(&mut self, event: NewEvent) {
        // Synchronous and durable before any notification of this step is dispatched; the
        // fsync may block, so other tasks move off this worker meanwhile (multi-thread runtime).
        let store = self.store;
        if let Err(e) = tokio::task::block_in_place(|| store.append(event)) {
            tracing::error!(error = %e, "alerting: cannot store an event");
        }
    }

    fn notify(&mut self, notification: Notification) {
        self.sends.push(notification);
    }

    fn submit_after(&mut self, timer: Timer, after: Duration) {
        let tx = self.timers.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(timer);
        });
    }
}

fn parse(store: &EventStore, entry: &IndexEntry) -> Option<Event> {
    let bytes = store.read_bytes(entry).ok()?;
    Event::from_file_bytes(&bytes, store.config().max_event_bytes, Some(entry.id)).ok()
}

/// Maps a gossiped summary onto what the rules read. The gossip carries only the fullest
/// filesystem's used percentage, so it becomes one disk named `fullest` (in basis points).
pub fn node_summary(node: &str, text: &str) -> Option<alerting::NodeSummary> {
    let s = crate::probes::summary::Summary::parse(text)?;
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
    peer: Arc<PeerRuntime>,
    handle: Arc<AlertingDriver>,
    timers_tx: UnboundedSender<Timer>,
    results_tx: UnboundedSender<Outcome>,
    last_summary: std::collections::BTreeMap<String, String>,
    published: Option<String>,
    /// Expectation name → its newest `expectation_cleared` time.
    cleared: std::collections::BTreeMap<String, DateTime<Utc>>,
}

/// Starts the driver; returns the API handle and the task.
pub fn start(
    settings: &crate::settings::Settings,
    config: alerting::Config,
    store: Arc<EventStore>,
    peer: Arc<PeerRuntime>,
    entries: UnboundedReceiver<IndexEntry>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Arc<AlertingDriver>, tokio::task::JoinHandle<()>) {
    let handle = Arc::new(AlertingDriver {
        snapshot: Mutex::new(Snapshot::default()),
        store: store.clone(),
        node: settings.name.clone(),
        receivers: config.receivers.clone(),
    });
    let receivers: Vec<String> = config.receivers.iter().map(|r| r.name.clone()).collect();
    let engine = Engine::new(
        &settings.name,
        settings.mesh.transient,
        settings.mesh.alerter_priority,
        config,
        Utc::now(),
    );
    tracing::info!(receivers = ?receivers, rules = engine.rules().rules.len(), "alerting configured");
    let (timers_tx, timers_rx) = unbounded_channel();
    let (results_tx, results_rx) = unbounded_channel();
    let lp = Loop {
        engine,
        store,
        peer,
        handle: handle.clone(),
        timers_tx,
        results_tx,
        last_summary: Default::default(),
        published: None,
        cleared: Default::default(),
    };
    let task = tokio::spawn(lp.run(entries, timers_rx, results_rx, stop));
    (handle, task)
}

impl Loop {
    /// Runs one engine call, then dispatches its notifications and refreshes the snapshot.
    fn step(&mut self, f: impl FnOnce(&mut Engine, DateTime<Utc>, &mut Effects<'_>)) {
        let now = Utc::now();
        let mut fx = Effects {
            store: &self.store,
            timers: &self.timers_tx,
            sends: Vec::new(),
        };
        f(&mut self.engine, now, &mut fx);
        let sends = std::mem::take(&mut fx.sends);
        for n in sends {
            self.dispatch(n);
        }
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
    }

    /// Adds or replaces the expect rule an `expectation_set` event declares, or drops it for
    /// an `expectation_cleared`; the newer of the two wins whatever order they arrive in.
    fn expectation(&mut self, ev: &Event) {
        if let Some((name, at)) = crate::expectations::cleared_by(ev) {
            let newest = self.cleared.entry(name.to_owned()).or_insert(at);
            *newest = (*newest).max(at);
            let mut snap = lock(&self.handle.snapshot);
            let before = snap.expectations.len();
            snap.expectations
                .retain(|x| !(x.name == name && x.declared_at <= at));
            let removed = snap.expectations.len() < before;
            drop(snap);
            if removed {
                tracing::info!(name, "alerting: expectation removed");
                let rule = crate::expectations::rule_name(name);
                self.engine.remove_rule(&rule, at);
            }
            return;
        }
        let Some((x, rule)) = crate::expectations::from_event(ev) else {
            return;
        };
        if self
            .cleared
            .get(&x.name)
            .is_some_and(|c| *c >= x.declared_at)
        {
            return; // removed after this declaration
        }
        let mut snap = lock(&self.handle.snapshot);
        match snap.expectations.iter_mut().find(|o| o.name == x.name) {
            Some(o) if o.declared_at > x.declared_at => return,
            Some(o) => *o = x.clone(),
            None => snap.expectations.push(x.clone()),
        }
        drop(snap);
        tracing::info!(rule = %rule.name, "alerting: expectation declared");
        self.engine.set_rule(rule, x.declared_at);
    }

    fn dispatch(&self, n: Notification) {
        let tx = self.results_tx.clone();
        let delivery = match self.engine.receiver(&n.receiver) {
            Some(r) => {
                alerting::build_delivery(r, &crate::alerting_config::HostSecrets, &n.message)
            }
            None => {
                let _ = tx.send((
                    n.id,
                    n.attempt,
                    Err(format!("no receiver named {}", n.receiver)),
                ));
                return;
            }
        };
        let timeout = (n.deadline - Utc::now())
            .to_std()
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(100));
        tokio::spawn(async move {
            let result = match delivery {
                Err(e) => Err(e.to_string()),
                Ok(alerting::Delivery::Http(req)) => crate::alerting_send::http(req, timeout).await,
                Ok(alerting::Delivery::Email(mail)) => {
                    crate::alerting_send::email(mail, timeout).await
                }
            };
            if let Err(e) = &result {
                tracing::warn!(receiver = %n.receiver, attempt = n.attempt, error = %e, "notification failed");
            } else {
                tracing::info!(receiver = %n.receiver, attempt = n.attempt, "notification sent");
            }
            let _ = tx.send((n.id, n.attempt, result));
        });
    }

    async fn membership(&mut self) {
        let view = self.peer.mesh.view().await;
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
            use mesh::liveness::Liveness;
            if p.liveness == Liveness::Left {
                continue;
            }
            let info = mesh::keys::NodeInfo::from_key_values(&p.key_values);
            members.push(Member {
                name: p.node.clone(),
                live: matches!(p.liveness, Liveness::Alive | Liveness::Suspect),
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
            if let Some(s) = node_summary(&node, &text) {
                self.step(|e, now, fx| e.on_summary(&s, now, fx));
            }
            self.last_summary.insert(node, text);
        }
        let alerter = lock(&self.handle.snapshot).alerter.clone();
        if alerter != self.published {
            self.peer
                .mesh
                .set_key(ALERTER_KEY, alerter.as_deref().unwrap_or(""))
                .await;
            self.published = alerter;
        }
    }

    /// `first` and the entries stored with it. Synced events land in bursts (a healed
    /// partition's `alert_firing` with the `notification_sent` that covers it); evaluated one
    /// by one, the engine would see the other side's alert before its ledger and page again.
    async fn burst(
        &self,
        first: IndexEntry,
        entries: &mut UnboundedReceiver<IndexEntry>,
    ) -> Vec<Event> {
        // Long enough for the pick-up to index the rest of a stored batch; short next to any
        // group_wait.
        tokio::time::sleep(BURST_WINDOW).await;
        let mut batch: Vec<Event> = parse(&self.store, &first).into_iter().collect();
        while let Ok(entry) = entries.try_recv() {
            batch.extend(parse(&self.store, &entry));
        }
        batch
    }

    async fn run(
        mut self,
        mut entries: UnboundedReceiver<IndexEntry>,
        mut timers: UnboundedReceiver<Timer>,
        mut results: UnboundedReceiver<Outcome>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        // Replay the retained log, oldest first, before anything new.
        let store = self.store.clone();
        let replay = tokio::task::spawn_blocking(move || {
            store
                .query(&Query::default())
                .iter()
                .filter_map(|e| parse(&store, e))
                .collect::<Vec<Event>>()
        })
        .await
        .unwrap_or_default();
        tracing::info!(events = replay.len(), "alerting: replayed the retained log");
        for ev in &replay {
            self.expectation(ev);
        }
        self.step(|e, now, fx| e.on_events(replay.iter(), now, fx));
        self.membership().await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                Some(entry) = entries.recv() => {
                    let batch = self.burst(entry, &mut entries).await;
                    for ev in &batch {
                        self.expectation(ev);
                    }
                    self.step(|e, now, fx| e.on_events(batch.iter(), now, fx));
                }
                Some(timer) = timers.recv() => self.step(|e, now, fx| e.on_timer(timer, now, fx)),
                Some((id, attempt, result)) = results.recv() => {
                    self.step(|e, now, fx| e.on_attempt_delivery(&id, attempt, result, now, fx));
                }
                _ = tick.tick() => {
                    self.membership().await;
                    self.step(|e, now, fx| e.tick(now, fx));
                }
            }
        }
    }
}
