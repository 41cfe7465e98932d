//! `labmesh agent`: the long-running peer, wired from the library's parts.
//!
//! Start-up order matters: the API address is bound first (so a second agent on the same port
//! fails at once with a clear message), then the store is opened (which may take seconds over a
//! large history), then the drivers start, each on the event bus, and the HTTP server runs until
//! SIGINT or SIGTERM. `node/ALGORITHM.md` lists the tasks and what each owns.

pub mod identity;
pub mod service_manager;

use std::io::{IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use sync::EventStore;
use sync::pickup::{self, PickupConfig, PickupNotice};
use sync::schedule::ScheduleConfig;
use tracing_subscriber::EnvFilter;

use crate::api::{self, ApiState};
use crate::checks::Checks;
use crate::config::{LogFormat, Settings};
use crate::drivers::alerting::AlertingSettings;
use crate::drivers::bus::EventBus;
use crate::drivers::mesh::{Endpoint, PeerConfig, PeerRuntime};
use crate::drivers::notify::HostNotifier;
use crate::drivers::sync::{SyncDriver, SyncSettings};
use crate::drivers::workers::Workers;
use crate::drivers::world::{WorldRuntime, WorldSettings};
use crate::error::UsageError;

/// Why the agent could not start or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error("cannot {what} {}: {source}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Store(#[from] sync::StoreError),
    #[error("cannot set up event signing: {0}")]
    Signing(#[from] certs::CertError),
    #[error(transparent)]
    Mesh(#[from] crate::drivers::mesh::MeshError),
    #[error("{what}: {source}")]
    Runtime {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} failed")]
    Task(&'static str),
}

impl AgentError {
    /// Whether the error is the caller's to fix (bad flags or config): exit 2.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            AgentError::Usage(_) | AgentError::Identity(identity::IdentityError::Usage(_))
        )
    }

    fn file(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| AgentError::File { what, path, source }
    }
}

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
fn prepare_data_dir(settings: &Settings) -> Result<(), AgentError> {
    let dir = &settings.data_dir;
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(AgentError::file("create the data dir", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(AgentError::file("set permissions on", dir))?;
        tracing::info!(data_dir = %dir.display(), "created the data dir (first start)");
    }
    Ok(())
}

/// Creates `<data>/api-token` (0600) on first start; warns if others can read it.
fn ensure_api_token(settings: &Settings) -> Result<(), AgentError> {
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
                .map_err(AgentError::file("create the API token", &path))?;
            file.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(AgentError::file("write the API token", &path))?;
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

/// Runs the agent until SIGINT or SIGTERM.
pub fn run(settings: Settings) -> Result<(), AgentError> {
    init_logging(&settings)?;
    // reqwest (HTTP checks) is built with `rustls-no-provider`: it uses the process default,
    // which must be ring (aws-lc-rs stays out of the tree). Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| AgentError::Runtime {
            what: "cannot start the async runtime",
            source,
        })?;
    runtime.block_on(serve(settings))
}

/// The mesh driver's settings from the agent's.
fn peer_config(settings: &Settings, identity: &identity::Identity) -> PeerConfig {
    let m = &settings.mesh;
    PeerConfig {
        node: settings.name.clone(),
        mesh_name: identity.mesh_name.clone(),
        mesh_id: identity.mesh_id.clone(),
        bind: m.gossip_addr,
        advertise: crate::drivers::mesh::advertise_addr(
            m.advertise_addr,
            m.gossip_addr,
            &crate::config::host_name(),
        ),
        api_addr: settings.api_addr.to_string(),
        seeds: m.seeds.clone(),
        transient: m.transient,
        role: m.role.clone(),
        alerter_priority: m.alerter_priority,
        gossip_interval: m.gossip_interval,
        offline_after: m.offline_after,
        state_dir: settings.state_dir(),
        os: std::env::consts::OS.to_owned(),
        backend: mesh::keys::detect_backend().to_owned(),
    }
}

async fn serve(mut settings: Settings) -> Result<(), AgentError> {
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
    let identity = identity::ensure(&settings, explicit.as_deref())?;
    settings.name = identity.node.node().to_owned();
    settings.mesh.alerter_priority =
        identity::granted_priority(settings.mesh.alerter_priority, &identity.node);
    let (trust, signers) =
        crate::trust::event_trust(&identity.node, Some(&settings.certs_dir()), true)?;
    let mut store_cfg = settings.store_config();
    store_cfg.trust = Some(trust);
    let clock = store_cfg.clock.clone();
    let (store, report) = tokio::task::spawn_blocking(move || EventStore::open(store_cfg))
        .await
        .map_err(|_| AgentError::Task("the store task"))??;
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
    // The bus before anything that writes: every stored event from here on reaches every
    // consumer, each subscribed before its driver starts.
    let bus = EventBus::attach(&store);
    let (peer_rx, world_rx, sync_rx, alerting_rx) = (
        bus.subscribe(),
        bus.subscribe(),
        bus.subscribe(),
        bus.subscribe(),
    );
    let stop = Arc::new(AtomicBool::new(false));
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
                    }
                    // The store logs quarantines itself, with the original path.
                    PickupNotice::Quarantined { .. } => {}
                    PickupNotice::Error(e) => tracing::error!(error = %e, "pick-up"),
                })
            })
            .map_err(|source| AgentError::Runtime {
                what: "cannot start the pick-up thread",
                source,
            })?
    };
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let (stop_peer_tx, stop_peer_rx) = tokio::sync::watch::channel(false);
    let peer = PeerRuntime::start(
        peer_config(&settings, &identity),
        &identity.node,
        store.clone(),
        clock.clone(),
        Endpoint::Bind,
        None,
    )
    .await?;
    // Revoked certificates sign nothing more (the list the mesh enforces on connections).
    signers.use_revocations(peer.revocations.clone());
    let mesh = peer.mesh.clone();
    let peer_task = tokio::spawn(peer.clone().run(stop_peer_rx.clone(), peer_rx));
    let world = {
        let (dir, store, mesh, clock) = (
            settings.data_dir.clone(),
            store.clone(),
            mesh.clone(),
            clock.clone(),
        );
        let world_settings = WorldSettings {
            retention_days: settings.retention_days,
            archive_pruned: settings.archive_pruned,
        };
        tokio::task::spawn_blocking(move || {
            WorldRuntime::open(&dir, store, mesh, clock, world_settings)
        })
        .await
        .map_err(|_| AgentError::Task("the world task"))?
    };
    let sync = SyncDriver::new(
        store.clone(),
        mesh.clone(),
        world.clone(),
        clock.clone(),
        SyncSettings {
            node: settings.name.clone(),
            schedule: ScheduleConfig {
                window: std::time::Duration::from_secs(u64::from(settings.retention_days) * 86_400),
                ..ScheduleConfig::default()
            },
        },
        rand::random(),
    );
    let world_task = tokio::spawn(world.clone().run(world_rx, stop_peer_rx.clone()));
    // NVML can take a moment to load on a GPU host: not on an async worker.
    let prober = {
        let name = settings.name.clone();
        tokio::task::spawn_blocking(move || crate::probes::Prober::new(&name))
            .await
            .map_err(|_| AgentError::Task("the probe set-up"))?
    };
    let scoring = crate::drivers::probes::Scoring {
        node: settings.name.clone(),
        store: store.clone(),
        world: world.clone(),
    };
    let (host, probe_task) = crate::drivers::probes::start(
        prober,
        settings.probe_interval,
        Some((mesh.clone(), scoring)),
        stop_peer_rx.clone(),
    );
    // Ends with the agent (it waits on samples and restarts rarely): not awaited at shutdown.
    tokio::spawn(crate::drivers::remediation::run(
        settings.remediation.clone(),
        store.clone(),
        settings.name.clone(),
        host.clone(),
        stop_peer_rx.clone(),
    ));
    let history_task = crate::drivers::history::start(
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
            .map_err(|_| AgentError::Task("the checks set-up"))?
    };
    let checks_task = tokio::spawn(checks.clone().run(stop_peer_rx.clone()));
    let workers = Workers::new(
        settings.workers,
        store.clone(),
        Some(settings.state_dir().join("workers.json")),
    );
    let workers_task = tokio::spawn(workers.clone().run(stop_peer_rx.clone()));
    // Ends with the agent (it only reads the index and appends): not awaited at shutdown.
    tokio::spawn(crate::drivers::runs::run(
        store.clone(),
        settings.name.clone(),
        stop_peer_rx.clone(),
    ));
    let (alerting, alerting_task) = crate::drivers::alerting::start(
        AlertingSettings {
            node: settings.name.clone(),
            transient: settings.mesh.transient,
            alerter_priority: settings.mesh.alerter_priority,
            config: settings.alerting.clone(),
            tick: std::time::Duration::from_secs(1),
        },
        store.clone(),
        mesh.clone(),
        clock.clone(),
        Arc::new(HostNotifier),
        alerting_rx,
        stop_peer_rx.clone(),
    );
    let sync_task = tokio::spawn(sync.clone().run(sync_rx, stop_peer_rx));
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
        events: Some(bus.clone()),
        stopping: Some(stopping_rx.clone()),
        alerting: Some(alerting),
        allowed_hosts: settings.api_allowed_hosts.clone(),
        read_token: settings.api_read_token,
        run_metrics: Default::default(),
        remediation_containers: settings.remediation.containers.clone(),
    });
    tokio::spawn(crate::api::digest_schedule::run(
        state.clone(),
        settings.alerting.digest.clone(),
    ));
    // Under systemd (`Type=notify`): READY=1 once the API answers, watchdog pings, STATUS=.
    let service_manager = service_manager::Notifier::from_env();
    if let Some(notifier) = service_manager.clone() {
        tokio::spawn(service_manager::run(
            notifier,
            state.clone(),
            settings.api_addr,
            stopping_rx,
        ));
    }
    tracing::info!(api = %settings.api_addr, "listening");
    axum::serve(
        listener,
        api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        // Before anything stops: systemd then waits for the clean exit (TimeoutStopSec).
        if let Some(notifier) = &service_manager {
            notifier.send("STOPPING=1\nSTATUS=stopping");
        }
        let _ = stopping_tx.send(true);
    })
    .await
    .map_err(|source| AgentError::Runtime {
        what: "HTTP API failed",
        source,
    })?;
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
    mesh.leave().await;
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || pickup_thread.join()).await;
    tracing::info!("stopped");
    Ok(())
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
