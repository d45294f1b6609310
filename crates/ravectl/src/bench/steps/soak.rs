//! Soak: a fixed rate for a long time with agents draining the queue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;

use super::{Webhooks, call, claim_request, complete_request, intake_verdict};
use crate::bench::load::{self, Pace};
use crate::bench::{Ctx, Step};

#[derive(Debug, Clone, Serialize)]
pub struct Soak {
    pub intake: Step,
    pub agents: usize,
    pub completed: u64,
    pub rss_after_warmup_mb: BTreeMap<String, f64>,
    pub rss_at_end_mb: BTreeMap<String, f64>,
    pub rss_max_mb: BTreeMap<String, f64>,
    /// End against after-warm-up, per RAVE service.
    pub rss_growth_percent: BTreeMap<String, f64>,
}

pub async fn soak(ctx: &Ctx) -> anyhow::Result<Soak> {
    let p = ctx.params.clone();
    let rate = *p
        .rates
        .first()
        .context("soak needs --rates R (half of a measured saturation)")?;
    let warmup = (p.duration() / 10).max(Duration::from_secs(1));
    let agents = p.agents.max(1);
    let token = ctx.secret("agent-dev.token")?;
    let host = ctx.public.host().to_owned();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let completed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut drains = Vec::new();
    for _ in 0..agents {
        let (target, token, host, stop, completed) = (
            ctx.public.clone(),
            token.clone(),
            host.clone(),
            stop.clone(),
            completed.clone(),
        );
        let batch = p.batch;
        drains.push(tokio::spawn(async move {
            let mut conn = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let claim = claim_request(&host, &token, batch, 1);
                let Ok((200, answer)) = call(&mut conn, &target, &claim).await else {
                    continue;
                };
                for task in answer["tasks"].as_array().cloned().unwrap_or_default() {
                    let done = complete_request(&host, &token, &task, json!(null));
                    if let Ok((200, _)) = call(&mut conn, &target, &done).await {
                        completed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // RSS of each RAVE service every 5 s.
    let pids: BTreeMap<String, u32> = ctx
        .components
        .iter()
        .filter(|(name, _)| crate::bench::is_rave_service(name))
        .map(|(name, pid)| (name.clone(), *pid))
        .collect();
    let watcher = {
        let (pids, stop) = (pids.clone(), stop.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let mut samples: Vec<(Duration, BTreeMap<String, f64>)> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                samples.push((
                    start.elapsed(),
                    pids.iter()
                        .map(|(n, pid)| (n.clone(), crate::bench::procs::rss_mb(*pid)))
                        .collect(),
                ));
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            samples.push((
                start.elapsed(),
                pids.iter()
                    .map(|(n, pid)| (n.clone(), crate::bench::procs::rss_mb(*pid)))
                    .collect(),
            ));
            samples
        })
    };
    let hooks = Webhooks::new(ctx, ctx.public.host())?;
    let (result, usage) = ctx
        .measured(load::run(
            &ctx.public,
            p.concurrency,
            p.duration(),
            Pace::Rate(rate),
            move |w, s| hooks.make(w, s + 40_000_000_000),
            intake_verdict,
        ))
        .await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for d in drains {
        d.await?;
    }
    let samples = watcher.await?;
    let after_warmup = samples
        .iter()
        .find(|(t, _)| *t >= warmup)
        .or(samples.last())
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    let at_end = samples.last().map(|(_, s)| s.clone()).unwrap_or_default();
    let mut max: BTreeMap<String, f64> = BTreeMap::new();
    for (_, sample) in &samples {
        for (n, v) in sample {
            let m = max.entry(n.clone()).or_default();
            *m = m.max(*v);
        }
    }
    let growth = pids
        .keys()
        .map(|n| {
            let (a, b) = (
                after_warmup.get(n).copied().unwrap_or(0.0),
                at_end.get(n).copied().unwrap_or(0.0),
            );
            (n.clone(), if a > 0.0 { (b - a) / a * 100.0 } else { 0.0 })
        })
        .collect();
    println!(
        "  {:.0} stored/s for {:.0} s, answers {:?}, p99 {:.2} ms",
        result.ok_per_sec(),
        result.elapsed_secs,
        result.counts,
        result.percentile_ms(0.99)
    );
    Ok(Soak {
        intake: Step::new("soak", Some(rate), p.concurrency, &result, usage),
        agents,
        completed: completed.load(std::sync::atomic::Ordering::Relaxed),
        rss_after_warmup_mb: after_warmup,
        rss_at_end_mb: at_end,
        rss_max_mb: max,
        rss_growth_percent: growth,
    })
}
