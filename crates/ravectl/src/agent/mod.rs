//! `ravectl agent`: the reference agent. It claims tasks (long poll),
//! acknowledges each at once with a heartbeat, runs a command per task (the
//! task JSON on stdin) or a simulated job, heartbeats at a third of the
//! lease, and completes or fails the task. It stops a job whose task was
//! cancelled or superseded, and abandons one whose lease was lost (another
//! agent owns it now). Network errors are waited out, never fatal: results
//! are retried until answered, and job reports wait on disk
//! ([`reports::ReportBuffer`]) until agent-reporter takes them.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::AsyncWriteExt as _;

use crate::cli::AgentArgs;
use crate::stack::StackFile;

mod reports;

struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
    /// agent-reporter's base URL, when job reports are wanted.
    reporter: Option<String>,
    /// Reports agent-reporter could not take yet.
    reports: reports::ReportBuffer,
}

impl Client {
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.post_traced(path, body, None).await
    }

    /// A call made as part of a job carries the job's trace context.
    async fn post_traced(
        &self,
        path: &str,
        body: &Value,
        traceparent: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(body);
        if let Some(tp) = traceparent {
            request = request.header("traceparent", tp);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }
}

/// How a job ended.
enum Outcome {
    Done(Value),
    Failed {
        error: String,
        retryable: bool,
    },
    /// The dispatcher asked us to stop.
    Stopped(String),
    /// Our lease is gone: report nothing.
    LeaseLost,
}

