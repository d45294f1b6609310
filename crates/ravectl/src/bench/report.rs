//! The bench's report: `report.json` (every figure), `summary.md` (the
//! ratios against this run's ceilings and the targets) and `plot.svg`
//! (throughput against latency).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use super::steps::{Ceilings, Dispatch, Latency};

mod markdown;
mod plot;
use super::{Params, Step, is_rave_service};

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub memory_gb: f64,
    pub kernel: String,
    pub cpu_model: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: time::OffsetDateTime,
    pub ravectl_version: &'static str,
    pub machine: Machine,
    pub params: Params,
    /// Replicas of each RAVE service in the stack measured.
    pub replicas: usize,
    pub ceilings: Option<Ceilings>,
    pub intake: Vec<Step>,
    pub dispatch: Option<Dispatch>,
    pub latency: Option<Latency>,
    pub reports: Option<Step>,
    pub soak: Option<super::steps::Soak>,
    pub retention: Option<super::steps::RetentionRun>,
    pub erasure: Option<super::steps::ErasureRun>,
    pub search: Option<super::steps::SearchRun>,
    /// RSS of each RAVE service before the load, MB.
    pub idle_rss_mb: BTreeMap<String, f64>,
    /// Exec to ready, ms.
    pub ready_ms: BTreeMap<String, f64>,
    /// The intake saturation's flame graph, beside the report.
    pub flamegraph: Option<String>,
    #[serde(skip)]
    pub flamegraph_source: Option<PathBuf>,
    /// Seconds the prefill took, when there was one.
    pub prefill_secs: Option<f64>,
    /// The stack's tables after each step.
    pub tables: Vec<super::tables::Snapshot>,
    /// PostgreSQL's statements during each mode, when counted.
    pub statements: Vec<super::statements::Statements>,
    /// CPU microseconds per item of each mode, by component.
    pub cpu_per_item: Vec<CpuPerItem>,
    /// Each target: the figure, the goal, met or not.
    pub targets: Vec<Target>,
}

/// CPU time per item of one step (`/proc`), for the whole stack and each
/// component; the load generator is listed but not in the total.
#[derive(Debug, Serialize)]
pub struct CpuPerItem {
    pub step: String,
    pub item: &'static str,
    pub items: u64,
    pub total_us: f64,
    pub by_component_us: BTreeMap<String, f64>,
}

impl CpuPerItem {
    fn of(
        step: &str,
        item: &'static str,
        items: u64,
        usage: &BTreeMap<String, super::procs::Usage>,
    ) -> Self {
        let per = |cpu: f64| cpu * 1e6 / items.max(1) as f64;
        let by_component_us: BTreeMap<String, f64> = usage
            .iter()
            .map(|(name, u)| (name.clone(), per(u.cpu_seconds)))
            .collect();
        let total_us = by_component_us
            .iter()
            .filter(|(name, _)| name.as_str() != "load-generator")
            .map(|(_, us)| us)
            .sum();
        Self {
            step: step.to_owned(),
            item,
            items,
            total_us,
            by_component_us,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub what: String,
    pub measured: String,
    pub goal: String,
    pub met: bool,
}

fn machine() -> Machine {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gb: kb / 1_048_576.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default(),
    }
}

impl Report {
    pub fn new(params: &Params) -> Self {
        Self {
            started_at: time::OffsetDateTime::now_utc(),
            ravectl_version: env!("CARGO_PKG_VERSION"),
            machine: machine(),
            params: params.clone(),
            replicas: 1,
            ceilings: None,
            intake: Vec::new(),
            dispatch: None,
            latency: None,
            reports: None,
            soak: None,
            retention: None,
            erasure: None,
            search: None,
            idle_rss_mb: BTreeMap::new(),
            ready_ms: BTreeMap::new(),
            flamegraph: None,
            flamegraph_source: None,
            prefill_secs: None,
            tables: Vec::new(),
            statements: Vec::new(),
            cpu_per_item: Vec::new(),
            targets: Vec::new(),
        }
    }

    pub(crate) fn saturation(&self) -> Option<&Step> {
        self.intake.iter().find(|s| s.rate.is_none())
    }

    /// The fixed-rate step closest to half the saturation rate.
    fn half_rate(&self) -> Option<&Step> {
        let half = self.saturation()?.ok_per_sec / 2.0;
        self.intake
            .iter()
            .filter(|s| s.rate.is_some())
            .min_by(|a, b| {
                let da = (a.rate.unwrap_or(0.0) - half).abs();
                let db = (b.rate.unwrap_or(0.0) - half).abs();
                da.total_cmp(&db)
            })
    }

    /// Peak RSS of each RAVE service over every step, MB.
    fn peak_rss(&self) -> BTreeMap<String, f64> {
        let mut usages: Vec<&BTreeMap<String, super::procs::Usage>> =
            self.intake.iter().map(|s| &s.usage).collect();
        usages.extend(self.dispatch.iter().map(|d| &d.usage));
        usages.extend(self.latency.iter().map(|l| &l.usage));
        usages.extend(self.reports.iter().map(|r| &r.usage));
        let mut peak = BTreeMap::new();
        for usage in usages {
            for (name, u) in usage.iter().filter(|(name, _)| is_rave_service(name)) {
                let p: &mut f64 = peak.entry(name.clone()).or_default();
                *p = p.max(u.peak_rss_mb);
            }
        }
        peak
    }

