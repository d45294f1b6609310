//! Intake: signed webhooks through nginx, saturation then fixed rates.

use super::{Webhooks, intake_verdict, saturate};
use crate::bench::load::{self, Pace};
use crate::bench::{Ctx, Step};

/// Where `--flamegraph` leaves the saturation step's graph (in the state
/// directory; the report takes it from there).
pub const FLAMEGRAPH: &str = "bench-intake-flamegraph.svg";

pub async fn intake(ctx: &Ctx) -> anyhow::Result<Vec<Step>> {
    let p = &ctx.params;
    let _ = std::fs::remove_file(ctx.state_dir.join(FLAMEGRAPH));
    let recording = if p.flamegraph {
        Some(crate::bench::flame::start(&ctx.state_dir, p.duration_secs)?)
    } else {
        None
    };
    let hooks = Webhooks::new(ctx, ctx.public.host())?;
    let mut steps = Vec::new();
    let make = {
        let hooks = hooks.clone();
        move |w, s| hooks.make(w, s)
    };
    let calls = ctx.store_calls().await;
    let (saturation, usage) = saturate(ctx, make, intake_verdict).await?;
    let per_call = ctx.store_calls().await.per_call_since(calls);
    let rate = saturation.ok_per_sec();
    if let Some(recording) = recording {
        let title = format!("RAVE intake at saturation, {rate:.0} stored/s");
        recording.finish(&ctx.state_dir.join(FLAMEGRAPH), &title)?;
    }
    println!(
        "  saturation: {rate:.0} stored/s, p99 {:.1} ms",
        saturation.percentile_ms(0.99)
    );
    let mut step = Step::new("intake saturation", None, p.concurrency, &saturation, usage);
    step.events_per_store_call = per_call;
    steps.push(step);
    let rates = if p.rates.is_empty() {
        vec![rate * 0.25, rate * 0.5, rate * 0.75]
    } else {
        p.rates.clone()
    };
    for (step, target_rate) in rates.into_iter().enumerate() {
        // Each step sends deliveries of its own (only --duplicates repeat).
        let offset = (step as u64 + 1) * 1_000_000_000;
        if target_rate < 1.0 {
            continue;
        }
        ctx.settle().await;
        let hooks = hooks.clone();
        let calls = ctx.store_calls().await;
        let (result, usage) = ctx
            .measured(load::run(
                &ctx.public,
                p.concurrency,
                p.duration(),
                Pace::Rate(target_rate),
                move |w, s| hooks.make(w, s + offset),
                intake_verdict,
            ))
            .await?;
        println!(
            "  {target_rate:.0}/s: {:.0} stored/s, p50 {:.2} ms, p99 {:.2} ms",
            result.ok_per_sec(),
            result.percentile_ms(0.5),
            result.percentile_ms(0.99)
        );
        let mut step = Step::new(
            &format!("intake at {target_rate:.0}/s"),
            Some(target_rate),
            p.concurrency,
            &result,
            usage,
        );
        step.events_per_store_call = ctx.store_calls().await.per_call_since(calls);
        steps.push(step);
    }
    Ok(steps)
}
