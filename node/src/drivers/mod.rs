//! The agent's drivers: each owns one part of a running peer, feeds the sans-IO cores (sync's
//! core and scheduler, the alerting engine, the world state) with time, messages and stored
//! events, and performs what they ask. Each takes its own small settings, the node's clock
//! and its transport from the caller, so the agent and the full-stack simulation run the same
//! drivers; `node/ALGORITHM.md` says which task owns what.
//!
//! - [`mesh`]: QUIC and chitchat, liveness transitions as events, revocations;
//! - [`bus`]: the store's listener, fanning each stored event out once;
//! - [`sync`]: eager push and reconciliation; [`world`]: the CRDT world state and its views;
//! - [`alerting`] with [`notify`]: the engine and the notifications it sends;
//! - [`probes`], [`history`] and [`workers`]: this host's samples, their hourly record, and
//!   external workers' heartbeats.

pub mod alerting;
pub mod bus;
pub mod history;
pub mod mesh;
pub mod notify;
pub mod probes;
pub mod remediation;
pub mod runs;
pub mod sync;
pub mod workers;
pub mod world;
