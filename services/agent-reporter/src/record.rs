//! Reports group-committed: reports arriving together, from any agents,
//! are recorded in one transaction (rave_service::batch), each with its own
//! answer, as dedup-store commits events. A report PostgreSQL refuses for
//! what it carries never fails the others (rave_service::isolate).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rave_pg::{Pool, Prepared};
use rave_service::batch::{BatchMetrics, BatchSettings, Batcher, Handler, Writers};
use rave_service::ids::AgentId;
use time::OffsetDateTime;

use crate::report::Report;
use crate::store::{REPORT_LOCK_CLASS, samples};

/// A report on its way in.
#[derive(Debug, Clone)]
pub struct Pending {
    pub agent: AgentId,
    pub report: Report,
    pub now: OffsetDateTime,
    /// The request's size: what the report holds in memory, about.
    pub bytes: usize,
}

/// What recording a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    /// The same agent reported this task run before (a retried call).
    Duplicate,
    /// It would take the agent past its series limit; nothing was recorded.
    TooManySeries,
    /// PostgreSQL refused a value it carries; nothing was recorded.
    Unstorable,
}

pub type Recorder = Batcher<Pending, Recorded>;

/// Starts the writers that commit reports in batches.
pub fn start(
    pool: Pool,
    settings: &BatchSettings,
    max_series: i64,
    metrics: BatchMetrics,
) -> (Recorder, Writers) {
    let handler: Handler<Pending, Recorded> = Arc::new(move |items| {
        let pool = pool.clone();
        Box::pin(async move { record_isolated(&pool, &items, max_series).await })
    });
    Batcher::start_sized(settings, handler, metrics, |p: &Pending| p.bytes)
}

/// [`record_batch`], split by rave_service::isolate when PostgreSQL refuses
/// a batch for its content: the reports at fault are `Unstorable`.
async fn record_isolated(
    pool: &Pool,
    items: &[Pending],
    max_series: i64,
) -> anyhow::Result<Vec<Recorded>> {
    type Numbered = Vec<(usize, Recorded)>;
    let run = rave_service::isolate::runner(|part: &[(usize, &Pending)]| {
        let pool = pool.clone();
        Box::pin(async move {
            let reports: Vec<&Pending> = part.iter().map(|(_, p)| *p).collect();
            let recorded = record_batch(&pool, &reports, max_series).await?;
            Ok::<Numbered, _>(part.iter().map(|(n, _)| *n).zip(recorded).collect())
        })
    });
    fn concat(mut a: Numbered, b: Numbered) -> Numbered {
        a.extend(b);
        a
    }
    let numbered: Vec<(usize, &Pending)> = items.iter().enumerate().collect();
    let out =
        rave_service::isolate::isolate(&numbered, &run, concat, rave_pg::is_content_error).await?;
    let mut recorded = vec![Recorded::Unstorable; items.len()];
    for (n, r) in out.done.unwrap_or_default() {
        recorded[n] = r;
    }
    for (n, error) in out.set_aside {
        tracing::warn!(task_id = %items[n].report.task_id, error = %format!("{error:#}"), "report refused: PostgreSQL cannot store it");
    }
    Ok(recorded)
}

/// A series: (agent, kind, metric name, labels as canonical JSON text).
type SeriesKey = (String, String, String, String);
type ReportKey = (String, String, OffsetDateTime);

