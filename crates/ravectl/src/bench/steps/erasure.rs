//! Erasure under load: an operator erases events by filter, in rounds of
//! the most one request takes, through dedup-store's API, while intake runs
//! at saturation. The worst case of erasure on request: a bulk one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use super::{Webhooks, intake_verdict, load_events, saturate};
use crate::bench::{Ctx, Step};

/// The erased events' source: only they are in it.
const SOURCE: &str = "leaked";

#[derive(Debug, Clone, Serialize)]
pub struct ErasureRun {
    /// Events loaded to be erased (stored a day ago).
    pub loaded: u64,
    /// Erased while intake ran, how many calls, and per second.
    pub erased: u64,
    pub calls: u64,
    pub erased_per_sec: f64,
    /// Intake at saturation while the operator erased.
    pub intake: Step,
    pub intake_alone_per_sec: Option<f64>,
    pub intake_ratio: Option<f64>,
}

pub async fn erasure(
    ctx: &Ctx,
    loaded: u64,
    intake_alone_per_sec: Option<f64>,
) -> anyhow::Result<ErasureRun> {
    load_events(ctx, SOURCE, "1 day", loaded)?;
    ctx.settle().await;
    let token = ctx.secret("operator.token")?;
    let url = format!("{}/v1/events/erase", ctx.stack.store_url);
    let (stop, erased, calls) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let operator = {
        let (stop, erased, calls) = (stop.clone(), erased.clone(), calls.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let request = json!({
                "source": SOURCE, "stored_before": "2100-01-01T00:00:00Z",
                "reason": "bench: erasure under load", "requested_by": "ravectl bench",
                "dry_run": false,
            });
            while !stop.load(Ordering::Relaxed) {
                let Ok(answer) = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&request)
                    .send()
                    .await
                else {
                    continue;
                };
                let body: Value = answer.json().await.unwrap_or(Value::Null);
                let n = body["events"].as_array().map_or(0, Vec::len) as u64;
                calls.fetch_add(1, Ordering::Relaxed);
                erased.fetch_add(n, Ordering::Relaxed);
                if n == 0 {
                    return;
                }
            }
        })
    };
    let started = Instant::now();
    let hooks = Webhooks::new(ctx, ctx.public.host())?;
    let (result, usage) = saturate(
        ctx,
        move |w, s| hooks.make(w, s + 8_000_000_000),
        intake_verdict,
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let _ = operator.await;
    let intake = Step::new(
        "intake while an operator erases",
        None,
        ctx.params.concurrency,
        &result,
        usage,
    );
    let erased = erased.load(Ordering::Relaxed);
    let intake_ratio = intake_alone_per_sec
        .filter(|alone| *alone > 0.0)
        .map(|alone| intake.ok_per_sec / alone);
    println!(
        "  intake {:.0} stored/s while an operator erased {erased} events ({:.0}/s){}",
        intake.ok_per_sec,
        erased as f64 / elapsed.max(0.001),
        intake_ratio
            .map(|r| format!("; {r:.2} of intake alone"))
            .unwrap_or_default()
    );
    Ok(ErasureRun {
        loaded,
        erased,
        calls: calls.load(Ordering::Relaxed),
        erased_per_sec: erased as f64 / elapsed.max(0.001),
        intake,
        intake_alone_per_sec,
        intake_ratio,
    })
}
