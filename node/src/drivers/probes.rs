//! The agent's sampling loop: a host sample every probe interval (the first 200 ms after start,
//! as CPU shares need two readings), kept in memory for the API (and later status and metrics),
//! and summarised in the gossip key `summary` for the rest of the mesh.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mesh::Mesh;
use sync::EventStore;
use tokio::sync::watch;

use crate::drivers::world::WorldRuntime;
use crate::probes::{HostSample, Prober};

/// The latest sample; `None` until the first one is taken.
pub type LatestSample = watch::Receiver<Option<Arc<HostSample>>>;

/// What the node's own score is computed from: its store (for its last cleanup) and its world
/// view (for its unhealthy services).
pub struct Scoring {
    pub node: String,
    pub store: Arc<EventStore>,
    pub world: Arc<WorldRuntime>,
}

/// Starts the loop; it ends when `stop` turns true. With a mesh, each sample's summary is
/// gossiped, scored with `scoring` when given.
pub fn start(
    prober: Prober,
    interval: Duration,
    mesh: Option<(Arc<Mesh>, Scoring)>,
    stop: watch::Receiver<bool>,
) -> (LatestSample, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(run(prober, interval, mesh, stop, tx));
    (rx, task)
}

async fn run(
    prober: Prober,
    interval: Duration,
    mesh: Option<(Arc<Mesh>, Scoring)>,
    mut stop: watch::Receiver<bool>,
    tx: watch::Sender<Option<Arc<HostSample>>>,
) {
    let start = tokio::time::Instant::now() + crate::probes::FIRST_SAMPLE_AFTER;
    let mut tick = tokio::time::interval_at(start, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: BTreeMap<&'static str, String> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let sample = prober.sample().await;
        log_changes(&mut seen, &sample);
        let mut summary = crate::probes::summary::from_sample(&sample);
        if let Some((mesh, scoring)) = &mesh {
            let maintenance =
                crate::util::blocking(|| crate::score::maintenance(&scoring.store, &scoring.node));
            let views = scoring.world.views();
            let services = views.as_ref().map(|v| &v.services);
            let unhealthy = crate::score::unhealthy_services(&scoring.node, services);
            let card = crate::score::card(
                &scoring.node,
                Some(&summary),
                unhealthy,
                maintenance,
                scoring.store.config().clock.now(),
            );
            summary.score = u8::try_from(card.score).unwrap_or(100);
            mesh.set_key(mesh::keys::SUMMARY, &summary.to_json()).await;
        }
        tracing::debug!(score = summary.score, cpu = ?summary.cpu, mem_avail = ?summary.mem_avail, "host sampled");
        tx.send_replace(Some(Arc::new(sample)));
    }
}

/// Logs each probe's status when it changes (not every interval): a GPU found absent at start,
/// Docker becoming unreachable, a `/proc` file that stops parsing.
fn log_changes(seen: &mut BTreeMap<&'static str, String>, s: &HostSample) {
    let probes: [(&'static str, &'static str, Option<&str>); 9] = [
        ("cpu", s.cpu.status(), s.cpu.reason()),
        ("steal", s.steal.status(), s.steal.reason()),
        ("load", s.load.status(), s.load.reason()),
        ("memory", s.memory.status(), s.memory.reason()),
        ("uptime", s.uptime.status(), s.uptime.reason()),
        ("disks", s.disks.status(), s.disks.reason()),
        ("network", s.network.status(), s.network.reason()),
        ("gpu", s.gpu.status(), s.gpu.reason()),
        ("docker", s.docker.status(), s.docker.reason()),
    ];
    for (name, status, reason) in probes {
        let key = format!("{status}: {}", reason.unwrap_or(""));
        if seen.get(name) == Some(&key) {
            continue;
        }
        let first = !seen.contains_key(name);
        seen.insert(name, key);
        let reason = reason.unwrap_or("");
        match status {
            "error" => tracing::warn!(probe = name, reason, "host probe failed"),
            "absent" if name != "cpu" && name != "steal" => {
                tracing::info!(probe = name, reason, "host probe has nothing to measure")
            }
            "ok" if !first => tracing::info!(probe = name, "host probe works again"),
            _ => {}
        }
    }
}
