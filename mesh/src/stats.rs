//! Counters for the transport, and logging that says a problem once a minute per peer, not
//! once per packet (a misconfigured or hostile peer would otherwise flood the journal).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long a (peer, reason) pair stays quiet in the log after being reported.
pub const LOG_QUIET_PERIOD: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct MeshStats {
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_received: AtomicU64,
    /// Messages dropped because a peer's send queue was full or its connection backing off.
    pub messages_dropped: AtomicU64,
    /// What actually crossed the UDP socket (QUIC headers, handshakes, acks, keep-alives).
    pub udp_bytes_sent: AtomicU64,
    pub udp_bytes_received: AtomicU64,
    pub udp_datagrams_sent: AtomicU64,
    pub udp_datagrams_received: AtomicU64,
    rejections: Mutex<BTreeMap<&'static str, u64>>,
    last_logged: Mutex<HashMap<(String, &'static str), Instant>>,
}

/// A copy of the counters, for status output and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsSnapshot {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub messages_dropped: u64,
    pub udp_bytes_sent: u64,
    pub udp_bytes_received: u64,
    pub udp_datagrams_sent: u64,
    pub udp_datagrams_received: u64,
    /// Refused peers and messages by reason (`garbage_datagram`, `oversized_message`,
    /// `malformed_message`, `no_certificate`, `handshake_failed`, `identity_mismatch`, ...).
    pub rejections: BTreeMap<String, u64>,
}

/// Locks a mutex, taking the data of a poisoned one (counters stay valid at every step).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MeshStats {
    pub fn sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
        self.messages_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn received(&self, bytes: usize) {
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.messages_received.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self) {
        self.messages_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refusal and logs it unless the same peer was reported for the same reason in
    /// the last minute.
    pub fn reject(&self, peer: &str, reason: &'static str, detail: &str) {
        *lock(&self.rejections).entry(reason).or_default() += 1;
        let now = Instant::now();
        let mut last = lock(&self.last_logged);
        let key = (peer.to_owned(), reason);
        let due = last
            .get(&key)
            .is_none_or(|t| now.duration_since(*t) >= LOG_QUIET_PERIOD);
        if due {
            last.insert(key, now);
            if last.len() > 10_000 {
                last.retain(|_, t| now.duration_since(*t) < LOG_QUIET_PERIOD);
            }
            tracing::warn!(%peer, reason, detail, "refused a peer or message (logged once a minute per peer and reason)");
        }
    }

    pub fn garbage_datagram(&self, from: SocketAddr, why: &'static str) {
        self.reject(&from.to_string(), "garbage_datagram", why);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            messages_sent: self.messages_sent.load(Ordering::Relaxed),
            messages_received: self.messages_received.load(Ordering::Relaxed),
            messages_dropped: self.messages_dropped.load(Ordering::Relaxed),
            udp_bytes_sent: self.udp_bytes_sent.load(Ordering::Relaxed),
            udp_bytes_received: self.udp_bytes_received.load(Ordering::Relaxed),
            udp_datagrams_sent: self.udp_datagrams_sent.load(Ordering::Relaxed),
            udp_datagrams_received: self.udp_datagrams_received.load(Ordering::Relaxed),
            rejections: lock(&self.rejections)
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        }
    }
}
