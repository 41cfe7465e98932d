//! Chaos simulation harness for labmesh.
//!
//! Runs the shipping code of the `mesh`, `sync` and `alerting` crates under virtual time: 5 to 30
//! nodes on turmoil (real QUIC on a simulated network, real certificates, chitchat as shipped)
//! and hundreds to thousands of nodes through the sans-IO cores driven by a discrete-event loop.
//! Scenarios (loss, partitions, crashes, clock skew, long offline periods) are files; invariants
//! (equal event sets and world hashes after heal, one alerter per component, no repeated
//! notification) are checked after every run, and a failing seed reproduces with one command.
//!
//! Two parts: the discrete-event loop ([`run::Sim`]), which drives the real `SyncCore`,
//! `WorldState` and alerting `Engine` of every node, and the full-stack simulation
//! ([`fullstack`]), which runs each node's QUIC transport, chitchat mesh, `EventStore`, sync
//! driver and alerting `Engine` on turmoil; see `docs/simulation.md`.

mod driver;
pub mod node;
mod notify;
pub mod plot;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sim;
pub mod sweep;
pub mod workload;

pub use report::Report;
pub use run::Sim;
pub use scenario::Scenario;

/// Runs `scenario` once with `seed`.
pub fn run_seed(scenario: &Scenario, seed: u64) -> Result<Report, String> {
    Ok(Sim::new(scenario, seed)?.run())
}

pub mod fullstack;
