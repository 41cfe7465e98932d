//! The driver: one tokio task per check feeds probe results (or ttl reports) to the check's
//! [`Machine`], decides the event with the [`ServiceBook`] and appends it to the store. Current
//! states are kept for `GET /v1/checks`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sync::{EventStore, NewEvent, Order, Query};
use tokio::sync::{mpsc, oneshot, watch};

use crate::util::lock;

use super::config::{CheckDef, Probe};
use super::events::{self, ServiceBook};
use super::machine::{Machine, Status};
use super::probe::{ProbeResult, Prober};

/// A `pass`, `warn` or `fail` report for a ttl check; the reply is the check's state after it.
pub struct TtlReport {
    pub status: Status,
    pub note: String,
    pub reply: oneshot::Sender<Value>,
}

#[derive(Debug)]
pub enum ReportError {
    NoSuchCheck,
    NotTtl(&'static str),
    Stopped,
}

struct Current {
    machine: Machine,
    last: Option<(DateTime<Utc>, ProbeResult)>,
    runs: u64,
    /// Results that were not `ok` (warning or critical), since the agent started.
    failures: u64,
}

struct Check {
    def: CheckDef,
    current: Mutex<Current>,
    ttl_tx: Option<mpsc::UnboundedSender<TtlReport>>,
}

/// Every configured check of this node.
pub struct Checks {
    store: Arc<EventStore>,
    checks: Vec<Arc<Check>>,
    /// Held across the append, so that one service's events are stored in decision order.
    book: tokio::sync::Mutex<ServiceBook>,
    ttl_rx: Mutex<Vec<(Arc<Check>, mpsc::UnboundedReceiver<TtlReport>)>>,
}

impl Checks {
    /// Sets up the checks, restoring the services this node last recorded as unhealthy, so that
    /// a restart neither repeats `service_unhealthy` nor misses the `service_recovered`.
    /// Reads the store: call it off the async threads.
    pub fn new(defs: Vec<CheckDef>, store: Arc<EventStore>, node: &str) -> Arc<Checks> {
        let restored = restore(&store, node, &defs);
        let mut book = ServiceBook::default();
        let mut ttl_rx = Vec::new();
        let mut checks = Vec::new();
        for def in defs {
            let found = restored
                .iter()
                .find(|r| r.service == def.service && r.unhealthy_checks.contains(&def.name));
            let machine = match found {
                Some(r) => {
                    book.restore(&def.service, &def.name, &r.correlation_id);
                    tracing::info!(check = %def.name, service = %def.service, "check restored as unhealthy from its last event");
                    Machine::restored_unhealthy(def.fall, def.rise, r.since, r.status)
                }
                None => Machine::new(def.fall, def.rise),
            };
            let (tx, rx) = match def.probe {
                Probe::Ttl { .. } => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    (Some(tx), Some(rx))
                }
                _ => (None, None),
            };
            let check = Arc::new(Check {
                def,
                current: Mutex::new(Current {
                    machine,
                    last: None,
                    runs: 0,
                    failures: 0,
                }),
                ttl_tx: tx,
            });
            if let Some(rx) = rx {
                ttl_rx.push((check.clone(), rx));
            }
            checks.push(check);
        }
        Arc::new(Checks {
            store,
            checks,
            book: tokio::sync::Mutex::new(book),
            ttl_rx: Mutex::new(ttl_rx),
        })
    }

