//! Latency: from a webhook's 2xx to its task in a waiting agent's claim.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::{Webhooks, call, claim_request, complete_request, drain};
use crate::bench::load::histogram;
use crate::bench::{Ctx, Percentiles};

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub rate: f64,
    pub waiting_agents: usize,
    pub sent: u64,
    pub matched: u64,
    /// From the webhook's 2xx to the task arriving in a waiting claim.
    pub ack_to_claim_ms: Percentiles,
    pub usage: BTreeMap<String, crate::bench::procs::Usage>,
}

pub async fn latency(ctx: &Ctx) -> anyhow::Result<Latency> {
    let p = ctx.params.clone();
    let rate = if p.smoke { 20.0 } else { 200.0 };
    let waiting = p.agents.clamp(1, 8);
    let token = ctx.secret("agent-dev.token")?;
    let host = ctx.public.host().to_owned();
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let claimed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Tasks already queued would be claimed first: complete them before
    // measuring (bounded; the report says if the queue was not empty).
    ctx.settle().await;
    let drained = drain(ctx, &token).await?;
    if drained > 0 {
        println!("  completed {drained} tasks already queued before measuring");
    }
    let run = async {
        let mut agents = Vec::new();
        for _ in 0..waiting {
            let (target, token, host, claimed, stop) = (
                ctx.public.clone(),
                token.clone(),
                host.clone(),
                claimed.clone(),
                stop.clone(),
            );
            agents.push(tokio::spawn(async move {
                let mut conn = None;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let claim = claim_request(&host, &token, 1, 1);
                    let Ok((200, answer)) = call(&mut conn, &target, &claim).await else {
                        continue;
                    };
                    let now = Instant::now();
                    for task in answer["tasks"].as_array().cloned().unwrap_or_default() {
                        let id = task["task_id"].as_str().unwrap_or_default().to_owned();
                        claimed.lock().expect("lock").insert(id.clone(), now);
                        let done = complete_request(&host, &token, &task, json!(null));
                        let _ = call(&mut conn, &target, &done).await;
                    }
                }
            }));
        }
        // The sender: one webhook at a time per worker, at a fixed rate.
        let hooks = Webhooks {
            duplicates: 0.0,
            ..Webhooks::new(ctx, &host)?
        };
        let sender = {
            let acked = acked.clone();
            let target = ctx.public.clone();
            tokio::spawn(async move {
                let mut conn = None;
                let start = Instant::now();
                let mut sent = 0u64;
                for seq in 0.. {
                    let due = start + Duration::from_secs_f64(seq as f64 / rate);
                    if due > start + p.duration() {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    let raw = hooks.make(0, seq + 30_000_000_000);
                    if let Ok((status, answer)) = call(&mut conn, &target, &raw).await {
                        let now = Instant::now();
                        if status == 202
                            && let Some(id) = answer["task_id"].as_str()
                        {
                            acked.lock().expect("lock").insert(id.to_owned(), now);
                        }
                    }
                    sent += 1;
                }
                sent
            })
        };
        let sent = sender.await?;
        // Let the last tasks reach their agents.
        let grace = Instant::now() + Duration::from_secs(5);
        while Instant::now() < grace {
            let done = {
                let a = acked.lock().expect("lock");
                let c = claimed.lock().expect("lock");
                a.keys().all(|k| c.contains_key(k))
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for agent in agents {
            agent.await?;
        }
        anyhow::Ok(sent)
    };
    let (sent, usage) = ctx.measured(run).await?;
    let mut h = histogram();
    let mut matched = 0;
    let acked = acked.lock().expect("lock");
    let claimed = claimed.lock().expect("lock");
    for (id, ack) in acked.iter() {
        if let Some(claim) = claimed.get(id) {
            // A claim can return before the sender has read its 2xx: 0.
            let us = claim.saturating_duration_since(*ack).as_micros().max(1) as u64;
            let _ = h.record(us);
            matched += 1;
        }
    }
    let result = Latency {
        rate,
        waiting_agents: waiting,
        sent,
        matched,
        ack_to_claim_ms: Percentiles::of(&h),
        usage,
    };
    println!(
        "  {matched} of {sent}: p50 {:.2} ms, p99 {:.2} ms",
        result.ack_to_claim_ms.p50, result.ack_to_claim_ms.p99
    );
    Ok(result)
}
