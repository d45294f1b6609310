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
    name: &'static str,
    child: Child,
    /// How to start it again: program, arguments, state directory.
    restart: Option<(PathBuf, Vec<std::ffi::OsString>, PathBuf)>,
}

/// Crashed RAVE services are restarted, as systemd does on a host; more than
/// this many restarts of one service within a minute stops the stack.
const RESTARTS_PER_MINUTE: usize = 5;

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
    for (name, flag, port) in [
        ("ingest", "--ingest-port", args.ingest_port),
        ("dedup-store", "--store-port", args.store_port),
        ("task-dispatcher", "--dispatcher-port", args.dispatcher_port),
        ("agent-reporter", "--reporter-port", args.reporter_port),
        ("Pushgateway", "--pushgateway-port", args.pushgateway_port),
        ("nginx", "--nginx-port", args.nginx_port),
        (
            "nginx stub_status",
            "--nginx-status-port",
            args.nginx_status_port,
        ),
        ("PostgreSQL", "--pg-port", args.pg_port),
    ] {
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
    for bin in ["ingest", "dedup-store", "task-dispatcher", "agent-reporter"] {
        anyhow::ensure!(
            bin_dir.join(bin).exists(),
            "{} not found; build first: cargo build --release --workspace --bins",
            bin_dir.join(bin).display()
        );
    }

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
    let dedup_config = state_dir.join("config/dedup-store.toml");
    let ingest_config = state_dir.join("config/ingest.toml");
    let dispatcher_config = state_dir.join("config/task-dispatcher.toml");
    std::fs::write(&dedup_config, render(DEDUP_TEMPLATE))?;
    std::fs::write(&ingest_config, render(INGEST_TEMPLATE))?;
    std::fs::write(&dispatcher_config, render(DISPATCHER_TEMPLATE))?;
    let reporter_config = state_dir.join("config/agent-reporter.toml");
    std::fs::write(&reporter_config, render(REPORTER_TEMPLATE))?;
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

    let store_url = format!("http://127.0.0.1:{}", args.store_port);
    let ingest_url = format!("http://127.0.0.1:{}", args.ingest_port);
    let dispatcher_url = format!("http://127.0.0.1:{}", args.dispatcher_port);
    let reporter_url = format!("http://127.0.0.1:{}", args.reporter_port);
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
            &pushgateway_args,
            state_dir,
        )?);
        wait_ready(
            "pushgateway",
            &format!("{pushgateway_url}/-/ready"),
            &mut services,
        )
        .await?;
        for (name, config, url) in [
            ("task-dispatcher", &dispatcher_config, &dispatcher_url),
            ("agent-reporter", &reporter_config, &reporter_url),
            ("dedup-store", &dedup_config, &store_url),
            ("ingest", &ingest_config, &ingest_url),
        ] {
            services.push(spawn_service(bin_dir, name, config, state_dir)?);
            wait_ready(name, &format!("{url}/readyz"), &mut services).await?;
        }
        let nginx_args: Vec<std::ffi::OsString> = vec![
            "-c".into(),
            nginx_config.clone().into(),
            "-e".into(),
            state_dir.join("logs/nginx-error.log").into(),
        ];
        services.push(spawn(Path::new(NGINX), "nginx", &nginx_args, state_dir)?);
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
            .filter_map(|s| Some((s.name.to_owned(), (s.child.id()?, port_of(args, s.name)))))
            .collect(),
        systemd_units: Default::default(),
        secrets: Default::default(),
    };
    stack.write(state_dir)?;
    print_table(&stack, state_dir, created);

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut restarts: Vec<(&'static str, Instant)> = Vec::new();
    let code = loop {
        let (index, status) = tokio::select! {
            _ = terminate.recv() => break 0,
            _ = interrupt.recv() => break 0,
            exited = first_exit(&mut services) => exited,
        };
        let name = services[index].name;
        let log = state_dir.join("logs").join(format!("{name}.log"));
        restarts.retain(|(_, at)| at.elapsed() < Duration::from_secs(60));
        let recent = restarts.iter().filter(|(n, _)| *n == name).count();
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
        restarts.push((name, Instant::now()));
        // A short pause, as systemd's RestartSec, so a crash loop does not spin.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut service = spawn(&program, name, &args, &dir)?;
        service.restart = Some((program, args, dir));
        if let (Some(pid), Some(entry)) = (service.child.id(), stack.components.get_mut(name)) {
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

/// The port a component listens on.
fn port_of(args: &UpArgs, name: &str) -> u16 {
    match name {
        "ingest" => args.ingest_port,
        "dedup-store" => args.store_port,
        "task-dispatcher" => args.dispatcher_port,
        "agent-reporter" => args.reporter_port,
        "pushgateway" => args.pushgateway_port,
        "nginx" => args.nginx_port,
        "node-exporter" => args.node_exporter_port,
        "nginx-exporter" => args.nginx_exporter_port,
        "postgres-exporter" => args.postgres_exporter_port,
        "prometheus" => args.prometheus_port,
        _ => 0,
    }
}

/// Starts `program args...` with its output in `logs/<name>.log`.
fn spawn(
    program: &Path,
    name: &'static str,
    args: &[std::ffi::OsString],
    state_dir: &Path,
) -> anyhow::Result<Service> {
    spawn_with_env(program, name, args, state_dir, &[])
}

/// [`spawn`] with extra environment variables.
fn spawn_with_env(
    program: &Path,
    name: &'static str,
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
        name,
        child,
        restart: None,
    })
}

/// Starts one of RAVE's services with its config file.
fn spawn_service(
    bin_dir: &Path,
    name: &'static str,
    config: &Path,
    state_dir: &Path,
) -> anyhow::Result<Service> {
    let args: Vec<std::ffi::OsString> = vec!["--config".into(), config.into()];
    let mut service = spawn(&bin_dir.join(name), name, &args, state_dir)?;
    service.restart = Some((bin_dir.join(name), args, state_dir.to_path_buf()));
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
