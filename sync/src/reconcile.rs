//! Event dissemination and anti-entropy between two peers, as a sans-IO state machine.
//!
//! No sockets, files or clocks here: the driver feeds messages in and performs what the
//! [`Runtime`] is asked to do (send a message, store event files). The agent drives it over
//! QUIC; tests and the simulator drive it in memory. See `sync/ALGORITHM.md`.
//!
//! - **Eager push**: a new local event is pushed at once to every live peer
//!   ([`SyncCore::push`]).
//! - **Reconciliation**: range-based set reconciliation (negentropy) over the items
//!   `(event timestamp in ms, SHA-256 of the event file)`, a key identical on every node by
//!   construction. The initiator learns which items it has that the responder lacks (it sends
//!   them) and which it lacks (it asks for them); events travel in bounded batches, each stored
//!   durably on arrival, so an interrupted session loses nothing and the next one starts from
//!   what is already there.

use std::collections::BTreeMap;

use negentropy::{Id, Negentropy, NegentropyStorageVector};
use serde::{Deserialize, Serialize};

use crate::index::ContentHash;

/// Wire version of [`SyncMessage`]; a peer with another version is refused with a clear error.
pub const WIRE_VERSION: u8 = 2;

/// Largest negentropy frame. Bounds one round trip's message (negentropy splits ranges to fit).
pub const FRAME_LIMIT: u64 = 60_000;

/// Events per batch, and bytes per batch: whichever comes first.
pub const BATCH_EVENTS: usize = 500;
pub const BATCH_BYTES: usize = 1024 * 1024;

/// Hashes asked for in one `Fetch`.
pub const FETCH_HASHES: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMessage {
    /// New events, pushed by their origin, with the certificates of their signers (DER).
    Push {
        events: Vec<Vec<u8>>,
        signers: Vec<Vec<u8>>,
    },
    /// Opens a reconciliation over the events at or after `since_ms`.
    Reconcile {
        session: u64,
        since_ms: i64,
        negentropy: Vec<u8>,
    },
    /// The responder's answer to a `Reconcile` or `Continue`.
    Reply { session: u64, negentropy: Vec<u8> },
    /// The initiator's next round (the window again: the responder keeps no state).
    Continue {
        session: u64,
        since_ms: i64,
        negentropy: Vec<u8>,
    },
    /// Asks for the events with these content hashes.
    Fetch {
        session: u64,
        hashes: Vec<ContentHash>,
    },
    /// Event files, as stored (never re-serialised), with the certificates of their signers
    /// (DER): a receiver may never have met the node that wrote them.
    Events {
        session: u64,
        events: Vec<Vec<u8>>,
        signers: Vec<Vec<u8>>,
    },
    /// A WorldState snapshot (JSON), for history one side no longer holds as events (pruned
    /// by retention). `reply` is set on the answer, which is never answered again.
    World { state: Vec<u8>, reply: bool },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("empty sync message")]
    Empty,
    #[error(
        "sync wire version {0} is not supported (this node speaks {WIRE_VERSION}); upgrade labmesh on the older node"
    )]
    Version(u8),
    #[error("malformed sync message: {0}")]
    Malformed(String),
}

impl SyncMessage {
    /// The message's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncMessage::Push { .. } => "push",
            SyncMessage::Reconcile { .. } => "reconcile",
            SyncMessage::Reply { .. } => "reply",
            SyncMessage::Continue { .. } => "continue",
            SyncMessage::Fetch { .. } => "fetch",
            SyncMessage::Events { .. } => "events",
            SyncMessage::World { .. } => "world",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_VERSION];
        // Encoding plain enums of byte vectors cannot fail.
        out.extend(postcard::to_stdvec(self).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SyncMessage, WireError> {
        let (&version, rest) = bytes.split_first().ok_or(WireError::Empty)?;
        if version != WIRE_VERSION {
            return Err(WireError::Version(version));
        }
        postcard::from_bytes(rest).map_err(|e| WireError::Malformed(e.to_string()))
    }
}

/// What the core asks of its driver.
pub trait Runtime {
    /// Sends a message to a peer (queued; the driver does the I/O).
    fn send(&mut self, to: &str, msg: SyncMessage);
    /// Stores event files received from `from` (validated by the store like any file, their
    /// signatures checked against `signers` and the certificates already known).
    fn store(&mut self, from: &str, received: Received);
}

