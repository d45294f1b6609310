//! `ravectl up`: PostgreSQL, dedup-store and ingest on this machine.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::UpArgs;
use crate::postgres::LocalPostgres;
use crate::secrets;
use crate::stack::StackFile;

const DEDUP_TEMPLATE: &str = include_str!("../templates/dedup-store.toml");
const INGEST_TEMPLATE: &str = include_str!("../templates/ingest.toml");
const DISPATCHER_TEMPLATE: &str = include_str!("../templates/task-dispatcher.toml");
const REPORTER_TEMPLATE: &str = include_str!("../templates/agent-reporter.toml");
const NGINX_TEMPLATE: &str = include_str!("../templates/nginx.conf");
const NGINX_SITES: &str = include_str!("../templates/nginx-sites.conf");
const NGINX: &str = "/usr/sbin/nginx";
const PROMETHEUS_TEMPLATE: &str = include_str!("../templates/prometheus.yml");
const RULES: [(&str, &str); 2] = [
    (
        "rave-alerts.yml",
        include_str!("../../../prometheus/rules/rave-alerts.yml"),
    ),
    (
        "rave-recording.yml",
        include_str!("../../../prometheus/rules/rave-recording.yml"),
    ),
];
/// Debian's Pushgateway and Prometheus.
const PUSHGATEWAY: &str = "/usr/bin/prometheus-pushgateway";
const PROMETHEUS: &str = "/usr/bin/prometheus";

struct Service {
    name: String,
    /// Where it listens (0: nowhere).
    port: u16,
    child: Child,
    /// How to start it again: program, arguments, state directory.
    restart: Option<(PathBuf, Vec<std::ffi::OsString>, PathBuf)>,
}

/// Crashed RAVE services are restarted, as systemd does on a host; more than
/// this many restarts of one service within a minute stops the stack.
const RESTARTS_PER_MINUTE: usize = 5;

/// RAVE's services in start order: each one's callee before it.
const SERVICES: [&str; 4] = ["task-dispatcher", "agent-reporter", "dedup-store", "ingest"];

/// One replica of a RAVE service.
#[derive(Debug, Clone)]
pub struct Replica {
    pub service: &'static str,
    /// 1-based.
    pub index: u16,
    /// `ingest` with one replica; `ingest@1`, `ingest@2`, ... with several.
    pub name: String,
    pub port: u16,
}

impl Replica {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The port `--<service>-port` gives replica 1.
fn base_port(args: &UpArgs, service: &str) -> u16 {
    match service {
        "ingest" => args.ingest_port,
        "dedup-store" => args.store_port,
        "task-dispatcher" => args.dispatcher_port,
        _ => args.reporter_port,
    }
}

/// Every replica of `service`: replica k on its port + (k - 1) × step.
pub fn replicas_of(args: &UpArgs, service: &'static str) -> anyhow::Result<Vec<Replica>> {
    (1..=args.replicas)
        .map(|index| {
            let port = u32::from(base_port(args, service))
                + u32::from(index - 1) * u32::from(args.replica_port_step);
            let port = u16::try_from(port).map_err(|_| {
                anyhow::anyhow!(
                    "replica {index} of {service} would need port {port}; lower --replica-port-step"
                )
            })?;
            let name = if args.replicas == 1 {
                service.to_owned()
            } else {
                format!("{service}@{index}")
            };
            Ok(Replica {
                service,
                index,
                name,
                port,
            })
        })
        .collect()
}

/// `"http://127.0.0.1:p", ...` for every replica but `own`, starting after
/// it, so each replica falls back to a different one first.
fn fallbacks(all: &[Replica], own: u16) -> String {
    let n = all.len();
    (1..n)
        .map(|step| &all[(usize::from(own) - 1 + step) % n])
        .map(|r| format!("\"{}\"", r.url()))
        .collect::<Vec<_>>()
        .join(", ")
}

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
    secret("operator.token", "operator token (GET /v1/tasks)", || {
        secrets::hex_token(24)
    })?;
    secret("agent-dev.token", "agent `dev` token", || {
        format!("rave_agent_{}", secrets::hex_token(24))
    })?;

