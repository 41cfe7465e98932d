//! The transport's tasks: one sender per destination (dial, reuse, back off, drain the queue),
//! the accept loop, one reader per connection and stream direction, and the frame handler that
//! checks who sent what; and chitchat's `Socket` over all of them.

use std::net::SocketAddr;
use std::sync::Arc;

use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Serializable};
use tokio::sync::mpsc;

use super::*;
use crate::frame::{self, Kind};
use crate::gossip_trust::Sender;
use crate::stats::lock;

pub(super) async fn send_frame(conn: &Conn, bytes: &[u8]) -> Result<(), String> {
    let mut stream = conn.conn.open_uni().await.map_err(|e| e.to_string())?;
    stream.write_all(bytes).await.map_err(|e| e.to_string())?;
    stream.finish().map_err(|e| e.to_string())?;
    Ok(())
}

/// Gossip addresses one certificate may claim at once (see `handle_frame`).
const MAX_ADDRESSES_PER_PEER: usize = 4;

/// A destination's sender task ends after this long with nothing to send (the next message
/// starts a new one).
const SENDER_IDLE: Duration = Duration::from_secs(300);

pub(super) async fn peer_sender(
    shared: Arc<Shared>,
    to: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let mut backoff = shared.cfg.backoff_min;
    let mut retry_at: Option<Instant> = None;
    loop {
        let bytes = match tokio::time::timeout(SENDER_IDLE, rx.recv()).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => break,
            Err(_) => {
                // Addresses come from what peers say (introductions, chitchat's view): a sender
                // that has had nothing to send for a while ends, so the map of queues only
                // holds destinations in use.
                let mut queues = lock(&shared.queues);
                if rx.is_empty() {
                    queues.remove(&to);
                    break;
                }
                continue;
            }
        };
        if retry_at.is_some_and(|t| Instant::now() < t) {
            shared.stats.dropped();
            continue;
        }
        let result = match shared.connect(to).await {
            Ok(conn) => match send_frame(&conn, &bytes).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    lock(&shared.conns).remove(&to);
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                shared.stats.sent(bytes.len());
                backoff = shared.cfg.backoff_min;
                retry_at = None;
            }
            Err(e) => {
                shared.stats.dropped();
                tracing::debug!(peer = %to, error = %e, ?backoff, "cannot reach peer; backing off");
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(shared.cfg.backoff_max);
            }
        }
    }
}

pub(super) async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    shared.stats.reject(
                        &remote.to_string(),
                        classify_handshake(&e),
                        &e.to_string(),
                    );
                    return;
                }
            };
            match identify(&conn) {
                Ok(peer) if (shared.is_revoked)(&peer.fingerprint) => {
                    conn.close(quinn::VarInt::from_u32(403), b"certificate revoked");
                    shared
                        .stats
                        .reject(&peer.node, "revoked", "refused a revoked certificate");
                }
                Ok(peer)
                    if shared.connections_of(&peer.fingerprint)
                        >= shared.cfg.max_connections_per_peer =>
                {
                    conn.close(quinn::VarInt::from_u32(429), b"too many connections");
                    shared.stats.reject(
                        &peer.node,
                        "too_many_connections",
                        &format!(
                            "already holds {} connections",
                            shared.cfg.max_connections_per_peer
                        ),
                    );
                }
                Ok(peer) => read_streams(shared, Conn { conn, peer }, Direction::Accepted).await,
                Err(e) => {
                    conn.close(quinn::VarInt::from_u32(403), b"bad identity");
                    shared
                        .stats
                        .reject(&remote.to_string(), "bad_certificate", &e);
                }
            }
        });
    }
}

/// Who opened a connection: it decides whether the connection replaces the one we send on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Dialled,
    Accepted,
}

