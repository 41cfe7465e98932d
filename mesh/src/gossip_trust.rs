//! Gossip bound to certificates: what a peer says about node X counts only when X says it.
//!
//! chitchat is epidemic: a digest or a delta may carry any node's heartbeat, key-values and
//! address, and a receiver believes them whoever relays them. Mutual TLS proves who is at the
//! other end of a connection, so one member holding a valid certificate could keep a dead node
//! alive (relaying ever-higher heartbeats for it), mark a live node `left`, invent a node, or
//! announce another node's newer generation at its own address. This module sits between the
//! QUIC transport and chitchat and rewrites every gossip message, in both directions, so that:
//!
//! - **inbound** (from the peer whose certificate names `P`, replying to the address `A` the
//!   frame claims, which the transport already binds to `P`):
//!   - `P`'s own digest entry and delta, for its newest generation at `A`, pass untouched;
//!   - an entry about this node passes only if it is exactly this node's current id (chitchat
//!     needs what `P` knows of us to compute what to send);
//!   - an entry about a third node that this node has *heard from directly* passes with its
//!     heartbeat set to 0: chitchat still learns how much of that node's state `P` holds (so it
//!     does not resend it), but the heartbeat, which feeds the failure detector, is ignored;
//!   - an entry about a node never heard directly is dropped and becomes an *introduction*: the
//!     transport sends that address a `Syn` carrying only our own entry. If a node that the
//!     mesh CA certified under that name answers, it is learned from itself; a lie costs one
//!     small message per address and 30 s;
//!   - deltas about anyone but `P` are dropped and counted (`speaks_for_another_node`): honest
//!     peers never send them (see outbound).
//! - **outbound**: deltas about other nodes are stripped (receivers would discard them), and our
//!   own digest entry and the cluster id are kept for introductions.
//!
//! Liveness therefore rests on direct contact only: a node is alive for us while it gossips
//! with us itself. The price: chitchat's gossip reaches each peer a few times per round instead
//! of relaying, so detection and the `suspect` warning get noisier with more than ~30 nodes,
//! and a node that one peer cannot reach is dead for that peer even if others hear it (see
//! ALGORITHM.md, "Trust").
//!
//! The wire format is chitchat 0.11's own (a pinned dependency, see DEPENDENCIES.md); it is
//! parsed here with chitchat's public primitives, and every rewritten message decodes with
//! chitchat's decoder (tested). Decompressed deltas are bounded, which chitchat's decoder is not.

use std::collections::HashMap;
use std::net::SocketAddr;

use chitchat::{ChitchatId, Deserializable, Serializable};

const MAGIC: u16 = 45_139;
const PROTOCOL_V0: u8 = 0;
const SYN: u8 = 0;
const SYN_ACK: u8 = 1;
const ACK: u8 = 2;
const BAD_CLUSTER: u8 = 3;

const OP_NODE: u8 = 0;
const OP_KEY_VALUE: u8 = 1;
const OP_SET_MAX_VERSION: u8 = 2;

const BLOCK_END: u8 = 0;
const BLOCK_COMPRESSED: u8 = 1;
const BLOCK_UNCOMPRESSED: u8 = 2;

/// chitchat fills a message to ~64 KB compressed; a delta that inflates past this is refused
/// (zstd turns a few bytes into 64 KiB per block, and chitchat's decoder has no such bound).
pub const MAX_DELTA_BYTES: usize = 1 << 20;
/// The size of the blocks our own deltas are cut into (chitchat's own threshold).
const BLOCK_BYTES: usize = 16_384;

