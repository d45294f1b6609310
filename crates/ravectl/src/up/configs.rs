//! Configs: every file `up` writes before it starts anything: each replica's
//! TOML, nginx's (checked with `nginx -t`), Prometheus's and its rules, the
//! dev agent, the TLS certificate.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cli::UpArgs;
use std::collections::BTreeMap;

use super::replicas::{Replica, SERVICES, fallbacks};

const DEDUP_TEMPLATE: &str = include_str!("../../templates/dedup-store.toml");
const INGEST_TEMPLATE: &str = include_str!("../../templates/ingest.toml");
const DISPATCHER_TEMPLATE: &str = include_str!("../../templates/task-dispatcher.toml");
const REPORTER_TEMPLATE: &str = include_str!("../../templates/agent-reporter.toml");
const NGINX_TEMPLATE: &str = include_str!("../../templates/nginx.conf");
const NGINX_SITES: &str = include_str!("../../templates/nginx-sites.conf");
const NGINX_OPERATORS: &str = include_str!("../../templates/nginx-operators.conf");
pub(super) const NGINX: &str = "/usr/sbin/nginx";
const PROMETHEUS_TEMPLATE: &str = include_str!("../../templates/prometheus.yml");
const RULES: [(&str, &str); 2] = [
    (
        "rave-alerts.yml",
        include_str!("../../../../prometheus/rules/rave-alerts.yml"),
    ),
    (
        "rave-recording.yml",
        include_str!("../../../../prometheus/rules/rave-recording.yml"),
    ),
];

/// What [`write`] wrote.
pub(super) struct Written {
    /// Each replica and its config file, in start order.
    pub services: Vec<(Replica, PathBuf)>,
    pub nginx: PathBuf,
    pub prometheus: PathBuf,
    pub tls_cert: PathBuf,
    pub secrets_dir: PathBuf,
    pub alerting: super::alerting::AlertingFiles,
}