pub async fn run(args: AgentArgs) -> anyhow::Result<i32> {
    let (url, token, reporter) = match (&args.url, &args.token_file) {
        (Some(url), Some(file)) => (url.clone(), read_token(file)?, args.reporter_url.clone()),
        _ => {
            let stack = StackFile::read(&args.state_dir)?;
            let file = args
                .token_file
                .clone()
                .unwrap_or_else(|| stack.secrets_dir.join("agent-dev.token"));
            let reporter = args.reporter_url.clone().or(stack.reporter_url);
            (
                args.url.clone().unwrap_or(stack.dispatcher_url),
                read_token(&file)?,
                reporter,
            )
        }
    };
    let client = Client {
        // Longer than the longest long poll.
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(args.wait_secs + 30))
            .build()?,
        url: url.trim_end_matches('/').to_owned(),
        token,
        reporter: reporter.map(|r| r.trim_end_matches('/').to_owned()),
        reports: reports::ReportBuffer::new(
            args.report_buffer_dir
                .clone()
                .unwrap_or_else(|| args.state_dir.join("agent-reports")),
            args.report_buffer_bytes,
        )?,
    };
    // Reports a previous agent here kept (it crashed, or the reporter was down).
    flush_reports(&client).await;
    let mut done = 0u64;
    let mut failures = Duration::from_millis(200);
    loop {
        let mut claim = json!({ "max_tasks": 1, "wait_secs": args.wait_secs });
        if !args.kinds.is_empty() {
            claim["kinds"] = json!(args.kinds);
        }
        let (status, body) = match client.post("/v1/agents/claim", &claim).await {
            Ok(answer) => answer,
            Err(e) => {
                eprintln!("claim failed: {e:#}; retrying in {failures:?}");
                tokio::time::sleep(failures).await;
                failures = (failures * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        failures = Duration::from_millis(200);
        match status {
            200 => {}
            204 if args.exit_when_idle => {
                flush_reports(&client).await;
                return Ok(0);
            }
            204 => {
                // Idle: a good time for reports that waited.
                flush_reports(&client).await;
                continue;
            }
            401 | 403 => anyhow::bail!("the dispatcher refused this agent ({status}): {body}"),
            _ => {
                eprintln!("claim answered {status}: {body}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        for task in body["tasks"].as_array().cloned().unwrap_or_default() {
            work_on(&client, &args, &task).await?;
            done += 1;
        }
        if args.max_tasks.is_some_and(|max| done >= max) {
            flush_reports(&client).await;
            return Ok(0);
        }
    }
}

fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading the agent token from {}", path.display()))?
        .trim()
        .to_owned())
}

/// The agent's telemetry: its job spans exported to `--otlp-endpoint`, or,
/// for the local stack (no `--url`), to that stack's trace receiver.
pub fn telemetry(args: &AgentArgs) -> Option<rave_service::telemetry::TelemetryGuard> {
    let endpoint = args.otlp_endpoint.clone().or_else(|| {
        args.url
            .is_none()
            .then(|| StackFile::read(&args.state_dir).ok()?.otlp_endpoint)
            .flatten()
    })?;
    let settings = rave_service::settings::TelemetrySettings {
        otlp_endpoint: Some(endpoint),
        log_filter: "warn".into(),
        log_format: rave_service::settings::LogFormat::Pretty,
        ..Default::default()
    };
    rave_service::telemetry::init("ravectl-agent", &settings).ok()
}

async fn work_on(client: &Client, args: &AgentArgs, task: &Value) -> anyhow::Result<()> {
    let id = task["task_id"]
        .as_str()
        .context("a task without task_id")?
        .to_owned();
    let lease_token = task["lease_token"].clone();
    let expires = task["lease_expires_at"]
        .as_str()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .context("a task without lease_expires_at")?;
    let lease = (expires - OffsetDateTime::now_utc()).max(time::Duration::seconds(3));
    let beat_every = Duration::from_secs_f64(lease.as_seconds_f64() / 3.0);
    // The job's span continues the task's trace (webhook → store → task →
    // claim); its context goes with every call made for this job.
    let span = tracing::info_span!("agent.job", otel.name = "agent.job", task_id = %id, kind = %task["kind"]);
    let task_traceparent = task["traceparent"].as_str();
    if let Some(parent) = task_traceparent {
        rave_service::telemetry::set_remote_parent(&span, parent);
    }
    if let Ok(task_id) = rave_service::ids::TaskId::parse(id.clone()) {
        span.in_scope(|| rave_service::telemetry::record_task_id(&task_id));
    }
    let traceparent =
        rave_service::telemetry::traceparent_of(&span).or(task_traceparent.map(str::to_owned));
    let traceparent = traceparent.as_deref();
    println!(
        "claimed {id} ({}, attempt {})",
        task["kind"], task["attempt"]
    );

    let started_at = OffsetDateTime::now_utc();
    let clock = std::time::Instant::now();
    let job = run_job(args, task);
    tokio::pin!(job);
    // The first tick is at once: it acknowledges the claim, so a lease lost
    // from here on counts as an attempt (docs/agents.md).
    let mut ticker = tokio::time::interval(beat_every);
    let outcome = loop {
        tokio::select! {
            outcome = &mut job => break outcome,
            _ = ticker.tick() => {
                let beat = client
                    .post_traced(&format!("/v1/tasks/{id}/heartbeat"), &json!({ "lease_token": lease_token }), traceparent)
                    .await;
                match beat {
                    Ok((200, beat)) if beat["cancel_requested"] == true => {
                        break Outcome::Stopped(beat["cancel_reason"].as_str().unwrap_or("cancelled").to_owned());
                    }
                    Ok((200, _)) => {}
                    Ok((409 | 404, _)) => break Outcome::LeaseLost,
                    // A blip: the job goes on; the next beat may pass, and
                    // the lease outlasts two missed ones.
                    Ok((status, beat)) => eprintln!("heartbeat for {id} answered {status}: {beat}"),
                    Err(e) => eprintln!("heartbeat for {id} failed: {e:#}"),
                }
            }
        }
    };
    // Dropping the job future kills its command (kill_on_drop).
    let duration = clock.elapsed().as_secs_f64();
    let report = job_report(task, &outcome, started_at, duration);
    let (path, body) = match outcome {
        Outcome::Done(result) => (
            "complete",
            json!({ "lease_token": lease_token, "result": result }),
        ),
        Outcome::Failed { error, retryable } => (
            "fail",
            json!({ "lease_token": lease_token, "error": error, "retryable": retryable }),
        ),
        Outcome::Stopped(reason) => (
            "fail",
            json!({ "lease_token": lease_token, "error": format!("stopped: {reason}"), "retryable": false }),
        ),
        Outcome::LeaseLost => {
            println!("lost the lease on {id}; abandoning it");
            return Ok(());
        }
    };
    // The job's report is on disk before the result goes out: a crash from
    // here on loses neither (the next agent here sends the report).
    if let (Some(report), Some(_)) = (&report, &client.reporter)
        && let Err(e) = client.reports.keep(report, traceparent)
    {
        eprintln!("cannot keep the job report of {id}: {e:#}");
    }
    // The final report is retried until the dispatcher answers; repeats are safe.
    let mut wait = Duration::from_millis(200);
    loop {
        match client
            .post_traced(&format!("/v1/tasks/{id}/{path}"), &body, traceparent)
            .await
        {
            Ok((200, answer)) => {
                println!("{path} {id}: {answer}");
                flush_reports(client).await;
                return Ok(());
            }
            Ok((409 | 404, answer)) => {
                println!("{path} {id} refused: {answer}");
                return Ok(());
            }
            Ok((status, answer)) => eprintln!("{path} {id} answered {status}: {answer}"),
            Err(e) => eprintln!("{path} {id} failed: {e:#}"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// The job report for agent-reporter; none for an abandoned lease. A
/// command's JSON output may carry `tokens_input`, `tokens_output`, `cost`
/// and `metrics` ([{name, value, labels}]).
fn job_report(
    task: &Value,
    outcome: &Outcome,
    started_at: OffsetDateTime,
    duration: f64,
) -> Option<Value> {
    let (status, output) = match outcome {
        Outcome::Done(result) => ("succeeded", Some(result)),
        Outcome::Failed { .. } => ("failed", None),
        Outcome::Stopped(_) => ("cancelled", None),
        Outcome::LeaseLost => return None,
    };
    let mut report = json!({
        "task_id": task["task_id"],
        "kind": task["kind"],
        "status": status,
        "started_at": started_at.format(&Rfc3339).ok()?,
        "duration_seconds": duration,
    });
    if let Some(Value::Object(out)) = output {
        for field in ["tokens_input", "tokens_output", "cost", "metrics"] {
            if let Some(v) = out.get(field) {
                report[field] = v.clone();
            }
        }
    }
    Some(report)
}

/// Sends the reports that wait on disk, if any.
async fn flush_reports(client: &Client) {
    if let Some(reporter) = &client.reporter
        && !client.reports.is_empty()
    {
        client
            .reports
            .flush(&client.http, reporter, &client.token)
            .await;
    }
}

async fn run_job(args: &AgentArgs, task: &Value) -> Outcome {
    let Some(command) = &args.command else {
        tokio::time::sleep(Duration::from_millis(args.simulate_ms)).await;
        return Outcome::Done(json!({ "simulated": true, "ms": args.simulate_ms }));
    };
    let spawned = tokio::process::Command::new("sh")
        .args(["-c", command])
        .env("RAVE_TASK_ID", task["task_id"].as_str().unwrap_or_default())
        .env("RAVE_TASK_KIND", task["kind"].as_str().unwrap_or_default())
        .env(
            "TRACEPARENT",
            task["traceparent"].as_str().unwrap_or_default(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return Outcome::Failed {
                error: format!("cannot start the command: {e}"),
                retryable: false,
            };
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(task.to_string().as_bytes()).await;
    }
    let output = match child.wait_with_output().await {
        Ok(output) => output,
        Err(e) => {
            return Outcome::Failed {
                error: format!("the command failed: {e}"),
                retryable: true,
            };
        }
    };
    let tail = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let mut start = text.len().saturating_sub(4096);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_owned()
    };
    if output.status.success() {
        let stdout = tail(&output.stdout);
        Outcome::Done(serde_json::from_str(&stdout).unwrap_or(Value::String(stdout)))
    } else {
        // Exit status 65 (EX_DATAERR): the task itself is bad; do not retry.
        Outcome::Failed {
            error: format!("exit status {}: {}", output.status, tail(&output.stderr)),
            retryable: output.status.code() != Some(65),
        }
    }
}
