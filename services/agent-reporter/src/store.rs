//! Aggregates in PostgreSQL: one row per series, updated in the report's
//! transaction, so nothing reported is lost to a restart or an outage.

use std::collections::BTreeMap;

use rave_pg::{GenericClient, Pool, Prepared};
use serde_json::Value;
use time::OffsetDateTime;

use crate::report::Report;

mod embedded {
    refinery::embed_migrations!("migrations");
}

const MIGRATION_LOCK: i64 = 0x7261_7665_7265_706f; // "ravrepo"

pub async fn migrate(pool: &Pool) -> anyhow::Result<()> {
    rave_pg::migrate(pool, embedded::migrations::runner(), MIGRATION_LOCK).await
}

/// `agent_job_duration_seconds` bucket bounds: agent jobs take seconds to hours.
pub const DURATION_BUCKETS: [f64; 11] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

/// One series increment: metric name, extra labels (beside agent and kind), amount.
pub type Sample = (String, BTreeMap<String, String>, f64);

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What one report adds to its agent's aggregates.
pub fn samples(report: &Report) -> Vec<Sample> {
    let d = report.duration_seconds;
    let mut out = vec![(
        "agent_jobs_total".to_owned(),
        labels(&[("status", report.status.as_str())]),
        1.0,
    )];
    for bound in DURATION_BUCKETS {
        let le = if bound.fract() == 0.0 {
            format!("{bound:.0}")
        } else {
            bound.to_string()
        };
        out.push((
            "agent_job_duration_seconds_bucket".into(),
            labels(&[("le", &le)]),
            if d <= bound { 1.0 } else { 0.0 },
        ));
    }
    out.push((
        "agent_job_duration_seconds_bucket".into(),
        labels(&[("le", "+Inf")]),
        1.0,
    ));
    out.push(("agent_job_duration_seconds_sum".into(), BTreeMap::new(), d));
    out.push((
        "agent_job_duration_seconds_count".into(),
        BTreeMap::new(),
        1.0,
    ));
    for (kind, tokens) in [
        ("input", report.tokens_input),
        ("output", report.tokens_output),
    ] {
        if let Some(n) = tokens {
            out.push((
                "agent_tokens_total".into(),
                labels(&[("type", kind)]),
                n as f64,
            ));
        }
    }
    if let Some(cost) = report.cost {
        out.push(("agent_cost_total".into(), BTreeMap::new(), cost));
    }
    for m in &report.metrics {
        out.push((
            format!("agent_custom_{}_total", m.name),
            m.labels.clone(),
            m.value,
        ));
    }
    out
}

/// A series as pushed: kind, name, extra labels, value.
pub type SeriesRow = (String, String, BTreeMap<String, String>, f64);

pub async fn group_series(
    client: &impl GenericClient,
    agent: &str,
) -> anyhow::Result<Vec<SeriesRow>> {
    let rows = client
        .query_prepared(
            "SELECT kind, name, labels, value FROM series WHERE agent = $1 ORDER BY name, kind, labels::text",
            &[&agent],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.get(0),
                r.get(1),
                serde_json::from_value(r.get::<_, Value>(2))?,
                r.get(3),
            ))
        })
        .collect()
}

/// The condition for a group to be pushed now: changed since its last push,
/// or not pushed for `$2` seconds (the Pushgateway may have restarted
/// without persistence).
const DUE: &str = "(version > pushed_version OR last_pushed_at IS NULL
                   OR last_pushed_at < $1::timestamptz - make_interval(secs => $2))";