/// How long after its last direct message a third node still counts as heard: its entries in
/// others' digests keep telling chitchat what they hold. Kept well under chitchat's
/// `dead_node_grace_period` (1 h by default), so that chitchat still knows every node it is
/// told about this way.
pub const HEARD_FOR_MS: u64 = 30 * 60 * 1000;
/// One introduction per address at most this often.
pub const INTRODUCE_EVERY_MS: u64 = 30_000;
/// Pings go to nodes heard directly within this window; longer silences are chitchat's dead
/// nodes, which it tries by itself now and then.
pub const PING_HEARD_WITHIN_MS: u64 = 60_000;
/// Bounds on the maps keyed by what peers say.
pub const MAX_HEARD: usize = 4096;
pub const MAX_INTRODUCED: usize = 1024;

/// One node's line in a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestEntry {
    pub id: ChitchatId,
    pub heartbeat: u64,
    pub last_gc_version: u64,
    pub max_version: u64,
}

/// One key-value mutation of a delta; `status` is chitchat's deletion code (0 set, 1 deleted,
/// 2 delete after TTL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    pub version: u64,
    pub status: u8,
}

/// What a delta says about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDelta {
    pub id: ChitchatId,
    pub last_gc_version: u64,
    pub from_version_excluded: u64,
    pub key_values: Vec<KeyValue>,
    /// chitchat's explicit max version (sent when a node's key-values were all collected).
    pub set_max_version: Option<u64>,
}

/// A chitchat message, in the form this module filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipMessage {
    Syn {
        cluster_id: String,
        digest: Vec<DigestEntry>,
    },
    SynAck {
        digest: Vec<DigestEntry>,
        delta: Vec<NodeDelta>,
    },
    Ack {
        delta: Vec<NodeDelta>,
    },
    BadCluster,
}

fn read<T: Deserializable>(buf: &mut &[u8], what: &str) -> Result<T, String> {
    T::deserialize(buf).map_err(|e| format!("{what}: {e}"))
}

fn read_u8(buf: &mut &[u8], what: &str) -> Result<u8, String> {
    let (first, rest) = buf
        .split_first()
        .ok_or_else(|| format!("{what}: message ends early"))?;
    *buf = rest;
    Ok(*first)
}

fn read_digest(buf: &mut &[u8]) -> Result<Vec<DigestEntry>, String> {
    let count: u16 = read(buf, "digest length")?;
    let mut out = Vec::with_capacity(usize::from(count).min(1024));
    for _ in 0..count {
        out.push(DigestEntry {
            id: read(buf, "digest node")?,
            heartbeat: read(buf, "digest heartbeat")?,
            last_gc_version: read(buf, "digest gc version")?,
            max_version: read(buf, "digest max version")?,
        });
    }
    Ok(out)
}

fn write_digest(digest: &[DigestEntry], out: &mut Vec<u8>) {
    (digest.len().min(usize::from(u16::MAX)) as u16).serialize(out);
    for e in digest.iter().take(usize::from(u16::MAX)) {
        e.id.serialize(out);
        e.heartbeat.serialize(out);
        e.last_gc_version.serialize(out);
        e.max_version.serialize(out);
    }
}

/// The delta's block stream, inflated (bounded by [`MAX_DELTA_BYTES`]).
fn read_blocks(buf: &mut &[u8]) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    loop {
        match read_u8(buf, "delta block")? {
            BLOCK_END => return Ok(data),
            kind @ (BLOCK_COMPRESSED | BLOCK_UNCOMPRESSED) => {
                let len = usize::from(read::<u16>(buf, "delta block length")?);
                let block = buf
                    .get(..len)
                    .ok_or("delta block: message ends early".to_owned())?;
                *buf = &buf[len..];
                if kind == BLOCK_COMPRESSED {
                    let inflated = zstd::bulk::decompress(block, usize::from(u16::MAX))
                        .map_err(|e| format!("delta block does not inflate: {e}"))?;
                    data.extend_from_slice(&inflated);
                } else {
                    data.extend_from_slice(block);
                }
                if data.len() > MAX_DELTA_BYTES {
                    return Err(format!("delta inflates past {MAX_DELTA_BYTES} bytes"));
                }
            }
            other => return Err(format!("unknown delta block type {other}")),
        }
    }
}

