//! Who is alive: QUIC transport, membership and failure detection for labmesh.
//!
//! One QUIC endpoint (quinn, mutual TLS from the `certs` crate) per node carries everything
//! between peers. On top of it runs chitchat `=0.11.0` for membership and phi-accrual failure
//! detection, one unidirectional stream per gossip message with a send queue per peer, so a dead
//! peer never stalls the gossip loop. This crate turns chitchat's view into per-peer liveness
//! (`alive`, `suspect`, `dead`, `offline`, `left`) and reports changes as its own types; it knows
//! nothing of events, which the `sync` and `node` crates record. It sits on `certs` (the stack
//! `certs <- mesh`), beside `sync <- alerting`; the two meet in `node` and `simulations`.
//! [`summary`] is the format of the host summary every node gossips, and its one reader.
//!
//! Dedup rule for transition events: a transition is recorded only by the live node with the
//! smallest name other than the node that changed (see [`liveness`]). See `ALGORITHM.md` for the
//! protocol, its timers and why each bound has its value.

pub mod frame;
pub mod gossip_trust;
pub mod keys;
pub mod liveness;
pub mod membership;
pub mod stats;
pub mod summary;
pub mod transport;
pub mod udp_guard;

pub use liveness::{Liveness, LivenessConfig, PeerStatus, Transition};
pub use membership::{Mesh, MeshConfig, MeshView};
pub use stats::{MeshStats, StatsSnapshot};
pub use transport::{QuicTransport, TransportConfig};