    /// Runs every check until `stop` changes.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut ttl = std::mem::take(&mut *lock(&self.ttl_rx));
        for check in &self.checks {
            let (me, check, stop) = (self.clone(), check.clone(), stop.clone());
            match ttl.iter().position(|(c, _)| Arc::ptr_eq(c, &check)) {
                Some(i) => {
                    let (_, rx) = ttl.swap_remove(i);
                    tasks.spawn(me.run_ttl(check, rx, stop));
                }
                None => {
                    tasks.spawn(me.run_probe(check, stop));
                }
            }
        }
        tracing::info!(checks = self.checks.len(), "health checks running");
        while tasks.join_next().await.is_some() {}
    }

    async fn run_probe(self: Arc<Self>, check: Arc<Check>, mut stop: watch::Receiver<bool>) {
        let prober = Prober::new(&check.def);
        let mut tick = tokio::time::interval(check.def.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let result = tokio::select! {
                r = prober.probe(&check.def) => r,
                _ = stop.changed() => return,
            };
            self.apply(&check, result, self.store.config().clock.now())
                .await;
        }
    }

    /// A ttl check: each report is a result; a ttl without one is a critical result, and so is
    /// each further ttl of silence.
    async fn run_ttl(
        self: Arc<Self>,
        check: Arc<Check>,
        mut rx: mpsc::UnboundedReceiver<TtlReport>,
        mut stop: watch::Receiver<bool>,
    ) {
        let Probe::Ttl { ttl } = check.def.probe else {
            return;
        };
        let mut deadline = tokio::time::Instant::now() + ttl;
        loop {
            tokio::select! {
                report = rx.recv() => {
                    let Some(report) = report else { return };
                    deadline = tokio::time::Instant::now() + ttl;
                    let result = ProbeResult::new(report.status, report.note, Duration::ZERO);
                    self.apply(&check, result, self.store.config().clock.now()).await;
                    let _ = report.reply.send(view(&check));
                }
                () = tokio::time::sleep_until(deadline) => {
                    deadline = tokio::time::Instant::now() + ttl;
                    let text = format!("no report within the ttl of {}s", ttl.as_secs_f64());
                    let result = ProbeResult::new(Status::Critical, text, Duration::ZERO);
                    self.apply(&check, result, self.store.config().clock.now()).await;
                }
                _ = stop.changed() => return,
            }
        }
    }

    /// Feeds one result to the check's machine and records the transition, if any.
    async fn apply(&self, check: &Check, result: ProbeResult, now: DateTime<Utc>) {
        let def = &check.def;
        let (transition, machine, since) = {
            let mut cur = lock(&check.current);
            let since = cur.machine.episode().map(|e| e.since);
            let transition = cur.machine.on_result(now, result.status);
            cur.last = Some((now, result.clone()));
            cur.runs += 1;
            if result.status != Status::Ok {
                cur.failures += 1;
            }
            let since = cur.machine.episode().map(|e| e.since).or(since);
            (transition, cur.machine.clone(), since)
        };
        tracing::debug!(check = %def.name, status = result.status.as_str(), state = machine.state().as_str(), latency_ms = result.latency_ms, "probe");
        let Some(transition) = transition else {
            return;
        };
        let mut book = self.book.lock().await;
        let new_id = || format!("hc-{}", uuid::Uuid::now_v7().simple());
        let decision = book.decide(&def.service, &def.name, &transition, new_id);
        tracing::info!(
            check = %def.name,
            service = %def.service,
            state = machine.state().as_str(),
            status = result.status.as_str(),
            output = %result.output,
            event = decision.as_ref().map_or("none (another check of the service is still unhealthy)", |d| d.event_type),
            "health check changed"
        );
        if let Some(decision) = decision {
            let event = events::build(def, &decision, &result, &machine, since, now);
            self.append(event).await;
        }
    }

    async fn append(&self, new: NewEvent) {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.append(new)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot record a health check event"),
            Err(e) => tracing::error!(error = %e, "event task failed"),
        }
    }

    /// Every check's current state, in config order.
    pub fn snapshot(&self) -> Vec<Value> {
        self.checks.iter().map(|c| view(c)).collect()
    }

    /// Delivers a ttl report and waits for the check's new state.
    pub async fn report(
        &self,
        name: &str,
        status: Status,
        note: String,
    ) -> Result<Value, ReportError> {
        let check = self
            .checks
            .iter()
            .find(|c| c.def.name == name)
            .ok_or(ReportError::NoSuchCheck)?;
        let tx = check
            .ttl_tx
            .as_ref()
            .ok_or(ReportError::NotTtl(check.def.probe.kind()))?;
        let (reply, rx) = oneshot::channel();
        tx.send(TtlReport {
            status,
            note,
            reply,
        })
        .map_err(|_| ReportError::Stopped)?;
        rx.await.map_err(|_| ReportError::Stopped)
    }
}

/// One check as `GET /v1/checks` shows it.
fn view(check: &Check) -> Value {
    let def = &check.def;
    let cur = lock(&check.current);
    let m = &cur.machine;
    let (last_checked, status, output, latency) = match &cur.last {
        Some((at, r)) => (
            json!(sync::event::format_timestamp(*at)),
            json!(r.status.as_str()),
            json!(r.output),
            json!(r.latency_ms),
        ),
        None => (Value::Null, Value::Null, Value::Null, Value::Null),
    };
    let (interval_s, ttl_s) = match def.probe {
        Probe::Ttl { ttl } => (Value::Null, json!(ttl.as_secs_f64())),
        _ => (json!(def.interval.as_secs_f64()), Value::Null),
    };
    json!({
        "name": def.name,
        "kind": def.probe.kind(),
        "service": def.service,
        "target": def.probe.target(),
        "state": m.state().as_str(),
        "status": status,
        "output": output,
        "latency_ms": latency,
        "last_checked": last_checked,
        "runs": cur.runs,
        "failures": cur.failures,
        "consecutive_failures": m.consecutive_failures(),
        "consecutive_successes": m.consecutive_successes(),
        "unhealthy_since": m.episode().map(|e| sync::event::format_timestamp(e.since)),
        "interval_s": interval_s,
        "ttl_s": ttl_s,
        "fall": def.fall,
        "rise": def.rise,
    })
}

/// The latest check event of each configured service from this node, read back.
fn restore(store: &EventStore, node: &str, defs: &[CheckDef]) -> Vec<events::Restored> {
    if defs.is_empty() {
        return Vec::new();
    }
    let mut services: Vec<String> = defs.iter().map(|d| d.service.clone()).collect();
    services.sort();
    services.dedup();
    let query = Query {
        nodes: vec![node.to_owned()],
        sources: vec![events::SOURCE.to_owned()],
        types: vec![
            events::UNHEALTHY.to_owned(),
            events::FAILED.to_owned(),
            events::RECOVERED.to_owned(),
        ],
        services: services.clone(),
        order: Order::Desc,
        ..Query::default()
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut restored = Vec::new();
    for entry in store.query(&query) {
        if seen.len() == services.len() {
            break;
        }
        if !seen.insert(entry.service.to_string()) {
            continue;
        }
        let doc = store
            .read_bytes(&entry)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        if let Some(r) = doc.as_ref().and_then(events::restore_from) {
            restored.push(r);
        }
    }
    restored
}
