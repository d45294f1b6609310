//! Aggregates in PostgreSQL: one row per series, updated in the report's
//! transaction, so nothing reported is lost to a restart or an outage.

use std::collections::BTreeMap;

use rave_pg::{GenericClient, Pool};
use rave_service::ids::AgentId;
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

/// What recording a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    /// The same agent reported this task run before (a retried call).
    Duplicate,
    /// It would take the agent past its series limit; nothing was recorded.
    TooManySeries,
}

/// Adds a report to its agent's aggregates, in one transaction.
pub async fn record(
    pool: &Pool,
    agent: &AgentId,
    report: &Report,
    now: OffsetDateTime,
    max_series: i64,
) -> anyhow::Result<Recorded> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let new_report = tx
        .execute(
            "INSERT INTO reports (agent, task_id, started_at, received_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[
                &agent.as_str(),
                &report.task_id.as_str(),
                &report.started_at,
                &now,
            ],
        )
        .await?;
    if new_report == 0 {
        tx.commit().await?;
        return Ok(Recorded::Duplicate);
    }
    let samples = samples(report);
    let names: Vec<&str> = samples.iter().map(|(n, _, _)| n.as_str()).collect();
    let label_sets: Vec<Value> = samples
        .iter()
        .map(|(_, l, _)| serde_json::to_value(l).unwrap_or_default())
        .collect();
    let values: Vec<f64> = samples.iter().map(|(_, _, v)| *v).collect();
    let kind = report.kind.as_str();
    let row = tx
        .query_one(
            "SELECT (SELECT count(*) FROM series WHERE agent = $1),
                    (SELECT count(*) FROM unnest($3::text[], $4::jsonb[]) AS k(name, labels)
                     WHERE NOT EXISTS (SELECT 1 FROM series s WHERE s.agent = $1 AND s.kind = $2
                                       AND s.name = k.name AND s.labels = k.labels))",
            &[&agent.as_str(), &kind, &names, &label_sets],
        )
        .await?;
    let (existing, added): (i64, i64) = (row.get(0), row.get(1));
    if existing + added > max_series {
        return Ok(Recorded::TooManySeries); // dropping `tx` rolls back
    }
    tx.execute(
        "INSERT INTO series (agent, kind, name, labels, value)
         SELECT $1, $2, s.name, s.labels, s.value
         FROM unnest($3::text[], $4::jsonb[], $5::float8[]) AS s(name, labels, value)
         ON CONFLICT (agent, kind, name, labels) DO UPDATE SET value = series.value + EXCLUDED.value",
        &[&agent.as_str(), &kind, &names, &label_sets, &values],
    )
    .await?;
    tx.execute(
        "INSERT INTO agent_groups (agent, last_report_at) VALUES ($1, $2)
         ON CONFLICT (agent) DO UPDATE SET last_report_at = greatest(agent_groups.last_report_at, $2),
                                           version = agent_groups.version + 1",
        &[&agent.as_str(), &now],
    )
    .await?;
    tx.commit().await?;
    Ok(Recorded::New)
}

/// A series as pushed: kind, name, extra labels, value.
pub type SeriesRow = (String, String, BTreeMap<String, String>, f64);

pub async fn group_series(
    client: &impl GenericClient,
    agent: &str,
) -> anyhow::Result<Vec<SeriesRow>> {
    let rows = client
        .query(
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
        .query(
            &format!("SELECT agent FROM agent_groups WHERE {DUE} ORDER BY agent"),
            &[&now, &interval.as_secs_f64()],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Advisory-lock class of agent groups (the key is `hashtext(agent)`).
pub const GROUP_LOCK_CLASS: i32 = 0x7261_7667; // "ravg"

/// Takes the group's lock for the rest of `tx`, unless another replica
/// holds it (then `false`: that replica is pushing or deleting the group).
/// Reads after this see everything the previous holder committed, so
/// pushes of one group never overtake each other.
pub async fn try_lock_group(tx: &impl GenericClient, agent: &str) -> anyhow::Result<bool> {
    Ok(tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1, hashtext($2))",
            &[&GROUP_LOCK_CLASS, &agent],
        )
        .await?
        .get(0))
}

/// The group's version if it is still due (checked again under its lock:
/// another replica may have pushed it since [`due_groups`]).
pub async fn due_version(
    tx: &impl GenericClient,
    agent: &str,
    now: OffsetDateTime,
    interval: std::time::Duration,
) -> anyhow::Result<Option<i64>> {
    Ok(tx
        .query_opt(
            &format!("SELECT version FROM agent_groups WHERE agent = $3 AND {DUE}"),
            &[&now, &interval.as_secs_f64(), &agent],
        )
        .await?
        .map(|r| r.get(0)))
}

pub async fn mark_pushed(
    tx: &impl GenericClient,
    agent: &str,
    version: i64,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    tx.execute(
        "UPDATE agent_groups SET pushed_version = greatest(pushed_version, $2), last_pushed_at = $3,
                last_push_error = NULL
         WHERE agent = $1",
        &[&agent, &version, &now],
    )
    .await?;
    Ok(())
}

pub async fn mark_push_failed(
    tx: &impl GenericClient,
    agent: &str,
    error: &str,
) -> anyhow::Result<()> {
    tx.execute(
        "UPDATE agent_groups SET last_push_error = $2 WHERE agent = $1",
        &[&agent, &error],
    )
    .await?;
    Ok(())
}

/// Agents that have not reported since `before`.
pub async fn silent_groups(pool: &Pool, before: OffsetDateTime) -> anyhow::Result<Vec<String>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT agent FROM agent_groups WHERE last_report_at < $1 ORDER BY agent",
            &[&before],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether the agent is still silent since `before` (checked under its lock).
pub async fn still_silent(
    tx: &impl GenericClient,
    agent: &str,
    before: OffsetDateTime,
) -> anyhow::Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM agent_groups WHERE agent = $1 AND last_report_at < $2",
            &[&agent, &before],
        )
        .await?
        .is_some())
}

/// Forgets a silent agent's aggregates (its counters restart from zero if it
/// reports again, which Prometheus' rate() handles as a reset).
pub async fn forget_group(
    tx: &impl GenericClient,
    agent: &str,
    before: OffsetDateTime,
) -> anyhow::Result<bool> {
    let gone = tx
        .execute(
            "DELETE FROM agent_groups WHERE agent = $1 AND last_report_at < $2",
            &[&agent, &before],
        )
        .await?;
    if gone == 1 {
        tx.execute("DELETE FROM series WHERE agent = $1", &[&agent])
            .await?;
    }
    Ok(gone == 1)
}

pub async fn prune_reports(pool: &Pool, before: OffsetDateTime) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    Ok(client
        .execute("DELETE FROM reports WHERE received_at < $1", &[&before])
        .await?)
}

/// Groups not yet pushed since their last report, and how many reports wait.
pub async fn backlog(pool: &Pool) -> anyhow::Result<(i64, i64)> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE version > pushed_version),
                    coalesce(sum(version - pushed_version) FILTER (WHERE version > pushed_version), 0)::int8
             FROM agent_groups",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
