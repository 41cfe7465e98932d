//! The command line: every subcommand, flag and its environment variable.
//!
//! The names here are a contract (ARCHITECTURE.md section 9): scripts and tests rely on them.
//! Add, never rename.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use labmesh::config::{AgentOverrides, Overrides};

pub mod alerts;
pub mod exit;
pub mod host;
pub mod run;
pub mod status;

pub use alerts::{AlertsArgs, DigestArgs, ExpectArgs, SilenceCommand};
pub use host::{AdmitArgs, FloorArgs, ProbeArgs};
pub use status::StatusArgs;

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

impl Cli {
    /// What the command line says, for [`labmesh::config::Settings::resolve`]; `agent` for
    /// the agent's own flags.
    pub fn overrides(&self, agent: Option<&AgentArgs>) -> Overrides {
        let g = &self.global;
        Overrides {
            config: g.config.clone(),
            data_dir: g.data_dir.clone(),
            name: g.name.clone(),
            api_addr: g.api_addr,
            max_event_bytes: g.max_event_bytes,
            agent: agent.map(AgentArgs::overrides),
        }
    }
}

impl AgentArgs {
    fn overrides(&self) -> AgentOverrides {
        AgentOverrides {
            gossip_addr: self.gossip_addr,
            advertise_addr: self.advertise_addr,
            seeds: self.seeds.clone(),
            join: self.join.clone(),
            transient: self.transient,
            role: self.role.clone(),
            alerter_priority: self.alerter_priority,
            mesh: self.mesh.clone(),
            gossip_interval: self.gossip_interval.clone(),
            offline_after: self.offline_after.clone(),
            rescan_interval: self.rescan_interval.clone(),
            settle: self.settle.clone(),
            max_clock_ahead: self.max_clock_ahead.clone(),
            retention_days: self.retention_days,
            archive_pruned: self.archive_pruned,
            api_allowed_hosts: self.api_allowed_hosts.clone(),
            api_read_token: self.api_read_token,
            log_format: self.log_format,
            log_level: self.log_level.clone(),
            probe_interval: self.probe_interval.clone(),
            history_interval: self.history_interval.clone(),
            floors: self.floors.overrides(),
            worker_interval: self.worker_interval.clone(),
            worker_missed_intervals: self.worker_missed_intervals,
            remediation: labmesh::config::RemediationOverrides {
                off: self.no_remediation,
                containers: self.restart_unhealthy.clone(),
                unhealthy_streak: self.remediation_streak,
                cooldown: self.remediation_cooldown.clone(),
                max_per_hour: self.remediation_max_per_hour,
            },
        }
    }
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
    /// Check every event file; exit 1 if any is torn, invalid or misplaced (--verify: or
    /// not signed by the node it names).
    Fsck(FsckArgs),
    /// Show every node of the mesh: liveness, heartbeat age, role, version, addresses.
    Status(StatusArgs),
    /// Manage the mesh CA and node certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Install a join bundle and run the agent as the node it names (= agent --join FILE).
    Join(JoinArgs),
    /// Event sync between peers: status, or reconcile now.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// The world as the events tell it: nodes, services, incidents, deployments.
    World(WorldArgs),
    /// Measure this host now: CPU and steal, load, memory and swap, disks, network, NVIDIA GPUs,
    /// Docker containers, and the health score.
    Probe(ProbeArgs),
    /// Can this host take a job needing this much memory, VRAM and disk, and keep its floors
    /// free? With --anywhere: which node of the mesh can, best first. Exit 0 yes, 1 no.
    Admit(AdmitArgs),
    /// Health checks of the local agent: list them, or report to a ttl check.
    #[command(subcommand)]
    Check(CheckCommand),
    /// Open alerts as the local agent sees them, and the alerter; exit 1 if any is firing.
    Alerts(AlertsArgs),
    /// Declare that a job (events with source NAME) must report every window, remove such a
    /// declaration (--remove), or list them (no NAME).
    Expect(ExpectArgs),
    /// The weekly mesh digest (scores, builds, tests, incidents, top action), now.
    Digest(DigestArgs),
    /// Mute alerts for a while: add, list, clear.
    #[command(subcommand)]
    Silence(SilenceCommand),
    /// Wrap a build, test, deploy or maintenance command: its output passes through, and the
    /// run is recorded as events (works without the agent).
    Run(run::RunArgs),
    /// The history of wrapped runs across the mesh: list, show, stats.
    #[command(subcommand)]
    Runs(run::RunsCommand),
    /// Prometheus file_sd targets from the live membership: every up node's metrics address
    /// with labels node, role and backend (for `file_sd_configs`; see deploy/prometheus/).
    PrometheusSd(PrometheusSdArgs),
    /// This node's Docker containers: health, failing streak, restarts, whether the watchdog
    /// restarts them when unhealthy, last remediation. Exit 1 if any is unhealthy.
    Containers(ContainersArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ContainersArgs {
    /// Only the unhealthy ones.
    #[arg(long)]
    pub unhealthy: bool,
    /// Ask this agent (HOST:PORT of its API) instead of the local one.
    #[arg(long, value_name = "HOST:PORT")]
    pub node: Option<String>,
    /// Print JSON (the agent's GET /v1/containers).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PrometheusSdArgs {
    /// Write the targets to this file (atomically, 0644) instead of stdout: safe to point
    /// Prometheus' file_sd at while a timer refreshes it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also list nodes that are dead or offline (label `liveness`), so that Prometheus' own
    /// `up == 0` alerts on them; nodes that left on purpose are never listed.
    #[arg(long)]
    pub all: bool,
    /// Ask this agent (HOST:PORT of its API) instead of the local one.
    #[arg(long, value_name = "HOST:PORT")]
    pub node: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CheckCommand {
    /// Every check of the local agent with its state; exit 1 if any is unhealthy.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Report a ttl check as passing.
    Pass(CheckReportArgs),
    /// Report a ttl check as warning (counts as a failure, severity warning).
    Warn(CheckReportArgs),
    /// Report a ttl check as failing.
    Fail(CheckReportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CheckReportArgs {
    /// The check's name (a `[[check]]` with kind = "ttl").
    #[arg(value_name = "NAME")]
    pub name: String,
    /// A note kept as the check's output (and in its events).
    #[arg(long, default_value = "", value_name = "TEXT")]
    pub note: String,
    /// Print the check's state after the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct WorldArgs {
    /// Which view (default: the runtime summary).
    #[arg(value_enum)]
    pub view: Option<WorldView>,
    /// Print the view's JSON as stored in <data>/world/.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WorldView {
    Nodes,
    Services,
    Incidents,
    Deployments,
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Per peer: fingerprint equal?, last reconciliation, events and bytes sent and received.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reconcile now with one peer, or with every live peer.
    Now {
        /// The peer's node name (default: every live peer).
        peer: Option<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct JoinArgs {
    /// The join bundle written by `labmesh certs issue` on the node holding the mesh CA.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    #[command(flatten)]
    pub agent: AgentArgs,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the mesh CA in the data dir (the agent does this by itself on a first start).
    Init(CertsInitArgs),
    /// Issue a node certificate and write a join bundle for it (needs the CA key).
    Issue(CertsIssueArgs),
    /// List the certificates this CA issued, with expiry and revocation.
    List(CertsListArgs),
    /// Issue a fresh certificate for a node (a new bundle, or this node's own files).
    Renew(CertsIssueArgs),
    /// Revoke every certificate of a node; the record spreads to every peer.
    Revoke(CertsRevokeArgs),
    /// Install a join bundle into the data dir without starting the agent (what `install.sh
    /// --join` does): the next `labmesh agent` runs as the node the bundle names.
    Import(CertsImportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CertsImportArgs {
    /// The join bundle written by `labmesh certs issue` on the node holding the mesh CA.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CertsInitArgs {
    /// The mesh's name (shown in status; part of the mesh id).
    #[arg(long, default_value = "labmesh", value_name = "NAME")]
    pub mesh: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CertsIssueArgs {
    /// The node's name (its host name).
    #[arg(value_name = "NODE")]
    pub node: String,
    /// An IP address to put in the certificate too (repeatable).
    #[arg(long = "ip", value_name = "IP")]
    pub ips: Vec<std::net::IpAddr>,
    /// Validity in days.
    #[arg(long, default_value_t = 365, value_name = "N")]
    pub days: u32,
    /// The highest alerter priority the node may claim (its `[mesh] alerter_priority`). Peers
    /// hold every node to what its certificate grants, so a member cannot make itself the
    /// alerter by claiming more. Default 0: the node may be alerter only by name order among
    /// equals. The CA node's own certificates grant it any priority.
    #[arg(
        long,
        default_value_t = 0,
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub alerter_priority: i64,
    /// Where to write the join bundle (0600). For `renew` of this node itself, omit it to
    /// replace this node's own certificate.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace an existing file at --out.
    #[arg(long)]
    pub force: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CertsListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CertsRevokeArgs {
    /// The node whose certificates to revoke.
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Why (kept in the record).
    #[arg(long, default_value = "revoked by operator", value_name = "TEXT")]
    pub reason: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// UDP address of the QUIC endpoint (gossip and everything between peers).
    /// Default: 0.0.0.0:7370.
    #[arg(long, env = "LABMESH_GOSSIP_ADDR", value_name = "IP:PORT")]
    pub gossip_addr: Option<std::net::SocketAddr>,

    /// The address peers should dial, when it differs from --gossip-addr (e.g. bound to
    /// 0.0.0.0). Default: the gossip address, or this host's address when bound to 0.0.0.0.
    #[arg(long, env = "LABMESH_ADVERTISE_ADDR", value_name = "IP:PORT")]
    pub advertise_addr: Option<std::net::SocketAddr>,

    /// A peer to contact first (repeatable; any one live peer is enough).
    #[arg(
        long = "seed",
        env = "LABMESH_SEEDS",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub seeds: Vec<String>,

    /// Install this join bundle (from `labmesh certs issue`) and start as the node it names.
    #[arg(long, env = "LABMESH_JOIN", value_name = "BUNDLE")]
    pub join: Option<PathBuf>,

    /// This node is often away (a laptop): its absence is normal, and it never pages about the
    /// others when it sees no one.
    #[arg(long, env = "LABMESH_TRANSIENT")]
    pub transient: bool,

    /// Free-form role shown in status (workstation, vm, nas, ...).
    #[arg(long, env = "LABMESH_ROLE", value_name = "ROLE")]
    pub role: Option<String>,

    /// Alerter election priority (highest wins among live non-transient nodes).
    #[arg(
        long,
        env = "LABMESH_ALERTER_PRIORITY",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub alerter_priority: Option<i64>,

    /// Mesh name used when this agent creates a new mesh CA on first start.
    #[arg(long, env = "LABMESH_MESH", value_name = "NAME")]
    pub mesh: Option<String>,

    /// Gossip interval (e.g. 300ms).
    #[arg(long, env = "LABMESH_GOSSIP_INTERVAL", value_name = "DURATION")]
    pub gossip_interval: Option<String>,

    /// How long a dead peer stays `dead` before it is `offline` (e.g. 30s).
    #[arg(long, env = "LABMESH_OFFLINE_AFTER", value_name = "DURATION")]
    pub offline_after: Option<String>,

    /// How often to walk the store for files the file watcher missed (e.g. 30s, 5m).
    #[arg(long, env = "LABMESH_RESCAN_INTERVAL", value_name = "DURATION")]
    pub rescan_interval: Option<String>,

    /// How long a file that does not parse may still be being written before it is
    /// quarantined (e.g. 5s).
    #[arg(long, env = "LABMESH_SETTLE", value_name = "DURATION")]
    pub settle: Option<String>,

    /// Refuse events from peers dated more than this ahead of this node's clock (timestamp or
    /// hlc): a clock in 2099 would win every last-writer-wins register (e.g. 2h).
    #[arg(long, env = "LABMESH_MAX_CLOCK_AHEAD", value_name = "DURATION")]
    pub max_clock_ahead: Option<String>,

    /// Keep events this many days; older ones are pruned after being folded into the world
    /// state (which keeps their history).
    #[arg(long, env = "LABMESH_RETENTION_DAYS", value_name = "DAYS")]
    pub retention_days: Option<u32>,

    /// Before pruning a day, keep it as events-archive/YYYY-MM-DD.tar.zst (true/false).
    #[arg(long, env = "LABMESH_ARCHIVE_PRUNED", value_name = "BOOL")]
    pub archive_pruned: Option<bool>,

    /// A host name the HTTP API answers to, besides IP addresses, localhost and this node's
    /// name (requests naming any other host are refused: DNS rebinding). Repeatable.
    #[arg(
        long = "api-allowed-host",
        env = "LABMESH_API_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    pub api_allowed_hosts: Vec<String>,

    /// Reads from the HTTP API need the token too (true/false; for an API on a LAN address).
    #[arg(long, env = "LABMESH_API_READ_TOKEN", value_name = "BOOL")]
    pub api_read_token: Option<bool>,

    /// Log format: auto (JSON when stdout is not a terminal), json or text.
    #[arg(long, env = "LABMESH_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<labmesh::config::LogFormat>,

    /// Log filter, e.g. info, debug, or sync=debug,info.
    #[arg(long, env = "LABMESH_LOG", value_name = "FILTER")]
    pub log_level: Option<String>,

    /// How often the host probes run (CPU, memory, disks, GPUs, Docker), e.g. 10s.
    #[arg(long, env = "LABMESH_PROBE_INTERVAL", value_name = "DURATION")]
    pub probe_interval: Option<String>,

    /// How often this host's figures (CPU steal, memory, swap, disks) are recorded as a
    /// `host_sample` event for the weekly digest, e.g. 1h.
    #[arg(long, env = "LABMESH_HISTORY_INTERVAL", value_name = "DURATION")]
    pub history_interval: Option<String>,

    #[command(flatten)]
    pub floors: FloorArgs,

    /// Heartbeat interval assumed for a worker whose heartbeat does not give `interval_s`
    /// (e.g. 30s).
    #[arg(long, env = "LABMESH_WORKER_INTERVAL", value_name = "DURATION")]
    pub worker_interval: Option<String>,

    /// A worker is stale after this many intervals without a heartbeat (default 2).
    #[arg(long, env = "LABMESH_WORKER_MISSED_INTERVALS", value_name = "N")]
    pub worker_missed_intervals: Option<u32>,

    /// Restart this container when its Docker health check keeps failing (repeatable; as the
    /// label `labmesh.restart=on-unhealthy` does).
    #[arg(
        long,
        env = "LABMESH_RESTART_UNHEALTHY",
        value_delimiter = ',',
        value_name = "CONTAINER"
    )]
    pub restart_unhealthy: Vec<String>,

    /// Consecutive failed health checks before an opted-in container is restarted (default 3).
    #[arg(long, env = "LABMESH_REMEDIATION_STREAK", value_name = "N")]
    pub remediation_streak: Option<i64>,

    /// Least time between two restarts of one container (default 10m).
    #[arg(long, env = "LABMESH_REMEDIATION_COOLDOWN", value_name = "DURATION")]
    pub remediation_cooldown: Option<String>,

    /// Most restarts of one container in any hour (default 3).
    #[arg(long, env = "LABMESH_REMEDIATION_MAX_PER_HOUR", value_name = "N")]
    pub remediation_max_per_hour: Option<u32>,

    /// Never restart containers, whatever their labels say.
    #[arg(long, env = "LABMESH_NO_REMEDIATION")]
    pub no_remediation: bool,
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
    /// Also check every file's origin signature against the certificates of the mesh CA this
    /// node knows (slower: one signature check per batch the origin wrote).
    #[arg(long)]
    pub verify: bool,
}
