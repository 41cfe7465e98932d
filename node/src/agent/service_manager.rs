//! Talking to the service manager that started the agent: systemd's notify protocol
//! (`sd_notify(3)`), spoken by hand over the datagram socket in `$NOTIFY_SOCKET` so that no C
//! library is needed.
//!
//! - `READY=1` only once the store is open, the mesh endpoint is bound and the API has answered
//!   its own `/healthz` over TCP (a `Type=notify` unit counts as started from then on, so
//!   `systemctl start` and units ordered after ours wait for a usable agent).
//! - `WATCHDOG=1` every half of `$WATCHDOG_USEC`, and only after the same self-request has
//!   succeeded: a hung runtime or a wedged API stops the pings and systemd restarts the agent
//!   (`WatchdogSec=`), while a timer alone would keep pinging from a dead process's last thread.
//! - `STATUS=` a one-line summary (`3 of 4 peers alive, 1 alert firing, 1204 events`), shown by
//!   `systemctl status`.
//! - `STOPPING=1` when shutdown starts, so systemd waits for our clean exit instead of
//!   counting the stop as a failure.
//!
//! Without `$NOTIFY_SOCKET` (a terminal, Docker, launchd) nothing here runs and nothing wakes.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use crate::api::ApiState;

/// Where and how often to notify, read from the environment systemd sets.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: NotifySocket,
    watchdog: Option<Duration>,
}

#[derive(Debug, Clone)]
enum NotifySocket {
    Path(std::path::PathBuf),
    /// `@name`: a Linux abstract socket.
    Abstract(Vec<u8>),
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for, or `None` when not started by systemd.
    /// `$WATCHDOG_USEC` enables the watchdog unless `$WATCHDOG_PID` names another process.
    pub fn from_env() -> Option<Notifier> {
        let raw = std::env::var_os("NOTIFY_SOCKET")?;
        let raw = raw.to_string_lossy().into_owned();
        let socket = if let Some(name) = raw.strip_prefix('@') {
            NotifySocket::Abstract(name.as_bytes().to_vec())
        } else if raw.starts_with('/') {
            NotifySocket::Path(raw.into())
        } else {
            tracing::warn!(
                notify_socket = raw,
                "NOTIFY_SOCKET is neither a path nor an abstract name (@...); not notifying the service manager"
            );
            return None;
        };
        let watchdog = watchdog_from(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Some(Notifier { socket, watchdog })
    }

    /// How often to ping: half the watchdog timeout, as sd_watchdog_enabled(3) advises.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Sends one notification (`KEY=VALUE` lines). A failure is logged, never fatal: the
    /// agent must work the same when the service manager went away.
    pub fn send(&self, message: &str) {
        if let Err(e) = self.try_send(message) {
            tracing::warn!(error = %e, "cannot notify the service manager");
        }
    }

    fn try_send(&self, message: &str) -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        match &self.socket {
            NotifySocket::Path(p) => sock.send_to(message.as_bytes(), p).map(|_| ()),
            NotifySocket::Abstract(name) => {
                #[cfg(target_os = "linux")]
                {
                    use std::os::linux::net::SocketAddrExt;
                    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                    sock.send_to_addr(message.as_bytes(), &addr).map(|_| ())
                }
                #[cfg(not(target_os = "linux"))]
                {
                    let _ = name;
                    Err(std::io::Error::new(
                        std::io::ErrorKind::Unsupported,
                        "abstract sockets exist only on Linux",
                    ))
                }
            }
        }
    }
}

/// The watchdog timeout from `$WATCHDOG_USEC`, unless it is meant for another process.
fn watchdog_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

/// The `STATUS=` line: peers, firing alerts, stored events.
pub fn status_line(alive_peers: usize, peers: usize, firing: usize, events: usize) -> String {
    let alerts = match firing {
        1 => "1 alert firing".to_owned(),
        n => format!("{n} alerts firing"),
    };
    format!("{alive_peers} of {peers} peers alive, {alerts}, {events} events")
}

/// How often `STATUS=` is refreshed when there is no watchdog to ride along with.
const STATUS_EVERY: Duration = Duration::from_secs(30);

/// Notifies readiness, then pings and refreshes the status until `stopping` turns true (the
/// shutdown path itself sends `STOPPING=1`). `api` is where this agent's own API listens.
pub async fn run(
    notifier: Notifier,
    state: Arc<ApiState>,
    api: SocketAddr,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let api = loopback_for(api);
    // Ready once the API answers over TCP (the listener is bound before we are spawned; this
    // waits for the server loop itself).
    loop {
        if self_check(api).await {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stopping.changed() => return,
        }
    }
    notifier.send(&format!("READY=1\nSTATUS={}", status(&state).await));
    tracing::info!("told the service manager the agent is ready");
    let every = notifier.ping_interval().unwrap_or(STATUS_EVERY);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.changed() => return,
        }
        let line = status(&state).await;
        if notifier.watchdog.is_some() {
            // The ping proves the API still answers: a wedged agent misses it and is restarted.
            if tokio::time::timeout(every, self_check(api))
                .await
                .unwrap_or(false)
            {
                notifier.send(&format!("WATCHDOG=1\nSTATUS={line}"));
            } else {
                tracing::warn!(%api, "the agent's own /healthz did not answer: not pinging the watchdog");
            }
        } else {
            notifier.send(&format!("STATUS={line}"));
        }
    }
}

/// The address to reach our own API at: an unspecified bind (0.0.0.0, ::) is reached on
/// loopback.
fn loopback_for(api: SocketAddr) -> SocketAddr {
    match api {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

/// One `GET /healthz` to our own API; true on a 200.
async fn self_check(api: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut conn = tokio::net::TcpStream::connect(api).await.ok()?;
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 16];
        let mut got = 0;
        while got < head.len() {
            match conn.read(&mut head[got..]).await.ok()? {
                0 => break,
                n => got += n,
            }
        }
        Some(head[..got].starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

async fn status(state: &ApiState) -> String {
    let (peers, alive) = match &state.peer {
        Some(peer) => {
            let view = peer.mesh.view().await;
            let alive = view.peers.iter().filter(|p| p.liveness.is_up()).count();
            (view.peers.len(), alive)
        }
        None => (0, 0),
    };
    let firing = state.alerting.as_ref().map_or(0, |a| {
        a.snapshot()
            .open
            .iter()
            .filter(|alert| alert.status == alerting::state::Status::Firing)
            .count()
    });
    status_line(alive, peers, firing, state.store.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_ours_only_when_its_pid_is_ours_or_unset() {
        assert_eq!(
            watchdog_from(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_from(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(watchdog_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("soon"), None, 7), None);
        assert_eq!(watchdog_from(None, Some("7"), 7), None);
    }

    #[test]
    fn the_status_line_reads_as_a_sentence() {
        assert_eq!(
            status_line(3, 4, 1, 1204),
            "3 of 4 peers alive, 1 alert firing, 1204 events"
        );
        assert_eq!(
            status_line(0, 0, 0, 0),
            "0 of 0 peers alive, 0 alerts firing, 0 events"
        );
    }

    #[test]
    fn an_unspecified_bind_is_reached_on_loopback() {
        assert_eq!(
            loopback_for("0.0.0.0:7371".parse().unwrap()),
            "127.0.0.1:7371".parse().unwrap()
        );
        assert_eq!(
            loopback_for("[::]:7371".parse().unwrap()),
            "[::1]:7371".parse().unwrap()
        );
        assert_eq!(
            loopback_for("10.0.0.2:7371".parse().unwrap()),
            "10.0.0.2:7371".parse().unwrap()
        );
    }
}
