//! `ravectl verify`: end-to-end checks against a running stack, through
//! nginx as senders and agents see it. Each suite prints PASS, FAIL (with the
//! reason) or SKIP; any FAIL makes the exit status 1.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

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
        Some(
            agents.map(|(id, _)| {
                format!("task {id} claimed, heartbeated and completed through nginx")
            }),
        ),
    );
    report(7, "reporting", Some(reporting(&ctx, task).await));
    report(8, "scraping", Some(scraping(&ctx).await));
    report(9, "alerts", Some(alerts(&ctx).await));
    report(10, "dashboards", Some(dashboards(&ctx).await));
    report(11, "exposure", Some(exposure(&ctx)));
    report(12, "resources", Some(resources(&ctx)));
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

async fn healthy(ctx: &Ctx) -> anyhow::Result<String> {
    let s = &ctx.stack;
    let mut urls: Vec<String> = crate::stack::RAVE_SERVICES
        .iter()
        .flat_map(|service| s.service_urls(service))
        .map(|u| format!("{u}/readyz"))
        .collect();
    urls.extend(s.pushgateway_url.iter().map(|u| format!("{u}/-/ready")));
    urls.extend(s.prometheus_url.iter().map(|u| format!("{u}/-/ready")));
    for url in &urls {
        let status = ctx
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("{url} unreachable"))?
            .status();
        ensure!(status.is_success(), "{url} answered {status}");
    }
    expect(
        &ctx.https("GET", "/healthz", &[], b"")?,
        200,
        "nginx /healthz",
    )?;
    Ok(format!("{} components ready, nginx answering", urls.len()))
}

fn tls(ctx: &Ctx) -> anyhow::Result<String> {
    let answer = ctx.https("GET", "/healthz", &[], b"")?;
    let hsts = answer
        .headers
        .get("strict-transport-security")
        .context("no Strict-Transport-Security header")?;
    let host = ctx.public.trim_start_matches("https://");
    for old in ["-tls1", "-tls1_1"] {
        let out = Command::new("openssl")
            .args(["s_client", old, "-connect", host])
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            !text.contains("Cipher is ECDHE") && !text.contains("Cipher is TLS"),
            "{old} was accepted"
        );
    }
    Ok(format!(
        "certificate verified, TLS 1.0/1.1 refused, HSTS {hsts}"
    ))
}

fn http_codes(ctx: &Ctx) -> anyhow::Result<String> {
    let unknown = ctx.https("POST", "/hooks/nope", &[], b"{}")?;
    expect(&unknown, 404, "unknown source")?;
    ensure!(
        unknown.json()["error"]["code"] == "unknown_source",
        "unknown source: {}",
        unknown.body
    );
    let unsigned = ctx.https(
        "POST",
        "/hooks/github",
        &[("x-github-event", "push".into())],
        b"{}",
    )?;
    expect(&unsigned, 400, "unsigned github delivery")?;
    expect(
        &ctx.https("GET", "/no/such/route", &[], b"")?,
        404,
        "unknown route",
    )?;
    let claim = ctx.https("POST", "/v1/agents/claim", &[], b"{}")?;
    expect(&claim, 401, "claim without a token")?;
    Ok("404 unknown source, 400 unsigned, 404 unknown route, 401 without token".into())
}

