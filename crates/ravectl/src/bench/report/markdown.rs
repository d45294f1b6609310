//! The report's `summary.md`: each mode's figures, the CPU and tables, the
//! targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Report;

impl Report {
    pub(super) fn markdown(&self) -> String {
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
            md.push_str("## Intake through nginx (only durably stored answers count)\n\n| step | stored/s | p50 ms | p99 ms | p99.9 ms | answers | events per store call |");
            if let Some(c) = &self.ceilings {
                let _ = write!(md, " ÷ nginx 204 | ÷ PG single-row |");
                let _ = c;
            }
            md.push_str("\n|---|---|---|---|---|---|---|");
            if self.ceilings.is_some() {
                md.push_str("---|---|");
            }
            md.push('\n');
            for s in &self.intake {
                let _ = write!(
                    md,
                    "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
                    s.name,
                    s.ok_per_sec,
                    s.latency_ms.p50,
                    s.latency_ms.p99,
                    s.latency_ms.p999,
                    s.counts
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    s.events_per_store_call
                        .map_or_else(|| "—".to_owned(), |n| format!("{n:.1}"))
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
            tails(&mut md, &self.intake);
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
                "## Job reports\n\n**{:.0}/s** accepted, {} per call; p99 of a call {:.2} ms.\n",
                r.ok_per_sec, self.params.report_batch, r.latency_ms.p99
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
            md.push_str(&crate::bench::tables::markdown(&self.tables));
        }
        if !self.statements.is_empty() {
            md.push_str(&crate::bench::statements::markdown(&self.statements));
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
}

/// When each fixed-rate step's slow requests came: evenly, or in stalls.
fn tails(md: &mut String, steps: &[crate::bench::Step]) {
    let with: Vec<_> = steps
        .iter()
        .filter_map(|s| s.tail.as_ref().map(|t| (s, t)))
        .collect();
    if with.is_empty() {
        return;
    }
    md.push_str("### When the slow requests came\n\n");
    for (step, t) in with {
        let share = 100.0 * t.slow as f64 / (step.counts.values().sum::<u64>().max(1)) as f64;
        let largest = t
            .largest
            .iter()
            .map(|b| {
                format!(
                    "{} at {:.1}–{:.1} s (up to {:.0} ms)",
                    b.requests, b.from_secs, b.to_secs, b.max_ms
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let mut sorted = t.per_second.clone();
        sorted.sort_unstable();
        let seconds = if sorted.len() <= 60 {
            let each: Vec<String> = t.per_second.iter().map(usize::to_string).collect();
            each.join(" ")
        } else {
            format!(
                "min {}, median {}, max {}",
                sorted[0],
                sorted[sorted.len() / 2],
                sorted[sorted.len() - 1]
            )
        };
        let _ = writeln!(
            md,
            "- {} (from {} UTC): {} requests of {:.0} ms or more ({share:.2} %), in {} bursts (due within {} s of each other); the largest: {largest}. By second: {seconds}.",
            step.name,
            t.started_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            t.slow,
            t.threshold_ms,
            t.bursts,
            crate::bench::tail::GAP_SECS
        );
    }
    md.push('\n');
}
