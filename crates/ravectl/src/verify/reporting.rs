//! Suite 7, reporting: the job report reaches the Pushgateway and Prometheus.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use serde_json::json;

use super::agents::DoneTask;
use super::{Ctx, eventually, expect};

/// Reports the task's job through nginx; it must reach the Pushgateway and
/// Prometheus.
pub(super) async fn reporting(ctx: &Ctx, task: Option<DoneTask>) -> anyhow::Result<String> {
    let task = task.context("no task to report (the agents suite failed)")?;
    let (task_id, kind) = (task.id, task.kind);
    let auth = (
        "authorization",
        format!("Bearer {}", ctx.secret("agent-dev.token")?),
    );
    let report = json!({
        "task_id": task_id, "kind": kind, "status": "succeeded",
        "started_at": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?,
        "duration_seconds": 0.5,
    });
    let mut headers = vec![auth, ("content-type", "application/json".into())];
    if let Some(parent) = task.traceparent {
        headers.push(("traceparent", parent));
    }
    let sent = ctx.https(
        "POST",
        "/v1/reports",
        &headers,
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