/// Records `items` in one transaction; one outcome per item, in order.
/// Each agent's series limit is checked report by report, in order, as if
/// the reports had come one at a time.
pub async fn record_batch(
    pool: &Pool,
    items: &[&Pending],
    max_series: i64,
) -> anyhow::Result<Vec<Recorded>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let agents: Vec<&str> = items.iter().map(|p| p.agent.as_str()).collect();
    // The reports of one agent take turns (on every replica), so two
    // batches cannot each see room under its series limit and pass it
    // together. Locks are taken in key order: batches cannot deadlock.
    tx.execute_prepared(
        "SELECT pg_advisory_xact_lock($1, h)
         FROM (SELECT DISTINCT hashtext(a) AS h FROM unnest($2::text[]) AS a ORDER BY h) s",
        &[&REPORT_LOCK_CLASS, &agents],
    )
    .await?;

    let task_ids: Vec<&str> = items.iter().map(|p| p.report.task_id.as_str()).collect();
    let started: Vec<OffsetDateTime> = items.iter().map(|p| p.report.started_at).collect();
    let known: HashSet<ReportKey> = tx
        .query_prepared(
            "SELECT r.agent, r.task_id, r.started_at FROM reports r
             JOIN unnest($1::text[], $2::text[], $3::timestamptz[]) AS k(agent, task_id, started_at)
               USING (agent, task_id, started_at)",
            &[&agents, &task_ids, &started],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();

    // The series each new report touches, and which of them exist.
    let mut outcomes: Vec<Option<Recorded>> = vec![None; items.len()];
    let mut seen: HashSet<ReportKey> = HashSet::new();
    let mut touched: Vec<Vec<(SeriesKey, f64)>> = vec![Vec::new(); items.len()];
    for (i, p) in items.iter().enumerate() {
        let key = (
            p.agent.to_string(),
            p.report.task_id.to_string(),
            p.report.started_at,
        );
        if known.contains(&key) || !seen.insert(key) {
            outcomes[i] = Some(Recorded::Duplicate);
            continue;
        }
        touched[i] = samples(&p.report)
            .into_iter()
            .map(|(name, labels, value)| {
                let labels = serde_json::to_string(&labels).unwrap_or_else(|_| "{}".into());
                let key = (p.agent.to_string(), p.report.kind.to_string(), name, labels);
                (key, value)
            })
            .collect();
    }
    // Labels travel as their JSON text and become jsonb in the statement;
    // the series found are named by the text sent, so they match the keys.
    let candidates: Vec<&SeriesKey> = touched.iter().flatten().map(|(k, _)| k).collect();
    let column = |f: fn(&SeriesKey) -> &str| candidates.iter().map(|k| f(k)).collect::<Vec<_>>();
    let mut existing: HashSet<SeriesKey> = tx
        .query_prepared(
            "SELECT k.agent, k.kind, k.name, k.labels FROM series s
             JOIN unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS k(agent, kind, name, labels)
               ON s.agent = k.agent AND s.kind = k.kind AND s.name = k.name AND s.labels = k.labels::jsonb",
            &[&column(|k| &k.0), &column(|k| &k.1), &column(|k| &k.2), &column(|k| &k.3)],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let mut count: HashMap<String, i64> = tx
        .query_prepared(
            "SELECT agent, count(*) FROM series WHERE agent = ANY($1) GROUP BY agent",
            &[&agents],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    // Report by report, in order: within its agent's limit, or refused.
    let mut increments: BTreeMap<SeriesKey, f64> = BTreeMap::new();
    let mut accepted: Vec<usize> = Vec::new();
    for (i, p) in items.iter().enumerate() {
        if outcomes[i].is_some() {
            continue;
        }
        let fresh: Vec<&SeriesKey> = touched[i]
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !existing.contains(*k))
            .collect();
        let n = count.entry(p.agent.to_string()).or_default();
        if *n + fresh.len() as i64 > max_series {
            outcomes[i] = Some(Recorded::TooManySeries);
            continue;
        }
        *n += fresh.len() as i64;
        existing.extend(fresh.into_iter().cloned());
        for (key, value) in &touched[i] {
            *increments.entry(key.clone()).or_default() += value;
        }
        accepted.push(i);
        outcomes[i] = Some(Recorded::New);
    }

    if !accepted.is_empty() {
        let pick = |f: &dyn Fn(&Pending) -> String| {
            accepted.iter().map(|&i| f(items[i])).collect::<Vec<_>>()
        };
        let started: Vec<OffsetDateTime> = accepted
            .iter()
            .map(|&i| items[i].report.started_at)
            .collect();
        let received: Vec<OffsetDateTime> = accepted.iter().map(|&i| items[i].now).collect();
        tx.execute_prepared(
            "INSERT INTO reports (agent, task_id, started_at, received_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
             ON CONFLICT DO NOTHING",
            &[
                &pick(&|p| p.agent.to_string()),
                &pick(&|p| p.report.task_id.to_string()),
                &started,
                &received,
            ],
        )
        .await?;
        // One row per series (an upsert may touch a row once per statement),
        // in key order.
        let keys: Vec<&SeriesKey> = increments.keys().collect();
        let column = |f: fn(&SeriesKey) -> &str| keys.iter().map(|k| f(k)).collect::<Vec<_>>();
        let values: Vec<f64> = increments.values().copied().collect();
        tx.execute_prepared(
            "INSERT INTO series (agent, kind, name, labels, value)
             SELECT agent, kind, name, labels::jsonb, value
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[])
                  AS s(agent, kind, name, labels, value)
             ON CONFLICT (agent, kind, name, labels) DO UPDATE SET value = series.value + EXCLUDED.value",
            &[&column(|k| &k.0), &column(|k| &k.1), &column(|k| &k.2), &column(|k| &k.3), &values],
        )
        .await?;
        let mut last: BTreeMap<&str, OffsetDateTime> = BTreeMap::new();
        for &i in &accepted {
            let at = last.entry(items[i].agent.as_str()).or_insert(items[i].now);
            *at = (*at).max(items[i].now);
        }
        let group_agents: Vec<&str> = last.keys().copied().collect();
        let group_times: Vec<OffsetDateTime> = last.values().copied().collect();
        tx.execute_prepared(
            "INSERT INTO agent_groups (agent, last_report_at)
             SELECT * FROM unnest($1::text[], $2::timestamptz[])
             ON CONFLICT (agent) DO UPDATE SET last_report_at = greatest(agent_groups.last_report_at, EXCLUDED.last_report_at),
                                               version = agent_groups.version + 1",
            &[&group_agents, &group_times],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Recorded::Duplicate))
        .collect())
}
