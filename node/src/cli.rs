//! The command line: every subcommand, flag and its environment variable.
//!
//! The names here are a contract (ARCHITECTURE.md section 9): scripts and tests rely on them.
//! Add, never rename.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "A peer-to-peer observability mesh for homelabs.";

const LONG_ABOUT: &str = "\
labmesh runs one peer on every host of a homelab. Peers write local events to disk, share them \
with each other, and answer for the whole mesh.

Start a peer with `labmesh agent` (zero configuration: it creates its data dir on first start). \
Scripts record what happens with `labmesh emit` or the shell and Python libraries in \
deploy/lib/; `labmesh events list` and `labmesh events tail -f` read it back.

Exit codes: 0 ok, 1 the answer is no (or the operation failed), 2 usage or input error, \
3 cannot reach the agent.";

#[derive(Debug, Parser)]
#[command(name = "labmesh", version, about = ABOUT, long_about = LONG_ABOUT, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand accepts (before or after its name).
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML). Default: /etc/labmesh/labmesh.toml as root, else
    /// ~/.config/labmesh/labmesh.toml, when it exists.
    #[arg(long, global = true, env = "LABMESH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Data dir holding events/, quarantine/ and the API token. Default: /var/lib/labmesh as
    /// root, else ~/.local/share/labmesh.
    #[arg(long, global = true, env = "LABMESH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// This node's name (a host name). Default: the machine's host name.
    #[arg(long, global = true, env = "LABMESH_NAME", value_name = "NODE")]
    pub name: Option<String>,

    /// Address of the agent's HTTP API, where the agent listens and clients find it.
    /// Default: 127.0.0.1:7371.
    #[arg(long, global = true, env = "LABMESH_API_ADDR", value_name = "IP:PORT")]
    pub api_addr: Option<SocketAddr>,

    /// Largest event file accepted, in bytes. Default: 65536.
    #[arg(
        long,
        global = true,
        env = "LABMESH_MAX_EVENT_BYTES",
        value_name = "BYTES"
    )]
    pub max_event_bytes: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the long-lived peer: store, pick-up of dropped-in files, HTTP API.
    Agent(AgentArgs),
    /// Record an event (durably, without needing the agent).
    Emit(EmitArgs),
    /// Read recorded events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Check every event file; exit 1 if any is torn, invalid or misplaced.
    Fsck(FsckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// How often to walk the store for files the file watcher missed (e.g. 30s, 5m).
    #[arg(long, env = "LABMESH_RESCAN_INTERVAL", value_name = "DURATION")]
    pub rescan_interval: Option<String>,

    /// How long a file that does not parse may still be being written before it is
    /// quarantined (e.g. 5s).
    #[arg(long, env = "LABMESH_SETTLE", value_name = "DURATION")]
    pub settle: Option<String>,

    /// Log format: auto (JSON when stdout is not a terminal), json or text.
    #[arg(long, env = "LABMESH_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter, e.g. info, debug, or sync=debug,info.
    #[arg(long, env = "LABMESH_LOG", value_name = "FILTER")]
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Examples:
  labmesh emit --type deployment_started --service mosquitto --correlation-id deploy-882 \\
      --source deploy.sh --payload '{\"version\": \"1.0\"}'
  echo '{\"error\": \"OOM\"}' | labmesh emit --type service_unhealthy --severity error \\
      --service ollama --payload-file -
  generate-events | labmesh emit --from-jsonl -      # bulk import, one JSON object per line")]
pub struct EmitArgs {
    /// Event type, snake_case (deployment_started, service_unhealthy, backup_completed, ...).
    #[arg(
        long = "type",
        value_name = "TYPE",
        required_unless_present = "from_jsonl"
    )]
    pub event_type: Option<String>,

    /// info, warning, error or critical.
    #[arg(long, default_value = "info", value_name = "SEVERITY")]
    pub severity: String,

    /// The component that emits the event (a script name, a tool).
    #[arg(long, default_value = "cli", value_name = "SOURCE")]
    pub source: String,

    /// The service the event is about, or `all`.
    #[arg(long, default_value = "all", value_name = "SERVICE")]
    pub service: String,

    /// Links related events (a deployment run, an incident).
    #[arg(long, default_value = "", value_name = "ID")]
    pub correlation_id: String,

    /// The payload as a JSON object; `-` reads it from standard input.
    #[arg(long, value_name = "JSON", conflicts_with = "payload_file")]
    pub payload: Option<String>,

    /// Read the payload from a file (`-` for standard input).
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<PathBuf>,

    /// Bulk mode: read events, one JSON object per line, from FILE (`-` for standard input).
    /// Lines with only some fields get the defaults above; complete events (with id,
    /// timestamp and node) are stored as given. Each line's path is printed once its batch is
    /// durable.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["event_type", "payload", "payload_file"])]
    pub from_jsonl: Option<PathBuf>,

    /// Events per durable batch in bulk mode.
    #[arg(long, default_value_t = 256, value_name = "N", requires = "from_jsonl")]
    pub batch_size: usize,

    /// Print the stored event as JSON instead of its path.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List events matching filters, oldest first.
    List(ListArgs),
    /// Show the last events, and with -f keep printing new ones as they arrive.
    Tail(TailArgs),
}

#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    /// Only events at or after this time: RFC 3339, a date (2026-05-12), or an age (15m, 2h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only events before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only events from this node (repeatable).
    #[arg(long, value_name = "NODE")]
    pub node: Vec<String>,
    /// Only events of this type (repeatable).
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Vec<String>,
    /// Only events of this severity (repeatable).
    #[arg(long, value_name = "SEVERITY")]
    pub severity: Vec<String>,
    /// Only events at least this severe.
    #[arg(long, value_name = "SEVERITY")]
    pub min_severity: Option<String>,
    /// Only events about this service (repeatable).
    #[arg(long, value_name = "SERVICE")]
    pub service: Vec<String>,
    /// Only events from this source (repeatable).
    #[arg(long, value_name = "SOURCE")]
    pub source: Vec<String>,
    /// Only events with this correlation id.
    #[arg(long, value_name = "ID")]
    pub correlation_id: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Args)]
pub struct OutputArgs {
    /// Print one JSON array of the stored events.
    #[arg(long, conflicts_with = "jsonl")]
    pub json: bool,
    /// Print one stored event per line (JSON lines), as in the files.
    #[arg(long)]
    pub jsonl: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// At most this many events (after ordering).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// asc: oldest first; desc: newest first.
    #[arg(long, value_enum, default_value = "asc")]
    pub order: OrderArg,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OrderArg {
    Asc,
    Desc,
}

#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// How many of the latest events to show first.
    #[arg(short = 'n', long, default_value_t = 10, value_name = "N")]
    pub lines: usize,
    /// Keep running and print new events as they are stored.
    #[arg(short = 'f', long)]
    pub follow: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Args)]
pub struct FsckArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}