fn signatures(ctx: &Ctx) -> anyhow::Result<String> {
    let body = br#"{"verify":"signatures"}"#;
    let now = rave_service::sign::now_unix();
    let run = &ctx.run;
    let github = ctx.secret("github.secret")?;
    expect(
        &ctx.github(&format!("verify-gh-{run}"), body, &github)?,
        202,
        "signed github",
    )?;
    expect(
        &ctx.github(&format!("verify-gh2-{run}"), body, "wrong-secret")?,
        401,
        "github with a wrong secret",
    )?;
    let standard = ctx.secret("standard.secret")?;
    let id = format!("verify-std-{run}");
    let signed =
        |secret: &str, id: &str, body: &[u8]| rave_service::sign::standard(secret, id, now, body);
    let std_headers = |sig: String| {
        vec![
            ("webhook-id", id.clone()),
            ("webhook-timestamp", now.to_string()),
            ("webhook-signature", sig),
        ]
    };
    expect(
        &ctx.https(
            "POST",
            "/hooks/standard",
            &std_headers(signed(&standard, &id, body)),
            body,
        )?,
        202,
        "signed standard",
    )?;
    let tampered = ctx.https(
        "POST",
        "/hooks/standard",
        &std_headers(signed(&standard, &id, body)),
        b"{\"verify\":\"tampered\"}",
    )?;
    expect(&tampered, 401, "tampered standard")?;
    let gitlab = ctx.secret("gitlab-signing.secret")?;
    let gid = format!("verify-gl-{run}");
    let gl_headers = vec![
        ("x-gitlab-event", "Push Hook".to_owned()),
        ("idempotency-key", gid.clone()),
        ("webhook-id", gid.clone()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", signed(&gitlab, &gid, body)),
    ];
    expect(
        &ctx.https("POST", "/hooks/gitlab", &gl_headers, body)?,
        202,
        "gitlab signing token",
    )?;
    let token = ctx.secret("gitlab-token.secret")?;
    let tok_headers = vec![
        ("x-gitlab-event", "Push Hook".to_owned()),
        ("idempotency-key", format!("verify-gl2-{run}")),
        ("x-gitlab-token", token),
    ];
    expect(
        &ctx.https("POST", "/hooks/gitlab", &tok_headers, body)?,
        202,
        "gitlab secret token",
    )?;
    Ok("github, standard, gitlab signing token and gitlab token accepted; forged and tampered refused".into())
}

async fn dedup(ctx: &Ctx) -> anyhow::Result<String> {
    let secret = ctx.secret("github.secret")?;
    let delivery = format!("verify-dup-{}", ctx.run);
    let first = ctx.github(&delivery, b"{}", &secret)?;
    expect(&first, 202, "first delivery")?;
    let again = ctx.github(&delivery, b"{}", &secret)?;
    expect(&again, 200, "repeated delivery")?;
    let (a, b) = (
        first.json()["task_id"].clone(),
        again.json()["task_id"].clone(),
    );
    ensure!(a == b && a.is_string(), "task ids differ: {a} vs {b}");
    let stored = ctx
        .get_json(&format!(
            "{}/v1/events/github/{delivery}",
            ctx.stack.store_url
        ))
        .await?;
    ensure!(
        stored["task_id"] == a,
        "dedup-store holds {}, answers said {a}",
        stored["task_id"]
    );
    Ok(format!("stored once, both answers name task {a}"))
}

/// Sends a webhook, then claims, heartbeats and completes its task through
/// nginx as the dev agent. Returns the task id and its kind.
async fn agents(ctx: &Ctx) -> anyhow::Result<(String, String)> {
    let secret = ctx.secret("github.secret")?;
    let sent = ctx.github(&format!("verify-agent-{}", ctx.run), b"{}", &secret)?;
    expect(&sent, 202, "webhook for the agent")?;
    let ours = sent.json()["task_id"]
        .as_str()
        .context("no task id")?
        .to_owned();
    let auth = (
        "authorization",
        format!("Bearer {}", ctx.secret("agent-dev.token")?),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let claim = ctx.https(
            "POST",
            "/v1/agents/claim",
            std::slice::from_ref(&auth),
            br#"{"max_tasks": 50, "wait_secs": 5}"#,
        )?;
        if claim.status == 204 {
            continue;
        }
        expect(&claim, 200, "claim")?;
        let mut found = None;
        for task in claim.json()["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let id = task["task_id"].as_str().unwrap_or_default().to_owned();
            let lease = json!({ "lease_token": task["lease_token"] }).to_string();
            let beat = ctx.https(
                "POST",
                &format!("/v1/tasks/{id}/heartbeat"),
                std::slice::from_ref(&auth),
                lease.as_bytes(),
            )?;
            expect(&beat, 200, "heartbeat")?;
            let done = ctx.https(
                "POST",
                &format!("/v1/tasks/{id}/complete"),
                std::slice::from_ref(&auth),
                lease.as_bytes(),
            )?;
            expect(&done, 200, "complete")?;
            if id == ours {
                found = Some((id, task["kind"].as_str().unwrap_or_default().to_owned()));
            }
        }
        if let Some(found) = found {
            return Ok(found);
        }
    }
    bail!("task {ours} was never claimable within 60 s")
}

/// Reports the task's job through nginx; it must reach the Pushgateway and
/// Prometheus.
async fn reporting(ctx: &Ctx, task: Option<(String, String)>) -> anyhow::Result<String> {
    let (task_id, kind) = task.context("no task to report (the agents suite failed)")?;
    let auth = (
        "authorization",
        format!("Bearer {}", ctx.secret("agent-dev.token")?),
    );
    let report = json!({
        "task_id": task_id, "kind": kind, "status": "succeeded",
        "started_at": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?,
        "duration_seconds": 0.5,
    });
    let sent = ctx.https(
        "POST",
        "/v1/reports",
        &[auth, ("content-type", "application/json".into())],
        report.to_string().as_bytes(),
    )?;
    expect(&sent, 202, "job report")?;
    let gateway = ctx
        .stack
        .pushgateway_url
        .clone()
        .context("no Pushgateway in this stack")?;
    eventually(Duration::from_secs(30), || async {
        let text = ctx
            .http
            .get(format!("{gateway}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        ensure!(
            text.lines()
                .any(|l| l.starts_with("agent_jobs_total{") && l.contains("agent=\"dev\"")),
            "agent_jobs_total for agent dev is not in the Pushgateway"
        );
        Ok(())
    })
    .await?;
    let prometheus = ctx
        .stack
        .prometheus_url
        .clone()
        .context("no Prometheus in this stack")?;
    eventually(Duration::from_secs(60), || async {
        let answer = ctx
            .get_json(&format!(
                "{prometheus}/api/v1/query?query=agent_jobs_total%7Bagent%3D%22dev%22%7D"
            ))
            .await?;
        ensure!(
            answer["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
            "Prometheus has no agent_jobs_total for dev yet"
        );
        Ok(())
    })
    .await?;
    Ok("report accepted; agent_jobs_total in the Pushgateway and in Prometheus".into())
}

async fn scraping(ctx: &Ctx) -> anyhow::Result<String> {
    let prometheus = ctx
        .stack
        .prometheus_url
        .clone()
        .context("no Prometheus in this stack")?;
    let expected = [
        "prometheus",
        "node",
        "nginx",
        "postgres",
        "pushgateway",
        "ingest",
        "dedup-store",
        "task-dispatcher",
        "agent-reporter",
    ];
    eventually(Duration::from_secs(60), || async {
        let answer = ctx
            .get_json(&format!("{prometheus}/api/v1/query?query=up"))
            .await?;
        // Targets answering, per job: every replica of a RAVE service.
        let mut up: BTreeMap<String, usize> = BTreeMap::new();
        for r in answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let job = r["metric"]["job"].as_str().unwrap_or_default().to_owned();
            let answering = usize::from(r["value"][1].as_str() == Some("1"));
            *up.entry(job).or_default() += answering;
        }
        for job in expected {
            let want = ctx.stack.service_urls(job).len().max(1);
            let got = up.get(job).copied().unwrap_or_default();
            ensure!(got == want, "job {job}: {got} of {want} targets up");
        }
        Ok(())
    })
    .await?;
    let targets: usize = expected
        .iter()
        .map(|job| ctx.stack.service_urls(job).len().max(1))
        .sum();
    Ok(format!(
        "up == 1 for all {} targets of {} jobs",
        targets,
        expected.len()
    ))
}

fn exposure(ctx: &Ctx) -> anyhow::Result<String> {
    for path in [
        "/metrics",
        "/v1/internal/events",
        "/v1/tasks",
        "/v1/events",
        "/readyz",
        "/v1/ignored-events",
    ] {
        let answer = ctx.https("GET", path, &[], b"")?;
        ensure!(
            answer.status == 404,
            "{path} is reachable through nginx ({})",
            answer.status
        );
    }
    // Every port but nginx's listens on loopback only.
    let listening = listening_sockets()?;
    let public_port: u16 = ctx
        .public
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let mut checked = 0;
    for pid_port in ctx.stack.components.values() {
        let port = pid_port.1;
        if port == public_port {
            continue;
        }
        for (addr, p) in &listening {
            if *p == port {
                ensure!(
                    addr.is_loopback(),
                    "port {port} listens on {addr}, not loopback"
                );
                checked += 1;
            }
        }
    }
    Ok(format!(
        "internal routes 404 through nginx; {checked} internal listeners on loopback only"
    ))
}

/// (address, port) of every listening TCP socket, from /proc.
fn listening_sockets() -> anyhow::Result<Vec<(std::net::IpAddr, u16)>> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 || fields[3] != "0A" {
                continue; // not LISTEN
            }
            let Some((addr, port)) = fields[1].split_once(':') else {
                continue;
            };
            let port = u16::from_str_radix(port, 16)?;
            let bytes = hex::decode(addr)?;
            let ip = if v6 {
                let mut b = [0u8; 16];
                for (i, chunk) in bytes.chunks(4).enumerate() {
                    b[i * 4..i * 4 + 4].copy_from_slice(&[chunk[3], chunk[2], chunk[1], chunk[0]]);
                }
                std::net::IpAddr::from(b)
            } else {
                std::net::IpAddr::from([bytes[3], bytes[2], bytes[1], bytes[0]])
            };
            out.push((ip, port));
        }
    }
    Ok(out)
}

