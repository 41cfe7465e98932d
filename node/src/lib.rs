//! The labmesh agent as a library: everything a peer is, with no command line in it.
//!
//! The `labmesh` binary (`src/main.rs`, `src/cli/`, `src/commands/`) parses flags into
//! [`config::Overrides`] and calls in here; the full-stack simulation (`simulations/`) drives
//! the same [`drivers`] on a simulated network, so the simulation proves the code that ships.
//!
//! - [`config`]: defaults, the TOML file and overrides, resolved into [`config::Settings`];
//! - [`agent`]: the running peer wired from the parts below (`node/ALGORITHM.md`);
//! - [`drivers`]: mesh, sync, world, alerting and notifications, probes, history, workers;
//! - [`api`]: the HTTP API, `/metrics`, the digest and the web page;
//! - [`status`]: the one status model that `labmesh status` and the web page render;
//! - [`probes`], [`checks`], [`admit`], [`score`]: host figures, health checks, resource
//!   admission, and the one node score;
//! - [`client`], [`output`], [`timespec`], [`error`], [`util`]: what commands and the API share.
//!
//! Below it sit the two stacks of the workspace: `certs ← mesh` (who is alive, over what) and
//! `sync ← alerting` (what happened, what to do about it); this crate and `simulations` are
//! where they meet.

pub mod admit;
pub mod agent;
pub mod api;
pub mod checks;
pub mod client;
pub mod config;
pub mod drivers;
pub mod error;
pub mod output;
pub mod probes;
pub mod remediation;
pub mod runs;
pub mod score;
pub mod status;
pub mod timespec;
pub mod trust;
pub mod util;
