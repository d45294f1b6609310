//! `ravectl up`: PostgreSQL, dedup-store and ingest on this machine.
//!
//! - `replicas`: each service's replicas and ports;
//! - `configs`: every file written before anything starts;
//! - `components`: what starts, in order, each waited for;
//! - `supervise`: child processes, restarts, the stop;
//! - `backups`: pgBackRest's archiving and scheduled backups (`--backups`);
//! - `table`: what `up` prints.

use std::net::TcpListener;
use std::path::Path;

use anyhow::{Context as _, bail};

use crate::cli::UpArgs;
use crate::postgres::LocalPostgres;
use crate::secrets;
use crate::stack::StackFile;

pub mod alerting;
mod backups;
mod components;
mod configs;
mod replicas;
pub mod rolling;
mod supervise;
mod table;

pub use alerting::{alertmanager_config, check as check_alertmanager_config};
pub use replicas::{Replica, replicas_of};

pub async fn run(args: UpArgs) -> anyhow::Result<i32> {
    // Running `up` twice is safe: the second one only says so.
    if let Some(stack) = crate::control::running(&args.state_dir) {
        println!(
            "RAVE is already running from {} (ravectl up, pid {}); see `ravectl status`, stop it with `ravectl down`",
            args.state_dir.display(),
            stack.supervisor_pid.unwrap_or_default()
        );
        return Ok(0);
    }
    crate::packages::ensure(!args.no_install)?;
    let mut rave_ports = Vec::new();
    for (service, flag) in [
        ("ingest", "--ingest-port"),
        ("dedup-store", "--store-port"),
        ("task-dispatcher", "--dispatcher-port"),
        ("agent-reporter", "--reporter-port"),
    ] {
        for replica in replicas_of(&args, service)? {
            rave_ports.push((replica.name, flag, replica.port));
        }
    }
    let mut taken: std::collections::BTreeSet<u16> = Default::default();
    for (name, flag, port) in rave_ports
        .iter()
        .map(|(n, f, p)| (n.as_str(), *f, *p))
        .chain([
            ("Pushgateway", "--pushgateway-port", args.pushgateway_port),
            ("nginx", "--nginx-port", args.nginx_port),
            (
                "nginx stub_status",
                "--nginx-status-port",
                args.nginx_status_port,
            ),
            ("PostgreSQL", "--pg-port", args.pg_port),
            (
                "Alertmanager",
                "--alertmanager-port",
                args.alertmanager_port,
            ),
            (
                "the blackbox exporter",
                "--blackbox-port",
                args.blackbox_port,
            ),
            (
                "the alert inbox",
                "--alert-inbox-port",
                args.alert_inbox_port,
            ),
            ("the trace receiver", "--otlp-port", args.otlp_port),
        ])
    {
        if !taken.insert(port) {
            bail!(
                "port {port} ({name}) is given twice; choose another with {flag} or --replica-port-step"
            );
        }
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!("port {port} ({name}) is already in use; choose another with {flag}");
        }
    }
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("ravectl has no parent directory")?
            .to_path_buf(),
    };
    for bin in crate::stack::RAVE_SERVICES {
        anyhow::ensure!(
            bin_dir.join(bin).exists(),
            "{} not found; build first: cargo build --release --workspace --bins",
            bin_dir.join(bin).display()
        );
    }

    crate::postgres::check_reachable_by_postgres(&args.state_dir)?;
    // 0711: the `postgres` user may pass through to its cluster, nobody may list.
    std::fs::create_dir_all(&args.state_dir)?;
    std::fs::set_permissions(
        &args.state_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )?;
    let state_dir = args.state_dir.canonicalize()?;
    let secrets_dir = state_dir.join("secrets");
    let config_dir = state_dir.join("config");
    let log_dir = state_dir.join("logs");
    for dir in [&secrets_dir, &config_dir, &log_dir] {
        secrets::private_dir(dir)?;
    }

    let mut created = Vec::new();
    let mut secret =
        |file: &str, label: &'static str, generate: fn() -> String| -> anyhow::Result<String> {
            let (value, new) = secrets::ensure(&secrets_dir.join(file), generate)?;
            if new {
                created.push((label, value.clone()));
            }
            Ok(value)
        };
    let db_password = secret(
        "dedup-store-db.password",
        "dedup-store database password",
        || secrets::hex_token(24),
    )?;
    secret("github.secret", "github webhook secret", || {
        secrets::hex_token(20)
    })?;
    secret(
        "gitlab-signing.secret",
        "gitlab signing token",
        rave_service::sign::new_whsec,
    )?;
    secret("gitlab-token.secret", "gitlab secret token", || {
        secrets::hex_token(20)
    })?;
    secret(
        "standard.secret",
        "standard webhooks secret",
        rave_service::sign::new_whsec,
    )?;
    let tasks_db_password = secret(
        "task-dispatcher-db.password",
        "task-dispatcher database password",
        || secrets::hex_token(24),
    )?;
    secret(
        "relay.token",
        "relay token (dedup-store to dispatcher)",
        || secrets::hex_token(24),
    )?;
    secret(
        "operator.token",
        "operator token (GET /v1/tasks, GET /v1/events)",
        || secrets::hex_token(24),
    )?;
    secret(
        "ingest.token",
        "ingest token (ingest to dedup-store)",
        || secrets::hex_token(24),
    )?;
    secret("agent-dev.token", "agent `dev` token", || {
        format!("rave_agent_{}", secrets::hex_token(24))
    })?;
    secret(
        "alertmanager.token",
        "Alertmanager's token (ingest's alertmanager source)",
        || secrets::hex_token(24),
    )?;

    // One source per HMAC preset (`ravectl send stripe`); their secrets are
    // in the secrets dir, not printed: none is needed to start.
    for provider in rave_service::sign::providers::PROVIDERS {
        secrets::ensure(&secrets_dir.join(format!("{provider}.secret")), || {
            secrets::hex_token(24)
        })?;
    }

    let postgres =
        LocalPostgres::new(&state_dir, args.pg_port)?.with_statement_stats(args.statement_stats);
    postgres.init()?;
    postgres.start()?;
    // Each replica set's pools (dedup-store 16, task-dispatcher 16 + LISTEN,
    // agent-reporter 8) plus the exporter and psql (docs/scaling.md).
    postgres.ensure_max_connections((45 * u32::from(args.replicas) + 20).max(100))?;
    let backups = match backups::prepare(&args, &state_dir, &postgres) {
        Ok(backups) => backups,
        Err(e) => {
            let _ = postgres.stop();
            return Err(e);
        }
    };
    let reports_db_password = secret(
        "agent-reporter-db.password",
        "agent-reporter database password",
        || secrets::hex_token(24),
    )?;
    let passwords = [db_password, tasks_db_password, reports_db_password];
    let result = run_services(
        &args, &postgres, &bin_dir, &state_dir, &passwords, &created, backups,
    )
    .await;
    if let Err(e) = postgres.stop() {
        eprintln!("stopping PostgreSQL failed: {e:#}");
    }
    result
}

