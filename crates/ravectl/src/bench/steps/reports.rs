//! Reports: agents posting job reports to agent-reporter.

use serde_json::json;

use super::saturate;
use crate::bench::http::{Response, request};
use crate::bench::{Ctx, Step};

pub async fn reports(ctx: &Ctx) -> anyhow::Result<Step> {
    let p = &ctx.params;
    ctx.settle().await;
    let token = ctx.secret("agent-dev.token")?;
    let host = ctx.public.host().to_owned();
    let auth = format!("Bearer {token}");
    let run = ctx.run_id.clone();
    let make = move |worker: usize, seq: u64| {
        // A distinct task id per report: reports are idempotent per task.
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            format!("{run}-{worker}-{seq}").as_bytes(),
        );
        let task_id = hex::encode(&digest.as_ref()[..8]);
        let body = json!({
            "task_id": task_id, "kind": "webhook", "status": "succeeded",
            "started_at": "2026-11-27T10:00:00Z", "duration_seconds": 1.25,
            "tokens_input": 1200, "tokens_output": 90, "cost": 0.003,
        });
        request(
            "POST",
            &host,
            "/v1/reports",
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            body.to_string().as_bytes(),
        )
    };
    let verdict = |r: &Response| match r.status {
        200..=299 => ("accepted", true),
        429 => ("rate_limited", false),
        _ => ("error", false),
    };
    let (result, usage) = saturate(ctx, make, verdict).await?;
    println!(
        "  {:.0} reports/s accepted, p99 {:.1} ms",
        result.ok_per_sec(),
        result.percentile_ms(0.99)
    );
    Ok(Step::new("reports", None, p.concurrency, &result, usage))
}
