//! chitchat over QUIC with mutual TLS: one unidirectional stream per gossip message.
//!
//! - One quinn `Endpoint` per node, bound to the gossip address, both dials and accepts.
//! - `send` never waits on the network: it encodes the message and puts it in the destination's
//!   bounded queue. A task per destination owns the connection (reused while it lives,
//!   re-dialled with exponential backoff when it dies) and drains the queue. A dead peer
//!   therefore costs a full queue and dropped messages, never a stalled gossip loop.
//! - `recv` reads one bounded channel that every connection's reader feeds: cancel-safe, and it
//!   errs only when the transport is gone (an error stops chitchat's loop).
//! - The peer's node name comes from its certificate; the frame only carries the address chitchat
//!   should reply to. A frame claiming an address that another live node owns is refused.
//! - Limits: a stream larger than `max_message_bytes` is stopped and counted; a stream that does
//!   not finish within `stream_timeout` is dropped; a message that does not decode is counted.
//!   chitchat's decoder runs under `catch_unwind`, so a hostile message can never take the
//!   agent down.

use crate::stats::lock;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, not std's: identical in the agent, and the simulator's virtual time in a
// simulation (backoffs must not depend on how fast the host machine runs the simulation).
use tokio::time::Instant;

use chitchat::ChitchatMessage;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

use crate::frame::{self, Kind};
use crate::gossip_trust::GossipTrust;
use crate::stats::MeshStats;
use crate::udp_guard::GuardedSocket;

mod streams;

use streams::{Direction, accept_loop, peer_sender, read_streams, send_frame};

/// Transport settings; each field's doc says what it trades.
#[derive(Clone)]
pub struct TransportConfig {
    /// UDP address to bind (the gossip address, or 0.0.0.0 with `advertise` set).
    pub bind: SocketAddr,
    /// The address peers dial to reach us (what chitchat advertises).
    pub advertise: SocketAddr,
    pub server_tls: Arc<rustls::ServerConfig>,
    pub client_tls: Arc<rustls::ClientConfig>,
    /// Largest message accepted. chitchat fills messages up to ~64 KB; more is refused and
    /// counted. Larger wastes memory on hostile peers; smaller breaks big meshes. Default 128 KiB.
    pub max_message_bytes: usize,
    /// Messages queued per destination before new ones are dropped. Gossip is periodic, so a
    /// short queue loses nothing that the next round does not resend. Default 32.
    pub peer_queue: usize,
    /// Received messages waiting for chitchat. Default 1024.
    pub inbound_queue: usize,
    /// Of those, how many one peer may hold. Its messages beyond are dropped and counted
    /// (`gossip_flood`), so a member flooding us fills its own share, not the queue honest
    /// peers' heartbeats pass through (a full queue would drop theirs and kill them falsely).
    /// Bigger absorbs a peer's burst; smaller leaves more room to the others. Default 128.
    pub inbound_per_peer: usize,
    /// Largest application message (an event batch). Larger lets a batch carry more events
    /// per round trip; smaller bounds what a hostile peer can make us buffer. Default 4 MiB.
    pub max_app_message_bytes: usize,
    /// A connection with no traffic for this long is closed. Default 10 s.
    pub idle_timeout: Duration,
    /// Keep-alive interval on open connections (keeps NAT mappings and detects dead links).
    /// Default 2 s.
    pub keep_alive: Duration,
    /// Give up dialling after this long. Default 3 s.
    pub connect_timeout: Duration,
    /// The round-trip time QUIC assumes before it has measured one: it sets how long a lost
    /// handshake packet waits to be resent (about three times this). quinn's default, 333 ms,
    /// is the RFC's guess for the open internet; a homelab mesh is a LAN or a tunnel. Lower
    /// repairs a lost handshake packet sooner (after a restart or a heal every pushed message
    /// waits for the dial); on a link slower than this it costs a spurious resend of a
    /// handshake packet, no more. Default 100 ms.
    pub initial_rtt: Duration,
    /// Reading one stream may take at most this long. Default 5 s.
    pub stream_timeout: Duration,
    /// First and largest wait between failed dials to one peer (doubling in between).
    /// Default 250 ms to 10 s.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Streams a peer may have open toward us at once (every frame is one). What they may
    /// buffer is bounded by `connection_window`, not by this; but a sender whose streams stay
    /// unacknowledged (a peer that restarted behind a connection that still looks open) stalls
    /// once it has this many in flight, so too few delays the switch to the new process (8
    /// stalled the restart simulation for the idle timeout). Default 64.
    pub max_streams: u32,
    /// Bytes a peer may have in flight toward us on one connection, all streams together (QUIC
    /// flow control stops it beyond). Bigger moves large catch-up batches in fewer round trips;
    /// smaller bounds what a hostile peer makes us buffer. Default 8 MiB.
    pub connection_window: u32,
    /// Connections one certificate may hold with us at once: normally two (each side dials),
    /// plus two per restart until the old ones time out. More are closed and counted
    /// `too_many_connections`. Default 8.
    pub max_connections_per_peer: usize,
}