/// Event files a peer sent, and the certificates it sent along.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    pub events: Vec<Vec<u8>>,
    pub signers: Vec<Vec<u8>>,
}

/// Collects what the core asked for during a call, for the driver to perform afterwards: the
/// one runtime the agent, the simulations and the tests use.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Messages to send, in order.
    pub send: Vec<(String, SyncMessage)>,
    /// Event files received, by sender, to store.
    pub store: Vec<(String, Received)>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.send.is_empty() && self.store.is_empty()
    }
}

impl Runtime for Outbox {
    fn send(&mut self, to: &str, msg: SyncMessage) {
        self.send.push((to.to_owned(), msg));
    }
    fn store(&mut self, from: &str, received: Received) {
        self.store.push((from.to_owned(), received));
    }
}

/// What the core reads from the local store.
pub trait SyncSource {
    /// `(timestamp ms, content hash)` of every event at or after `since_ms`, in time order.
    fn items(&self, since_ms: i64) -> Vec<(u64, ContentHash)>;
    /// The stored bytes of the event with this content hash.
    fn bytes(&self, hash: &ContentHash) -> Option<Vec<u8>>;
    /// The certificates (DER) of whoever signed `files`, to send along with them. A source
    /// without signatures has none.
    fn signer_certificates(&self, _files: &[Vec<u8>]) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

/// Per-peer counters, for `labmesh sync status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerSyncStats {
    pub sessions_started: u64,
    pub sessions_completed: u64,
    pub events_sent: u64,
    pub events_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

struct Session {
    peer: String,
    started_ms: u64,
    since_ms: i64,
    /// Hashes we still have to ask for.
    need: Vec<ContentHash>,
    done_reconciling: bool,
}

/// The sync state machine of one node.
#[derive(Default)]
pub struct SyncCore {
    next_session: u64,
    /// Sessions this node initiated, by id.
    sessions: BTreeMap<u64, Session>,
    pub stats: BTreeMap<String, PeerSyncStats>,
}

fn storage(items: &[(u64, ContentHash)]) -> Result<NegentropyStorageVector, String> {
    let mut s = NegentropyStorageVector::with_capacity(items.len());
    for (ts, hash) in items {
        s.insert(*ts, Id::from_byte_array(*hash))
            .map_err(|e| e.to_string())?;
    }
    s.seal().map_err(|e| e.to_string())?;
    Ok(s)
}

/// Splits event files into batches bounded in count and bytes.
fn batches(events: Vec<Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for e in events {
        if !cur.is_empty() && (cur.len() >= BATCH_EVENTS || size + e.len() > BATCH_BYTES) {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += e.len();
        cur.push(e);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl SyncCore {
    pub fn new(seed: u64) -> Self {
        SyncCore {
            next_session: seed,
            ..SyncCore::default()
        }
    }

    fn stats_for(&mut self, peer: &str) -> &mut PeerSyncStats {
        self.stats.entry(peer.to_owned()).or_default()
    }

    fn send_events(
        &mut self,
        rt: &mut impl Runtime,
        src: &impl SyncSource,
        peer: &str,
        session: Option<u64>,
        events: Vec<Vec<u8>>,
    ) {
        for batch in batches(events) {
            let stats = self.stats_for(peer);
            stats.events_sent += batch.len() as u64;
            stats.bytes_sent += batch.iter().map(|e| e.len() as u64).sum::<u64>();
            let signers = src.signer_certificates(&batch);
            let msg = match session {
                Some(session) => SyncMessage::Events {
                    session,
                    events: batch,
                    signers,
                },
                None => SyncMessage::Push {
                    events: batch,
                    signers,
                },
            };
            rt.send(peer, msg);
        }
    }

    /// Pushes new local events to every peer in `peers`.
    pub fn push(
        &mut self,
        rt: &mut impl Runtime,
        src: &impl SyncSource,
        peers: &[String],
        events: &[Vec<u8>],
    ) {
        for peer in peers {
            self.send_events(rt, src, peer, None, events.to_vec());
        }
    }

    /// True while a session this node started with `peer` is running.
    pub fn in_session_with(&self, peer: &str) -> bool {
        self.sessions.values().any(|s| s.peer == peer)
    }

    /// Sessions this node started that have not finished (nor expired).
    pub fn sessions_in_flight(&self) -> usize {
        self.sessions.len()
    }

    /// Starts a reconciliation with `peer` over events at or after `since_ms`.
    /// `now_ms` is any monotonic clock reading; [`SyncCore::expire`] uses the same clock.
    pub fn start(
        &mut self,
        rt: &mut impl Runtime,
        src: &impl SyncSource,
        peer: &str,
        since_ms: i64,
        now_ms: u64,
    ) -> Result<u64, String> {
        let items = src.items(since_ms);
        let store = storage(&items)?;
        let mut neg = Negentropy::borrowed(&store, FRAME_LIMIT).map_err(|e| e.to_string())?;
        let first = neg.initiate().map_err(|e| e.to_string())?;
        let session = self.next_session;
        self.next_session = self.next_session.wrapping_add(1);
        self.sessions.insert(
            session,
            Session {
                peer: peer.to_owned(),
                started_ms: now_ms,
                since_ms,
                need: Vec::new(),
                done_reconciling: false,
            },
        );
        self.stats_for(peer).sessions_started += 1;
        rt.send(
            peer,
            SyncMessage::Reconcile {
                session,
                since_ms,
                negentropy: first,
            },
        );
        Ok(session)
    }

    /// Forgets sessions older than `max_age_ms` (a peer that stopped answering); returns how
    /// many. Nothing is lost: the next session finds whatever is still missing.
    pub fn expire(&mut self, now_ms: u64, max_age_ms: u64) -> usize {
        let before = self.sessions.len();
        self.sessions
            .retain(|_, s| now_ms.saturating_sub(s.started_ms) <= max_age_ms);
        before - self.sessions.len()
    }

    /// Forgets sessions with a peer that went away or restarted (the next session redoes what
    /// is missing); returns how many.
    pub fn abandon(&mut self, peer: &str) -> usize {
        let before = self.sessions.len();
        self.sessions.retain(|_, s| s.peer != peer);
        before - self.sessions.len()
    }

    /// Handles one message from `from`. Errors name what was wrong; the driver counts them.
    pub fn on_message(
        &mut self,
        rt: &mut impl Runtime,
        src: &impl SyncSource,
        from: &str,
        msg: SyncMessage,
    ) -> Result<(), String> {
        match msg {
            SyncMessage::Push { events, signers }
            | SyncMessage::Events {
                events, signers, ..
            } => {
                let stats = self.stats_for(from);
                stats.events_received += events.len() as u64;
                stats.bytes_received += events.iter().map(|e| e.len() as u64).sum::<u64>();
                rt.store(from, Received { events, signers });
                Ok(())
            }
            SyncMessage::Reconcile {
                session,
                since_ms,
                negentropy,
            }
            | SyncMessage::Continue {
                session,
                since_ms,
                negentropy,
            } => self.respond(rt, src, from, session, since_ms, &negentropy),
            SyncMessage::Reply {
                session,
                negentropy,
            } => self.on_reply(rt, src, from, session, &negentropy),
            // Snapshots are the world's business, handled by the driver.
            SyncMessage::World { .. } => Ok(()),
            SyncMessage::Fetch { session, hashes } => {
                let events: Vec<Vec<u8>> = hashes
                    .iter()
                    .take(FETCH_HASHES)
                    .filter_map(|h| src.bytes(h))
                    .collect();
                self.send_events(rt, src, from, Some(session), events);
                Ok(())
            }
        }
    }

    fn respond(
        &mut self,
        rt: &mut impl Runtime,
        src: &impl SyncSource,
        from: &str,
        session: u64,
        since_ms: i64,
        query: &[u8],
    ) -> Result<(), String> {
        let items = src.items(since_ms);
        let store = storage(&items)?;
        let mut neg = Negentropy::borrowed(&store, FRAME_LIMIT).map_err(|e| e.to_string())?;
        let reply = neg
            .reconcile(query)
            .map_err(|e| format!("reconcile: {e}"))?;
        rt.send(
            from,
            SyncMessage::Reply {
                session,
                negentropy: reply,
            },
        );
        Ok(())
    }

    fn on_reply(
        &mut self,
        rt: &mut impl Runtime,
        src: &impl SyncSource,
        from: &str,
        session: u64,
        reply: &[u8],
    ) -> Result<(), String> {
        let Some(state) = self.sessions.get(&session) else {
            return Err(format!("reply for unknown session {session}"));
        };
        if state.peer != from {
            return Err(format!(
                "{from} answered a session opened with {}",
                state.peer
            ));
        }
        let since_ms = state.since_ms;
        let items = src.items(since_ms);
        let store = storage(&items)?;
        let mut neg = Negentropy::borrowed(&store, FRAME_LIMIT).map_err(|e| e.to_string())?;
        neg.set_initiator();
        let mut have = Vec::new();
        let mut need = Vec::new();
        let next = neg
            .reconcile_with_ids(reply, &mut have, &mut need)
            .map_err(|e| format!("reconcile: {e}"))?;
        // What we have and they lack: send it now, in batches.
        have.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let ours: Vec<Vec<u8>> = have
            .iter()
            .filter_map(|id| src.bytes(id.as_bytes()))
            .collect();
        self.send_events(rt, src, from, Some(session), ours);
        if let Some(state) = self.sessions.get_mut(&session) {
            state.need.extend(need.iter().map(|id| *id.as_bytes()));
        }
        match next {
            Some(q) => rt.send(
                from,
                SyncMessage::Continue {
                    session,
                    since_ms,
                    negentropy: q,
                },
            ),
            None => {
                if let Some(state) = self.sessions.get_mut(&session) {
                    state.done_reconciling = true;
                }
            }
        }
        // Ask for what we lack, in bounded requests.
        let mut need = self
            .sessions
            .get_mut(&session)
            .map(|s| std::mem::take(&mut s.need))
            .unwrap_or_default();
        // negentropy returns `have`/`need` in an order that changes from process to process;
        // sorted, the same sets give the same messages (the simulator's traces repeat).
        need.sort_unstable();
        for chunk in need.chunks(FETCH_HASHES) {
            rt.send(
                from,
                SyncMessage::Fetch {
                    session,
                    hashes: chunk.to_vec(),
                },
            );
        }
        if self
            .sessions
            .get(&session)
            .is_some_and(|s| s.done_reconciling)
        {
            self.sessions.remove(&session);
            self.stats_for(from).sessions_completed += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use super::*;

    /// An in-memory node: its event set keyed by hash, and an outbox.
    #[derive(Default)]
    struct Mem {
        events: BTreeMap<ContentHash, (u64, Vec<u8>)>,
        outbox: VecDeque<(String, SyncMessage)>,
        wire_bytes: usize,
    }

    impl SyncSource for Mem {
        fn items(&self, since_ms: i64) -> Vec<(u64, ContentHash)> {
            let mut v: Vec<_> = self
                .events
                .iter()
                .filter(|(_, (ts, _))| *ts as i64 >= since_ms)
                .map(|(h, (ts, _))| (*ts, *h))
                .collect();
            v.sort();
            v
        }
        fn bytes(&self, hash: &ContentHash) -> Option<Vec<u8>> {
            self.events.get(hash).map(|(_, b)| b.clone())
        }
    }

    struct Rt<'a>(
        &'a mut VecDeque<(String, SyncMessage)>,
        &'a mut Vec<Vec<u8>>,
        &'a mut usize,
    );

    impl Runtime for Rt<'_> {
        fn send(&mut self, to: &str, msg: SyncMessage) {
            *self.2 += msg.encode().len();
            self.0.push_back((to.to_owned(), msg));
        }
        fn store(&mut self, _from: &str, received: Received) {
            self.1.extend(received.events);
        }
    }

    fn event(i: u64) -> (ContentHash, (u64, Vec<u8>)) {
        let bytes = format!("{{\"n\":{i}}}").into_bytes();
        let hash: ContentHash =
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes)).into();
        (hash, (1_700_000_000_000 + i * 37, bytes))
    }

    fn ingest(node: &mut Mem, stored: Vec<Vec<u8>>) {
        for b in stored {
            let hash: ContentHash =
                sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&b)).into();
            let n: u64 = String::from_utf8_lossy(&b)[5..]
                .trim_end_matches('}')
                .parse()
                .unwrap();
            node.events.insert(hash, (1_700_000_000_000 + n * 37, b));
        }
    }

