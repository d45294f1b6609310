//! Reports: agents posting job reports to agent-reporter, `report_batch`
//! per call (`POST /v1/reports/batch`), or one per call when it is 1.

use serde_json::{Value, json};

use super::{answered_with, saturate};
use crate::bench::http::{Response, request};
use crate::bench::{Ctx, Step};

pub async fn reports(ctx: &Ctx) -> anyhow::Result<Step> {
    let p = &ctx.params;
    ctx.settle().await;
    let token = ctx.secret("agent-dev.token")?;
    let host = ctx.public.host().to_owned();
    let auth = format!("Bearer {token}");
    let run = ctx.run_id.clone();
    let per_call = p.report_batch;
    let make = move |worker: usize, seq: u64| {
        let reports: Vec<Value> = (0..per_call as u64)
            .map(|n| report(&run, worker, seq * per_call as u64 + n))
            .collect();
        let (path, body) = if per_call == 1 {
            ("/v1/reports", reports[0].to_string())
        } else {
            (
                "/v1/reports/batch",
                json!({ "reports": reports }).to_string(),
            )
        };
        request(
            "POST",
            &host,
            path,
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            body.as_bytes(),
        )
    };
    let verdict = move |r: &Response| match r.status {
        200 if per_call > 1 => ("batch", accepted_items(&r.body)),
        200..=299 => ("accepted", 1),
        429 => ("rate_limited", 0),
        _ => ("error", 0),
    };
    let (result, usage) = saturate(ctx, make, verdict).await?;
    println!(
        "  {:.0} reports/s accepted ({per_call} per call), p99 of a call {:.1} ms",
        result.ok_per_sec(),
        result.percentile_ms(0.99)
    );
    Ok(Step::new("reports", None, p.concurrency, &result, usage))
}

/// A job report with a distinct task id (reports are idempotent per task).
fn report(run: &str, worker: usize, n: u64) -> Value {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{run}-{worker}-{n}").as_bytes(),
    );
    json!({
        "task_id": hex::encode(&digest.as_ref()[..8]), "kind": "webhook",
        "status": "succeeded", "started_at": "2026-11-27T10:00:00Z",
        "duration_seconds": 1.25, "tokens_input": 1200, "tokens_output": 90, "cost": 0.003,
    })
}

/// The items of a batch's answer that were stored or already there.
fn accepted_items(body: &[u8]) -> u64 {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    answered_with(&answer["results"], &[202, 200])
}
