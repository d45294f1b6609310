//! Work: a webhook's task claimed, heartbeated and completed by the dev
//! agent, and its job report pushed and scraped.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::json;

use super::{Ctx, eventually, expect};

/// Sends a webhook, then claims, heartbeats and completes its task through
/// nginx as the dev agent. Returns the task id and its kind.
pub(super) async fn agents(ctx: &Ctx) -> anyhow::Result<(String, String)> {
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
pub(super) async fn reporting(ctx: &Ctx, task: Option<(String, String)>) -> anyhow::Result<String> {
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