/// Parses the ops with the checks chitchat's own delta builder makes, so that a rewritten
/// message is one chitchat accepts.
fn read_delta(buf: &mut &[u8]) -> Result<Vec<NodeDelta>, String> {
    let data = read_blocks(buf)?;
    let mut cur = &data[..];
    let mut out: Vec<NodeDelta> = Vec::new();
    while !cur.is_empty() {
        match read_u8(&mut cur, "delta op")? {
            OP_NODE => {
                let id: ChitchatId = read(&mut cur, "delta node")?;
                if out.iter().any(|d| d.id == id) {
                    return Err(format!("delta names node {} twice", id.node_id));
                }
                out.push(NodeDelta {
                    id,
                    last_gc_version: read(&mut cur, "delta gc version")?,
                    from_version_excluded: read(&mut cur, "delta from version")?,
                    key_values: Vec::new(),
                    set_max_version: None,
                });
            }
            OP_KEY_VALUE => {
                let kv = KeyValue {
                    key: read(&mut cur, "delta key")?,
                    value: read(&mut cur, "delta value")?,
                    version: read(&mut cur, "delta version")?,
                    status: read_u8(&mut cur, "delta deletion status")?,
                };
                if kv.status > 2 {
                    return Err(format!("unknown deletion status {}", kv.status));
                }
                let node = out
                    .last_mut()
                    .ok_or("a key-value before any node in a delta".to_owned())?;
                let floor = node
                    .key_values
                    .last()
                    .map(|k| k.version)
                    .max(node.set_max_version)
                    .unwrap_or(0);
                if kv.version <= floor {
                    return Err("delta versions do not increase".into());
                }
                node.key_values.push(kv);
            }
            OP_SET_MAX_VERSION => {
                let v: u64 = read(&mut cur, "delta max version")?;
                let node = out
                    .last_mut()
                    .ok_or("a max version before any node in a delta".to_owned())?;
                node.set_max_version = Some(v);
            }
            other => return Err(format!("unknown delta op {other}")),
        }
    }
    Ok(out)
}

fn write_delta(delta: &[NodeDelta], out: &mut Vec<u8>) {
    let mut ops = Vec::new();
    for node in delta {
        ops.push(OP_NODE);
        node.id.serialize(&mut ops);
        node.last_gc_version.serialize(&mut ops);
        node.from_version_excluded.serialize(&mut ops);
        for kv in &node.key_values {
            ops.push(OP_KEY_VALUE);
            kv.key.serialize(&mut ops);
            kv.value.serialize(&mut ops);
            kv.version.serialize(&mut ops);
            ops.push(kv.status);
        }
        if let Some(v) = node.set_max_version {
            ops.push(OP_SET_MAX_VERSION);
            v.serialize(&mut ops);
        }
    }
    // The same blocks and the same choice per block as chitchat's stream writer (compressed
    // when the result fits in the block's own size), so the bytes are the ones chitchat would
    // write for this delta.
    let mut small = vec![0u8; BLOCK_BYTES];
    for block in ops.chunks(BLOCK_BYTES) {
        match zstd::bulk::compress_to_buffer(block, &mut small[..block.len()], 0) {
            Ok(len) => {
                out.push(BLOCK_COMPRESSED);
                (len as u16).serialize(out);
                out.extend_from_slice(&small[..len]);
            }
            Err(_) => {
                out.push(BLOCK_UNCOMPRESSED);
                (block.len() as u16).serialize(out);
                out.extend_from_slice(block);
            }
        }
    }
    out.push(BLOCK_END);
}

impl GossipMessage {
    /// Parses chitchat's wire format; never panics (chitchat's primitives run under
    /// `catch_unwind` like its decoder in `frame::decode_gossip`).
    pub fn parse(bytes: &[u8]) -> Result<GossipMessage, String> {
        match std::panic::catch_unwind(|| Self::parse_inner(bytes)) {
            Ok(r) => r,
            Err(_) => Err("the gossip parser failed on this message".into()),
        }
    }

