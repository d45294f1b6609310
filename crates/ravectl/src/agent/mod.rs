//! `ravectl agent`: the reference agent. It claims tasks (long poll, up to
//! `--parallel` at once), acknowledges each at once with a heartbeat, runs
//! a command per task (the task JSON on stdin) or a simulated job,
//! heartbeats at a third of the lease, and completes or fails the batch's
//! tasks in one call. It stops a job whose task was
//! cancelled or superseded, and abandons one whose lease was lost (another
//! agent owns it now). Network errors are waited out, never fatal: results
//! are retried until answered, and job reports wait on disk
//! ([`reports::ReportBuffer`]) until agent-reporter takes them.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::cli::AgentArgs;
use crate::stack::StackFile;

mod job;
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
        let left = args
            .max_tasks
            .map_or(u64::MAX, |max| max.saturating_sub(done));
        let mut claim =
            json!({ "max_tasks": args.parallel.min(left).max(1), "wait_secs": args.wait_secs });
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
        // The batch's jobs run side by side; their ends go out in one call.
        let tasks = body["tasks"].as_array().cloned().unwrap_or_default();
        let jobs = tasks.iter().map(|task| job::work_on(&client, &args, task));
        let mut finished = Vec::new();
        for ended in futures_util::future::join_all(jobs).await {
            finished.extend(ended?);
        }
        done += tasks.len() as u64;
        finish(&client, &finished).await;
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

/// Ends the attempts of `finished` in one `/v1/agents/results` call,
/// retried until the dispatcher answers (repeats are safe: each item is
/// idempotent on its lease token), then sends waiting job reports.
async fn finish(client: &Client, finished: &[job::Finished]) {
    if finished.is_empty() {
        return;
    }
    let items: Vec<&Value> = finished.iter().map(|f| &f.item).collect();
    let body = json!({ "results": items });
    let mut wait = Duration::from_millis(200);
    loop {
        match client.post("/v1/agents/results", &body).await {
            Ok((200, answer)) => {
                let answers = answer["results"].as_array().cloned().unwrap_or_default();
                for (f, a) in finished.iter().zip(&answers) {
                    let verb = if f.item["outcome"] == "succeeded" {
                        "complete"
                    } else {
                        "fail"
                    };
                    if a["status"] == 200 {
                        println!("{verb} {}: {a}", f.id);
                    } else {
                        println!("{verb} {} refused: {a}", f.id);
                    }
                }
                flush_reports(client).await;
                return;
            }
            Ok((status, answer)) => eprintln!("results answered {status}: {answer}"),
            Err(e) => eprintln!("results failed: {e:#}"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
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
