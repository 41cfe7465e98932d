//! Events, their durable store, how every node ends with the same ones, and the world they tell.
//!
//! This crate owns the user's event contract (`seeds/event-system.md`): the [`event`] model and
//! its validation, the on-disk [`layout`], the [`store`] that writes events atomically and
//! durably, indexes them and tells one listener of each, the [`pickup`] loop that adopts files
//! other tools drop in, and the read-only [`fsck`]. On these: [`reconcile`], the sans-IO sync
//! core (eager push and negentropy set reconciliation between two peers), [`schedule`], the
//! sans-IO policy of when to reconcile with whom, [`clock`], the hybrid logical clock stamped
//! into events, and [`world`], the CRDT world state and its views. `ALGORITHM.md` beside this
//! crate explains the protocol. It sits at the bottom of its stack (`sync <- alerting`) and
//! knows nothing of the mesh or of alert rules.
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
pub mod signature;
pub mod store;
pub mod world;

pub use clock::{Clock, SystemClock};
pub use event::{Event, EventError, NewEvent, Severity};
pub use index::{IndexEntry, Order, Query};
pub use store::{EventStore, EventTrust, EventWriter, StoreConfig, StoreError, StoredEvent};
