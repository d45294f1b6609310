//! One claimed task's job: its span, its heartbeats, the command (or a
//! simulated job), and the item that ends its attempt.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::AsyncWriteExt as _;

use super::Client;
use crate::cli::AgentArgs;

/// A job's end, as an item of `/v1/agents/results`.
#[derive(Debug)]
pub(super) struct Finished {
    pub id: String,
    pub item: Value,
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

/// Runs one claimed task's job, heartbeating its lease, and says how it
/// ended (none when the lease was lost: another agent owns the task now).
pub(super) async fn work_on(
    client: &Client,
    args: &AgentArgs,
    task: &Value,
) -> anyhow::Result<Option<Finished>> {
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
    let item = match outcome {
        Outcome::Done(result) => json!({
            "task_id": id, "lease_token": lease_token, "outcome": "succeeded", "result": result,
        }),
        Outcome::Failed { error, retryable } => json!({
            "task_id": id, "lease_token": lease_token, "outcome": "failed",
            "error": error, "retryable": retryable,
        }),
        Outcome::Stopped(reason) => json!({
            "task_id": id, "lease_token": lease_token, "outcome": "failed",
            "error": format!("stopped: {reason}"), "retryable": false,
        }),
        Outcome::LeaseLost => {
            println!("lost the lease on {id}; abandoning it");
            return Ok(None);
        }
    };
    // The job's report is on disk before the result goes out: a crash from
    // here on loses neither (the next agent here sends the report).
    if let (Some(report), Some(_)) = (&report, &client.reporter)
        && let Err(e) = client.reports.keep(report, traceparent)
    {
        eprintln!("cannot keep the job report of {id}: {e:#}");
    }
    let mut item = item;
    if let Some(tp) = traceparent {
        item["traceparent"] = json!(tp);
    }
    Ok(Some(Finished { id, item }))
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
