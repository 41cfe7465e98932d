//! Events, their durable store, and (as the mesh grows) how every node ends with the same ones.
//!
//! This crate owns the user's event contract (`seeds/event-system.md`): the [`event`] model and
//! its validation, the on-disk [`layout`], the [`store`] that writes events atomically and
//! durably and indexes them, the [`pickup`] loop that adopts files other tools drop in, and the
//! read-only [`fsck`]. Anti-entropy between peers and the CRDT world state build on these.
//!
//! Files are the source of truth. An event file is one line of compact JSON; the store never
//! rewrites a file, so what a script wrote is what every peer keeps, byte for byte.

pub mod archive;
pub mod clock;
pub mod durable;
pub mod event;
pub mod fsck;
pub mod index;
pub mod layout;
pub mod pickup;
pub mod reconcile;
pub mod schedule;
pub mod store;
pub mod world;

pub use clock::{Clock, SystemClock};
pub use event::{Event, EventError, NewEvent, Severity};
pub use index::{IndexEntry, Order, Query};
pub use store::{EventStore, EventWriter, StoreConfig, StoreError, StoredEvent};
