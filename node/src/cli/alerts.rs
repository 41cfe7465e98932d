//! The command line of the alerting commands: `labmesh alerts`, `expect`, `silence` and
//! `digest`. Part of the names contract of `cli/mod.rs`.

use clap::{Args, Subcommand};

#[derive(Debug, Clone, Args)]
pub struct AlertsArgs {
    /// Print JSON (the format of GET /v1/alerts).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ExpectArgs {
    /// The job: events with this source must appear in every window. Without it: list the
    /// declared expectations.
    #[arg(value_name = "NAME")]
    pub job: Option<String>,
    /// The window: 24h, 1d, 30m.
    #[arg(long, value_name = "DURATION", requires = "job")]
    pub every: Option<String>,
    /// Remove the expectation NAME (stored as an `expectation_cleared` event, so every node
    /// drops it and a restart does not bring it back); its open missed-job alert resolves.
    #[arg(long, requires = "job", conflicts_with_all = ["every", "grace"])]
    pub remove: bool,
    /// Extra time before the alert (default: a tenth of --every).
    #[arg(long, value_name = "DURATION", requires = "every")]
    pub grace: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SilenceCommand {
    /// Mute alerts whose labels match every --match for a while.
    Add {
        /// A label matcher `key=value` (the value may use `*`); repeat for more.
        #[arg(long = "match", value_name = "KEY=VALUE", required = true)]
        matchers: Vec<String>,
        /// How long: 30m, 2h, 1d.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why (shown in `labmesh silence list`).
        #[arg(long, default_value = "", value_name = "TEXT")]
        comment: String,
        #[arg(long)]
        json: bool,
    },
    /// Silences in force or scheduled.
    List {
        #[arg(long)]
        json: bool,
    },
    /// End a silence now.
    Clear {
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DigestArgs {
    /// Build the digest now (otherwise the agent sends it on `[alerting] digest`'s schedule).
    #[arg(long)]
    pub now: bool,
    /// Send it through this receiver (`[[receiver]]` name) instead of printing it.
    #[arg(long, value_name = "NAME")]
    pub receiver: Option<String>,
    /// Print JSON: `{"text", "top_action", "cards"}`.
    #[arg(long)]
    pub json: bool,
}
