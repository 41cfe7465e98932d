//! `labmesh run` and `labmesh runs`: the flags.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use labmesh::runs::history::RunKind;

/// What a run is, as the flag spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Build,
    Test,
    Deploy,
    Maintenance,
}

impl From<KindArg> for RunKind {
    fn from(k: KindArg) -> RunKind {
        match k {
            KindArg::Build => RunKind::Build,
            KindArg::Test => RunKind::Test,
            KindArg::Deploy => RunKind::Deploy,
            KindArg::Maintenance => RunKind::Maintenance,
        }
    }
}

#[derive(Debug, Clone, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  labmesh run --kind build --service llm-worker --backend cuda \\\n      --artifact target/release/llm-worker -- cargo build --release\n  labmesh run --kind test --service llm-worker -- cargo nextest run\n  labmesh run phase compile      # inside a wrapped script: marks the next phase\n\nThe command's output passes through unchanged; a redacted copy is kept in\n<data>/logs/runs/<run-id>.jsonl. The exit code is the command's. Events:\nbuild_started, then build_completed, build_failed or build_cancelled (test_*,\ndeployment_*, maintenance_* for the other kinds), with the run id as correlation id."
)]
pub struct RunArgs {
    #[command(subcommand)]
    pub sub: Option<RunSub>,
    /// What the command does.
    #[arg(long, value_enum, default_value = "build")]
    pub kind: KindArg,
    /// What it builds, tests or deploys (default: the git repository's folder name, else the
    /// command's name).
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// The variant (cuda, metal, cpu, ...).
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// A file the command produces: its size is recorded (binary-size trend).
    #[arg(long, value_name = "PATH")]
    pub artifact: Option<PathBuf>,
    /// The host the run is about, when not this one (a deploy to another machine).
    #[arg(long, value_name = "HOST")]
    pub target_host: Option<String>,
    /// Run `git pull --ff-only` first and record it as the `repo_sync` phase.
    #[arg(long)]
    pub git_pull: bool,
    /// The script's name in the events (default: the command's file name).
    #[arg(long, value_name = "NAME")]
    pub script: Option<String>,
    /// After the run, write this node's `homelab_*` build and test metrics to
    /// DIR/labmesh_runs.prom (atomically) for node_exporter's textfile collector.
    #[arg(long, env = "LABMESH_TEXTFILE_DIR", value_name = "DIR")]
    pub textfile_dir: Option<PathBuf>,
    /// Do not give the command a pseudo-terminal even when stdout is a terminal (by default it
    /// gets one there, so it keeps its colours and progress bars; its stdout and stderr are then
    /// one stream).
    #[arg(long)]
    pub no_pty: bool,
    /// Print the run's end event as JSON on stderr when done (stdout is the command's).
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum RunSub {
    /// Inside a wrapped command: the phase NAME begins now (the previous one ends).
    Phase {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum RunsCommand {
    /// Runs of the whole mesh, newest first.
    List(RunsListArgs),
    /// One run: its context, outcome, phases, counts and last lines.
    Show(RunsShowArgs),
    /// Success rates (7 and 30 days), duration and size trends, test pass rates, the first
    /// failing commit of each failing series, and duration regressions.
    Stats(RunsStatsArgs),
    /// A run's output as it was recorded (redacted); -f follows a run that is still going.
    Log(RunsLogArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunsLogArgs {
    /// The run id (a unique prefix is enough).
    #[arg(value_name = "ID")]
    pub id: String,
    /// Keep printing new lines until the run ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Print the log's JSON lines as stored (timestamp, stream, line; lifecycle records).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RunsFilterArgs {
    /// Only runs of this service.
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Only runs of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Only runs on this host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Only runs started at or after this time: RFC 3339, a date, or an age (7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RunsListArgs {
    #[command(flatten)]
    pub filter: RunsFilterArgs,
    /// At most this many runs.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RunsShowArgs {
    /// The run id (a unique prefix is enough).
    #[arg(value_name = "ID")]
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RunsStatsArgs {
    #[command(flatten)]
    pub filter: RunsFilterArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
