//! The bench's report: `report.json` (every figure), `summary.md` (the
//! ratios against this run's ceilings and the targets) and `plot.svg`
//! (throughput against latency).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use super::steps::{Ceilings, Dispatch, Latency};

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

    fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# RAVE bench, {}\n", self.started_at.date());
        let _ = writeln!(
            md,
            "{} CPUs ({}), {:.1} GB, Linux {}. {} of each RAVE service. Mode `{:?}`{}, {} s per step, {} connections, {} bytes per body, {:.0} % duplicates.\n",
            m.cpus,
            m.cpu_model,
            m.memory_gb,
            m.kernel,
            if self.replicas > 1 {
                format!("{} replicas", self.replicas)
            } else {
                "One replica".to_owned()
            },
            self.params.mode,
            if self.params.smoke {
                " (smoke run: no targets apply)"
            } else {
                ""
            },
            self.params.duration_secs,
            self.params.concurrency,
            self.params.body_bytes,
            self.params.duplicates * 100.0
        );
        if let Some(c) = &self.ceilings {
            md.push_str("## Ceilings (same machine, same run, same concurrency)\n\n| ceiling | rate |\n|---|---|\n");
            let _ = writeln!(
                md,
                "| nginx `return 204` over TLS | {:.0}/s (p99 {:.2} ms) |",
                c.nginx_204.ok_per_sec, c.nginx_204.latency_ms.p99
            );
            let _ = writeln!(
                md,
                "| PostgreSQL single-row `INSERT ... ON CONFLICT DO NOTHING` (pgbench, {} clients) | {:.0}/s |",
                c.pg_clients, c.pg_single_row_per_sec
            );
            let _ = writeln!(
                md,
                "| PostgreSQL 50 rows per statement | {:.0} rows/s |\n",
                c.pg_50_rows_per_sec
            );
        }
        if !self.intake.is_empty() {
            md.push_str("## Intake through nginx (only durably stored answers count)\n\n| step | stored/s | p50 ms | p99 ms | p99.9 ms | answers |");
            if let Some(c) = &self.ceilings {
                let _ = write!(md, " ÷ nginx 204 | ÷ PG single-row |");
                let _ = c;
            }
            md.push_str("\n|---|---|---|---|---|---|");
            if self.ceilings.is_some() {
                md.push_str("---|---|");
            }
            md.push('\n');
            for s in &self.intake {
                let _ = write!(
                    md,
                    "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
                    s.name,
                    s.ok_per_sec,
                    s.latency_ms.p50,
                    s.latency_ms.p99,
                    s.latency_ms.p999,
                    s.counts
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if let Some(c) = &self.ceilings {
                    let _ = write!(
                        md,
                        " {:.2} | {:.2} |",
                        s.ok_per_sec / c.nginx_204.ok_per_sec.max(1e-9),
                        s.ok_per_sec / c.pg_single_row_per_sec.max(1e-9)
                    );
                }
                md.push('\n');
            }
            md.push('\n');
        }
        if let Some(d) = &self.dispatch {
            let _ = writeln!(
                md,
                "## Dispatch\n\n{} agents claiming {} at a time: {} tasks completed in {:.1} s, **{:.0} cycles/s** ({} claims, {} heartbeats); call p99 {:.2} ms.\n",
                d.agents,
                d.batch,
                d.completed,
                d.elapsed_secs,
                d.cycles_per_sec,
                d.claims,
                d.heartbeats,
                d.call_latency_ms.p99
            );
        }
        if let Some(l) = &self.latency {
            let _ = writeln!(
                md,
                "## Webhook 2xx → task claimed\n\n{} webhooks at {:.0}/s, {} waiting agents: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} matched).\n",
                l.sent,
                l.rate,
                l.waiting_agents,
                l.ack_to_claim_ms.p50,
                l.ack_to_claim_ms.p99,
                l.ack_to_claim_ms.max,
                l.matched
            );
        }
        if let Some(r) = &self.reports {
            let _ = writeln!(
                md,
                "## Job reports\n\n**{:.0}/s** accepted, p99 {:.2} ms.\n",
                r.ok_per_sec, r.latency_ms.p99
            );
        }
        if let Some(r) = &self.retention {
            let _ = writeln!(
                md,
                "## Retention under load\n\n{} events stored 400 days ago; while intake ran at saturation for {:.0} s, dedup-store's retention deleted **{}** of them (**{:.0}/s**) and intake stored **{:.0}/s**, p99 {:.2} ms{}.\n",
                r.backlog,
                r.intake.elapsed_secs,
                r.deleted,
                r.deleted_per_sec,
                r.intake.ok_per_sec,
                r.intake.latency_ms.p99,
                r.intake_ratio
                    .map(|x| format!(" (**{x:.2}** of the intake step's saturation)"))
                    .unwrap_or_default()
            );
        }
        if let Some(e) = &self.erasure {
            let _ = writeln!(
                md,
                "## Erasure under load\n\nAn operator erased {} of {} events by filter ({} calls of up to `limits.max_erase_per_call`, **{:.0}/s**) while intake ran at saturation for {:.0} s and stored **{:.0}/s**, p99 {:.2} ms{}.\n",
                e.erased,
                e.loaded,
                e.calls,
                e.erased_per_sec,
                e.intake.elapsed_secs,
                e.intake.ok_per_sec,
                e.intake.latency_ms.p99,
                e.intake_ratio
                    .map(|x| format!(" (**{x:.2}** of intake alone)"))
                    .unwrap_or_default()
            );
        }
        if let Some(s) = &self.search {
            md.push_str(&s.markdown());
        }
        if let Some(soak) = &self.soak {
            let _ = writeln!(
                md,
                "## Soak\n\n{:.0} s at {:.0}/s with {} agents draining the queue: {} stored, p99 {:.2} ms, answers {:?}; tasks completed {}.\n\n| service | RSS after warm-up MB | RSS at the end MB | max MB | growth |\n|---|---|---|---|---|",
                soak.intake.elapsed_secs,
                soak.intake.rate.unwrap_or(0.0),
                soak.agents,
                soak.intake.ok,
                soak.intake.latency_ms.p99,
                soak.intake.counts,
                soak.completed
            );
            for (name, growth) in &soak.rss_growth_percent {
                let _ = writeln!(
                    md,
                    "| {name} | {:.1} | {:.1} | {:.1} | {growth:+.1} % |",
                    soak.rss_after_warmup_mb[name], soak.rss_at_end_mb[name], soak.rss_max_mb[name]
                );
            }
            md.push('\n');
        }
        // CPU per component in the saturation step: where the time goes.
        if let Some(sat) = self.saturation() {
            md.push_str("## Where the CPU goes at intake saturation\n\n| component | CPU (cores) | peak RSS MB |\n|---|---|---|\n");
            let mut rows: Vec<_> = sat.usage.iter().collect();
            rows.sort_by(|a, b| b.1.cpu_cores.total_cmp(&a.1.cpu_cores));
            for (name, u) in &rows {
                let _ = writeln!(md, "| {name} | {:.2} | {:.1} |", u.cpu_cores, u.peak_rss_mb);
            }
            md.push('\n');
            // The bottleneck: the machine's cores, and who uses them.
            let used: f64 = rows.iter().map(|(_, u)| u.cpu_cores).sum();
            let mut by_kind: BTreeMap<&str, f64> = BTreeMap::new();
            for (name, u) in &rows {
                *by_kind.entry(crate::stack::service_of(name)).or_default() += u.cpu_cores;
            }
            if let Some((top, cores)) = by_kind.iter().max_by(|a, b| a.1.total_cmp(b.1)) {
                let _ = writeln!(
                    md,
                    "Bottleneck: the components used {used:.2} of the machine's {} cores ({:.0} %){}; the largest share is {top}'s, {cores:.2} cores ({:.0} %).\n",
                    self.machine.cpus,
                    used / self.machine.cpus.max(1) as f64 * 100.0,
                    if used >= 0.85 * self.machine.cpus as f64 {
                        ": the CPU is saturated, so more replicas on this machine cannot add throughput"
                    } else {
                        ""
                    },
                    cores / used.max(f64::EPSILON) * 100.0
                );
            }
        }
        if !self.cpu_per_item.is_empty() {
            md.push_str("## CPU per item\n\nCPU time of each component during the step, divided by the items it did (µs); the total is the stack's, without the load generator.\n\n| step | per | items | total µs | by component µs |\n|---|---|---|---|---|\n");
            for c in &self.cpu_per_item {
                let mut parts: Vec<(&String, &f64)> = c.by_component_us.iter().collect();
                parts.sort_by(|a, b| b.1.total_cmp(a.1));
                let parts: Vec<String> = parts
                    .iter()
                    .filter(|(_, us)| **us >= 0.5)
                    .map(|(name, us)| format!("{name} {us:.0}"))
                    .collect();
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | **{:.0}** | {} |",
                    c.step,
                    c.item,
                    c.items,
                    c.total_us,
                    parts.join(", ")
                );
            }
            md.push('\n');
        }
        if let Some(svg) = &self.flamegraph {
            let _ = writeln!(
                md,
                "Flame graph of the whole machine at intake saturation (`perf record -a -g`, drawn by inferno; each process is a root): [{svg}]({svg}).\n"
            );
        }
        if !self.tables.is_empty() {
            md.push_str(&super::tables::markdown(&self.tables));
        }
        if !self.targets.is_empty() {
            md.push_str("## Targets\n\n| target | measured | goal | met |\n|---|---|---|---|\n");
            for t in &self.targets {
                let met = if self.params.smoke {
                    "n/a (smoke)"
                } else if t.met {
                    "yes"
                } else {
                    "**no**"
                };
                let _ = writeln!(md, "| {} | {} | {} | {met} |", t.what, t.measured, t.goal);
            }
            md.push('\n');
        }
        if self.intake.len() > 1 {
            md.push_str("![throughput against latency](plot.svg)\n");
        }
        md
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