    fn parse_inner(bytes: &[u8]) -> Result<GossipMessage, String> {
        let mut buf = bytes;
        let magic: u16 = read(&mut buf, "gossip header")?;
        if magic != MAGIC {
            return Err("not a chitchat message (bad magic)".into());
        }
        let version = read_u8(&mut buf, "gossip version")?;
        if version != PROTOCOL_V0 {
            return Err(format!(
                "chitchat protocol version {version} is not supported"
            ));
        }
        let msg = match read_u8(&mut buf, "gossip message type")? {
            SYN => {
                let digest = read_digest(&mut buf)?;
                let cluster_id = read(&mut buf, "cluster id")?;
                GossipMessage::Syn { cluster_id, digest }
            }
            SYN_ACK => {
                let digest = read_digest(&mut buf)?;
                let delta = read_delta(&mut buf)?;
                GossipMessage::SynAck { digest, delta }
            }
            ACK => GossipMessage::Ack {
                delta: read_delta(&mut buf)?,
            },
            BAD_CLUSTER => GossipMessage::BadCluster,
            other => return Err(format!("unknown gossip message type {other}")),
        };
        if !buf.is_empty() {
            return Err(format!("{} bytes after the gossip message", buf.len()));
        }
        Ok(msg)
    }

    /// chitchat's wire format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        MAGIC.serialize(&mut out);
        out.push(PROTOCOL_V0);
        match self {
            GossipMessage::Syn { cluster_id, digest } => {
                out.push(SYN);
                write_digest(digest, &mut out);
                cluster_id.serialize(&mut out);
            }
            GossipMessage::SynAck { digest, delta } => {
                out.push(SYN_ACK);
                write_digest(digest, &mut out);
                write_delta(delta, &mut out);
            }
            GossipMessage::Ack { delta } => {
                out.push(ACK);
                write_delta(delta, &mut out);
            }
            GossipMessage::BadCluster => out.push(BAD_CLUSTER),
        }
        out
    }

    fn parts_mut(&mut self) -> (Option<&mut Vec<DigestEntry>>, Option<&mut Vec<NodeDelta>>) {
        match self {
            GossipMessage::Syn { digest, .. } => (Some(digest), None),
            GossipMessage::SynAck { digest, delta } => (Some(digest), Some(delta)),
            GossipMessage::Ack { delta } => (None, Some(delta)),
            GossipMessage::BadCluster => (None, None),
        }
    }
}

/// Who sent a message, as the transport proved it: the node its certificate names, the address
/// the transport binds to that certificate, and what the certificate grants.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub node: &'a str,
    pub addr: SocketAddr,
    /// The highest `alerter_priority` the mesh CA lets this node claim
    /// (`certs::peer_alerter_priority_cap`).
    pub alerter_priority_cap: i64,
}

impl<'a> Sender<'a> {
    /// A sender whose certificate grants nothing beyond the default (alerter priority 0).
    pub fn new(node: &'a str, addr: SocketAddr) -> Self {
        Sender {
            node,
            addr,
            alerter_priority_cap: 0,
        }
    }
}

/// A message from a peer after filtering.
#[derive(Debug, Default)]
pub struct Admitted {
    /// The message to hand to chitchat (its wire format).
    pub payload: Vec<u8>,
    /// Nodes whose state the peer tried to speak for (each one dropped delta).
    pub spoke_for: Vec<String>,
    /// Addresses to introduce ourselves to (nodes we have not heard from directly).
    pub introduce: Vec<SocketAddr>,
    /// An `alerter_priority` the sender claimed above its certificate's grant (held to the
    /// grant): `(claimed, granted)`.
    pub overclaimed: Option<(String, i64)>,
}

/// A node heard directly.
#[derive(Debug, Clone, Copy)]
struct Heard {
    at: u64,
    /// When its heartbeat last reached chitchat (see `inbound`).
    credited: Option<u64>,
}

