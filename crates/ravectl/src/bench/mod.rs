//! `ravectl bench`: a running stack measured against ceilings measured on
//! the same machine in the same run, so the report's ratios mean something
//! on a shared machine where absolute numbers drift (docs/performance.md).

mod flame;
pub mod http;
pub mod load;
pub mod procs;
mod report;
pub mod statements;
mod steps;
pub mod tables;
pub mod tail;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::cli::{BenchArgs, BenchMode, BenchScheme};
use crate::stack::StackFile;
use http::Target;
use load::RunResult;
use procs::Usage;

pub use crate::stack::{RAVE_SERVICES, is_rave_service};

/// The knobs after `--smoke` has shrunk them.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub mode: BenchMode,
    pub smoke: bool,
    pub duration_secs: u64,
    pub concurrency: usize,
    pub scheme: BenchScheme,
    pub body_bytes: usize,
    pub duplicates: f64,
    pub rates: Vec<f64>,
    pub agents: usize,
    pub batch: usize,
    /// Job reports per call (1: one `POST /v1/reports` each).
    pub report_batch: usize,
    /// Events and finished tasks loaded before measuring.
    pub prefill: u64,
    /// Aged events the retention mode loads.
    pub retention_backlog: u64,
    /// Events the search mode loads.
    pub search_events: u64,
    pub flamegraph: bool,
}

impl Params {
    fn from(args: &BenchArgs) -> Self {
        let mut p = Self {
            mode: args.mode,
            smoke: args.smoke,
            duration_secs: args.duration_secs,
            concurrency: args.concurrency,
            scheme: args.scheme,
            body_bytes: args.body_bytes,
            duplicates: args.duplicates,
            rates: args.rates.clone(),
            agents: args.agents,
            batch: args.batch,
            report_batch: args.report_batch.max(1),
            prefill: args.prefill,
            retention_backlog: args.retention_backlog,
            search_events: args.search_events,
            flamegraph: args.flamegraph,
        };
        if args.smoke {
            p.duration_secs = p.duration_secs.min(2);
            p.concurrency = p.concurrency.min(4);
            p.agents = p.agents.min(4);
            p.batch = p.batch.min(5);
            p.report_batch = p.report_batch.min(5);
            p.prefill = p.prefill.min(1000);
            p.retention_backlog = p.retention_backlog.min(20_000);
            p.search_events = p.search_events.min(2_000);
            if p.rates.is_empty() {
                p.rates = vec![20.0];
            }
        }
        p
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }
}

/// One measured step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    /// Target rate, requests/s; none for closed-loop (saturation).
    pub rate: Option<f64>,
    pub concurrency: usize,
    pub elapsed_secs: f64,
    pub ok: u64,
    pub ok_per_sec: f64,
    pub counts: BTreeMap<String, u64>,
    pub latency_ms: Percentiles,
    /// CPU and peak RSS of each component during the step.
    pub usage: BTreeMap<String, Usage>,
    /// Intake: events ingest sent to dedup-store per batch call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_per_store_call: Option<f64>,
    /// Fixed rates: when the slow requests came (tail.rs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tail: Option<tail::Tail>,
}

impl Step {
    pub fn new(
        name: &str,
        rate: Option<f64>,
        concurrency: usize,
        r: &RunResult,
        usage: BTreeMap<String, Usage>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            rate,
            concurrency,
            elapsed_secs: r.elapsed_secs,
            ok: r.ok,
            ok_per_sec: r.ok_per_sec(),
            counts: r
                .counts
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            latency_ms: Percentiles::of(&r.latency),
            usage,
            events_per_store_call: None,
            // Closed loop, latency is the queue the load itself makes.
            tail: rate.and_then(|_| tail::of(&r.slow, load::SLOW_US, r.started_at)),
        }
    }
}

/// ingest's batch calls to dedup-store so far: (events, calls), summed
/// over its replicas.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreCalls(f64, f64);

impl StoreCalls {
    /// Events per call since `before`; none without a call.
    pub fn per_call_since(self, before: Self) -> Option<f64> {
        let calls = self.1 - before.1;
        (calls > 0.0).then(|| (self.0 - before.0) / calls)
    }
}