fn resources(ctx: &Ctx) -> anyhow::Result<String> {
    let mut seen = Vec::new();
    for (name, (pid, _)) in &ctx.stack.components {
        if !crate::stack::is_rave_service(name) {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("{name} (pid {pid}) is not running"))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS")?;
        let mib = kib / 1024;
        ensure!(
            mib < ctx.memory_limit_mb,
            "{name} uses {mib} MiB, over the {} MiB limit",
            ctx.memory_limit_mb
        );
        seen.push(format!("{name} {mib} MiB"));
    }
    ensure!(!seen.is_empty(), "no RAVE service pids in the stack file");
    Ok(format!(
        "{} (limit {} MiB)",
        seen.join(", "),
        ctx.memory_limit_mb
    ))
}

/// The alerting rules are loaded and healthy, and nothing fires.
async fn alerts(ctx: &Ctx) -> anyhow::Result<String> {
    let prometheus = ctx
        .stack
        .prometheus_url
        .clone()
        .context("no Prometheus in this stack")?;
    let rules = ctx
        .get_json(&format!("{prometheus}/api/v1/rules?type=alert"))
        .await?;
    let groups = rules["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let all: Vec<&Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    ensure!(!all.is_empty(), "no alerting rules are loaded");
    if let Some(bad) = all
        .iter()
        .find(|r| r["health"] != "ok" && r["health"] != "unknown")
    {
        bail!("rule {} is unhealthy: {}", bad["name"], bad["lastError"]);
    }
    let alerts = ctx.get_json(&format!("{prometheus}/api/v1/alerts")).await?;
    let firing: Vec<String> = alerts["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            a["labels"]["alertname"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    ensure!(
        firing.is_empty(),
        "firing on a healthy stack: {}",
        firing.join(", ")
    );
    Ok(format!(
        "{} alerting rules in {} groups loaded; none firing",
        all.len(),
        groups.len()
    ))
}

/// The three Grafana dashboards, as shipped.
const DASHBOARDS: [(&str, &str); 3] = [
    (
        "project-health",
        include_str!("../../../grafana/dashboards/project-health.json"),
    ),
    (
        "agent-performance",
        include_str!("../../../grafana/dashboards/agent-performance.json"),
    ),
    (
        "system-health",
        include_str!("../../../grafana/dashboards/system-health.json"),
    ),
];

/// Every panel query, as Grafana would send it, returns data.
async fn dashboards(ctx: &Ctx) -> anyhow::Result<String> {
    let prometheus = ctx
        .stack
        .prometheus_url
        .clone()
        .context("no Prometheus in this stack")?;
    let mut queries = Vec::new();
    for (name, json) in DASHBOARDS {
        let dashboard: Value = serde_json::from_str(json)?;
        for panel in dashboard["panels"].as_array().cloned().unwrap_or_default() {
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_default()
                    .replace("$__rate_interval", "1m")
                    .replace("\"$job\"", "\".+\"")
                    .replace("\"$instance\"", "\".+\"");
                queries.push((
                    format!("{name}/{}", panel["title"].as_str().unwrap_or_default()),
                    expr,
                ));
            }
        }
    }
    eventually(Duration::from_secs(90), || async {
        for (panel, expr) in &queries {
            let url = reqwest::Url::parse_with_params(
                &format!("{prometheus}/api/v1/query"),
                &[("query", expr)],
            )?;
            let answer: Value = ctx.http.get(url).send().await?.json().await?;
            ensure!(
                answer["status"] == "success",
                "{panel}: {}",
                answer["error"]
            );
            ensure!(
                answer["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty()),
                "{panel}: no data for {expr}"
            );
        }
        Ok(())
    })
    .await?;
    Ok(format!(
        "all {} panel queries of 3 dashboards return data",
        queries.len()
    ))
}
