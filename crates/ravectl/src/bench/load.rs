//! The load generator: workers with one keep-alive connection each, either
//! closed-loop (as fast as answers come: saturation) or at a fixed rate.
//! At a fixed rate, latency is measured from when each request was *due*,
//! not when it was sent, so a stalled server cannot hide its stall
//! (coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::http::{Response, Target};

#[derive(Debug, Clone, Copy)]
pub enum Pace {
    Closed,
    /// Requests per second, over all workers.
    Rate(f64),
}

/// How a response counts: a label, and whether it is a success.
/// A response's label, and how many items it carried that succeeded (a
/// single call: 0 or 1).
pub type Verdict = (&'static str, u64);

/// A request this slow or slower (µs) is kept, with when it was due, to
/// show when the tail happens (the intake goal's p99).
pub const SLOW_US: u64 = 10_000;

/// Slow requests kept per worker at most: memory stays bounded however
/// slow a run is.
const MAX_SLOW_PER_WORKER: usize = 5_000;

#[derive(Debug)]
pub struct RunResult {
    pub elapsed_secs: f64,
    pub ok: u64,
    pub counts: BTreeMap<&'static str, u64>,
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
    /// Requests of [`SLOW_US`] or more: (seconds from the start at which
    /// each was due, latency µs), in no particular order.
    pub slow: Vec<(f64, u64)>,
    /// When the run started, to line its slow requests up with logs.
    pub started_at: time::OffsetDateTime,
}

impl RunResult {
    pub fn ok_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed_secs.max(1e-9)
    }

    pub fn percentile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

pub fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid bounds")
}

pub async fn run<M, C>(
    target: &Target,
    concurrency: usize,
    duration: Duration,
    pace: Pace,
    make: M,
    classify: C,
) -> anyhow::Result<RunResult>
where
    M: Fn(usize, u64) -> Vec<u8> + Send + Sync + 'static,
    C: Fn(&Response) -> Verdict + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let classify = Arc::new(classify);
    let start = Instant::now();
    let started_at = time::OffsetDateTime::now_utc();
    let deadline = start + duration;
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let target = target.clone();
        let make = make.clone();
        let classify = classify.clone();
        workers.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut slow = Vec::new();
            let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
            let mut ok = 0u64;
            let mut conn = None;
            let mut seq = 0u64;
            loop {
                let due = match pace {
                    Pace::Closed => Instant::now(),
                    Pace::Rate(rate) => {
                        start
                            + Duration::from_secs_f64(
                                (worker as f64 + (seq * concurrency as u64) as f64) / rate,
                            )
                    }
                };
                if due >= deadline {
                    break;
                }
                if let Pace::Rate(_) = pace {
                    tokio::time::sleep_until(due.into()).await;
                }
                let request = make(worker, seq);
                seq += 1;
                let mut failure = None;
                if conn.is_none() {
                    match target.connect().await {
                        Ok(c) => conn = Some(c),
                        Err(e) => failure = Some(e),
                    }
                }
                let answer = match (conn.as_mut(), failure) {
                    (Some(c), _) => c.send(&request).await,
                    (None, Some(e)) => Err(e.context("connecting")),
                    (None, None) => Err(anyhow::anyhow!("not connected")),
                };
                let elapsed = due.elapsed().as_micros().max(1) as u64;
                let _ = latency.record(elapsed.min(100_000_000));
                if elapsed >= SLOW_US && slow.len() < MAX_SLOW_PER_WORKER {
                    slow.push(((due - start).as_secs_f64(), elapsed));
                }
                match answer {
                    Ok(response) => {
                        let (label, succeeded) = classify(&response);
                        *counts.entry(label).or_default() += 1;
                        ok += succeeded;
                        if response.close {
                            conn = None;
                        }
                    }
                    Err(e) => {
                        if !counts.contains_key("connection_error") {
                            eprintln!("warning: {target:?}: {e:#}");
                        }
                        *counts.entry("connection_error").or_default() += 1;
                        conn = None;
                    }
                }
            }
            (latency, slow, counts, ok)
        }));
    }
    let mut latency = histogram();
    let mut slow = Vec::new();
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut ok = 0;
    for worker in workers {
        let (h, s, c, o) = worker.await?;
        latency.add(&h)?;
        slow.extend(s);
        for (k, v) in c {
            *counts.entry(k).or_default() += v;
        }
        ok += o;
    }
    Ok(RunResult {
        elapsed_secs: start
            .elapsed()
            .as_secs_f64()
            .min(duration.as_secs_f64() + 60.0),
        ok,
        counts,
        latency,
        slow,
        started_at,
    })
}