impl TransportConfig {
    pub fn new(
        bind: SocketAddr,
        advertise: SocketAddr,
        server_tls: Arc<rustls::ServerConfig>,
        client_tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        TransportConfig {
            bind,
            advertise,
            server_tls,
            client_tls,
            max_message_bytes: 128 * 1024,
            peer_queue: 32,
            inbound_queue: 1024,
            inbound_per_peer: 128,
            max_app_message_bytes: 4 * 1024 * 1024,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            initial_rtt: Duration::from_millis(100),
            stream_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            max_streams: 64,
            connection_window: 8 * 1024 * 1024,
            max_connections_per_peer: 8,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(
        "cannot bind the QUIC endpoint to UDP {addr}: {source} (is another labmesh agent running? choose another with --gossip-addr)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration unusable for QUIC: {0}")]
    Tls(String),
    #[error("no async runtime: the QUIC transport must be created inside tokio")]
    NoRuntime,
}

/// Answers whether a certificate (by SHA-256 fingerprint) is revoked.
pub type RevocationCheck = Box<dyn Fn(&[u8; 32]) -> bool + Send + Sync>;

/// An application message from a peer (see [`QuicTransport::send_app`]).
#[derive(Debug)]
pub struct AppMessage {
    pub from: PeerIdentity,
    /// The sender's advertised gossip address: where to answer.
    pub from_addr: SocketAddr,
    pub bytes: Vec<u8>,
}

/// A peer as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub node: String,
    pub fingerprint: [u8; 32],
    /// The highest `alerter_priority` the mesh CA lets this peer claim.
    pub alerter_priority_cap: i64,
}

#[derive(Clone)]
struct Conn {
    conn: quinn::Connection,
    peer: PeerIdentity,
}

impl Conn {
    fn is_open(&self) -> bool {
        self.conn.close_reason().is_none()
    }
}

struct Shared {
    endpoint: quinn::Endpoint,
    cfg: TransportConfig,
    client: quinn::ClientConfig,
    stats: Arc<MeshStats>,
    queues: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    conns: Mutex<HashMap<SocketAddr, Conn>>,
    /// Every connection with a reader, by quinn's stable id: also those no longer in `conns`
    /// (replaced by a newer one to the same address), so a revocation closes them all.
    live: Mutex<HashMap<usize, Conn>>,
    owners: Mutex<HashMap<SocketAddr, String>>,
    inbound_tx: mpsc::Sender<Inbound>,
    inbound_rx: Mutex<Option<mpsc::Receiver<Inbound>>>,
    /// The share of the inbound queue each peer holds.
    inbound_share: Mutex<QueueShare>,
    app_tx: mpsc::Sender<AppMessage>,
    app_rx: Mutex<Option<mpsc::Receiver<AppMessage>>>,
    is_revoked: RevocationCheck,
    /// What peers may say in gossip (see `gossip_trust`): every message in and out passes it.
    gossip: Mutex<GossipTrust>,
    /// The origin of the clock `gossip` reads.
    started: Instant,
}

/// A received gossip message waiting for chitchat, with the peer whose share it holds.
struct Inbound {
    from: SocketAddr,
    msg: ChitchatMessage,
    peer: String,
}

/// Slots of a shared queue, counted per peer: one peer may hold at most `per_peer` of them.
#[derive(Debug)]
pub struct QueueShare {
    per_peer: usize,
    held: HashMap<String, usize>,
}

