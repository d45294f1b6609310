//! PostgreSQL's time statement by statement during each bench mode, from
//! pg_stat_statements (`ravectl up --statement-stats`): which statements
//! the stack's CPU in PostgreSQL goes to, how many rows each call carries,
//! and whether a prepared statement is planned once or every call. Without
//! the extension the report simply has no such section.

use serde::Serialize;

use crate::bench::Ctx;

/// Statements kept per mode, by execution time.
const TOP: usize = 12;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Statement {
    /// The normalised text, whitespace collapsed, cut at 100 characters.
    pub query: String,
    pub calls: i64,
    /// Times planned: far fewer than calls for a prepared statement on its
    /// generic plan.
    pub plans: i64,
    pub rows: i64,
    pub exec_ms: f64,
    pub plan_ms: f64,
    pub wal_bytes: i64,
}

/// The statements of one mode, from its start to its end.
#[derive(Debug, Clone, Serialize)]
pub struct Statements {
    pub mode: String,
    pub statements: Vec<Statement>,
}

/// Starts counting afresh; false when the extension is not loaded. A
/// mode that first prepares its load (dispatch feeds its queue) resets
/// again when its measured part starts.
pub fn reset(ctx: &Ctx) -> bool {
    crate::bench::tables::postgres(ctx)
        .and_then(|pg| pg.psql_in("postgres", "SELECT pg_stat_statements_reset()"))
        .is_ok()
}

/// The statements since the last [`reset`], most execution time first.
pub fn read(ctx: &Ctx, mode: &str) -> anyhow::Result<Statements> {
    let pg = crate::bench::tables::postgres(ctx)?;
    let out = pg.psql_in(
        "postgres",
        &format!(
            "SELECT calls, plans, rows, total_exec_time, total_plan_time, wal_bytes,
                    left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
             FROM pg_stat_statements
             WHERE calls > 0 AND query NOT LIKE '%pg_stat_statements%'
             ORDER BY total_exec_time DESC LIMIT {TOP}"
        ),
    )?;
    Ok(Statements {
        mode: mode.to_owned(),
        statements: parse(&out)?,
    })
}

/// [`read`] when [`reset`] started counting (`counting`); a view that
/// cannot be read leaves the mode out of the report, never fails the run.
pub fn read_if(ctx: &Ctx, counting: bool, mode: &str) -> Option<Statements> {
    counting.then(|| read(ctx, mode).ok()).flatten()
}

fn parse(out: &str) -> anyhow::Result<Vec<Statement>> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            // The query is last and may itself hold '|'.
            let f: Vec<&str> = line.splitn(7, '|').collect();
            let [calls, plans, rows, exec, plan, wal, query] = f[..] else {
                anyhow::bail!("unexpected pg_stat_statements row: {line}");
            };
            let n = |s: &str| s.trim().parse::<i64>().unwrap_or(0);
            let ms = |s: &str| s.trim().parse::<f64>().unwrap_or(0.0);
            Ok(Statement {
                query: query.trim().to_owned(),
                calls: n(calls),
                plans: n(plans),
                rows: n(rows),
                exec_ms: ms(exec),
                plan_ms: ms(plan),
                wal_bytes: n(wal),
            })
        })
        .collect()
}

/// The report's section: one table per mode.
pub fn markdown(modes: &[Statements]) -> String {
    let mut md = String::from(
        "## PostgreSQL by statement\n\nFrom pg_stat_statements over each mode (`ravectl up --statement-stats`), most execution time first. Times are wall-clock inside PostgreSQL, waits for the CPU included.\n\n",
    );
    for mode in modes {
        md.push_str(&format!(
            "### {}\n\n| calls | plans | rows per call | exec ms | ms per call | plan ms | WAL MB | statement |\n|---|---|---|---|---|---|---|---|\n",
            mode.mode
        ));
        for s in &mode.statements {
            let calls = s.calls.max(1) as f64;
            md.push_str(&format!(
                "| {} | {} | {:.1} | {:.0} | {:.3} | {:.0} | {:.1} | `{}` |\n",
                s.calls,
                s.plans,
                s.rows as f64 / calls,
                s.exec_ms,
                s.exec_ms / calls,
                s.plan_ms,
                s.wal_bytes as f64 / 1_048_576.0,
                s.query.replace('|', "\\|").replace('`', "'"),
            ));
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_whose_query_holds_a_bar_keeps_all_of_it() {
        let rows = parse("12|3|120|4.5|0.25|2048|SELECT a || b FROM t\n").unwrap();
        assert_eq!(
            rows,
            vec![Statement {
                query: "SELECT a || b FROM t".into(),
                calls: 12,
                plans: 3,
                rows: 120,
                exec_ms: 4.5,
                plan_ms: 0.25,
                wal_bytes: 2048,
            }]
        );
        let md = markdown(&[Statements {
            mode: "intake".into(),
            statements: rows,
        }]);
        assert!(
            md.contains("| 12 | 3 | 10.0 | 4 | 0.375 | 0 | 0.0 | `SELECT a \\|\\| b FROM t` |")
        );
    }
}