/// Renders every template into the state directory's config/.
pub(super) fn write(
    args: &UpArgs,
    state_dir: &Path,
    replicas: &BTreeMap<&'static str, Vec<Replica>>,
) -> anyhow::Result<Written> {
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
            .replace("{{ALERTMANAGER_PORT}}", &args.alertmanager_port.to_string())
            .replace("{{BLACKBOX_PORT}}", &args.blackbox_port.to_string())
            .replace(
                "{{PUBLIC_HEALTHZ}}",
                &format!("https://localhost:{}/healthz", args.nginx_port),
            )
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
                "evaluation_interval: 15s",
                &format!("evaluation_interval: {}", args.scrape_interval),
            )
            .replace(
                "{{NGINX_DIR}}",
                &state_dir.join("nginx").display().to_string(),
            )
            .replace(
                "{{OPERATOR_LOCATIONS}}",
                if args.operator_api {
                    NGINX_OPERATORS
                } else {
                    ""
                },
            )
            .replace("{{OPERATORS_RATE}}", &rate(args.operators_rate_limit))
            .replace(
                "{{OPERATORS_BURST}}",
                &rate(args.operators_rate_limit.saturating_mul(2)),
            )
            .replace("{{HOOKS_RATE}}", &rate(args.hooks_rate_limit))
            .replace(
                "{{HOOKS_BURST}}",
                &rate(args.hooks_rate_limit.saturating_mul(2)),
            )
            // nginx's agents zone is only a flood ceiling: ten agents' worth.
            .replace(
                "{{AGENTS_RATE}}",
                &rate(args.agents_rate_limit.saturating_mul(10)),
            )
            .replace(
                "{{AGENTS_BURST}}",
                &rate(args.agents_rate_limit.saturating_mul(20)),
            )
            .replace("{{AGENT_RATE}}", &args.agents_rate_limit.to_string())
            .replace(
                "{{AGENT_BURST}}",
                &args.agents_rate_limit.saturating_mul(2).to_string(),
            )
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
            .replace("{{OTLP_ENDPOINT}}", &super::otlp_endpoint(args))
            .replace("{{OPERATOR_DIGEST}}", &operator_digest)
            .replace("{{RELAY_DIGEST}}", &relay_digest)
    };
    let agents_file = config_dir.join("agents.toml");
    if !agents_file.exists() {
        let dev_token = std::fs::read_to_string(secrets_dir.join("agent-dev.token"))?;
        // `sre`: the tasks alerts become with --alerts-as-tasks.
        let entry = crate::agents::entry(
            "dev",
            dev_token.trim_end(),
            &["webhook".to_owned(), "sre".to_owned()],
        );
        std::fs::write(
            &agents_file,
            format!("# Agents of the local stack; `ravectl agents create` adds more.\n{entry}"),
        )?;
    }
    anyhow::ensure!(
        !secrets_dir.display().to_string().contains('\''),
        "the state directory's path must not contain a single quote"
    );
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
    // --alerts-as-tasks: ingest takes Alertmanager's notifications, and a
    // firing alert becomes an `sre` task (resolutions are kept as events).
    let (alert_source, alert_route) = if args.alerts_as_tasks {
        (
            "\n# Alertmanager's notifications (--alerts-as-tasks), by bearer token.\n[sources.alertmanager]\nkind = \"alertmanager\"\ntokens = [{ file = '{{SECRETS_DIR}}/alertmanager.token' }]\n",
            "# Firing alerts (--alerts-as-tasks) become `sre` tasks.\n[[routes]]\nkind = \"sre\"\nsource = \"alertmanager\"\nevent_types = [\"alert.firing\"]\n",
        )
    } else {
        ("", "")
    };
    let preset_sources: String = rave_service::sign::providers::PROVIDERS
        .iter()
        .map(|p| {
            format!(
                "\n[sources.{p}]\nkind = \"{p}\"\nsecrets = [{{ file = '{{{{SECRETS_DIR}}}}/{p}.secret' }}]\n"
            )
        })
        .collect();
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
                )
                .replace("{{PRESET_SOURCES}}\n", &preset_sources)
                .replace("{{ALERT_SOURCE}}\n", alert_source)
                .replace("{{ALERT_ROUTE}}\n", alert_route);
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
                .replace("{{STORE_SERVERS}}", &servers("dedup-store"))
                .replace("{{INGEST_TARGETS}}", &targets("ingest"))
                .replace("{{STORE_TARGETS}}", &targets("dedup-store"))
                .replace("{{DISPATCHER_TARGETS}}", &targets("task-dispatcher"))
                .replace("{{REPORTER_TARGETS}}", &targets("agent-reporter")),
        )
    };
    // The repo's alerting and recording rules, as the NixOS image loads
    // them, their runbook links absolute.
    std::fs::create_dir_all(config_dir.join("rules"))?;
    let runbook = state_dir.join("docs/runbook.md");
    std::fs::create_dir_all(runbook.parent().unwrap())?;
    std::fs::write(&runbook, crate::runbook::RUNBOOK)?;
    let base = args
        .runbook_base_url
        .clone()
        .unwrap_or_else(|| crate::runbook::file_url(&runbook));
    for (file, rules) in RULES {
        let mut text = crate::runbook::with_base(rules, &base);
        for setting in &args.alert_for {
            let (alert, pending) = setting
                .split_once('=')
                .context("--alert-for takes ALERT=DURATION")?;
            text = with_for(&text, alert, pending);
        }
        std::fs::write(config_dir.join("rules").join(file), text)?;
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
    crate::grafana::write_provisioning(
        &state_dir.join("grafana"),
        &format!("http://127.0.0.1:{}", args.prometheus_port),
        &args.scrape_interval,
    )?;
    let public = format!("https://localhost:{}", args.nginx_port);
    let alerting = super::alerting::write(args, &config_dir, &public, &tls_cert, &secrets_dir)?;
    Ok(Written {
        services: configs,
        nginx: nginx_config,
        prometheus: prometheus_config,
        tls_cert,
        secrets_dir,
        alerting,
    })
}

/// `alert`'s `for:` set to `pending` (tests only: --alert-for).
fn with_for(rules: &str, alert: &str, pending: &str) -> String {
    let mut current = "";
    rules
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if let Some(name) = trimmed.strip_prefix("- alert: ") {
                current = name.trim();
            }
            match trimmed.strip_prefix("for: ") {
                Some(_) if current == alert => {
                    format!("{}for: {pending}", &line[..line.len() - trimmed.len()])
                }
                _ => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