impl QueueShare {
    pub fn new(per_peer: usize) -> QueueShare {
        QueueShare {
            per_peer,
            held: HashMap::new(),
        }
    }

    /// Takes a slot for `peer`; false when it already holds its share.
    pub fn try_take(&mut self, peer: &str) -> bool {
        let held = self.held.entry(peer.to_owned()).or_default();
        if *held >= self.per_peer {
            return false;
        }
        *held += 1;
        true
    }

    /// Gives back a slot `peer` held (the map holds only peers with messages waiting).
    pub fn give_back(&mut self, peer: &str) {
        if let Some(held) = self.held.get_mut(peer) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.held.remove(peer);
            }
        }
    }

    pub fn held(&self, peer: &str) -> usize {
        self.held.get(peer).copied().unwrap_or(0)
    }
}

/// The QUIC transport. Cheap to clone; chitchat opens it once.
#[derive(Clone)]
pub struct QuicTransport {
    shared: Arc<Shared>,
}

fn identify(conn: &quinn::Connection) -> Result<PeerIdentity, String> {
    let any = conn
        .peer_identity()
        .ok_or_else(|| "peer presented no certificate".to_owned())?;
    let chain = any
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "unexpected peer identity type".to_owned())?;
    let leaf = chain
        .first()
        .ok_or_else(|| "empty certificate chain".to_owned())?;
    let node = certs::peer_node_name(leaf).map_err(|e| e.to_string())?;
    let alerter_priority_cap = certs::peer_alerter_priority_cap(leaf).map_err(|e| e.to_string())?;
    Ok(PeerIdentity {
        node,
        fingerprint: certs::fingerprint(leaf),
        alerter_priority_cap,
    })
}

/// Sorts a failed handshake into a rejection reason.
fn classify_handshake(err: &quinn::ConnectionError) -> &'static str {
    let text = err.to_string().to_ascii_lowercase();
    if text.contains("no certificate")
        || text.contains("nocertificates")
        || text.contains("certificate required")
    {
        "no_certificate"
    } else if text.contains("timed out") {
        "handshake_timeout"
    } else {
        "handshake_failed"
    }
}

impl QuicTransport {
    /// Binds the endpoint now (so a port conflict fails at start-up, with a clear error).
    /// `is_revoked` is consulted for every new connection's certificate fingerprint.
    pub fn bind(
        cfg: TransportConfig,
        stats: Arc<MeshStats>,
        is_revoked: RevocationCheck,
    ) -> Result<QuicTransport, TransportError> {
        let runtime = quinn::default_runtime().ok_or(TransportError::NoRuntime)?;
        let socket =
            std::net::UdpSocket::bind(cfg.bind).map_err(|source| TransportError::Bind {
                addr: cfg.bind,
                source,
            })?;
        // A bulk sync fills the kernel's default receive buffer (~208 KiB) and the dropped
        // datagrams are retransmitted; ask for 4 MiB (the kernel caps it at net.core.rmem_max).
        if let Err(e) = rustix::net::sockopt::set_socket_recv_buffer_size(&socket, 4 << 20) {
            tracing::debug!(error = %e, "cannot enlarge the UDP receive buffer");
        }
        let udp = runtime
            .wrap_udp_socket(socket)
            .map_err(|source| TransportError::Bind {
                addr: cfg.bind,
                source,
            })?;
        Self::with_socket(cfg, stats, is_revoked, udp, runtime)
    }

