//! WorldState: the events folded into a CRDT, and the observer's world files derived from it.
//!
//! - [`order`]: the one order of events every node agrees on ([`OrderKey`]: hybrid logical
//!   clock if the event carries one, else its timestamp; then its id).
//! - [`lww_map`]: a serde-friendly map of last-writer-wins registers and a max register.
//! - [`state`]: [`WorldState`], a product of join-semilattices (`crdts::GSet`s of compact
//!   records, [`LwwMap`]s, a [`MaxReg`]), implementing `crdts::CvRDT`. `apply(event)` equals
//!   merging the world of that one event, so it is idempotent and order-independent, and
//!   `world(A) ⊔ world(B) == world(A ∪ B)`.
//! - [`views`]: `nodes.json`, `services.json`, `deployments.json`, `incidents.json` and
//!   `runtime-summary.json` (formats of `seeds/observer-runtime.md`) as pure functions of the
//!   state, written atomically and only when their bytes change.
//!
//! Sans-IO: applying, merging and computing views never read a clock or a file; only
//! [`WorldState::save`], [`WorldState::load`] and [`Views::write`] touch the disk, when the
//! driver asks.

pub mod lww_map;
pub mod order;
pub mod state;
pub mod views;

use std::path::PathBuf;

/// The merge trait, re-exported so callers need not depend on `crdts` themselves.
pub use crdts::CvRDT;
pub use lww_map::{LwwMap, MaxReg};
pub use order::{OrderKey, datetime_from_ntp64, ntp64_from_datetime, order_key, parse_hlc};
pub use state::{Availability, Health, Kind, Presence, Record, Seen, ServiceStatus, WorldState};
pub use views::{Views, format_view_time};

use crate::durable::IoError;

/// Why the world could not be saved, loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(
        "checkpoint {path} cannot be read ({problem}); delete it and the world is rebuilt from the events"
    )]
    Checkpoint { path: PathBuf, problem: String },
}
