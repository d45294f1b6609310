//! `ravectl verify`: end-to-end checks against a running stack, through
//! nginx as senders and agents see it. Each suite prints PASS, FAIL (with the
//! reason) or SKIP; any FAIL makes the exit status 1.
//!
//! One file per suite, named as the suite is in the report: `healthy`,
//! `tls`, `http`, `signatures`, `dedup`, `agents`, `reporting`, `scraping`,
//! `alerts`, `dashboards`, `exposure`, `resources`, `traces`. Here: the context every
//! suite gets, the shared checks, and the order they run in.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use serde_json::Value;

use crate::cli::VerifyArgs;
use crate::stack::StackFile;

/// An HTTPS answer: status, lower-cased headers, body.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

struct Ctx {
    stack: StackFile,
    public: String,
    cert: std::path::PathBuf,
    http: reqwest::Client,
    run: String,
    memory_limit_mb: u64,
}

impl Ctx {
    fn secret(&self, name: &str) -> anyhow::Result<String> {
        self.stack.secret(name)
    }

    /// A request through nginx (curl: the workspace's HTTP client has no TLS).
    fn https(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> anyhow::Result<Answer> {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-D", "-", "--max-time", "60", "--cacert"])
            .arg(&self.cert)
            .args([
                "-X",
                method,
                &format!("{}{path}", self.public),
                "--data-binary",
                "@-",
            ]);
        for (name, value) in headers {
            cmd.args(["-H", &format!("{name}: {value}")]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().context("stdin")?.write_all(body)?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "curl {method} {path} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .context("no HTTP status line")?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(Answer {
            status,
            headers,
            body: body.to_owned(),
        })
    }

    fn github(&self, delivery: &str, body: &[u8], secret: &str) -> anyhow::Result<Answer> {
        self.https(
            "POST",
            "/hooks/github",
            &[
                ("x-github-event", "push".into()),
                ("x-github-delivery", delivery.into()),
                (
                    "x-hub-signature-256",
                    rave_service::sign::github(secret, body),
                ),
                ("content-type", "application/json".into()),
            ],
            body,
        )
    }

    async fn get_json(&self, url: &str) -> anyhow::Result<Value> {
        Ok(self.http.get(url).send().await?.json().await?)
    }
}

fn expect(answer: &Answer, status: u16, what: &str) -> anyhow::Result<()> {
    ensure!(
        answer.status == status,
        "{what}: expected {status}, got {} {}",
        answer.status,
        answer.body.trim()
    );
    Ok(())
}

/// Retries `check` until it succeeds or `timeout` passes; Prometheus and the
/// reporter work on their own schedules.
async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

pub async fn run(args: VerifyArgs) -> anyhow::Result<i32> {
    let mut stack = StackFile::read(&args.state_dir)?;
    for (name, (unit, port)) in &stack.systemd_units {
        stack
            .components
            .insert(name.clone(), (main_pid(unit)?, *port));
    }
    let public = stack
        .public_url
        .clone()
        .context("this stack has no nginx (public_url)")?;
    let cert = stack
        .tls_cert
        .clone()
        .context("this stack has no TLS certificate")?;
    let ctx = Ctx {
        public: args
            .url
            .clone()
            .unwrap_or(public)
            .trim_end_matches('/')
            .to_owned(),
        cert,
        stack,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        run: crate::secrets::hex_token(6),
        memory_limit_mb: args.memory_limit_mb,
    };
    let mut failed = 0;
    let mut report = |n: u8, name: &str, result: Option<anyhow::Result<String>>| match result {
        Some(Ok(detail)) => println!("PASS  {n:>2} {name:<12} {detail}"),
        Some(Err(e)) => {
            failed += 1;
            println!("FAIL  {n:>2} {name:<12} {e:#}");
        }
        None => println!("SKIP  {n:>2} {name:<12} not applicable to this stack"),
    };
    report(1, "healthy", Some(healthy(&ctx).await));
    report(2, "tls", Some(tls(&ctx)));
    report(3, "http", Some(http_codes(&ctx)));
    report(4, "signatures", Some(signatures(&ctx)));
    report(5, "dedup", Some(dedup(&ctx).await));
    let agents = agents(&ctx).await;
    let task = agents.as_ref().ok().cloned();
    report(
        6,
        "agents",
        Some(agents.map(|task| {
            format!(
                "task {} claimed, heartbeated and completed through nginx",
                task.id
            )
        })),
    );
    report(7, "reporting", Some(reporting(&ctx, task.clone()).await));
    report(8, "scraping", Some(scraping(&ctx).await));
    report(9, "alerts", Some(alerts(&ctx).await));
    report(10, "dashboards", Some(dashboards(&ctx).await));
    report(11, "exposure", Some(exposure(&ctx)));
    report(12, "resources", Some(resources(&ctx)));
    report(13, "traces", traces(&ctx, task).await);
    Ok(if failed == 0 { 0 } else { 1 })
}

/// A systemd unit's main process (0 when it is not running).
fn main_pid(unit: &str) -> anyhow::Result<u32> {
    let out = Command::new("systemctl")
        .args(["show", "--property=MainPID", "--value", unit])
        .output()
        .context("systemctl")?;
    ensure!(out.status.success(), "systemctl show {unit} failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

mod agents;
mod alerts;
mod dashboards;
mod dedup;
mod exposure;
mod healthy;
mod http;
mod reporting;
mod resources;
mod scraping;
mod signatures;
mod tls;
mod traces;

use agents::agents;
use alerts::alerts;
use dashboards::dashboards;
use dedup::dedup;
use exposure::exposure;
pub use exposure::{NOT_PUBLIC, OPERATORS};
use healthy::healthy;
use http::http_codes;
use reporting::reporting;
use resources::resources;
use scraping::scraping;
use signatures::signatures;
use tls::tls;
use traces::traces;