    /// Runs the transport on a socket and runtime the caller provides instead of a bound UDP
    /// socket: the simulator passes a simulated network's socket and clock. Everything above
    /// the socket (the datagram counters included) is the code [`QuicTransport::bind`] runs.
    pub fn with_socket(
        cfg: TransportConfig,
        stats: Arc<MeshStats>,
        is_revoked: RevocationCheck,
        udp: Arc<dyn quinn::AsyncUdpSocket>,
        runtime: Arc<dyn quinn::Runtime>,
    ) -> Result<QuicTransport, TransportError> {
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(quinn::IdleTimeout::try_from(cfg.idle_timeout).ok())
            .keep_alive_interval(Some(cfg.keep_alive))
            .initial_rtt(cfg.initial_rtt)
            .max_concurrent_uni_streams(cfg.max_streams.into())
            // Every frame is a uni stream; bidirectional ones are never used.
            .max_concurrent_bidi_streams(0u32.into())
            .stream_receive_window((cfg.connection_window / 2).into())
            .receive_window(cfg.connection_window.into());
        let transport = Arc::new(transport);
        let server_crypto = QuicServerConfig::try_from(cfg.server_tls.clone())
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport.clone());
        let client_crypto = QuicClientConfig::try_from(cfg.client_tls.clone())
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport);
        let mut endpoint_cfg = quinn::EndpointConfig::default();
        // Never grease the fixed bit: the garbage counter relies on it being set.
        endpoint_cfg.grease_quic_bit(false);
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_cfg,
            Some(server),
            GuardedSocket::new(udp, stats.clone()),
            runtime,
        )
        .map_err(|source| TransportError::Bind {
            addr: cfg.bind,
            source,
        })?;
        let (inbound_tx, inbound_rx) = mpsc::channel(cfg.inbound_queue);
        let advertise = cfg.advertise;
        let per_peer = cfg.inbound_per_peer.max(1);
        let (app_tx, app_rx) = mpsc::channel(64);
        let shared = Arc::new(Shared {
            endpoint,
            cfg,
            client,
            stats,
            queues: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            inbound_tx,
            inbound_rx: Mutex::new(Some(inbound_rx)),
            inbound_share: Mutex::new(QueueShare::new(per_peer)),
            app_tx,
            app_rx: Mutex::new(Some(app_rx)),
            is_revoked,
            gossip: Mutex::new(GossipTrust::new(advertise)),
            started: Instant::now(),
        });
        tokio::spawn(accept_loop(shared.clone()));
        Ok(QuicTransport { shared })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    pub fn stats(&self) -> &Arc<MeshStats> {
        &self.shared.stats
    }

    /// Peers with an open connection, by advertised address.
    pub fn connected_peers(&self) -> Vec<(SocketAddr, PeerIdentity)> {
        lock(&self.shared.conns)
            .iter()
            .filter(|(_, c)| c.is_open())
            .map(|(a, c)| (*a, c.peer.clone()))
            .collect()
    }

    /// The receiving end of application messages (once; `None` after the first call).
    /// Application messages wait there with backpressure: a slow consumer slows the senders'
    /// streams instead of growing a queue.
    pub fn take_app_receiver(&self) -> Option<mpsc::Receiver<AppMessage>> {
        lock(&self.shared.app_rx).take()
    }

    /// Sends an application message to the peer at `to` (its advertised gossip address),
    /// reusing or opening the connection; resolves when the stream is written. Reliable as long
    /// as the connection lives; the caller retries on error.
    pub async fn send_app(&self, to: SocketAddr, bytes: &[u8]) -> Result<(), String> {
        if bytes.len() > self.shared.cfg.max_app_message_bytes {
            return Err(format!(
                "message of {} bytes over the {}-byte limit",
                bytes.len(),
                self.shared.cfg.max_app_message_bytes
            ));
        }
        let frame = frame::encode(Kind::App, self.shared.cfg.advertise, bytes);
        let conn = self.shared.connect(to).await?;
        match send_frame(&conn, &frame).await {
            Ok(()) => {
                self.shared.stats.sent(frame.len());
                Ok(())
            }
            Err(e) => {
                lock(&self.shared.conns).remove(&to);
                Err(e)
            }
        }
    }

    /// Sends a chitchat message's bytes as they are, past the outbound half of
    /// `gossip_trust`. Only a test playing a hostile member needs this: an honest node's
    /// gossip comes from chitchat through the filter.
    #[doc(hidden)]
    pub fn send_gossip_bytes(&self, to: SocketAddr, payload: &[u8]) {
        let bytes = frame::encode(Kind::Gossip, self.shared.cfg.advertise, payload);
        self.shared.enqueue(to, bytes);
    }

    /// Tells the gossip filter chitchat's round length (it pings peers left out for two).
    pub fn set_gossip_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        lock(&self.shared.gossip).set_gossip_interval(ms);
    }

    /// The largest application message [`QuicTransport::send_app`] takes.
    pub fn max_app_message_bytes(&self) -> usize {
        self.shared.cfg.max_app_message_bytes
    }

    /// This node's advertised gossip address.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.shared.cfg.advertise
    }

    /// Stops sending on the connection to `to` (it stays open for what the peer sends on it);
    /// the next message dials afresh. For a peer that restarted: see `Mesh::observe`.
    pub fn forget_connection(&self, to: SocketAddr) {
        lock(&self.shared.conns).remove(&to);
    }

    /// Closes every connection whose certificate is now revoked, including connections that a
    /// newer one replaced.
    pub fn drop_revoked(&self) -> usize {
        let mut closed = 0;
        let mut all: HashMap<usize, Conn> = lock(&self.shared.live).clone();
        for c in lock(&self.shared.conns).values() {
            all.insert(c.conn.stable_id(), c.clone());
        }
        for c in all.values() {
            if c.is_open() && (self.shared.is_revoked)(&c.peer.fingerprint) {
                c.conn
                    .close(quinn::VarInt::from_u32(403), b"certificate revoked");
                self.shared.stats.reject(
                    &c.peer.node,
                    "revoked",
                    "closed the connection of a revoked certificate",
                );
                closed += 1;
            }
        }
        closed
    }

    /// Closes the endpoint and waits (briefly) for peers to learn it.
    pub async fn close(&self) {
        self.shared
            .endpoint
            .close(quinn::VarInt::from_u32(0), b"shutdown");
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.shared.endpoint.wait_idle()).await;
    }
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Open connections (with a reader) of one certificate.
    fn connections_of(&self, fingerprint: &[u8; 32]) -> usize {
        lock(&self.live)
            .values()
            .filter(|c| c.is_open() && c.peer.fingerprint == *fingerprint)
            .count()
    }

    /// Queues an encoded frame for `to`, starting its sender task on first use.
    fn enqueue(self: &Arc<Self>, to: SocketAddr, bytes: Vec<u8>) {
        let mut queues = lock(&self.queues);
        let tx = queues.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.cfg.peer_queue);
            tokio::spawn(peer_sender(self.clone(), to, rx));
            tx
        });
        if let Err(e) = tx.try_send(bytes) {
            self.stats.dropped();
            if let mpsc::error::TrySendError::Closed(_) = e {
                queues.remove(&to);
            }
        }
    }

    fn open_conn(&self, to: SocketAddr) -> Option<Conn> {
        lock(&self.conns).get(&to).filter(|c| c.is_open()).cloned()
    }

    async fn connect(self: &Arc<Self>, to: SocketAddr) -> Result<Conn, String> {
        if let Some(c) = self.open_conn(to) {
            return Ok(c);
        }
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), to, "labmesh")
            .map_err(|e| e.to_string())?;
        let conn = tokio::time::timeout(self.cfg.connect_timeout, connecting)
            .await
            .map_err(|_| format!("no answer within {:?}", self.cfg.connect_timeout))?
            .map_err(|e| e.to_string())?;
        let peer = identify(&conn)?;
        if (self.is_revoked)(&peer.fingerprint) {
            conn.close(quinn::VarInt::from_u32(403), b"certificate revoked");
            self.stats.reject(
                &peer.node,
                "revoked",
                "dialled peer holds a revoked certificate",
            );
            return Err(format!("{} holds a revoked certificate", peer.node));
        }
        let c = Conn { conn, peer };
        lock(&self.conns).insert(to, c.clone());
        tokio::spawn(read_streams(self.clone(), c.clone(), Direction::Dialled));
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::QueueShare;

    #[test]
    fn one_peer_cannot_take_the_whole_inbound_queue() {
        let mut share = QueueShare::new(3);
        for _ in 0..3 {
            assert!(share.try_take("mallory"));
        }
        assert!(!share.try_take("mallory"), "over its share");
        assert!(share.try_take("bravo"), "an honest peer keeps its place");
        share.give_back("mallory");
        assert!(share.try_take("mallory"));
        for _ in 0..5 {
            share.give_back("mallory");
        }
        assert_eq!(share.held("mallory"), 0);
        assert_eq!(
            share.held.len(),
            1,
            "only peers with messages waiting are kept"
        );
    }
}
