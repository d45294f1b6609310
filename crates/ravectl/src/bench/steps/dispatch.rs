//! Dispatch: simulated agents claiming in batches, heartbeating, and
//! ending each batch in their next claim.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use serde_json::json;

use super::{
    Webhooks, agent_request, answered_ok, call, claim_finishing, intake_verdict, results_request,
    succeeded,
};
use crate::bench::load::{self, Pace, histogram};
use crate::bench::{Ctx, Percentiles};

#[derive(Debug, Clone, Serialize)]
pub struct Dispatch {
    pub agents: usize,
    pub batch: usize,
    pub tasks_queued: u64,
    pub completed: u64,
    pub heartbeats: u64,
    pub claims: u64,
    pub elapsed_secs: f64,
    pub cycles_per_sec: f64,
    /// Each claim, heartbeat and completion call.
    pub call_latency_ms: Percentiles,
    pub usage: BTreeMap<String, crate::bench::procs::Usage>,
}

/// An agent's call over its own connection; (status, JSON body).
pub async fn dispatch(ctx: &Ctx) -> anyhow::Result<Dispatch> {
    let p = ctx.params.clone();
    // Feed the queue through the intake first (what is there already counts).
    let target_tasks = if p.smoke {
        100
    } else {
        (p.agents * p.batch * 40).max(5000) as u64
    };
    let hooks = Webhooks {
        duplicates: 0.0,
        ..Webhooks::new(ctx, ctx.public.host())?
    };
    let fed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let feeder = {
        let fed = fed.clone();
        move |w: usize, s: u64| {
            fed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            hooks.make(w, s + 20_000_000_000)
        }
    };
    let feed_time = Duration::from_secs_f64((target_tasks as f64 / 500.0).clamp(1.0, 60.0));
    let fed_result = load::run(
        &ctx.public,
        p.concurrency,
        feed_time,
        Pace::Rate(target_tasks as f64 / feed_time.as_secs_f64()),
        feeder,
        intake_verdict,
    )
    .await?;
    let tasks_queued = fed_result.ok;
    ctx.settle().await;
    // PostgreSQL's statements count the agents' work, not the feeding.
    crate::bench::statements::reset(ctx);

    let token = ctx.secret("agent-dev.token")?;
    let host = ctx.public.host().to_owned();
    let deadline = Instant::now() + p.duration().max(Duration::from_secs(5)) * 3;
    let started = Instant::now();
    let run = async {
        let mut agents = Vec::new();
        for _ in 0..p.agents {
            let (target, token, host) = (ctx.public.clone(), token.clone(), host.clone());
            let batch = p.batch;
            agents.push(tokio::spawn(async move {
                let mut conn = None;
                let mut latency = histogram();
                let (mut completed, mut heartbeats, mut claims) = (0u64, 0u64, 0u64);
                let mut last_done = Instant::now();
                let mut empty = 0;
                // Each claim first ends the previous batch's tasks: one call
                // per cycle, as a batching agent works.
                let mut finished: Vec<serde_json::Value> = Vec::new();
                while Instant::now() < deadline && empty < 2 {
                    let t = Instant::now();
                    let claim = claim_finishing(&host, &token, batch, 1, &finished);
                    let Ok((status, answer)) = call(&mut conn, &target, &claim).await else {
                        continue;
                    };
                    let _ = latency.record(t.elapsed().as_micros().max(1) as u64);
                    claims += 1;
                    if !finished.is_empty() {
                        completed += answered_ok(&answer["finished"]);
                        last_done = Instant::now();
                        finished.clear();
                    }
                    if status == 204 {
                        empty += 1;
                        continue;
                    }
                    if status != 200 {
                        bail!("claim answered {status}: {answer}");
                    }
                    let tasks = answer["tasks"].as_array().cloned().unwrap_or_default();
                    if tasks.is_empty() {
                        empty += 1;
                        continue;
                    }
                    empty = 0;
                    // One heartbeat per batch, as a working agent sends while busy.
                    if let Some(first) = tasks.first() {
                        let id = first["task_id"].as_str().unwrap_or_default();
                        let hb = agent_request(
                            &host,
                            &token,
                            &format!("/v1/tasks/{id}/heartbeat"),
                            &json!({"lease_token": first["lease_token"]}),
                        );
                        let t = Instant::now();
                        if let Ok((200, _)) = call(&mut conn, &target, &hb).await {
                            heartbeats += 1;
                        }
                        let _ = latency.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    finished = tasks
                        .iter()
                        .map(|t| succeeded(t, json!({"ok": true})))
                        .collect();
                }
                if !finished.is_empty() {
                    let t = Instant::now();
                    if let Ok((200, answer)) = call(
                        &mut conn,
                        &target,
                        &results_request(&host, &token, &finished),
                    )
                    .await
                    {
                        completed += answered_ok(&answer["results"]);
                        last_done = Instant::now();
                    }
                    let _ = latency.record(t.elapsed().as_micros().max(1) as u64);
                }
                Ok((completed, heartbeats, claims, last_done, latency))
            }));
        }
        let mut out = (0u64, 0u64, 0u64, started, histogram());
        for agent in agents {
            let (c, h, n, last, lat) = agent.await??;
            out.0 += c;
            out.1 += h;
            out.2 += n;
            out.3 = out.3.max(last);
            out.4.add(&lat)?;
        }
        Ok(out)
    };
    let ((completed, heartbeats, claims, last_done, latency), usage) = ctx.measured(run).await?;
    let elapsed = last_done.duration_since(started).as_secs_f64().max(1e-3);
    let cycles = completed as f64 / elapsed;
    println!("  {completed} tasks claimed and completed in {elapsed:.1} s: {cycles:.0}/s");
    Ok(Dispatch {
        agents: p.agents,
        batch: p.batch,
        tasks_queued,
        completed,
        heartbeats,
        claims,
        elapsed_secs: elapsed,
        cycles_per_sec: cycles,
        call_latency_ms: Percentiles::of(&latency),
        usage,
    })
}
