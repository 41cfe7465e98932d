//! The command line of the host commands (`labmesh probe`). Part of the names contract of
//! `cli.rs`.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Print the sample as JSON (the format of GET /v1/host).
    #[arg(long)]
    pub json: bool,
}
