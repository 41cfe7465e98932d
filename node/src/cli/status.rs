//! The command line of `labmesh status`. Part of the names contract of `cli/mod.rs`.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Ask the agent at this API address instead of the local one (any node answers for the
    /// whole mesh); with --score, a node's name (or an address).
    #[arg(long, value_name = "HOST:PORT")]
    pub node: Option<String>,
    /// Print JSON (one document: nodes with their summaries, unhealthy services, open
    /// incidents, recent deployments).
    #[arg(long)]
    pub json: bool,
    /// The score card (0-100) of every node with each dimension's points and why; with
    /// `--node NAME`, of that node only.
    #[arg(long, conflicts_with = "watch")]
    pub score: bool,
    /// Refresh every SECS seconds (default 2) until interrupted.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<f64>,
}
