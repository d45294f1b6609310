use std::path::PathBuf;

mod up;
pub use up::UpArgs;

/// `--state-dir` as an absolute path, whatever the working directory: the
/// commands hand it to programs that read a relative path differently
/// (psql takes `.rave/pg/run` for a host name).
pub(crate) fn absolute_path(arg: &str) -> Result<PathBuf, String> {
    std::path::absolute(arg).map_err(|e| format!("{arg}: {e}"))
}

#[derive(Debug, clap::Parser)]
#[command(name = "ravectl", about = "RAVE's operator CLI")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Start PostgreSQL, dedup-store and ingest locally; stop them on Ctrl-C.
    Up(Box<UpArgs>),
    /// Send a correctly signed webhook to a running local stack.
    Send(SendArgs),
    /// Run the reference agent: claim tasks, run a command per task, report.
    Agent(AgentArgs),
    /// Manage agents.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Events set aside because they could not become a task: list, retry.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Stored events: search, show and replay them; erase them for good (a
    /// leaked secret in a payload).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Routing rules: see what proposed rules would change on stored events.
    #[command(subcommand)]
    Routes(RoutesCommand),
    /// Back up the local stack's PostgreSQL now (pgBackRest; needs
    /// `ravectl up --backups`), or list its backups.
    Backup(BackupArgs),
    /// Restore the stopped local stack's PostgreSQL from its backups, to a
    /// point in time or to the end of the archived WAL.
    Restore(RestoreArgs),
    /// Push a backup job's result to the Pushgateway (what a NixOS host's
    /// pgBackRest units run after each job).
    BackupReport(BackupReportArgs),
    /// Check a running stack end to end, through nginx.
    Verify(VerifyArgs),
    /// Each component of the local stack: pid, port, health, memory.
    Status(StateArgs),
    /// Stop the local stack.
    Down(StateArgs),
    /// Restart RAVE's services one replica at a time without refusing a
    /// connection: each new process (the binary on disk now) takes over the
    /// socket and reports ready before the old one stops.
    Restart(RestartArgs),
    /// Make ingest re-read its sources and secrets, and task-dispatcher its
    /// routes, agents and tokens, without a restart (SIGHUP to each).
    Reload(StateArgs),
    /// Ask a sender (GitHub, GitLab) to redeliver what its delivery log
    /// shows RAVE has not stored. A dry run unless `--apply`.
    Reconcile(ReconcileArgs),
    /// Print a component's log (without one: list the logs).
    Logs(LogsArgs),
    /// Write or verify a release manifest: version, commit, SHA-256 of
    /// every artifact.
    ReleaseManifest(ReleaseManifestArgs),
    /// Measure a running stack against this machine's own ceilings
    /// (docs/performance.md).
    Bench(BenchArgs),
    /// Receive Alertmanager's notifications for people: print each alert
    /// and append each notification to a file (what `up` runs itself; the
    /// NixOS hosts run it as a unit).
    AlertInbox(AlertInboxArgs),
    /// Print a task's whole trace as a tree: every span from the webhook to
    /// the agent's report, with services, timings and status.
    Trace(TraceArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// The task's id (16 hex digits, as in the webhook's 202 answer).
    pub task_id: String,
    /// The stack whose spans to read (its span log, or its Tempo).
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
    /// Read the trace from this Grafana Tempo (its HTTP API) instead.
    #[arg(long)]
    pub tempo_url: Option<String>,
    /// Tempo only: search traces that started this many hours back.
    #[arg(long, default_value_t = 24)]
    pub since_hours: u64,
    /// Wait up to this long for the task's spans (services export every
    /// few seconds).
    #[arg(long, default_value_t = 0)]
    pub wait_secs: u64,
    /// Print the spans as JSON instead of a tree.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AlertInboxArgs {
    #[arg(long, default_value_t = 9097)]
    pub port: u16,
    /// Where notifications are appended, one JSON per line.
    #[arg(long)]
    pub log: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    /// Signed webhooks through nginx: saturation, then fixed rates.
    Intake,
    /// Simulated agents claiming, heartbeating and completing tasks.
    Dispatch,
    /// Agents posting job reports.
    Report,
    /// From a webhook's 2xx to its task in a waiting agent's claim.
    Latency,
    /// nginx's `return 204` and PostgreSQL's own insert rates, same concurrency.
    Ceilings,
    /// A backlog of events past their retention deleted by dedup-store
    /// while intake runs at saturation, then an operator's bulk erasure:
    /// the cost of both under load.
    Retention,
    /// Stored events searched at scale (`--search-events`, a million by
    /// default): each kind of operator query, a what-if evaluation, and
    /// what the searchable copy of bodies costs.
    Search,
    /// Every mode above, in one report.
    All,
    /// Intake at a fixed rate (`--rates`, default half of a measured
    /// saturation) with agents draining the queue, for a long time: errors
    /// and RSS growth after warm-up.
    Soak,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchScheme {
    Github,
    Standard,
    Gitlab,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    pub mode: BenchMode,
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
    /// Seconds per measured step.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Connections the load generator (and pgbench) keeps busy.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, value_enum, default_value = "github")]
    pub scheme: BenchScheme,
    #[arg(long, default_value_t = 1024)]
    pub body_bytes: usize,
    /// Share of deliveries that repeat an earlier delivery id.
    #[arg(long, default_value_t = 0.1)]
    pub duplicates: f64,
    /// Fixed rates to measure latency at, requests/s (default: 25, 50 and
    /// 75 % of the measured saturation).
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// Simulated agents.
    #[arg(long, default_value_t = 32)]
    pub agents: usize,
    /// Tasks each claim asks for.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Job reports per call in the `reports` step (`POST /v1/reports/batch`);
    /// 1 sends each alone to `POST /v1/reports`.
    #[arg(long, default_value_t = 20)]
    pub report_batch: usize,
    /// Before measuring, load this many stored events and as many finished
    /// tasks (with payloads and attempts) through PostgreSQL's own bulk
    /// path: the rates then show what a database that has grown costs.
    #[arg(long, default_value_t = 0)]
    pub prefill: u64,
    /// Events past their retention the `retention` mode loads first.
    #[arg(long, default_value_t = 200_000)]
    pub retention_backlog: u64,
    /// Events with JSON bodies the `search` mode loads and searches.
    #[arg(long, default_value_t = 1_000_000)]
    pub search_events: u64,
    /// A flame graph of the whole machine at intake saturation
    /// (`perf record -a -g`, drawn by inferno), saved beside the report.
    #[arg(long)]
    pub flamegraph: bool,
    /// Where `<date>/report.json`, `summary.md` and `plot.svg` go.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// A few seconds with small numbers: the test command's check that the
    /// bench still runs (no targets apply).
    #[arg(long)]
    pub smoke: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReleaseManifestArgs {
    /// The directory holding the release's artifacts (searched recursively).
    #[arg(long)]
    pub dir: PathBuf,
    /// The manifest file to write (or, with --verify, to check).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Check the artifacts against an existing manifest instead of writing one.
    #[arg(long)]
    pub verify: bool,
    /// The release version, e.g. the tag `v1.2.3` (required when writing).
    #[arg(long, required_unless_present = "verify")]
    pub version: Option<String>,
    /// The commit the artifacts were built from (required when writing).
    #[arg(long, required_unless_present = "verify")]
    pub commit: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct StateArgs {
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// The source, as configured in dedup-store's `reconcile.sources`.
    pub source: String,
    /// How far back: `90m`, `6h`, `2d` (GitHub keeps 3 days of deliveries).
    #[arg(long, default_value = "6h", value_parser = parse_span)]
    pub since: u64,
    /// Ask for the redeliveries, instead of listing what would be asked.
    #[arg(long)]
    pub apply: bool,
    /// Print dedup-store's report as JSON (for scripts).
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
}

/// `90s`, `30m`, `6h`, `2d` as seconds.
pub fn parse_span(arg: &str) -> Result<u64, String> {
    let split = arg.find(|c: char| !c.is_ascii_digit()).unwrap_or(arg.len());
    let (number, unit) = arg.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{arg}: expected a number and a unit, as in 6h"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" | "" => 3600,
        "d" => 86400,
        _ => return Err(format!("{arg}: the unit is s, m, h or d")),
    };
    number
        .checked_mul(unit)
        .filter(|s| *s > 0)
        .ok_or_else(|| format!("{arg}: must be more than 0"))
}

#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    /// Services (`ingest`) or replicas (`ingest@2`); `all` for every one.
    #[arg(required = true)]
    pub services: Vec<String>,
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    pub component: Option<String>,
    #[arg(long, short = 'n', default_value_t = 50)]
    pub lines: usize,
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
    /// The public URL to check (default: the local stack's nginx).
    #[arg(long)]
    pub url: Option<String>,
    /// Resident memory each RAVE service must stay under.
    #[arg(long, default_value_t = 256)]
    pub memory_limit_mb: u64,
}

#[derive(Debug, clap::Subcommand)]
pub enum QuarantineCommand {
    /// The latest quarantined events, with their reasons.
    List(StateArgs),
    /// Take a quarantined event in again with today's routing rules.
    Retry(QuarantineRetryArgs),
}

#[derive(Debug, clap::Args)]
pub struct QuarantineRetryArgs {
    /// The record's id, as `ravectl quarantine list` shows it.
    pub id: i64,
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// full, diff or incr (the first one is always full).
    #[arg(long = "type", default_value = "incr", value_parser = ["full", "diff", "incr"])]
    pub kind: String,
    /// List the backups instead of taking one.
    #[arg(long)]
    pub list: bool,
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The point in time, as PostgreSQL reads a timestamp
    /// ("2026-12-02 10:15:00+00"); without it, the end of the archived WAL.
    #[arg(long)]
    pub to: Option<String>,
    /// Replace the cluster that is there.
    #[arg(long)]
    pub yes: bool,
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct BackupReportArgs {
    #[arg(long, default_value = "/etc/pgbackrest/pgbackrest.conf")]
    pub pgbackrest_config: PathBuf,
    #[arg(long, default_value = "default")]
    pub stanza: String,
    /// The job's result: systemd's $SERVICE_RESULT ("success" or why not).
    #[arg(long)]
    pub result: String,
    #[arg(long, default_value = "http://127.0.0.1:9091")]
    pub pushgateway: String,
    /// The `instance` label (the host's name).
    #[arg(long, default_value = "local")]
    pub instance: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// Erase events and their tasks' copies, with an audit record. Lists
    /// what it would erase unless `--yes`.
    Erase(EraseArgs),
    /// Stored events matching a filter, a page at a time.
    List(crate::event_tools::ListArgs),
    /// One stored event: its record, headers and body.
    Show(crate::event_tools::ShowArgs),
    /// Turn stored events into tasks again under the live rules. Lists what
    /// would be created unless `--apply`.
    Replay(crate::event_tools::ReplayArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum RoutesCommand {
    /// Compare proposed rules (a task-dispatcher settings file) with the
    /// live ones over stored events; writes nothing.
    Diff(crate::event_tools::DiffArgs),
}

#[derive(Debug, clap::Args)]
pub struct EraseArgs {
    /// The events' source.
    #[arg(long)]
    pub source: String,
    /// One delivery (its id, as the sender sent it).
    #[arg(long)]
    pub delivery: Option<String>,
    /// Only events of this type.
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only events stored at or after this instant (RFC 3339).
    #[arg(long)]
    pub stored_after: Option<String>,
    /// Only events stored before this instant (RFC 3339).
    #[arg(long)]
    pub stored_before: Option<String>,
    /// Why, for the audit record.
    #[arg(long)]
    pub reason: String,
    /// Who asks, for the audit record (default: $USER).
    #[arg(long)]
    pub requested_by: Option<String>,
    /// Names the request, so a repeat answers with what it erased.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Events per round at most (default: dedup-store's limit).
    #[arg(long)]
    pub limit: Option<i64>,
    /// Erase, instead of listing what would be erased.
    #[arg(long)]
    pub yes: bool,
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum AgentsCommand {
    /// Create an agent and print its token once.
    Create(AgentsCreateArgs),
}

#[derive(Debug, clap::Args)]
pub struct AgentsCreateArgs {
    pub name: String,
    /// Task kinds the agent handles, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub kinds: Vec<String>,
    /// With a local stack here, the agent is added to its config.
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// task-dispatcher's URL (default: the local stack's).
    #[arg(long)]
    pub url: Option<String>,
    /// File holding the agent's bearer token (default: the local stack's dev agent).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// agent-reporter's URL for job reports (default: the local stack's, if any).
    #[arg(long)]
    pub reporter_url: Option<String>,
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
    /// Only these kinds (default: all the agent handles).
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Shell command run per task, the task JSON on stdin. Exit 0 completes
    /// the task (stdout is its result), 65 fails it for good, anything else
    /// fails it for a retry. Without a command the job is simulated.
    #[arg(long)]
    pub command: Option<String>,
    /// How long a simulated job takes.
    #[arg(long, default_value_t = 100)]
    pub simulate_ms: u64,
    /// Long-poll wait per claim.
    #[arg(long, default_value_t = 25)]
    pub wait_secs: u64,
    /// Tasks claimed at once and worked on side by side; their results go
    /// back in one call (`/v1/agents/results`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub parallel: u64,
    /// Stop after this many tasks.
    #[arg(long)]
    pub max_tasks: Option<u64>,
    /// Stop as soon as a claim finds no work.
    #[arg(long)]
    pub exit_when_idle: bool,
    /// Export the jobs' spans over OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Where job reports wait while agent-reporter cannot take them
    /// (default: STATE_DIR/agent-reports); they are sent, oldest first,
    /// once it can.
    #[arg(long)]
    pub report_buffer_dir: Option<PathBuf>,
    /// Bytes of waiting reports kept at most; past it the oldest go.
    #[arg(long, default_value_t = 16 << 20)]
    pub report_buffer_bytes: u64,
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The source to send to: github, gitlab, gitlab-token, standard, or an
    /// HMAC preset (gitea, forgejo, bitbucket, stripe, slack, shopify,
    /// linear, sentry, pagerduty, jira), signed as that provider signs.
    pub source: String,
    /// The delivery id (default: a random one). Reuse it to see deduplication.
    #[arg(long)]
    pub delivery: Option<String>,
    /// The JSON body (default: a small example for the source).
    #[arg(long)]
    pub body: Option<String>,
    /// The event type: github's (default push), gitlab's (default Push
    /// Hook) or the preset provider's (default: a typical one). A given
    /// --body is sent as is: for stripe, slack and pagerduty it must hold
    /// the event id (--delivery) where the provider puts it.
    #[arg(long)]
    pub event: Option<String>,
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
}