pub(super) async fn read_streams(shared: Arc<Shared>, conn: Conn, direction: Direction) {
    let max = shared
        .cfg
        .max_message_bytes
        .max(shared.cfg.max_app_message_bytes);
    // A peer that dials us while we hold a connection to its address has most likely
    // restarted: the connection we hold went to its previous process, whose packets its new
    // endpoint drops without a word, and it would look alive until the idle timeout. So the
    // first frame on an accepted connection takes over sending to that address.
    let mut take_over = direction == Direction::Accepted;
    lock(&shared.live).insert(conn.conn.stable_id(), conn.clone());
    loop {
        let mut stream = match conn.conn.accept_uni().await {
            Ok(s) => s,
            Err(_) => break,
        };
        let read = tokio::time::timeout(shared.cfg.stream_timeout, stream.read_to_end(max)).await;
        let bytes = match read {
            Ok(Ok(b)) => b,
            Ok(Err(quinn::ReadToEndError::TooLong)) => {
                let _ = stream.stop(quinn::VarInt::from_u32(413));
                shared.stats.reject(
                    &conn.peer.node,
                    "oversized_message",
                    &format!("a message over {max} bytes"),
                );
                continue;
            }
            Ok(Err(_)) => continue,
            Err(_) => {
                let _ = stream.stop(quinn::VarInt::from_u32(408));
                shared.stats.reject(
                    &conn.peer.node,
                    "slow_stream",
                    "a message took too long to arrive",
                );
                continue;
            }
        };
        // Every frame answers to the revocation list, not only the handshake: a certificate
        // revoked while its connection is open says nothing more.
        if (shared.is_revoked)(&conn.peer.fingerprint) {
            conn.conn
                .close(quinn::VarInt::from_u32(403), b"certificate revoked");
            shared.stats.reject(
                &conn.peer.node,
                "revoked",
                "a frame on the connection of a revoked certificate",
            );
            break;
        }
        handle_frame(&shared, &conn, &bytes, &mut take_over).await;
    }
    lock(&shared.live).remove(&conn.conn.stable_id());
    let mut conns = lock(&shared.conns);
    conns.retain(|_, c| c.conn.stable_id() != conn.conn.stable_id());
}

/// `take_over`: this connection replaces whichever one we send on to the sender's address
/// (then it is cleared), instead of only filling the place when none is open.
async fn handle_frame(shared: &Arc<Shared>, conn: &Conn, bytes: &[u8], take_over: &mut bool) {
    let frame = match frame::decode(bytes) {
        Ok(f) => f,
        Err(e) => {
            shared
                .stats
                .reject(&conn.peer.node, "malformed_message", &e.to_string());
            return;
        }
    };
    {
        let mut owners = lock(&shared.owners);
        let conns = lock(&shared.conns);
        match owners.get(&frame.sender) {
            Some(owner) if *owner != conn.peer.node => {
                let owner_live = conns
                    .get(&frame.sender)
                    .is_some_and(|c| c.is_open() && c.peer.node == *owner);
                if owner_live {
                    drop(conns);
                    shared.stats.reject(
                        &conn.peer.node,
                        "identity_mismatch",
                        &format!(
                            "claims the gossip address {} of live node {owner}",
                            frame.sender
                        ),
                    );
                    return;
                }
                owners.insert(frame.sender, conn.peer.node.clone());
            }
            Some(_) => {}
            None => {
                // A node has one gossip address (two around a move): a certificate that
                // claims more starts over with the new one, so claims cannot grow the maps.
                let claimed = owners.values().filter(|o| **o == conn.peer.node).count();
                if claimed >= MAX_ADDRESSES_PER_PEER {
                    owners.retain(|_, o| *o != conn.peer.node);
                    drop(conns);
                    lock(&shared.conns).retain(|_, c| c.peer.node != conn.peer.node);
                }
                owners.insert(frame.sender, conn.peer.node.clone());
            }
        }
    }
    {
        let mut conns = lock(&shared.conns);
        let replace =
            std::mem::take(take_over) || conns.get(&frame.sender).is_none_or(|c| !c.is_open());
        if replace {
            // The replaced connection is not closed: when both sides dialled at once, it is
            // the one the peer sends on, and it ends by itself at the idle timeout otherwise.
            conns.insert(frame.sender, conn.clone());
        }
    }
    match frame.kind {
        Kind::App => {
            shared.stats.received(bytes.len());
            let msg = AppMessage {
                from: conn.peer.clone(),
                from_addr: frame.sender,
                bytes: frame.payload.to_vec(),
            };
            // Waits when the consumer is behind: backpressure reaches the sender's stream.
            let _ = shared.app_tx.send(msg).await;
        }
        Kind::Gossip if bytes.len() > shared.cfg.max_message_bytes => {
            shared.stats.reject(
                &conn.peer.node,
                "oversized_message",
                &format!(
                    "a gossip message over {} bytes",
                    shared.cfg.max_message_bytes
                ),
            );
        }
        Kind::Gossip => match admit_gossip(shared, conn, &frame) {
            Ok(msg) => {
                shared.stats.received(bytes.len());
                if !lock(&shared.inbound_share).try_take(&conn.peer.node) {
                    shared.stats.reject(
                        &conn.peer.node,
                        "gossip_flood",
                        &format!(
                            "already has {} gossip messages waiting",
                            shared.cfg.inbound_per_peer
                        ),
                    );
                    return;
                }
                let inbound = Inbound {
                    from: frame.sender,
                    msg,
                    peer: conn.peer.node.clone(),
                };
                if shared.inbound_tx.try_send(inbound).is_err() {
                    lock(&shared.inbound_share).give_back(&conn.peer.node);
                    shared.stats.dropped();
                }
            }
            Err(e) => shared
                .stats
                .reject(&conn.peer.node, "malformed_message", &e),
        },
    }
}

