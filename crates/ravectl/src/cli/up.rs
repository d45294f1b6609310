//! `ravectl up`'s flags: what the local stack runs, on which ports, with
//! which limits.

use std::path::PathBuf;

use super::absolute_path;

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Private state directory: database cluster, secrets, configs, logs.
    #[arg(long, default_value = ".rave", value_parser = absolute_path)]
    pub state_dir: PathBuf,
    /// Where the service binaries are (default: next to ravectl itself).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 3001)]
    pub ingest_port: u16,
    #[arg(long, default_value_t = 3010)]
    pub store_port: u16,
    #[arg(long, default_value_t = 3020)]
    pub dispatcher_port: u16,
    #[arg(long, default_value_t = 3030)]
    pub reporter_port: u16,
    #[arg(long, default_value_t = 9091)]
    pub pushgateway_port: u16,
    /// nginx's HTTPS port, the stack's only public door.
    #[arg(long, default_value_t = 3002)]
    pub nginx_port: u16,
    /// Address nginx listens on: loopback by default; 0.0.0.0 to accept
    /// webhooks from other machines.
    #[arg(long, default_value = "127.0.0.1")]
    pub nginx_address: String,
    /// nginx's stub_status, on loopback, for the nginx exporter.
    #[arg(long, default_value_t = 3003)]
    pub nginx_status_port: u16,
    #[arg(long, default_value_t = 9090)]
    pub prometheus_port: u16,
    #[arg(long, default_value_t = 9100)]
    pub node_exporter_port: u16,
    #[arg(long, default_value_t = 9113)]
    pub nginx_exporter_port: u16,
    #[arg(long, default_value_t = 9187)]
    pub postgres_exporter_port: u16,
    #[arg(long, default_value_t = 9093)]
    pub alertmanager_port: u16,
    #[arg(long, default_value_t = 9115)]
    pub blackbox_port: u16,
    /// The stack's alert inbox: Alertmanager's receiver for people, which
    /// writes every notification to logs/alerts.jsonl and prints it.
    #[arg(long, default_value_t = 9097)]
    pub alert_inbox_port: u16,
    /// The stack's OTLP/HTTP trace receiver: every service and the
    /// reference agent export spans to it; it keeps them in traces/.
    #[arg(long, default_value_t = 4318)]
    pub otlp_port: u16,
    /// The span log's bound, in MiB (two files, the older dropped first).
    #[arg(long, default_value_t = 64)]
    pub trace_log_mb: u64,
    /// One OTLP export request's body, at most, in MiB (413 past it).
    #[arg(long, default_value_t = 8)]
    pub otlp_max_body_mb: usize,
    /// Also send critical and warning alerts to RAVE itself, through
    /// ingest's `alertmanager` source: they become `sre` tasks.
    #[arg(long)]
    pub alerts_as_tasks: bool,
    /// Back up PostgreSQL with pgBackRest: WAL archiving, a full backup at
    /// the first start, then one every --backup-interval-hours (once on,
    /// later starts keep archiving).
    #[arg(long)]
    pub backups: bool,
    /// The backup repository (default: the state directory's backups/;
    /// put it on another disk to survive the loss of this one).
    #[arg(long, value_parser = absolute_path)]
    pub backup_repo: Option<PathBuf>,
    #[arg(long, default_value_t = 24)]
    pub backup_interval_hours: u64,
    /// Also send every alert to this webhook (Slack-compatible relays,
    /// a pager's incoming webhook, ...).
    #[arg(long)]
    pub alert_webhook_url: Option<String>,
    /// Also mail every alert to this address, through --smtp-smarthost.
    #[arg(long, requires = "smtp_smarthost")]
    pub alert_email_to: Option<String>,
    /// SMTP server for --alert-email-to, host:port.
    #[arg(long)]
    pub smtp_smarthost: Option<String>,
    #[arg(long, default_value = "rave-alerts@localhost")]
    pub smtp_from: String,
    #[arg(long, requires = "smtp_password_file")]
    pub smtp_username: Option<String>,
    /// A file holding the SMTP password (no trailing newline).
    #[arg(long)]
    pub smtp_password_file: Option<PathBuf>,
    /// How long Alertmanager waits to group a new alert's first
    /// notification (tests shorten it).
    #[arg(long, default_value = "30s")]
    pub alert_group_wait: String,
    /// How long Alertmanager waits before notifying a group's changes
    /// (a new alert, a resolution).
    #[arg(long, default_value = "5m")]
    pub alert_group_interval: String,
    /// Scrape and rule evaluation interval of the local Prometheus.
    #[arg(long, default_value = "15s")]
    pub scrape_interval: String,
    /// Tests only: `ALERT=DURATION`, that alert's `for:` (how long its
    /// condition must hold); repeatable.
    #[arg(long, hide = true)]
    pub alert_for: Vec<String>,
    #[arg(long, default_value_t = 5433)]
    pub pg_port: u16,
    /// Do not install missing Debian packages, even as root.
    #[arg(long)]
    pub no_install: bool,
    /// nginx's flood ceiling per client address on /hooks/, requests per
    /// second (burst twice that); 0 lifts it. RAVE itself never refuses a
    /// verified delivery for its rate.
    #[arg(long, default_value_t = 2000)]
    pub hooks_rate_limit: u32,
    /// Load pg_stat_statements (with planning times) into the local
    /// PostgreSQL, so `ravectl bench` reports its time statement by
    /// statement. Off by default: it costs PostgreSQL a little CPU.
    #[arg(long)]
    pub statement_stats: bool,
    /// Requests per second per authenticated agent (burst twice that), in
    /// task-dispatcher and agent-reporter; nginx's per-address ceiling on
    /// the agents' routes is ten times it. 0 lifts both.
    #[arg(long, default_value_t = 200)]
    pub agents_rate_limit: u32,
    /// Serve the operators' API through nginx too (docs/api.md), behind
    /// the operator tokens and its own per-address limit. Off by default.
    #[arg(long)]
    pub operator_api: bool,
    /// nginx's per-address limit on the operators' API, requests per
    /// second (burst twice that); 0 lifts it.
    #[arg(long, default_value_t = 10)]
    pub operators_rate_limit: u32,
    /// Where alerts' runbook links point (docs/runbook.md, without `#`):
    /// your wiki's or repository's copy. Default: the copy `up` writes to
    /// the state directory, as a file:// URL.
    #[arg(long)]
    pub runbook_base_url: Option<String>,
    /// Replicas of each RAVE service, all over the one PostgreSQL, behind
    /// nginx (docs/scaling.md). With more than one, they are named
    /// `ingest@1`, `ingest@2`, ... in `status` and `logs`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub replicas: u16,
    /// Replica k of a service listens on its port + (k - 1) × this.
    #[arg(long, default_value_t = 100)]
    pub replica_port_step: u16,
    /// nginx's passive health check: a replica failing this many times
    /// within --upstream-fail-timeout is left out for that long.
    #[arg(long, default_value_t = 2)]
    pub upstream_max_fails: u32,
    /// nginx's `fail_timeout` for each replica, e.g. 5s.
    #[arg(long, default_value = "5s")]
    pub upstream_fail_timeout: String,
}