/// The filter's state: which nodes we heard directly, our own entry, recent introductions.
/// Time is milliseconds from any monotonic origin (sans-IO: the transport passes its clock).
#[derive(Debug)]
pub struct GossipTrust {
    advertise: SocketAddr,
    own: Option<DigestEntry>,
    cluster_id: Option<String>,
    /// Nodes heard directly: when last, and when their heartbeat last reached chitchat.
    heard: HashMap<ChitchatId, Heard>,
    introduced: HashMap<SocketAddr, u64>,
    /// When we last sent to each address (chitchat's picks and our pings).
    contacted: HashMap<SocketAddr, u64>,
    /// Our last digest as chitchat wrote it: what we hold of each node's state.
    last_digest: Vec<DigestEntry>,
    /// A peer not exchanged with for this long is pinged; 0 turns pings off.
    ping_after_ms: u64,
}

impl GossipTrust {
    pub fn new(advertise: SocketAddr) -> GossipTrust {
        GossipTrust {
            advertise,
            own: None,
            cluster_id: None,
            heard: HashMap::new(),
            introduced: HashMap::new(),
            contacted: HashMap::new(),
            last_digest: Vec::new(),
            ping_after_ms: 0,
        }
    }

    /// Sets chitchat's gossip interval: a peer neither heard from nor sent to for two of them
    /// is pinged (see [`GossipTrust::outbound`]).
    pub fn set_gossip_interval(&mut self, interval_ms: u64) {
        self.ping_after_ms = interval_ms.saturating_mul(2);
    }

    /// Rewrites a message chitchat is sending: deltas keep only this node's own state. Our
    /// own entry and the cluster id are remembered for introductions. A message this module
    /// cannot parse goes out as it is (it is chitchat's own; the receiver will judge it).
    ///
    /// With direct contact the only source of liveness, chitchat's three random peers per
    /// round leave gaps of several rounds between two given nodes in a mesh of ten, which its
    /// phi detector reads as death. So each `Syn` chitchat sends also returns *pings*: for every
    /// node heard directly in the last minute that nobody has exchanged a message with for two
    /// rounds, a `Syn` with our own entry and what we hold of that node (so its answer carries
    /// only news: normally its digest and an empty delta).
    pub fn outbound(
        &mut self,
        to: SocketAddr,
        payload: Vec<u8>,
        now_ms: u64,
    ) -> (Vec<u8>, Vec<(SocketAddr, Vec<u8>)>) {
        self.contacted.insert(to, now_ms);
        let Ok(mut msg) = GossipMessage::parse(&payload) else {
            return (payload, Vec::new());
        };
        let mut pings = Vec::new();
        if let GossipMessage::Syn { cluster_id, digest } = &msg {
            self.cluster_id = Some(cluster_id.clone());
            self.last_digest = digest.clone();
        }
        let advertise = self.advertise;
        let (digest, delta) = msg.parts_mut();
        if let Some(own) = digest.and_then(|d| {
            d.iter()
                .filter(|e| e.id.gossip_advertise_addr == advertise)
                .max_by_key(|e| e.id.generation_id)
        }) {
            self.own = Some(own.clone());
        }
        let payload = match delta {
            Some(delta)
                if delta
                    .iter()
                    .any(|d| d.id.gossip_advertise_addr != advertise) =>
            {
                delta.retain(|d| d.id.gossip_advertise_addr == advertise);
                msg.encode()
            }
            _ => payload,
        };
        if matches!(msg, GossipMessage::Syn { .. }) {
            pings = self.pings(now_ms);
        }
        self.bound_contacted(now_ms);
        (payload, pings)
    }

