//! Alerting in the local stack: Alertmanager's and the blackbox exporter's
//! configs (Alertmanager's checked with `amtool check-config` before
//! anything starts), and the inbox: the receiver for people the stack
//! always has, which does not depend on RAVE.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cli::UpArgs;

/// Debian's Alertmanager (with amtool) and blackbox exporter.
pub(super) const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
pub(super) const AMTOOL: &str = "/usr/bin/amtool";
pub(super) const BLACKBOX: &str = "/usr/bin/prometheus-blackbox-exporter";

/// Routing and inhibition, shared with the NixOS hosts (nixos/lib/alertmanager.nix).
pub const ROUTING: &str = include_str!("../../../../prometheus/alertmanager/routing.json");
const BLACKBOX_TEMPLATE: &str = include_str!("../../templates/blackbox.yml");

/// Alertmanager's configuration for `args`, as JSON (which YAML reads).
/// Every alert reaches people (the stack's inbox, and a webhook or mail
/// when given) without going through RAVE, which may be what is down.
/// With --alerts-as-tasks, critical and warning alerts also go to ingest's
/// alertmanager source through nginx (`public_url`, balanced over replicas).
pub fn alertmanager_config(
    args: &UpArgs,
    public_url: &str,
    tls_cert: &Path,
    secrets_dir: &Path,
) -> anyhow::Result<String> {
    use serde_json::{Value, json};
    let routing: Value = serde_json::from_str(ROUTING).context("routing.json")?;
    let mut route = routing["route"].clone();
    route["group_wait"] = json!(args.alert_group_wait);
    route["group_interval"] = json!(args.alert_group_interval);
    let mut global = json!({ "resolve_timeout": "5m" });
    if let Some(host) = &args.smtp_smarthost {
        global["smtp_smarthost"] = json!(host);
        global["smtp_from"] = json!(args.smtp_from);
        global["smtp_require_tls"] = json!(true);
        if let (Some(user), Some(file)) = (&args.smtp_username, &args.smtp_password_file) {
            global["smtp_auth_username"] = json!(user);
            global["smtp_auth_password_file"] = json!(file);
        }
    }
    let mut webhooks = vec![json!({
        "url": format!("http://127.0.0.1:{}/alerts", args.alert_inbox_port),
        "send_resolved": true,
    })];
    if let Some(url) = &args.alert_webhook_url {
        webhooks.push(json!({ "url": url, "send_resolved": true }));
    }
    let mut people = json!({ "name": "people", "webhook_configs": webhooks });
    if let Some(to) = &args.alert_email_to {
        people["email_configs"] = json!([{ "to": to, "send_resolved": true }]);
    }
    let mut receivers = vec![people];
    if args.alerts_as_tasks {
        let routes = route["routes"].as_array_mut().context("route.routes")?;
        routes.insert(0, routing["rave_route"].clone());
        receivers.push(json!({
            "name": "rave",
            "webhook_configs": [{
                "url": format!("{public_url}/hooks/alertmanager"),
                "send_resolved": true,
                "http_config": {
                    "authorization": { "credentials_file": secrets_dir.join("alertmanager.token") },
                    "tls_config": { "ca_file": tls_cert },
                },
            }],
        }));
    }
    let config = json!({
        "global": global,
        "route": route,
        "inhibit_rules": routing["inhibit_rules"],
        "receivers": receivers,
    });
    Ok(format!(
        "# Written by `ravectl up` (routing: prometheus/alertmanager/routing.json).\n{}\n",
        serde_json::to_string_pretty(&config)?
    ))
}

/// What [`write`] wrote.
pub(super) struct AlertingFiles {
    pub alertmanager: PathBuf,
    pub blackbox: PathBuf,
}

/// Writes both configs into `config_dir` and checks Alertmanager's.
pub(super) fn write(
    args: &UpArgs,
    config_dir: &Path,
    public_url: &str,
    tls_cert: &Path,
    secrets_dir: &Path,
) -> anyhow::Result<AlertingFiles> {
    let alertmanager = config_dir.join("alertmanager.yml");
    std::fs::write(
        &alertmanager,
        alertmanager_config(args, public_url, tls_cert, secrets_dir)?,
    )?;
    check(&alertmanager)?;
    let blackbox = config_dir.join("blackbox.yml");
    std::fs::write(
        &blackbox,
        BLACKBOX_TEMPLATE.replace("{{TLS_CERT}}", &tls_cert.display().to_string()),
    )?;
    Ok(AlertingFiles {
        alertmanager,
        blackbox,
    })
}

/// `amtool check-config`: the configuration Alertmanager would load.
pub fn check(config: &Path) -> anyhow::Result<()> {
    let out = std::process::Command::new(AMTOOL)
        .arg("check-config")
        .arg(config)
        .output()
        .with_context(|| format!("running {AMTOOL}"))?;
    anyhow::ensure!(
        out.status.success(),
        "amtool refuses {}:\n{}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The inbox: answers Alertmanager's webhook (`POST /alerts`), appends each
/// notification to `log` (one JSON per line) and prints one line per alert.
/// A body that is not JSON gets a 400, as the services answer.
pub fn inbox(
    listener: std::net::TcpListener,
    log: PathBuf,
) -> std::io::Result<actix_web::dev::Server> {
    let log = actix_web::web::Data::new(log);
    Ok(actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(log.clone())
            .route("/alerts", actix_web::web::post().to(receive))
            .default_service(actix_web::web::to(rave_service::http::not_found))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}

async fn receive(
    req: actix_web::HttpRequest,
    payload: actix_web::web::Payload,
    log: actix_web::web::Data<PathBuf>,
) -> actix_web::HttpResponse {
    use actix_web::http::StatusCode;
    use rave_service::http::error_response;
    const MAX_BODY: usize = 4 << 20;
    let body = match rave_service::http::read_body(&req, payload, MAX_BODY).await {
        Ok(body) => body,
        Err(e @ rave_service::http::BodyError::TooLarge { .. }) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &e.to_string(),
            );
        }
        Err(e) => {
            return error_response(StatusCode::BAD_REQUEST, "unreadable_body", &e.to_string());
        }
    };
    let notification: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(notification) => notification,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "malformed_body",
                &format!("not JSON: {e}"),
            );
        }
    };
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log.get_ref())
        .and_then(|mut file| {
            let mut line = serde_json::to_vec(&notification).map_err(std::io::Error::other)?;
            line.push(b'\n');
            std::io::Write::write_all(&mut file, &line)
        });
    if let Err(e) = appended {
        eprintln!("alert inbox: writing {} failed: {e}", log.display());
        return rave_service::http::internal_error(&e);
    }
    for alert in notification["alerts"].as_array().into_iter().flatten() {
        println!(
            "alert {}: {} ({}) {}",
            alert["status"].as_str().unwrap_or("?"),
            alert["labels"]["alertname"].as_str().unwrap_or("?"),
            alert["labels"]["severity"].as_str().unwrap_or("?"),
            alert["annotations"]["summary"].as_str().unwrap_or_default()
        );
    }
    actix_web::HttpResponse::Ok().finish()
}
