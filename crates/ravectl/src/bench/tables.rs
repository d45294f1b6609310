//! The stack's tables after each bench step: size, live and dead tuples,
//! and how many updates were HOT (in place, no new index entries). A queue
//! that holds its rate as it grows keeps its hot tables small and their
//! dead tuples few; this is where the report shows whether it does.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::Serialize;

use crate::bench::Ctx;

/// The databases of a local stack (crates/ravectl/templates).
pub const DATABASES: [&str; 3] = ["rave_events", "rave_tasks", "rave_reports"];

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableStats {
    /// Heap, indexes and TOAST, bytes.
    pub total_bytes: i64,
    pub live_tuples: i64,
    pub dead_tuples: i64,
    pub updates: i64,
    pub hot_updates: i64,
}

/// `database.table` → its figures, after one step.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub after: String,
    pub tables: BTreeMap<String, TableStats>,
}

/// The stack's PostgreSQL, reached as its superuser over the state
/// directory's socket (as the ceilings step does).
pub fn postgres(ctx: &Ctx) -> anyhow::Result<crate::postgres::LocalPostgres> {
    let port: u16 = ctx
        .stack
        .postgres
        .rsplit(':')
        .next()
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .context("the stack's PostgreSQL port")?;
    crate::postgres::LocalPostgres::new(&ctx.state_dir, port)
}

/// Every user table of the stack's databases. The statistics collector
/// lags by up to a second; the figures are for comparing steps, not exact.
pub fn snapshot(ctx: &Ctx, after: &str) -> anyhow::Result<Snapshot> {
    let pg = postgres(ctx)?;
    let mut tables = BTreeMap::new();
    for db in DATABASES {
        let out = pg.psql_in(
            db,
            "SELECT relname, pg_total_relation_size(relid), n_live_tup, n_dead_tup, n_tup_upd, n_tup_hot_upd
             FROM pg_stat_user_tables WHERE relname NOT LIKE 'refinery%' ORDER BY relname",
        )?;
        for line in out.lines().filter(|l| !l.is_empty()) {
            let f: Vec<&str> = line.split('|').collect();
            let [name, total, live, dead, upd, hot] = f[..] else {
                anyhow::bail!("unexpected pg_stat_user_tables row: {line}");
            };
            let n = |s: &str| s.parse::<i64>().unwrap_or(0);
            tables.insert(
                format!("{db}.{name}"),
                TableStats {
                    total_bytes: n(total),
                    live_tuples: n(live),
                    dead_tuples: n(dead),
                    updates: n(upd),
                    hot_updates: n(hot),
                },
            );
        }
    }
    Ok(Snapshot {
        after: after.to_owned(),
        tables,
    })
}

/// The markdown table of every snapshot: one row per step and table.
pub fn markdown(snapshots: &[Snapshot]) -> String {
    let mut md = String::from(
        "## Tables after each step\n\nSizes include indexes and TOAST; updates and HOT updates count from the stack's start.\n\n| after | table | size MB | live | dead | updates | HOT |\n|---|---|---|---|---|---|---|\n",
    );
    for s in snapshots {
        for (name, t) in &s.tables {
            let hot = if t.updates > 0 {
                format!(
                    "{} ({:.0} %)",
                    t.hot_updates,
                    t.hot_updates as f64 / t.updates as f64 * 100.0
                )
            } else {
                "0".to_owned()
            };
            md.push_str(&format!(
                "| {} | {name} | {:.1} | {} | {} | {} | {hot} |\n",
                s.after,
                t.total_bytes as f64 / 1_048_576.0,
                t.live_tuples,
                t.dead_tuples,
                t.updates,
            ));
        }
    }
    md.push('\n');
    md
}