    /// Runs a session between two in-memory nodes until no message is left; returns the bytes
    /// that crossed the wire.
    fn run(a: &mut Mem, b: &mut Mem) -> usize {
        let mut core_a = SyncCore::new(1);
        let mut core_b = SyncCore::new(1000);
        let mut stored = Vec::new();
        let mut out = VecDeque::new();
        let mut wire = 0;
        core_a
            .start(&mut Rt(&mut out, &mut stored, &mut wire), a, "b", 0, 0)
            .unwrap();
        a.outbox = out;
        loop {
            if let Some((to, msg)) = a.outbox.pop_front() {
                assert_eq!(to, "b");
                let mut out = VecDeque::new();
                let mut stored = Vec::new();
                core_b
                    .on_message(&mut Rt(&mut out, &mut stored, &mut wire), b, "a", msg)
                    .unwrap();
                ingest(b, stored);
                b.outbox.extend(out);
            } else if let Some((to, msg)) = b.outbox.pop_front() {
                assert_eq!(to, "a");
                let mut out = VecDeque::new();
                let mut stored = Vec::new();
                core_a
                    .on_message(&mut Rt(&mut out, &mut stored, &mut wire), a, "b", msg)
                    .unwrap();
                ingest(a, stored);
                a.outbox.extend(out);
            } else {
                break;
            }
        }
        a.wire_bytes = wire;
        wire
    }

