//! `labmesh agent`: the long-running peer.
//!
//! Start-up order matters: the API address is bound first (so a second agent on the same port
//! fails at once with a clear message), then the store is opened (which may take seconds over a
//! large history), then the pick-up loop and the HTTP server run until SIGINT or SIGTERM.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use sync::EventStore;
use sync::pickup::{self, PickupConfig, PickupNotice};
use tracing_subscriber::EnvFilter;

use crate::api::{self, ApiState};
use crate::checks::Checks;
use crate::cli::LogFormat;
use crate::exit::{self, UsageError};
use crate::peer::PeerRuntime;
use crate::settings::Settings;
use crate::sync_driver::{SyncDriver, SyncSettings};
use crate::workers::Workers;
use crate::world_driver::WorldRuntime;

fn init_logging(settings: &Settings) -> Result<(), UsageError> {
    let filter = EnvFilter::try_new(&settings.log_level)
        .map_err(|e| UsageError(format!("log level {:?}: {e}", settings.log_level)))?;
    let json = match settings.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| UsageError(format!("cannot set up logging: {e}")))
}

/// Creates the data dir (0700) on first start.
fn prepare_data_dir(settings: &Settings) -> anyhow::Result<()> {
    let dir = &settings.data_dir;
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set permissions on {}", dir.display()))?;
        tracing::info!(data_dir = %dir.display(), "created the data dir (first start)");
    }
    Ok(())
}

/// Creates `<data>/api-token` (0600) on first start; warns if others can read it.
fn ensure_api_token(settings: &Settings) -> anyhow::Result<()> {
    let path = settings.token_path();
    match std::fs::symlink_metadata(&path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the API token is readable by others; run chmod 600 on it");
            }
            Ok(())
        }
        Err(_) => {
            let token = hex::encode(rand::random::<[u8; 32]>());
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot create the API token {}", path.display()))?;
            file.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write the API token {}", path.display()))?;
            tracing::info!(path = %path.display(), "created the API token for write requests");
            Ok(())
        }
    }
}

