//! Suite 6, agents: a webhook's task claimed, heartbeated and completed by the dev agent.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;

use super::{Ctx, expect};

/// The task the agents suite completed, for the suites after it.
#[derive(Debug, Clone)]
pub(super) struct DoneTask {
    pub id: String,
    pub kind: String,
    /// The task's trace, as an agent continues it (`traceparent`).
    pub traceparent: Option<String>,
}

/// Sends a webhook, then claims, heartbeats and completes its task through
/// nginx as the dev agent, in the task's trace as an agent does.
pub(super) async fn agents(ctx: &Ctx) -> anyhow::Result<DoneTask> {
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
            let traceparent = task["traceparent"].as_str().map(str::to_owned);
            let mut headers = vec![auth.clone()];
            if let Some(parent) = &traceparent {
                headers.push(("traceparent", parent.clone()));
            }
            let beat = ctx.https(
                "POST",
                &format!("/v1/tasks/{id}/heartbeat"),
                &headers,
                lease.as_bytes(),
            )?;
            expect(&beat, 200, "heartbeat")?;
            let done = ctx.https(
                "POST",
                &format!("/v1/tasks/{id}/complete"),
                &headers,
                lease.as_bytes(),
            )?;
            expect(&done, 200, "complete")?;
            if id == ours {
                found = Some(DoneTask {
                    id,
                    kind: task["kind"].as_str().unwrap_or_default().to_owned(),
                    traceparent,
                });
            }
        }
        if let Some(found) = found {
            return Ok(found);
        }
    }
    bail!("task {ours} was never claimable within 60 s")
}