    let postgres = LocalPostgres::new(&state_dir, args.pg_port)?;
    postgres.init()?;
    postgres.start()?;
    // Each replica set's pools (dedup-store 16, task-dispatcher 16 + LISTEN,
    // agent-reporter 8) plus the exporter and psql (docs/scaling.md).
    postgres.ensure_max_connections((45 * u32::from(args.replicas) + 20).max(100))?;
    let reports_db_password = secret(
        "agent-reporter-db.password",
        "agent-reporter database password",
        || secrets::hex_token(24),
    )?;
    let passwords = [db_password, tasks_db_password, reports_db_password];
    let result = run_services(&args, &postgres, &bin_dir, &state_dir, &passwords, &created).await;
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
) -> anyhow::Result<i32> {
    postgres.ensure_database("rave_dedup_store", &passwords[0], "rave_events")?;
    postgres.ensure_database("rave_task_dispatcher", &passwords[1], "rave_tasks")?;
    postgres.ensure_database("rave_agent_reporter", &passwords[2], "rave_reports")?;
    let secrets_dir = state_dir.join("secrets");
    let config_dir = state_dir.join("config");
    std::fs::create_dir_all(state_dir.join("nginx"))?;
    let (tls_cert, tls_key) = crate::tls::ensure_certificate(&secrets_dir)?;
    let digest = |file: &str| -> anyhow::Result<String> {
        let token = std::fs::read_to_string(secrets_dir.join(file))?;
        let d = ring::digest::digest(&ring::digest::SHA256, token.trim_end().as_bytes());
        Ok(hex::encode(d.as_ref()))
    };
    let (operator_digest, relay_digest) = (digest("operator.token")?, digest("relay.token")?);
    // 0 lifts a limit: a rate no client reaches.
    let rate = |limit: u32| {
        if limit == 0 {
            "1000000".to_owned()
        } else {
            limit.to_string()
        }
    };
    let render = |template: &str| {
        template
            .replace("{{INGEST_PORT}}", &args.ingest_port.to_string())
            .replace("{{STORE_PORT}}", &args.store_port.to_string())
            .replace("{{DISPATCHER_PORT}}", &args.dispatcher_port.to_string())
            .replace("{{PUSHGATEWAY_PORT}}", &args.pushgateway_port.to_string())
            .replace("{{REPORTER_PORT}}", &args.reporter_port.to_string())
            .replace(
                "{{NGINX_LISTEN}}",
                &format!("{}:{}", args.nginx_address, args.nginx_port),
            )
            .replace("{{NGINX_STATUS_PORT}}", &args.nginx_status_port.to_string())
            .replace("{{PROMETHEUS_PORT}}", &args.prometheus_port.to_string())
            .replace(
                "{{NODE_EXPORTER_PORT}}",
                &args.node_exporter_port.to_string(),
            )
            .replace(
                "{{NGINX_EXPORTER_PORT}}",
                &args.nginx_exporter_port.to_string(),
            )
            .replace(
                "{{POSTGRES_EXPORTER_PORT}}",
                &args.postgres_exporter_port.to_string(),
            )
            .replace(
                "scrape_interval: 15s",
                &format!("scrape_interval: {}", args.scrape_interval),
            )
            .replace(
                "{{NGINX_DIR}}",
                &state_dir.join("nginx").display().to_string(),
            )
            .replace("{{HOOKS_RATE}}", &rate(args.hooks_rate_limit))
            .replace("{{AGENTS_RATE}}", &rate(args.agents_rate_limit))
            .replace("{{LOG_DIR}}", &state_dir.join("logs").display().to_string())
            .replace(
                "{{SPOOL_DIR}}",
                &state_dir.join("spool").display().to_string(),
            )
            .replace("{{TLS_CERT}}", &tls_cert.display().to_string())
            .replace("{{TLS_KEY}}", &tls_key.display().to_string())
            .replace("{{PG_PORT}}", &args.pg_port.to_string())
            .replace("{{SECRETS_DIR}}", &secrets_dir.display().to_string())
            .replace("{{CONFIG_DIR}}", &config_dir.display().to_string())
            .replace("{{OPERATOR_DIGEST}}", &operator_digest)
            .replace("{{RELAY_DIGEST}}", &relay_digest)
    };
    let agents_file = config_dir.join("agents.toml");
    if !agents_file.exists() {
        let dev_token = std::fs::read_to_string(secrets_dir.join("agent-dev.token"))?;
        let entry = crate::agents::entry("dev", dev_token.trim_end(), &["webhook".to_owned()]);
        std::fs::write(
            &agents_file,
            format!("# Agents of the local stack; `ravectl agents create` adds more.\n{entry}"),
        )?;
    }
    anyhow::ensure!(
        !secrets_dir.display().to_string().contains('\''),
        "the state directory's path must not contain a single quote"
    );
    // Every replica of every service: its own config, port and log. Replica
    // k calls replica k of its callee first, then the others.
    let mut replicas: std::collections::BTreeMap<&'static str, Vec<Replica>> = Default::default();
    for service in SERVICES {
        replicas.insert(service, replicas_of(args, service)?);
    }
    let spool_root = state_dir.join("spool");
    let quoted = |path: &Path| format!("'{}'", path.display());
    // Every ingest spool: the replicas', and any left by an earlier run with
    // more replicas. Each replica replays the others'.
    let mut spools: std::collections::BTreeSet<PathBuf> = replicas["ingest"]
        .iter()
        .map(|r| spool_root.join(&r.name))
        .collect();
    if let Ok(entries) = std::fs::read_dir(&spool_root) {
        spools.extend(
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("ingest"))
                .map(|e| e.path()),
        );
    }
    let mut configs: Vec<(Replica, PathBuf)> = Vec::new();
    for service in SERVICES {
        let template = match service {
            "ingest" => INGEST_TEMPLATE,
            "dedup-store" => DEDUP_TEMPLATE,
            "task-dispatcher" => DISPATCHER_TEMPLATE,
            _ => REPORTER_TEMPLATE,
        };
        for replica in &replicas[service] {
            let k = usize::from(replica.index) - 1;
            let own_spool = spool_root.join(&replica.name);
            let peers = spools.iter().filter(|p| **p != own_spool);
            let text = template
                .replace("{{NAME}}", &replica.name)
                .replace("{{INGEST_PORT}}", &replicas["ingest"][k].port.to_string())
                .replace(
                    "{{STORE_PORT}}",
                    &replicas["dedup-store"][k].port.to_string(),
                )
                .replace(
                    "{{DISPATCHER_PORT}}",
                    &replicas["task-dispatcher"][k].port.to_string(),
                )
                .replace(
                    "{{REPORTER_PORT}}",
                    &replicas["agent-reporter"][k].port.to_string(),
                )
                .replace(
                    "{{STORE_FALLBACKS}}",
                    &fallbacks(&replicas["dedup-store"], replica.index),
                )
                .replace(
                    "{{DISPATCHER_FALLBACKS}}",
                    &fallbacks(&replicas["task-dispatcher"], replica.index),
                )
                .replace(
                    "{{SPOOL_PEERS}}",
                    &peers.map(|p| quoted(p)).collect::<Vec<_>>().join(", "),
                );
            let path = config_dir.join(format!("{}.toml", replica.name));
            std::fs::write(&path, render(&text))?;
            configs.push((replica.clone(), path));
        }
    }
    // nginx balances over every replica; Prometheus scrapes each.
    let servers = |service: &str| -> String {
        replicas[service]
            .iter()
            .map(|r| {
                format!(
                    "    server 127.0.0.1:{} max_fails={} fail_timeout={};\n",
                    r.port, args.upstream_max_fails, args.upstream_fail_timeout
                )
            })
            .collect()
    };
    let targets = |service: &str| -> String {
        replicas[service]
            .iter()
            .map(|r| format!("\"127.0.0.1:{}\"", r.port))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let render = |template: &str| {
        render(
            &template
                .replace("{{INGEST_SERVERS}}", &servers("ingest"))
                .replace("{{DISPATCHER_SERVERS}}", &servers("task-dispatcher"))
                .replace("{{REPORTER_SERVERS}}", &servers("agent-reporter"))
                .replace("{{INGEST_TARGETS}}", &targets("ingest"))
                .replace("{{STORE_TARGETS}}", &targets("dedup-store"))
                .replace("{{DISPATCHER_TARGETS}}", &targets("task-dispatcher"))
                .replace("{{REPORTER_TARGETS}}", &targets("agent-reporter")),
        )
    };
    // The repo's alerting and recording rules, as the NixOS image loads them.
    std::fs::create_dir_all(config_dir.join("rules"))?;
    for (file, rules) in RULES {
        std::fs::write(config_dir.join("rules").join(file), rules)?;
    }
    let prometheus_config = state_dir.join("config/prometheus.yml");
    std::fs::write(&prometheus_config, render(PROMETHEUS_TEMPLATE))?;
    let nginx_config = state_dir.join("config/nginx.conf");
    std::fs::write(
        &nginx_config,
        render(
            &NGINX_TEMPLATE
                .replace("{{SITES}}", NGINX_SITES)
                .replace("{{EXTRA_LOCATIONS}}", ""),
        ),
    )?;
    let tested = std::process::Command::new(NGINX)
        .arg("-t")
        .arg("-c")
        .arg(&nginx_config)
        .arg("-e")
        .arg(state_dir.join("logs/nginx-error.log"))
        .output()
        .context("running nginx -t")?;
    anyhow::ensure!(
        tested.status.success(),
        "nginx -t refused {}: {}",
        nginx_config.display(),
        String::from_utf8_lossy(&tested.stderr)
    );

    let first_url = |service: &str| replicas[service][0].url();
    let store_url = first_url("dedup-store");
    let ingest_url = first_url("ingest");
    let dispatcher_url = first_url("task-dispatcher");
    let reporter_url = first_url("agent-reporter");
    let pushgateway_url = format!("http://127.0.0.1:{}", args.pushgateway_port);
    let pushgateway_args: Vec<std::ffi::OsString> = vec![
        format!("--web.listen-address=127.0.0.1:{}", args.pushgateway_port).into(),
        format!(
            "--persistence.file={}",
            state_dir.join("pushgateway.db").display()
        )
        .into(),
    ];
    let mut services = Vec::new();
    let outcome = async {
        services.push(spawn(
            Path::new(PUSHGATEWAY),
            "pushgateway",
            args.pushgateway_port,
            &pushgateway_args,
            state_dir,
        )?);
        wait_ready(
            "pushgateway",
            &format!("{pushgateway_url}/-/ready"),
            &mut services,
        )
        .await?;
        for (replica, config) in &configs {
            services.push(spawn_service(bin_dir, replica, config, state_dir)?);
            wait_ready(
                &replica.name,
                &format!("{}/readyz", replica.url()),
                &mut services,
            )
            .await?;
        }
        let nginx_args: Vec<std::ffi::OsString> = vec![
            "-c".into(),
            nginx_config.clone().into(),
            "-e".into(),
            state_dir.join("logs/nginx-error.log").into(),
        ];
        services.push(spawn(
            Path::new(NGINX),
            "nginx",
            args.nginx_port,
            &nginx_args,
            state_dir,
        )?);
        let status_url = format!("http://127.0.0.1:{}/stub_status", args.nginx_status_port);
        wait_ready("nginx", &status_url, &mut services).await?;
        // Observability: exporters, then Prometheus scraping everything.
        let exporters: [(&'static str, &str, Vec<std::ffi::OsString>, u16); 3] = [
            (
                "node-exporter",
                "/usr/bin/prometheus-node-exporter",
                vec![format!("--web.listen-address=127.0.0.1:{}", args.node_exporter_port).into()],
                args.node_exporter_port,
            ),
            (
                "nginx-exporter",
                "/usr/bin/prometheus-nginx-exporter",
                vec![
                    "-nginx.scrape-uri".into(),
                    status_url.clone().into(),
                    "-web.listen-address".into(),
                    format!("127.0.0.1:{}", args.nginx_exporter_port).into(),
                ],
                args.nginx_exporter_port,
            ),
            (
                "postgres-exporter",
                "/usr/bin/prometheus-postgres-exporter",
                vec![
                    format!(
                        "--web.listen-address=127.0.0.1:{}",
                        args.postgres_exporter_port
                    )
                    .into(),
                ],
                args.postgres_exporter_port,
            ),
        ];
        for (name, program, exporter_args, port) in exporters {
            let env = [("DATA_SOURCE_NAME", postgres.exporter_dsn())];
            services.push(spawn_with_env(
                Path::new(program),
                name,
                port,
                &exporter_args,
                state_dir,
                &env,
            )?);
            wait_ready(
                name,
                &format!("http://127.0.0.1:{port}/metrics"),
                &mut services,
            )
            .await?;
        }
        let prometheus_args: Vec<std::ffi::OsString> = vec![
            format!("--config.file={}", prometheus_config.display()).into(),
            format!(
                "--storage.tsdb.path={}",
                state_dir.join("prometheus").display()
            )
            .into(),
            "--storage.tsdb.retention.time=30d".into(),
            format!("--web.listen-address=127.0.0.1:{}", args.prometheus_port).into(),
            "--enable-feature=exemplar-storage".into(),
        ];
        services.push(spawn(
            Path::new(PROMETHEUS),
            "prometheus",
            args.prometheus_port,
            &prometheus_args,
            state_dir,
        )?);
        wait_ready(
            "prometheus",
            &format!("http://127.0.0.1:{}/-/ready", args.prometheus_port),
            &mut services,
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = outcome {
        stop_all(&mut services).await;
        return Err(e);
    }

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
    stack.write(state_dir)?;
    print_table(&stack, state_dir, created);

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut restarts: Vec<(String, Instant)> = Vec::new();
    let code = loop {
        let (index, status) = tokio::select! {
            _ = terminate.recv() => break 0,
            _ = interrupt.recv() => break 0,
            exited = first_exit(&mut services) => exited,
        };
        let name = services[index].name.clone();
        let log = state_dir.join("logs").join(format!("{name}.log"));
        restarts.retain(|(_, at)| at.elapsed() < Duration::from_secs(60));
        let recent = restarts.iter().filter(|(n, _)| *n == name).count();
        let port = services[index].port;
        let Some((program, args, dir)) = services[index].restart.clone() else {
            eprintln!(
                "{name} exited unexpectedly ({status}); see {}",
                log.display()
            );
            break 1;
        };
        if recent >= RESTARTS_PER_MINUTE {
            eprintln!(
                "{name} exited ({status}) {RESTARTS_PER_MINUTE} times within a minute; giving up; see {}",
                log.display()
            );
            break 1;
        }
        eprintln!(
            "{name} exited ({status}); restarting it; see {}",
            log.display()
        );
        restarts.push((name.clone(), Instant::now()));
        // A short pause, as systemd's RestartSec, so a crash loop does not spin.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut service = spawn(&program, &name, port, &args, &dir)?;
        service.restart = Some((program, args, dir));
        if let (Some(pid), Some(entry)) = (service.child.id(), stack.components.get_mut(&name)) {
            entry.0 = pid;
        }
        services[index] = service;
        stack.write(state_dir)?;
    };
    println!("stopping ...");
    stop_all(&mut services).await;
    let _ = std::fs::remove_file(StackFile::path(state_dir));
    Ok(code)
}

/// Grafana is not packaged for Debian, so the local stack does not start
/// it; say so, and where its dashboards and provisioning are.
fn grafana_note() -> String {
    let installed = [
        "/usr/sbin/grafana-server",
        "/usr/sbin/grafana",
        "/usr/share/grafana/bin/grafana",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    match installed {
        Some(path) => format!(
            "Grafana: found {path} but not started by ravectl; provision it from grafana/provisioning/ (datasource at this Prometheus, dashboards in grafana/dashboards/)"
        ),
        None => "Grafana: skipped (no Grafana server installed; it is not packaged for Debian). Dashboards: grafana/dashboards/, provisioning: grafana/provisioning/".to_owned(),
    }
}

/// Starts `program args...` with its output in `logs/<name>.log`.
fn spawn(
    program: &Path,
    name: &str,
    port: u16,
    args: &[std::ffi::OsString],
    state_dir: &Path,
) -> anyhow::Result<Service> {
    spawn_with_env(program, name, port, args, state_dir, &[])
}

/// [`spawn`] with extra environment variables.
fn spawn_with_env(
    program: &Path,
    name: &str,
    port: u16,
    args: &[std::ffi::OsString],
    state_dir: &Path,
    env: &[(&str, String)],
) -> anyhow::Result<Service> {
    let log: PathBuf = state_dir.join("logs").join(format!("{name}.log"));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name} ({})", program.display()))?;
    Ok(Service {
        name: name.to_owned(),
        port,
        child,
        restart: None,
    })
}

/// Starts a replica of one of RAVE's services with its config file.
fn spawn_service(
    bin_dir: &Path,
    replica: &Replica,
    config: &Path,
    state_dir: &Path,
) -> anyhow::Result<Service> {
    let program = bin_dir.join(replica.service);
    let args: Vec<std::ffi::OsString> = vec!["--config".into(), config.into()];
    let mut service = spawn(&program, &replica.name, replica.port, &args, state_dir)?;
    service.restart = Some((program, args, state_dir.to_path_buf()));
    Ok(service)
}

/// Polls `ready_url` until it answers 2xx.
async fn wait_ready(name: &str, ready_url: &str, services: &mut [Service]) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(ready_url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        for service in services.iter_mut() {
            if let Some(status) = service.child.try_wait()? {
                bail!(
                    "{} exited while starting ({status}); see its log in the state directory's logs/",
                    service.name
                );
            }
        }
        if Instant::now() > deadline {
            bail!("{name} did not become ready within 30 s at {ready_url}");
        }
        // Polling a process we just started; there is no event to wait for.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first component to exit: its index and status.
async fn first_exit(services: &mut [Service]) -> (usize, std::process::ExitStatus) {
    let waits = services
        .iter_mut()
        .map(|s| Box::pin(async move { s.child.wait().await }));
    let (status, index, _) = futures_util::future::select_all(waits).await;
    (index, status.unwrap_or_default())
}

/// SIGTERM in reverse start order (ingest first), so no request reaches a
/// stopped store; SIGKILL after 35 s.
async fn stop_all(services: &mut Vec<Service>) {
    while let Some(mut service) = services.pop() {
        if let Some(pid) = service.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(35), service.child.wait())
            .await
            .is_err()
        {
            let _ = service.child.kill().await;
        }
    }
}

fn print_table(stack: &StackFile, state_dir: &Path, created: &[(&'static str, String)]) {
    let rows = [
        (
            "nginx",
            stack.public_url.as_deref().unwrap_or_default(),
            "HTTPS, the only public door: /hooks/, agents' API, /v1/reports",
        ),
        (
            "ingest",
            stack.ingest_url.as_str(),
            "POST /hooks/{github,gitlab,standard}",
        ),
        (
            "dedup-store",
            stack.store_url.as_str(),
            "GET /v1/events (loopback only)",
        ),
        (
            "dispatcher",
            stack.dispatcher_url.as_str(),
            "agents: POST /v1/agents/claim; operators: GET /v1/tasks",
        ),
        (
            "reporter",
            stack.reporter_url.as_deref().unwrap_or_default(),
            "agents: POST /v1/reports",
        ),
        (
            "Pushgateway",
            stack.pushgateway_url.as_deref().unwrap_or_default(),
            "agent_jobs_total & co, one group per agent",
        ),
        (
            "Prometheus",
            stack.prometheus_url.as_deref().unwrap_or_default(),
            "scrapes everything; exemplars on",
        ),
        (
            "PostgreSQL",
            stack.postgres.as_str(),
            "passwords in secrets/*-db.password",
        ),
    ];
    println!();
    println!("{:<12} {:<56} NOTES", "COMPONENT", "URL");
    for (name, url, notes) in rows {
        println!("{name:<12} {url:<56} {notes}");
    }
    let replicas = stack.service_urls("ingest").len();
    if replicas > 1 {
        println!();
        println!(
            "{replicas} replicas of each RAVE service (the URLs above are replica 1's); nginx balances over them:"
        );
        for (service, urls) in &stack.replicas {
            println!("  {service:<16} {}", urls.join("  "));
        }
    }
    println!();
    println!("secrets (mode 0600): {}", stack.secrets_dir.display());
    if !created.is_empty() {
        println!("new development secrets, shown this once:");
        for (label, value) in created {
            println!("  {label:<40} {value}");
        }
    }
    println!("logs: {}", state_dir.join("logs").display());
    println!("{}", grafana_note());
    println!();
    let dir = state_dir.display();
    println!("try:  target/release/ravectl send github --state-dir {dir}");
    println!("      target/release/ravectl agent --state-dir {dir}");
    println!("RAVE is up; Ctrl-C stops it.");
}
