//! Alerting in the local stack: Alertmanager's and the blackbox exporter's
//! configs (Alertmanager's checked with `amtool check-config` before
//! anything starts), and the inbox: the receiver for people the stack
//! always has, which does not depend on RAVE.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

use crate::cli::UpArgs;

/// Debian's Alertmanager (with amtool) and blackbox exporter.
pub(super) const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
pub(super) const AMTOOL: &str = "/usr/bin/amtool";
pub(super) const BLACKBOX: &str = "/usr/bin/prometheus-blackbox-exporter";

const ALERTMANAGER_TEMPLATE: &str = include_str!("../../templates/alertmanager.yml");
const BLACKBOX_TEMPLATE: &str = include_str!("../../templates/blackbox.yml");

/// A value quoted for YAML: single quotes, `'` doubled; no line breaks.
fn quoted(value: &str, what: &str) -> anyhow::Result<String> {
    anyhow::ensure!(!value.contains(['\n', '\r']), "{what} must be on one line");
    Ok(format!("'{}'", value.replace('\'', "''")))
}

/// Alertmanager's configuration for `args`. `public_url` is nginx's, the
/// way alerts reach ingest's alertmanager source (balanced over replicas).
pub fn alertmanager_config(
    args: &UpArgs,
    public_url: &str,
    tls_cert: &Path,
    secrets_dir: &Path,
) -> anyhow::Result<String> {
    let mut people = String::new();
    if let Some(url) = &args.alert_webhook_url {
        people.push_str(&format!(
            "      - url: {}\n        send_resolved: true\n",
            quoted(url, "--alert-webhook-url")?
        ));
    }
    if let Some(to) = &args.alert_email_to {
        people.push_str(&format!(
            "    email_configs:\n      - to: {}\n        send_resolved: true\n",
            quoted(to, "--alert-email-to")?
        ));
    }
    let mut smtp = String::new();
    if let Some(host) = &args.smtp_smarthost {
        smtp.push_str(&format!(
            "  smtp_smarthost: {}\n  smtp_from: {}\n  smtp_require_tls: true\n",
            quoted(host, "--smtp-smarthost")?,
            quoted(&args.smtp_from, "--smtp-from")?
        ));
        if let (Some(user), Some(file)) = (&args.smtp_username, &args.smtp_password_file) {
            smtp.push_str(&format!(
                "  smtp_auth_username: {}\n  smtp_auth_password_file: {}\n",
                quoted(user, "--smtp-username")?,
                quoted(&file.display().to_string(), "--smtp-password-file")?
            ));
        }
    }
    let (route, receiver) = if args.alerts_as_tasks {
        (
            "    # Critical and warning alerts also become tasks (continue: people get them too).\n    - receiver: rave\n      matchers: ['severity=~\"critical|warning\"']\n      continue: true\n".to_owned(),
            format!(
                "  - name: rave\n    webhook_configs:\n      - url: {}\n        send_resolved: true\n        http_config:\n          authorization:\n            credentials_file: {}\n          tls_config:\n            ca_file: {}\n",
                quoted(&format!("{public_url}/hooks/alertmanager"), "the public URL")?,
                quoted(&secrets_dir.join("alertmanager.token").display().to_string(), "the secrets directory")?,
                quoted(&tls_cert.display().to_string(), "the certificate path")?,
            ),
        )
    } else {
        (String::new(), String::new())
    };
    Ok(ALERTMANAGER_TEMPLATE
        .replace("{{SMTP_GLOBAL}}\n", &smtp)
        .replace(
            "{{GROUP_WAIT}}",
            &quoted(&args.alert_group_wait, "--alert-group-wait")?,
        )
        .replace(
            "{{GROUP_INTERVAL}}",
            &quoted(&args.alert_group_interval, "--alert-group-interval")?,
        )
        .replace("{{RAVE_ROUTE}}\n", &route)
        .replace("{{INBOX_PORT}}", &args.alert_inbox_port.to_string())
        .replace("{{PEOPLE_RECEIVERS}}\n", &people)
        .replace("{{RAVE_RECEIVER}}\n", &receiver))
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

/// The inbox: answers Alertmanager's webhook, appends each notification to
/// `log` (one JSON per line) and prints one line per alert. Runs until
/// the task is dropped.
pub(super) async fn inbox(listener: tokio::net::TcpListener, log: PathBuf) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let log = log.clone();
        tokio::spawn(async move {
            if let Err(e) = receive(stream, &log).await {
                eprintln!("alert inbox: {e:#}");
            }
        });
    }
}

/// One HTTP/1.1 request: `POST /alerts` with a Content-Length body.
async fn receive(stream: tokio::net::TcpStream, log: &Path) -> anyhow::Result<()> {
    const MAX_BODY: usize = 4 << 20;
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        anyhow::ensure!(reader.read_line(&mut line).await? > 0, "connection closed");
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().context("Content-Length")?;
        }
    }
    anyhow::ensure!(length <= MAX_BODY, "a body of {length} bytes");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    let notification: serde_json::Value = serde_json::from_slice(&body).context("not JSON")?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    std::io::Write::write_all(
        &mut file,
        &[serde_json::to_vec(&notification)?, b"\n".to_vec()].concat(),
    )?;
    for alert in notification["alerts"].as_array().into_iter().flatten() {
        println!(
            "alert {}: {} ({}) {}",
            alert["status"].as_str().unwrap_or("?"),
            alert["labels"]["alertname"].as_str().unwrap_or("?"),
            alert["labels"]["severity"].as_str().unwrap_or("?"),
            alert["annotations"]["summary"].as_str().unwrap_or_default()
        );
    }
    reader
        .into_inner()
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await?;
    Ok(())
}