async fn run_services(
    args: &UpArgs,
    postgres: &LocalPostgres,
    bin_dir: &Path,
    state_dir: &Path,
    passwords: &[String; 3],
    created: &[(&'static str, String)],
    backups: Option<crate::backup::PgBackRest>,
) -> anyhow::Result<i32> {
    postgres.ensure_database("rave_dedup_store", &passwords[0], "rave_events")?;
    postgres.ensure_database("rave_task_dispatcher", &passwords[1], "rave_tasks")?;
    postgres.ensure_database("rave_agent_reporter", &passwords[2], "rave_reports")?;
    let replicas = replicas::all(args)?;
    let written = configs::write(args, state_dir, &replicas)?;
    // The people receiver first: alerts can fire as soon as Prometheus runs.
    let inbox_log = state_dir.join("logs/alerts.jsonl");
    let inbox = alerting::inbox(
        std::net::TcpListener::bind(("127.0.0.1", args.alert_inbox_port))?,
        inbox_log.clone(),
    )?;
    let inbox_handle = inbox.handle();
    let _inbox = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = inbox.await {
            eprintln!("alert inbox: {e}");
        }
    }));
    // Spans from the first service on: the receiver starts before them.
    let trace_dir = state_dir.join("traces");
    let traces = crate::traces::receiver::serve(
        std::net::TcpListener::bind(("127.0.0.1", args.otlp_port))?,
        crate::traces::SpanLog::new(&trace_dir, args.trace_log_mb << 20),
        crate::traces::receiver::Limits {
            max_body_bytes: args.otlp_max_body_mb << 20,
        },
    )?;
    let traces_handle = traces.handle();
    let _traces = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = traces.await {
            eprintln!("trace receiver: {e}");
        }
    }));
    let mut services = Vec::new();
    if let Err(e) =
        components::start(args, postgres, bin_dir, state_dir, &written, &mut services).await
    {
        supervise::stop_all(&mut services).await;
        return Err(e);
    }
    let first_url = |service: &str| replicas[service][0].url();
    let store_url = first_url("dedup-store");
    let ingest_url = first_url("ingest");
    let dispatcher_url = first_url("task-dispatcher");
    let reporter_url = first_url("agent-reporter");
    let pushgateway_url = format!("http://127.0.0.1:{}", args.pushgateway_port);
    let (tls_cert, secrets_dir) = (written.tls_cert, written.secrets_dir);

    let public_host = if args.nginx_address == "0.0.0.0" {
        "127.0.0.1"
    } else {
        &args.nginx_address
    };
    let mut stack = StackFile {
        public_url: Some(format!("https://{public_host}:{}", args.nginx_port)),
        tls_cert: Some(tls_cert.clone()),
        ingest_url: ingest_url.clone(),
        store_url: store_url.clone(),
        dispatcher_url: dispatcher_url.clone(),
        reporter_url: Some(reporter_url.clone()),
        pushgateway_url: Some(pushgateway_url.clone()),
        prometheus_url: Some(format!("http://127.0.0.1:{}", args.prometheus_port)),
        alertmanager_url: Some(format!("http://127.0.0.1:{}", args.alertmanager_port)),
        alert_inbox_log: Some(inbox_log.clone()),
        otlp_endpoint: Some(otlp_endpoint(args)),
        trace_dir: Some(trace_dir.clone()),
        tempo_url: None,
        operator_api: args.operator_api,
        postgres: format!(
            "postgresql://rave_dedup_store@127.0.0.1:{}/rave_events",
            args.pg_port
        ),
        secrets_dir: secrets_dir.clone(),
        supervisor_pid: Some(std::process::id()),
        components: services
            .iter()
            .filter_map(|s| Some((s.name.clone(), (s.child.id()?, s.port))))
            .collect(),
        replicas: replicas
            .iter()
            .map(|(service, all)| (service.to_string(), all.iter().map(Replica::url).collect()))
            .collect(),
        systemd_units: Default::default(),
        secrets: Default::default(),
    };
    let _backups = match backups {
        Some(pgbackrest) => Some(AbortOnDrop(
            backups::start(pgbackrest, args, &pushgateway_url).await?,
        )),
        None => None,
    };
    stack.write(state_dir)?;
    table::print_table(&stack, state_dir, created);
    let code = supervise::until_stopped(&mut services, &mut stack, state_dir).await?;
    println!("stopping ...");
    supervise::stop_all(&mut services).await;
    // After the services: their last spans are flushed as they stop.
    traces_handle.stop(true).await;
    inbox_handle.stop(true).await;
    let _ = std::fs::remove_file(StackFile::path(state_dir));
    Ok(code)
}

/// The trace receiver's endpoint, as every service and agent is given it.
pub(crate) fn otlp_endpoint(args: &UpArgs) -> String {
    format!("http://127.0.0.1:{}/v1/traces", args.otlp_port)
}

/// Stops a background task when `up` returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