    /// CPU per item of each mode's main step.
    fn cpu_figures(&self) -> Vec<CpuPerItem> {
        let mut out = Vec::new();
        if let Some(sat) = self.saturation() {
            out.push(CpuPerItem::of("intake", "stored event", sat.ok, &sat.usage));
        }
        if let Some(d) = &self.dispatch {
            out.push(CpuPerItem::of(
                "dispatch",
                "claim-and-complete cycle",
                d.completed,
                &d.usage,
            ));
        }
        if let Some(r) = &self.reports {
            out.push(CpuPerItem::of("reports", "accepted report", r.ok, &r.usage));
        }
        out
    }

    fn evaluate(&mut self) {
        self.cpu_per_item = self.cpu_figures();
        let mut t = Vec::new();
        let mut add = |what: &str, measured: String, goal: &str, met: bool| {
            t.push(Target {
                what: what.into(),
                measured,
                goal: goal.into(),
                met,
            })
        };
        let single = self
            .ceilings
            .as_ref()
            .map(|c| c.pg_single_row_per_sec.max(1e-9));
        if let (Some(sat), Some(single)) = (self.saturation(), single) {
            let ratio = sat.ok_per_sec / single;
            add(
                "intake at saturation ÷ PostgreSQL single-row inserts",
                format!("{:.0}/s ÷ {single:.0}/s = {ratio:.2}", sat.ok_per_sec),
                "≥ 0.5",
                ratio >= 0.5,
            );
        }
        if let Some(cpu) = self.cpu_per_item.iter().find(|c| c.step == "intake") {
            add(
                "CPU per stored event, whole stack",
                format!("{:.0} µs", cpu.total_us),
                "≤ 160 µs",
                cpu.total_us <= 160.0,
            );
        }
        if let Some(half) = self.half_rate() {
            add(
                "intake p99 at half saturation",
                format!(
                    "{:.2} ms at {:.0}/s",
                    half.latency_ms.p99,
                    half.rate.unwrap_or(0.0)
                ),
                "≤ 10 ms",
                half.latency_ms.p99 <= 10.0,
            );
        }
        if let Some(l) = &self.latency {
            add(
                "webhook 2xx → task claimed, p99",
                format!(
                    "{:.2} ms ({} of {} matched)",
                    l.ack_to_claim_ms.p99, l.matched, l.sent
                ),
                "≤ 20 ms",
                l.matched > 0 && l.ack_to_claim_ms.p99 <= 20.0,
            );
        }
        if let (Some(d), Some(single)) = (&self.dispatch, single) {
            let ratio = d.cycles_per_sec / single;
            add(
                &format!(
                    "claim-and-complete cycles ({} agents × {}) ÷ PostgreSQL single-row inserts",
                    d.agents, d.batch
                ),
                format!("{:.0}/s ÷ {single:.0}/s = {ratio:.2}", d.cycles_per_sec),
                "≥ 1.0",
                ratio >= 1.0,
            );
        }
        if let (Some(r), Some(single)) = (&self.reports, single) {
            let ratio = r.ok_per_sec / single;
            add(
                "job reports accepted ÷ PostgreSQL single-row inserts",
                format!("{:.0}/s ÷ {single:.0}/s = {ratio:.2}", r.ok_per_sec),
                "≥ 0.5",
                ratio >= 0.5,
            );
        }
        if let Some(soak) = &self.soak {
            let errors: u64 = soak
                .intake
                .counts
                .iter()
                .filter(|(k, _)| !["accepted", "duplicate"].contains(&k.as_str()))
                .map(|(_, v)| v)
                .sum();
            add(
                &format!(
                    "soak: {} s at {:.0}/s, answers other than stored",
                    soak.intake.elapsed_secs.round(),
                    soak.intake.rate.unwrap_or(0.0)
                ),
                errors.to_string(),
                "0",
                errors == 0,
            );
            for (name, growth) in &soak.rss_growth_percent {
                add(
                    &format!("soak: {name} RSS growth after warm-up"),
                    format!("{growth:+.1} %"),
                    "< 10 %",
                    *growth < 10.0,
                );
            }
        }
        for (name, mb) in self.peak_rss() {
            add(
                &format!("{name} peak RSS under load"),
                format!("{mb:.1} MB"),
                "≤ 32 MB",
                mb <= 32.0,
            );
        }
        for (name, mb) in &self.idle_rss_mb {
            add(
                &format!("{name} RSS idle"),
                format!("{mb:.1} MB"),
                "≤ 16 MB",
                *mb <= 16.0,
            );
        }
        for (name, ms) in &self.ready_ms {
            add(
                &format!("{name} ready after start"),
                format!("{ms:.0} ms"),
                "≤ 300 ms",
                *ms <= 300.0,
            );
        }
        self.targets = t;
    }

    /// Writes `<out>/<date>/{report.json, summary.md, plot.svg}`.
    pub fn write(&mut self, out: &Path) -> anyhow::Result<PathBuf> {
        self.evaluate();
        let dir = out.join(self.started_at.date().to_string());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Some(svg) = self.flamegraph_source.take() {
            let name = "intake-flamegraph.svg";
            std::fs::rename(&svg, dir.join(name))
                .or_else(|_| std::fs::copy(&svg, dir.join(name)).map(|_| ()))?;
            self.flamegraph = Some(name.to_owned());
        }
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        if self.intake.len() > 1 {
            self.plot(&dir.join("plot.svg"))?;
        }
        std::fs::write(dir.join("summary.md"), self.markdown())?;
        Ok(dir)
    }
}