    fn pings(&mut self, now_ms: u64) -> Vec<(SocketAddr, Vec<u8>)> {
        if self.ping_after_ms == 0 {
            return Vec::new();
        }
        let (Some(own), Some(cluster_id)) = (self.own.clone(), self.cluster_id.clone()) else {
            return Vec::new();
        };
        // The newest generation of each node heard in the last minute.
        let mut newest: HashMap<&str, (&ChitchatId, u64)> = HashMap::new();
        for (id, h) in &self.heard {
            let t = &h.at;
            if now_ms.saturating_sub(*t) > PING_HEARD_WITHIN_MS {
                continue;
            }
            let e = newest.entry(&id.node_id).or_insert((id, *t));
            if id.generation_id > e.0.generation_id {
                *e = (id, *t);
            }
        }
        let mut out = Vec::new();
        for (id, heard_at) in newest.into_values() {
            let addr = id.gossip_advertise_addr;
            let sent_at = self.contacted.get(&addr).copied().unwrap_or(0);
            if now_ms.saturating_sub(heard_at.max(sent_at)) < self.ping_after_ms {
                continue;
            }
            let mut digest = vec![own.clone()];
            digest.extend(self.last_digest.iter().filter(|e| e.id == *id).cloned());
            let ping = GossipMessage::Syn {
                cluster_id: cluster_id.clone(),
                digest,
            };
            out.push((addr, ping.encode()));
        }
        for (addr, _) in &out {
            self.contacted.insert(*addr, now_ms);
        }
        out
    }

    fn bound_contacted(&mut self, now_ms: u64) {
        if self.contacted.len() > MAX_HEARD {
            self.contacted
                .retain(|_, t| now_ms.saturating_sub(*t) < PING_HEARD_WITHIN_MS);
        }
    }

    /// The introduction for a node we have not heard from: a `Syn` with only our own entry,
    /// so that the node answers with its own state (and learns ours). `None` before chitchat
    /// has sent its first `Syn`.
    pub fn introduction(&self) -> Option<Vec<u8>> {
        Some(
            GossipMessage::Syn {
                cluster_id: self.cluster_id.clone()?,
                digest: vec![self.own.clone()?],
            }
            .encode(),
        )
    }

    /// Filters a message from the peer whose certificate names `sender`, replying to
    /// `sender_addr` (already checked by the transport to belong to `sender`).
    pub fn inbound(
        &mut self,
        from: Sender<'_>,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Admitted, String> {
        let (sender, sender_addr) = (from.node, from.addr);
        let mut msg = GossipMessage::parse(payload)?;
        let speaks_for_itself =
            |id: &ChitchatId| &*id.node_id == sender && id.gossip_advertise_addr == sender_addr;
        let (digest, delta) = msg.parts_mut();
        // The sender speaks for its newest incarnation only: older ones are chitchat's business
        // to time out, and a stream of invented generations must not grow our state.
        let generation = digest
            .iter()
            .flat_map(|d| d.iter().map(|e| &e.id))
            .chain(delta.iter().flat_map(|d| d.iter().map(|n| &n.id)))
            .filter(|id| speaks_for_itself(id))
            .map(|id| id.generation_id)
            .max();
        let is_sender =
            |id: &ChitchatId| speaks_for_itself(id) && Some(id.generation_id) == generation;
        let mut admitted = Admitted::default();
        if let Some(digest) = digest {
            let mut kept = Vec::with_capacity(digest.len());
            for mut e in digest.drain(..) {
                if is_sender(&e.id) {
                    let heard = self.heard.entry(e.id.clone()).or_insert(Heard {
                        at: now_ms,
                        credited: None,
                    });
                    heard.at = now_ms;
                    // About one heartbeat per round reaches the failure detector: a peer processes
                    // several of our messages in a round and its heartbeat moves on each, and
                    // phi (silence over the mean interval) would otherwise learn a mean of a
                    // fraction of a round and call a peer dead after a few rounds of loss.
                    // A quarter of a round: bursts (milliseconds apart) collapse, while the
                    // exchanges of one round still count (a full round dropped every early
                    // heartbeat and doubled the interval phi learns, and detection time: 4.1 s
                    // against 2.3 s for stock chitchat in the detection bench).
                    let window = self.ping_after_ms / 8;
                    match heard.credited {
                        Some(t) if now_ms.saturating_sub(t) < window => e.heartbeat = 0,
                        _ => heard.credited = Some(now_ms),
                    }
                    kept.push(e);
                } else if e.id.gossip_advertise_addr == self.advertise {
                    // About us: useful (what the sender holds of our state) only if it is us.
                    if self.own.as_ref().is_some_and(|own| own.id == e.id) {
                        kept.push(e);
                    }
                } else if &*e.id.node_id == sender || e.id.gossip_advertise_addr == sender_addr {
                    // Another incarnation of the sender, or someone at the sender's address.
                } else if self
                    .heard
                    .get(&e.id)
                    .is_some_and(|h| now_ms.saturating_sub(h.at) < HEARD_FOR_MS)
                {
                    e.heartbeat = 0;
                    kept.push(e);
                } else if self.should_introduce(e.id.gossip_advertise_addr, now_ms) {
                    admitted.introduce.push(e.id.gossip_advertise_addr);
                }
            }
            *digest = kept;
        }
        if let Some(delta) = delta {
            delta.retain(|d| {
                let keep = is_sender(&d.id);
                if !keep {
                    admitted.spoke_for.push(d.id.node_id.to_string());
                }
                keep
            });
            for d in delta.iter_mut() {
                for kv in &mut d.key_values {
                    if let Some(claim) = hold_to_grant(kv, from.alerter_priority_cap) {
                        admitted.overclaimed = Some((claim, from.alerter_priority_cap));
                    }
                }
            }
        }
        self.bound_heard(now_ms);
        admitted.payload = msg.encode();
        Ok(admitted)
    }