    #[test]
    fn identical_sets_cost_one_small_round_trip() {
        let mut a = Mem::default();
        let mut b = Mem::default();
        for i in 0..20_000 {
            let (h, e) = event(i);
            a.events.insert(h, e.clone());
            b.events.insert(h, e);
        }
        let bytes = run(&mut a, &mut b);
        assert!(bytes <= 512, "{bytes} bytes for identical sets");
    }

    #[test]
    fn differences_flow_both_ways() {
        let mut a = Mem::default();
        let mut b = Mem::default();
        for i in 0..10_000 {
            let (h, e) = event(i);
            if i % 10 != 0 {
                a.events.insert(h, e.clone());
            }
            if i % 7 != 0 {
                b.events.insert(h, e);
            }
        }
        run(&mut a, &mut b);
        // Everything either had; what neither had (i divisible by 70) stays missing.
        assert_eq!(a.events.len(), 10_000 - 10_000 / 70 - 1);
        assert_eq!(
            a.events.keys().collect::<Vec<_>>(),
            b.events.keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn abandon_drops_only_that_peers_sessions() {
        let src = Mem::default();
        let mut core = SyncCore::new(1);
        let (mut out, mut stored, mut wire) = (VecDeque::new(), Vec::new(), 0);
        for peer in ["b", "c"] {
            core.start(&mut Rt(&mut out, &mut stored, &mut wire), &src, peer, 0, 0)
                .unwrap();
        }
        assert_eq!(core.abandon("b"), 1);
        assert_eq!(core.abandon("b"), 0);
        assert!(!core.in_session_with("b"));
        assert!(core.in_session_with("c"));
        assert_eq!(core.sessions_in_flight(), 1);
    }

    #[test]
    fn wire_format_is_versioned() {
        let msg = SyncMessage::Fetch {
            session: 3,
            hashes: vec![[7; 32]],
        };
        let bytes = msg.encode();
        assert_eq!(SyncMessage::decode(&bytes).unwrap(), msg);
        // Version 1 carried no signer certificates with events.
        let mut v1 = bytes.clone();
        v1[0] = 1;
        assert_eq!(SyncMessage::decode(&v1), Err(WireError::Version(1)));
        let mut v3 = bytes.clone();
        v3[0] = 3;
        assert_eq!(SyncMessage::decode(&v3), Err(WireError::Version(3)));
        assert!(matches!(
            SyncMessage::decode(&bytes[..bytes.len() - 5]),
            Err(WireError::Malformed(_))
        ));
        assert_eq!(SyncMessage::decode(&[]), Err(WireError::Empty));
    }
}