/// Passes a gossip message through `gossip_trust` (the sender speaks only for itself), sends
/// the introductions it asks for, and decodes what is left for chitchat.
fn admit_gossip(
    shared: &Arc<Shared>,
    conn: &Conn,
    frame: &frame::Frame<'_>,
) -> Result<ChitchatMessage, String> {
    let now = shared.now_ms();
    let (admitted, introduction) = {
        let mut trust = lock(&shared.gossip);
        let from = Sender {
            node: &conn.peer.node,
            addr: frame.sender,
            alerter_priority_cap: conn.peer.alerter_priority_cap,
        };
        let admitted = trust.inbound(from, frame.payload, now)?;
        let introduction = if admitted.introduce.is_empty() {
            None
        } else {
            trust.introduction()
        };
        (admitted, introduction)
    };
    if !admitted.spoke_for.is_empty() {
        shared.stats.reject(
            &conn.peer.node,
            "speaks_for_another_node",
            &format!(
                "gossiped the state of {} (a node speaks only for itself)",
                admitted.spoke_for.join(", ")
            ),
        );
    }
    if let Some((claimed, granted)) = &admitted.overclaimed {
        shared.stats.reject(
            &conn.peer.node,
            "claims_alerter_priority",
            &format!(
                "claimed alerter_priority {claimed} but its certificate grants {granted}; held to {granted} (to raise it, reissue on the CA node: `labmesh certs renew {} --alerter-priority {claimed} --out FILE`, then join with that bundle)",
                conn.peer.node
            ),
        );
    }
    if let Some(intro) = introduction {
        for to in admitted.introduce {
            shared.enqueue(
                to,
                frame::encode(Kind::Gossip, shared.cfg.advertise, &intro),
            );
        }
    }
    frame::decode_gossip(&admitted.payload)
}

struct QuicSocket {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Inbound>,
}

#[async_trait::async_trait]
impl Socket for QuicSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        let now = self.shared.now_ms();
        let (payload, pings) = lock(&self.shared.gossip).outbound(to, msg.serialize_to_vec(), now);
        let advertise = self.shared.cfg.advertise;
        self.shared
            .enqueue(to, frame::encode(Kind::Gossip, advertise, &payload));
        for (addr, ping) in pings {
            self.shared
                .enqueue(addr, frame::encode(Kind::Gossip, advertise, &ping));
        }
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        let inbound = self
            .rx
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("the QUIC transport is closed"))?;
        lock(&self.shared.inbound_share).give_back(&inbound.peer);
        Ok((inbound.from, inbound.msg))
    }
}

#[async_trait::async_trait]
impl Transport for QuicTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        if listen_addr != self.shared.cfg.advertise && listen_addr != self.shared.cfg.bind {
            anyhow::bail!(
                "chitchat listens on {listen_addr} but the QUIC endpoint is bound to {} (advertised {})",
                self.shared.cfg.bind,
                self.shared.cfg.advertise
            );
        }
        let rx = lock(&self.shared.inbound_rx)
            .take()
            .ok_or_else(|| anyhow::anyhow!("the QUIC transport is already open"))?;
        Ok(Box::new(QuicSocket {
            shared: self.shared.clone(),
            rx,
        }))
    }
}