/// The local stack's supervisor (`ravectl up`), when it still runs.
fn supervisor_of(stack: &StackFile) -> Option<u32> {
    let pid = stack.supervisor_pid?;
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(pid)
}

/// What the bench needs from a running stack.
#[derive(Debug)]
pub struct Ctx {
    pub stack: StackFile,
    pub state_dir: PathBuf,
    pub public: Target,
    pub params: Params,
    pub run_id: String,
    /// name → root pid, sampled during each step.
    pub components: BTreeMap<String, u32>,
}

impl Ctx {
    pub fn secret(&self, name: &str) -> anyhow::Result<String> {
        self.stack.secret(name)
    }

    /// Waits (up to a minute) until dedup-store's replicas have relayed every
    /// event they stored, so one step's backlog does not run into the next step.
    pub async fn settle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            // Unreadable replicas count 0, so a stack that went away ends the wait.
            let sums = self
                .metric_sums(
                    "dedup-store",
                    &["dedup_events_relayed_total", "dedup_events_inserted_total"],
                )
                .await;
            if sums[0] >= sums[1] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Let the last batch's tasks settle too.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// ingest's `ingest_store_batch_size` so far (0 where unreadable: the
    /// figure is then missing from the report, never wrong).
    pub async fn store_calls(&self) -> StoreCalls {
        let sums = self
            .metric_sums(
                "ingest",
                &[
                    "ingest_store_batch_size_sum",
                    "ingest_store_batch_size_count",
                ],
            )
            .await;
        StoreCalls(sums[0], sums[1])
    }

    /// Each named unlabelled sample summed over every replica of `service`;
    /// a replica or sample that cannot be read counts 0.
    pub async fn metric_sums(&self, service: &str, names: &[&str]) -> Vec<f64> {
        let http = reqwest::Client::new();
        let mut totals = vec![0.0; names.len()];
        for url in self.stack.service_urls(service) {
            let Ok(text) = async {
                http.get(format!("{url}/metrics"))
                    .send()
                    .await?
                    .text()
                    .await
            }
            .await
            else {
                continue;
            };
            for (total, name) in totals.iter_mut().zip(names) {
                *total += metric_value(&text, name);
            }
        }
        totals
    }

    /// Runs `load` while sampling every component.
    pub async fn measured<F, T>(&self, load: F) -> anyhow::Result<(T, BTreeMap<String, Usage>)>
    where
        F: std::future::Future<Output = anyhow::Result<T>>,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let sampler = tokio::spawn(procs::sample(self.components.clone(), stopped));
        let result = load.await;
        let _ = stop.send(());
        let usage = sampler.await?;
        Ok((result?, usage))
    }
}

/// The tables after a step; a failure to read them is reported, not fatal.
fn table_snapshot(ctx: &Ctx, after: &str) -> Option<tables::Snapshot> {
    tables::snapshot(ctx, after)
        .inspect_err(|e| eprintln!("warning: no table figures after {after}: {e:#}"))
        .ok()
}

pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let params = Params::from(&args);
    if params.flamegraph {
        flame::check_tools()?;
    }
    let stack = StackFile::read(&args.state_dir)?;
    let public_url = stack
        .public_url
        .clone()
        .context("this stack has no nginx (public_url)")?;
    let public = Target::new(&public_url, stack.tls_cert.as_deref()).await?;
    let mut components: BTreeMap<String, u32> = stack
        .components
        .iter()
        .map(|(name, (pid, _))| (name.clone(), *pid))
        .collect();
    if let Some(pid) = std::fs::read_to_string(args.state_dir.join("pg/data/postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next()?.trim().parse().ok())
    {
        components.insert("postgres".into(), pid);
    }
    components.insert("load-generator".into(), std::process::id());
    // `ravectl up` itself: its trace receiver takes every service's spans.
    if let Some(pid) = supervisor_of(&stack) {
        components.insert("ravectl-up".into(), pid);
    }
    let ctx = Ctx {
        stack,
        state_dir: args.state_dir.clone(),
        public,
        params: params.clone(),
        run_id: crate::secrets::hex_token(4),
        components,
    };

    let mut report = report::Report::new(&params);
    report.replicas = ctx.stack.service_urls("ingest").len();
    report.idle_rss_mb = ctx
        .components
        .iter()
        .filter(|(name, _)| is_rave_service(name))
        .map(|(name, pid)| (name.clone(), procs::rss_mb(*pid)))
        .collect();
    if params.prefill > 0 {
        println!(
            "prefill: {} events and {} finished tasks ...",
            params.prefill, params.prefill
        );
        report.prefill_secs = Some(steps::prefill(&ctx, params.prefill)?);
        report.tables.extend(table_snapshot(&ctx, "prefill"));
    }
    let all = params.mode == BenchMode::All;
    if all || params.mode == BenchMode::Ceilings {
        println!("ceilings: nginx return 204, PostgreSQL single-row and 50-row inserts ...");
        report.ceilings = Some(steps::ceilings(&ctx).await?);
    }
    // Latency first: it needs an empty queue, which the intake fills.
    if all || params.mode == BenchMode::Latency {
        println!("latency: webhook 2xx to claim ...");
        let counting = statements::reset(&ctx);
        report.latency = Some(steps::latency(&ctx).await?);
        report
            .statements
            .extend(statements::read_if(&ctx, counting, "latency"));
        report.tables.extend(table_snapshot(&ctx, "latency"));
    }
    if all || params.mode == BenchMode::Intake {
        println!("intake: saturation, then fixed rates ...");
        let counting = statements::reset(&ctx);
        report.intake = steps::intake(&ctx).await?;
        report
            .statements
            .extend(statements::read_if(&ctx, counting, "intake"));
        let svg = ctx.state_dir.join(steps::FLAMEGRAPH);
        report.flamegraph_source = svg.is_file().then_some(svg);
        report.tables.extend(table_snapshot(&ctx, "intake"));
    }
    if all || params.mode == BenchMode::Dispatch {
        println!(
            "dispatch: {} agents claiming {} at a time ...",
            params.agents, params.batch
        );
        let counting = statements::reset(&ctx);
        report.dispatch = Some(steps::dispatch(&ctx).await?);
        report
            .statements
            .extend(statements::read_if(&ctx, counting, "dispatch"));
        report.tables.extend(table_snapshot(&ctx, "dispatch"));
    }
    if all || params.mode == BenchMode::Report {
        println!("report: job reports ...");
        let counting = statements::reset(&ctx);
        report.reports = Some(steps::reports(&ctx).await?);
        report
            .statements
            .extend(statements::read_if(&ctx, counting, "reports"));
        report.tables.extend(table_snapshot(&ctx, "reports"));
    }
    if all || params.mode == BenchMode::Retention {
        println!(
            "retention: {} aged events deleted while intake runs ...",
            params.retention_backlog
        );
        ctx.settle().await;
        let alone = report.saturation().map(|s| s.ok_per_sec);
        let retention = steps::retention(&ctx, params.retention_backlog, alone).await?;
        let alone = retention.intake_alone_per_sec;
        report.retention = Some(retention);
        report.tables.extend(table_snapshot(&ctx, "retention"));
        println!("erasure: an operator erases events while intake runs ...");
        report.erasure = Some(steps::erasure(&ctx, params.retention_backlog / 4, alone).await?);
        report.tables.extend(table_snapshot(&ctx, "erasure"));
    }
    if all || params.mode == BenchMode::Search {
        println!(
            "search: {} stored events with JSON bodies, searched ...",
            params.search_events
        );
        ctx.settle().await;
        report.search = Some(steps::search(&ctx, params.search_events).await?);
        report.tables.extend(table_snapshot(&ctx, "search"));
    }
    if params.mode == BenchMode::Soak {
        println!(
            "soak: {} s of intake with agents draining the queue ...",
            params.duration_secs
        );
        report.soak = Some(steps::soak(&ctx).await?);
        report.tables.extend(table_snapshot(&ctx, "soak"));
    }
    if all {
        println!("startup: time to ready for each service ...");
        report.ready_ms = steps::startup(&ctx).await?;
    }
    let dir = report.write(&args.out)?;
    println!("{}", std::fs::read_to_string(dir.join("summary.md"))?);
    println!("report: {}", dir.display());
    Ok(0)
}

/// One unlabelled sample's value in a Prometheus text exposition (0 if absent).
fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.split(' ').next() == Some(name))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}
