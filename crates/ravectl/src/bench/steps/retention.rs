//! Retention under load: a backlog of events long past their age is
//! deleted by dedup-store's own retention while intake runs at saturation.
//! It reports the intake rate beside intake alone (the intake step's
//! saturation in `all`, measured first otherwise), how fast the backlog
//! went, and the CPU of both.

use std::time::Instant;

use serde::Serialize;

use super::{Webhooks, intake_verdict, load_events, saturate};
use crate::bench::{Ctx, Step};

/// The backlog's source: only the backlog is in it.
const SOURCE: &str = "aged";

#[derive(Debug, Clone, Serialize)]
pub struct RetentionRun {
    /// Events past their age before the step (stored 400 days ago).
    pub backlog: u64,
    /// Of them, deleted while intake ran, and per second.
    pub deleted: u64,
    pub deleted_per_sec: f64,
    /// Intake at saturation while retention deleted.
    pub intake: Step,
    /// Intake at saturation without retention in the same run, and the ratio.
    pub intake_alone_per_sec: Option<f64>,
    pub intake_ratio: Option<f64>,
}

/// Events deleted by retention so far, over every dedup-store replica.
async fn deleted_so_far(ctx: &Ctx) -> f64 {
    ctx.metric_sums("dedup-store", &["dedup_events_deleted_by_retention_total"])
        .await[0]
}

pub async fn retention(
    ctx: &Ctx,
    backlog: u64,
    intake_alone_per_sec: Option<f64>,
) -> anyhow::Result<RetentionRun> {
    let hooks = Webhooks::new(ctx, ctx.public.host())?;
    // Alone, this mode measures its own baseline first.
    let intake_alone_per_sec = match intake_alone_per_sec {
        Some(rate) => Some(rate),
        None => {
            let hooks = hooks.clone();
            let (alone, _) = saturate(
                ctx,
                move |w, s| hooks.make(w, s + 6_000_000_000),
                intake_verdict,
            )
            .await?;
            println!("  intake alone: {:.0} stored/s", alone.ok_per_sec());
            ctx.settle().await;
            Some(alone.ok_per_sec())
        }
    };
    let loading = Instant::now();
    load_events(ctx, SOURCE, "400 days", backlog)?;
    println!(
        "  {backlog} events stored 400 days ago, loaded in {:.0} s",
        loading.elapsed().as_secs_f64()
    );
    // Measure from the retention's first batch on (its next tick), so the
    // whole window has it at work.
    let idle = deleted_so_far(ctx).await;
    let deadline = Instant::now() + std::time::Duration::from_secs(90);
    while deleted_so_far(ctx).await <= idle && Instant::now() < deadline {
        // dedup-store's timer, in another process: nothing to wait on.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let before = deleted_so_far(ctx).await;
    let (result, usage) = saturate(
        ctx,
        move |w, s| hooks.make(w, s + 7_000_000_000),
        intake_verdict,
    )
    .await?;
    let deleted = (deleted_so_far(ctx).await - before).max(0.0) as u64;
    let intake = Step::new(
        "intake while retention deletes",
        None,
        ctx.params.concurrency,
        &result,
        usage,
    );
    let deleted_per_sec = deleted as f64 / intake.elapsed_secs.max(0.001);
    let intake_ratio = intake_alone_per_sec
        .filter(|alone| *alone > 0.0)
        .map(|alone| intake.ok_per_sec / alone);
    println!(
        "  intake {:.0} stored/s while {deleted} old events were deleted ({deleted_per_sec:.0}/s){}",
        intake.ok_per_sec,
        intake_ratio
            .map(|r| format!("; {:.2} of the intake step's saturation", r))
            .unwrap_or_default()
    );
    Ok(RetentionRun {
        backlog,
        deleted,
        deleted_per_sec,
        intake,
        intake_alone_per_sec,
        intake_ratio,
    })
}
