//! The full-stack simulation: 5–30 nodes of the shipping mesh and sync code in one process on
//! turmoil (virtual time, seeded network), each with real certificates from a mesh CA, quinn
//! on a simulated UDP socket ([`socket`]), chitchat through `mesh::Mesh`, and the sync core with
//! a real `EventStore` in a data dir of its own that survives crashes, and the alerting engine
//! fed from that store and the mesh view, paging an in-process stand-in receiver. See the "Full
//! stack" section of `docs/simulation.md`.

mod actions;
pub mod builtin;
mod checks;
pub mod clock;
pub mod config;
pub mod node;
pub mod run;
pub mod scenario_play;
pub mod socket;

pub use run::{FullScenario, FullstackConfig, Outcome, run};
pub use scenario_play::{FileOutcome, play};
