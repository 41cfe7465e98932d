//! Who is alive: QUIC transport, membership and failure detection for labmesh.
//!
//! One QUIC endpoint (quinn, mutual TLS from the `certs` crate) per node carries everything
//! between peers. On top of it runs chitchat `=0.11.0` for membership and phi-accrual failure
//! detection, one unidirectional stream per gossip message with a send queue per peer, so a dead
//! peer never stalls the gossip loop. This crate turns chitchat's view into per-peer liveness
//! (`alive`, `suspect`, `dead`, `offline`, `left`) and reports changes as its own types; it knows
//! nothing of events, which the `sync` and `node` crates record.