    fn should_introduce(&mut self, addr: SocketAddr, now_ms: u64) -> bool {
        if self
            .introduced
            .get(&addr)
            .is_some_and(|t| now_ms.saturating_sub(*t) < INTRODUCE_EVERY_MS)
        {
            return false;
        }
        if self.introduced.len() >= MAX_INTRODUCED {
            self.introduced
                .retain(|_, t| now_ms.saturating_sub(*t) < INTRODUCE_EVERY_MS);
            if self.introduced.len() >= MAX_INTRODUCED {
                return false;
            }
        }
        self.introduced.insert(addr, now_ms);
        true
    }

    fn bound_heard(&mut self, now_ms: u64) {
        if self.heard.len() <= MAX_HEARD {
            return;
        }
        self.heard
            .retain(|_, h| now_ms.saturating_sub(h.at) < HEARD_FOR_MS);
        while self.heard.len() > MAX_HEARD {
            let Some(oldest) = self
                .heard
                .iter()
                .min_by_key(|(_, h)| h.at)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            self.heard.remove(&oldest);
        }
    }

    /// How many nodes count as heard directly (for tests and status).
    pub fn heard_count(&self) -> usize {
        self.heard.len()
    }
}

/// Holds a gossiped `alerter_priority` to what the sender's certificate grants: the election
/// ranks what the CA signed, not what a member says (a member claiming `i64::MAX` would
/// otherwise become the alerter and send nothing). A lower claim stands: a node may always
/// step back. Returns the claim when it was cut (unparseable claims count as 0, as
/// [`crate::keys`] reads them, and are cut only when 0 is above the grant).
fn hold_to_grant(kv: &mut KeyValue, granted: i64) -> Option<String> {
    if kv.key != crate::keys::ALERTER_PRIORITY {
        return None;
    }
    let claimed = kv.value.parse::<i64>().unwrap_or(0);
    if claimed <= granted && kv.value.parse::<i64>().is_ok() {
        return None;
    }
    let was = std::mem::replace(&mut kv.value, claimed.min(granted).to_string());
    (claimed > granted).then_some(was)
}

#[cfg(test)]
#[path = "gossip_trust_tests.rs"]
mod tests;
