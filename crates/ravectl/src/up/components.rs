//! Components: what `up` starts, in order, each waited for until ready:
//! the Pushgateway, every RAVE replica, nginx, the exporters, the blackbox
//! exporter, Alertmanager, Prometheus.

use std::path::Path;

use crate::cli::UpArgs;
use crate::postgres::LocalPostgres;

use super::configs::{NGINX, Written};
use super::supervise::{Service, spawn, spawn_service, spawn_with_env, wait_ready};

/// Debian's Pushgateway and Prometheus.
const PUSHGATEWAY: &str = "/usr/bin/prometheus-pushgateway";
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Starts every component into `services`; on an error, what started is in
/// `services` for the caller to stop.
pub(super) async fn start(
    args: &UpArgs,
    postgres: &LocalPostgres,
    bin_dir: &Path,
    state_dir: &Path,
    written: &Written,
    services: &mut Vec<Service>,
) -> anyhow::Result<()> {
    let pushgateway_url = format!("http://127.0.0.1:{}", args.pushgateway_port);
    let pushgateway_args: Vec<std::ffi::OsString> = vec![
        format!("--web.listen-address=127.0.0.1:{}", args.pushgateway_port).into(),
        format!(
            "--persistence.file={}",
            state_dir.join("pushgateway.db").display()
        )
        .into(),
    ];
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
        services,
    )
    .await?;
    for (replica, config) in &written.services {
        services.push(spawn_service(bin_dir, replica, config, state_dir)?);
        wait_ready(
            &replica.name,
            &format!("{}/readyz", replica.url()),
            services,
        )
        .await?;
    }
    let nginx_args: Vec<std::ffi::OsString> = vec![
        "-c".into(),
        written.nginx.clone().into(),
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
    wait_ready("nginx", &status_url, services).await?;
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
        wait_ready(name, &format!("http://127.0.0.1:{port}/metrics"), services).await?;
    }
    // Alerting: the HTTPS probe, then Alertmanager, before Prometheus sends to it.
    let blackbox_args: Vec<std::ffi::OsString> = vec![
        format!("--config.file={}", written.alerting.blackbox.display()).into(),
        format!("--web.listen-address=127.0.0.1:{}", args.blackbox_port).into(),
    ];
    services.push(spawn(
        Path::new(super::alerting::BLACKBOX),
        "blackbox-exporter",
        args.blackbox_port,
        &blackbox_args,
        state_dir,
    )?);
    wait_ready(
        "blackbox-exporter",
        &format!("http://127.0.0.1:{}/metrics", args.blackbox_port),
        services,
    )
    .await?;
    let alertmanager_url = format!("http://127.0.0.1:{}", args.alertmanager_port);
    let alertmanager_args: Vec<std::ffi::OsString> = vec![
        format!("--config.file={}", written.alerting.alertmanager.display()).into(),
        format!(
            "--storage.path={}",
            state_dir.join("alertmanager").display()
        )
        .into(),
        format!("--web.listen-address=127.0.0.1:{}", args.alertmanager_port).into(),
        format!("--web.external-url={alertmanager_url}").into(),
        // One Alertmanager: no gossip port.
        "--cluster.listen-address=".into(),
    ];
    services.push(spawn(
        Path::new(super::alerting::ALERTMANAGER),
        "alertmanager",
        args.alertmanager_port,
        &alertmanager_args,
        state_dir,
    )?);
    wait_ready(
        "alertmanager",
        &format!("{alertmanager_url}/-/ready"),
        services,
    )
    .await?;
    let prometheus_args: Vec<std::ffi::OsString> = vec![
        format!("--config.file={}", written.prometheus.display()).into(),
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
        services,
    )
    .await?;
    Ok(())
}