/// Groups to push now (see [`DUE`]).
pub async fn due_groups(
    pool: &Pool,
    now: OffsetDateTime,
    interval: std::time::Duration,
) -> anyhow::Result<Vec<String>> {
    let client = pool.get().await?;
    let rows = client
        .query_prepared(
            &format!("SELECT agent FROM agent_groups WHERE {DUE} ORDER BY agent"),
            &[&now, &interval.as_secs_f64()],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Advisory-lock class of one agent's reports (the key is `hashtext(agent)`).
pub const REPORT_LOCK_CLASS: i32 = 0x7261_7672; // "ravr"

/// A group's push claim is free, or ran out (its pusher died).
const UNCLAIMED: &str = "(push_claimed_until IS NULL OR push_claimed_until <= $1::timestamptz)";

/// Claims the group for a push until `until`, if it is still due (another
/// replica may have pushed it since [`due_groups`]) and no other pusher
/// holds it: its version, or `None`. The claim is committed at once, so no
/// transaction is open during the push.
pub async fn claim_push(
    pool: &Pool,
    agent: &str,
    now: OffsetDateTime,
    interval: std::time::Duration,
    until: OffsetDateTime,
    pusher: &str,
) -> anyhow::Result<Option<i64>> {
    let client = pool.get().await?;
    Ok(client
        .query_opt_prepared(
            &format!(
                "UPDATE agent_groups SET push_claimed_until = $4, push_claimed_by = $5
                 WHERE agent = $3 AND {DUE} AND {UNCLAIMED} RETURNING version"
            ),
            &[&now, &interval.as_secs_f64(), &agent, &until, &pusher],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Claims a silent agent's group for its deletion (see [`claim_push`]).
pub async fn claim_silent(
    pool: &Pool,
    agent: &str,
    now: OffsetDateTime,
    before: OffsetDateTime,
    until: OffsetDateTime,
    pusher: &str,
) -> anyhow::Result<bool> {
    let client = pool.get().await?;
    Ok(client
        .execute_prepared(
            &format!(
                "UPDATE agent_groups SET push_claimed_until = $4, push_claimed_by = $5
                 WHERE agent = $2 AND last_report_at < $3 AND {UNCLAIMED}"
            ),
            &[&now, &agent, &before, &until, &pusher],
        )
        .await?
        == 1)
}

/// Ends `pusher`'s claim on the group, if it still holds it.
pub async fn release_claim(pool: &Pool, agent: &str, pusher: &str) -> anyhow::Result<()> {
    pool.get()
        .await?
        .execute_prepared(
            "UPDATE agent_groups SET push_claimed_until = NULL, push_claimed_by = NULL
             WHERE agent = $1 AND push_claimed_by = $2",
            &[&agent, &pusher],
        )
        .await?;
    Ok(())
}

/// Records a push of `version` and ends `pusher`'s claim.
pub async fn mark_pushed(
    pool: &Pool,
    agent: &str,
    version: i64,
    now: OffsetDateTime,
    pusher: &str,
) -> anyhow::Result<()> {
    pool.get()
        .await?
        .execute_prepared(
            "UPDATE agent_groups SET pushed_version = greatest(pushed_version, $2), last_pushed_at = $3,
                    last_push_error = NULL,
                    push_claimed_until = CASE WHEN push_claimed_by = $4 THEN NULL ELSE push_claimed_until END,
                    push_claimed_by = CASE WHEN push_claimed_by = $4 THEN NULL ELSE push_claimed_by END
             WHERE agent = $1",
            &[&agent, &version, &now, &pusher],
        )
        .await?;
    Ok(())
}

/// Records a failed push and ends `pusher`'s claim.
pub async fn mark_push_failed(
    pool: &Pool,
    agent: &str,
    error: &str,
    pusher: &str,
) -> anyhow::Result<()> {
    pool.get()
        .await?
        .execute_prepared(
            "UPDATE agent_groups SET last_push_error = $2,
                    push_claimed_until = CASE WHEN push_claimed_by = $3 THEN NULL ELSE push_claimed_until END,
                    push_claimed_by = CASE WHEN push_claimed_by = $3 THEN NULL ELSE push_claimed_by END
             WHERE agent = $1",
            &[&agent, &error, &pusher],
        )
        .await?;
    Ok(())
}

/// Agents that have not reported since `before`.
pub async fn silent_groups(pool: &Pool, before: OffsetDateTime) -> anyhow::Result<Vec<String>> {
    let client = pool.get().await?;
    let rows = client
        .query_prepared(
            "SELECT agent FROM agent_groups WHERE last_report_at < $1 ORDER BY agent",
            &[&before],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Forgets a silent agent's aggregates (its counters restart from zero if it
/// reports again, which Prometheus' rate() handles as a reset).
/// Only while `pusher` holds the group's claim and no report came since.
pub async fn forget_group(
    pool: &Pool,
    agent: &str,
    before: OffsetDateTime,
    pusher: &str,
) -> anyhow::Result<bool> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Under the reports' lock: a report arriving now waits, then starts a
    // fresh group, instead of losing its series to this delete.
    tx.execute_prepared(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&REPORT_LOCK_CLASS, &agent],
    )
    .await?;
    let gone = tx
        .execute_prepared(
            "DELETE FROM agent_groups WHERE agent = $1 AND last_report_at < $2 AND push_claimed_by = $3",
            &[&agent, &before, &pusher],
        )
        .await?;
    if gone == 1 {
        tx.execute_prepared("DELETE FROM series WHERE agent = $1", &[&agent])
            .await?;
    }
    tx.commit().await?;
    Ok(gone == 1)
}

pub async fn prune_reports(pool: &Pool, before: OffsetDateTime) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    Ok(client
        .execute_prepared("DELETE FROM reports WHERE received_at < $1", &[&before])
        .await?)
}

/// Groups not yet pushed since their last report, and how many reports wait.
/// What `/metrics` reports of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub unpushed_groups: i64,
    pub buffered_reports: i64,
    /// The newest report of any agent, while its group is kept.
    pub last_report_at: Option<OffsetDateTime>,
}

pub async fn backlog(pool: &Pool) -> anyhow::Result<Backlog> {
    let client = pool.get().await?;
    let row = client
        .query_one_prepared(
            "SELECT count(*) FILTER (WHERE version > pushed_version),
                    coalesce(sum(version - pushed_version) FILTER (WHERE version > pushed_version), 0)::int8,
                    max(last_report_at)
             FROM agent_groups",
            &[],
        )
        .await?;
    Ok(Backlog {
        unpushed_groups: row.get(0),
        buffered_reports: row.get(1),
        last_report_at: row.get(2),
    })
}
