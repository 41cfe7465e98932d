//! One alerter for the mesh, and notifications with no loss and no repeats.
//!
//! The alerter is elected deterministically from membership (highest `alerter_priority`, then
//! smallest name, among live non-transient nodes), so every node computes the same answer without
//! an extra protocol. Rules on gossiped metrics, event patterns and watchdogs feed an alert state
//! machine (`pending` → `firing` → `resolved`), then grouping, silences, routing and notifiers.
//! A ledger of `notification_sent` events, synced like every event, keeps a new alerter or a
//! healed partition from sending again what was already sent. The logic is sans-IO: it is driven
//! by time and inputs, so the agent, the turmoil simulation and tests all run the same code.
//!
//! The driver's entry point is [`Engine`] with its [`Runtime`] ([`runtime`]); `ALGORITHM.md`
//! beside this crate explains the protocol. It sits on `sync` (the stack `sync <- alerting`)
//! and knows nothing of the mesh: the node crate turns gossip into [`Member`]s and
//! [`NodeSummary`]s. Modules, by idea:
//! - [`election`]: who may notify; [`rules`] (+ [`rule_toml`]) and [`watchdog`]: what is worth
//!   an alert; [`state`]: the per-alert state machine and its events;
//! - [`pipeline`] with [`route`], [`silence`] (+ [`cron`]) and [`ledger`]: from alerts to
//!   notifications; [`message`], [`receiver`], [`notify`] and [`secret`]: what goes on the wire;
//! - [`expectations`]: jobs declared by events (`labmesh expect`) that become rules;
//! - [`score`], [`digest`] and [`digest_schedule`]: the node score card, the weekly digest text
//!   and when it is due.

pub mod config;
pub mod cron;
pub mod digest;
pub mod digest_schedule;
pub mod election;
pub mod engine;
pub mod expectations;
pub mod ledger;
pub mod message;
pub mod notify;
pub mod pipeline;
pub mod receiver;
pub mod route;
pub mod rule_toml;
pub mod rules;
pub mod runtime;
pub mod score;
pub mod secret;
pub mod silence;
pub mod state;
pub mod summary;
pub mod util;
pub mod watchdog;

pub use config::{AlertingToml, Config, ConfigError};
pub use election::{Member, Role};
pub use engine::Engine;
pub use message::NotificationMessage;
pub use notify::{Delivery, EmailMessage, HttpRequest, build as build_delivery};
pub use runtime::{AccumulatingRuntime, Notification, Runtime, Timer};
pub use secret::{Secret, SecretSource};
pub use state::{Alert, Status};
pub use summary::{DiskUsage, GpuUsage, NodeSummary};

/// The `source` of every event this crate writes.
pub const EVENT_SOURCE: &str = "labmesh-alerting";
/// The `service` of events that are about labmesh itself (election, ledger, silences).
pub const EVENT_SERVICE: &str = "labmesh";