/// The API token (for write requests), read back from `<data>/api-token`.
pub fn read_token(settings: &Settings) -> Option<String> {
    std::fs::read_to_string(settings.token_path())
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

pub fn run(settings: Settings) -> anyhow::Result<u8> {
    init_logging(&settings)?;
    // reqwest (HTTP checks) is built with `rustls-no-provider`: it uses the process default,
    // which must be ring (aws-lc-rs stays out of the tree). Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(settings))
}

async fn serve(mut settings: Settings) -> anyhow::Result<u8> {
    let started = Instant::now();
    let listener = tokio::net::TcpListener::bind(settings.api_addr)
        .await
        .map_err(|e| {
            UsageError(format!(
                "cannot listen on {} for the HTTP API: {e} (is another labmesh agent running? choose another with --api-addr or LABMESH_API_ADDR)",
                settings.api_addr
            ))
        })?;
    prepare_data_dir(&settings)?;
    ensure_api_token(&settings)?;
    let explicit = settings.name_is_explicit.then(|| settings.name.clone());
    let identity = crate::identity::ensure(&settings, explicit.as_deref())?;
    settings.name = identity.node.node().to_owned();
    let store_cfg = settings.store_config();
    let (store, report) = tokio::task::spawn_blocking(move || EventStore::open(store_cfg))
        .await
        .context("store task failed")??;
    tracing::info!(
        node = %settings.name,
        data_dir = %settings.data_dir.display(),
        config = %settings.config_path.as_deref().map_or("(none)".into(), |p| p.display().to_string()),
        events = store.len(),
        quarantined = report.quarantined.len(),
        stale_temps_removed = report.stale_temps_removed,
        scan_ms = report.elapsed_ms,
        "event store open"
    );
    for folder in &report.unexpected_folders {
        tracing::warn!(folder = %folder.display(), "unexpected folder in the event store (left alone)");
    }
    let store = Arc::new(store);
    let stop = Arc::new(AtomicBool::new(false));
    let (revoked_tx, revoked_rx) = tokio::sync::mpsc::unbounded_channel();
    let pickup_thread = {
        let store = store.clone();
        let stop = stop.clone();
        let cfg = PickupConfig {
            rescan_interval: settings.rescan_interval,
            ..PickupConfig::default()
        };
        std::thread::Builder::new()
            .name("pickup".into())
            .spawn(move || {
                pickup::run(store, cfg, stop, |notice| match notice {
                    PickupNotice::Added(entry) => {
                        tracing::debug!(path = %entry.relative_path().display(), "picked up an event");
                        if &*entry.event_type == "cert_revoked" {
                            let _ = revoked_tx.send(entry);
                        }
                    }
                    // The store logs quarantines itself, with the original path.
                    PickupNotice::Quarantined { .. } => {}
                    PickupNotice::Error(e) => tracing::error!(error = %e, "pick-up"),
                })
            })
            .context("cannot start the pick-up thread")?
    };
    let (entries_tx, entries_rx) = tokio::sync::mpsc::unbounded_channel();
    let (world_tx, world_rx) = tokio::sync::mpsc::unbounded_channel();
    let (alerting_tx, alerting_rx) = tokio::sync::mpsc::unbounded_channel();
    // The store has one listener slot: the sync and world drivers and the web page's event
    // stream all hang off this one closure (the stream through a broadcast fan-out).
    let events_tx = crate::web::fanout();
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let fanout_tx = events_tx.clone();
    store.set_listener(Box::new(move |stored| {
        let entry = &stored.entry;
        let _ = entries_tx.send(entry.clone());
        let _ = world_tx.send(entry.clone());
        // No page open means no receiver: that send fails, harmlessly.
        let _ = fanout_tx.send(entry.clone());
        let _ = alerting_tx.send(entry.clone());
    }));
    let peer = PeerRuntime::start(&settings, &identity, store.clone()).await?;
    let (stop_peer_tx, stop_peer_rx) = tokio::sync::watch::channel(false);
    let peer_task = tokio::spawn(peer.clone().run(stop_peer_rx.clone(), revoked_rx));
    let world = {
        let (dir, store, peer) = (settings.data_dir.clone(), store.clone(), peer.clone());
        let (days, archive) = (settings.retention_days, settings.archive_pruned);
        tokio::task::spawn_blocking(move || WorldRuntime::open(&dir, store, peer, days, archive))
            .await
            .context("world task failed")?
    };
    let sync_settings = SyncSettings {
        window: std::time::Duration::from_secs(u64::from(settings.retention_days) * 86_400),
        ..SyncSettings::default()
    };
    let sync = SyncDriver::new(
        store.clone(),
        peer.clone(),
        world.clone(),
        &settings.name,
        sync_settings,
    );
    let world_task = tokio::spawn(world.clone().run(world_rx, stop_peer_rx.clone()));
    // NVML can take a moment to load on a GPU host: not on an async worker.
    let prober = {
        let name = settings.name.clone();
        tokio::task::spawn_blocking(move || crate::probes::Prober::new(&name))
            .await
            .context("probe set-up failed")?
    };
    let (host, probe_task) = crate::probe_driver::start(
        prober,
        settings.probe_interval,
        Some(peer.clone()),
        stop_peer_rx.clone(),
    );
    let history_task = crate::host_history::start(
        store.clone(),
        settings.name.clone(),
        host.clone(),
        settings.history_interval,
        stop_peer_rx.clone(),
    );
    let checks = {
        let (defs, store, node) = (
            settings.checks.clone(),
            store.clone(),
            settings.name.clone(),
        );
        tokio::task::spawn_blocking(move || Checks::new(defs, store, &node))
            .await
            .context("checks task failed")?
    };
    let checks_task = tokio::spawn(checks.clone().run(stop_peer_rx.clone()));
    let workers = Workers::new(
        settings.workers,
        store.clone(),
        Some(settings.state_dir().join("workers.json")),
    );
    let workers_task = tokio::spawn(workers.clone().run(stop_peer_rx.clone()));
    let (alerting, alerting_task) = crate::alerting_driver::start(
        &settings,
        settings.alerting.clone(),
        store.clone(),
        peer.clone(),
        alerting_rx,
        stop_peer_rx.clone(),
    );
    let sync_task = tokio::spawn(sync.clone().run(entries_rx, stop_peer_rx));
    let state = Arc::new(ApiState {
        store: store.clone(),
        node: settings.name.clone(),
        started,
        peer: Some(peer.clone()),
        sync: Some(sync.clone()),
        world: Some(world.clone()),
        token: read_token(&settings),
        host: Some(host),
        floors: settings.floors,
        checks: Some(checks),
        workers: Some(workers),
        events: Some(events_tx),
        stopping: Some(stopping_rx),
        alerting: Some(alerting),
    });
    tokio::spawn(crate::digest_schedule::run(
        state.clone(),
        settings.alerting.digest.clone(),
    ));
    tracing::info!(api = %settings.api_addr, "listening");
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stopping_tx.send(true);
        })
        .await
        .context("HTTP API failed")?;
    let _ = stop_peer_tx.send(true);
    let _ = peer_task.await;
    let _ = sync_task.await;
    let _ = world_task.await;
    let _ = probe_task.await;
    let _ = history_task.await;
    let _ = checks_task.await;
    let _ = workers_task.await;
    let _ = alerting_task.await;
    // Tell the others we are leaving on purpose, so they show `left`, not `dead`.
    peer.mesh.leave().await;
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || pickup_thread.join()).await;
    tracing::info!("stopped");
    Ok(exit::OK)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}
