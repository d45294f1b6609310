//! Task intake: each event dedup-store's relay hands over becomes a task
//! (or, when no rule routes it, an ignore record), idempotently on task_id.

use rave_pg::{GenericClient, Pool, Prepared};
use rave_service::ids::{EventType, EventUuid, SourceName, TaskId, TaskKind, TraceId};
use serde::Serialize;
use time::OffsetDateTime;

use crate::routing::Routed;

/// An event handed over by dedup-store's relay.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    pub task_id: TaskId,
    pub source: SourceName,
    pub event_uuid: EventUuid,
    pub event_type: EventType,
    pub received_at: OffsetDateTime,
    pub trace_id: Option<TraceId>,
    /// The span the task hangs off in the webhook's trace (see `routes`).
    pub traceparent: Option<String>,
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub body: Vec<u8>,
    /// Set when an operator's replay hands the event over again (ADR 19).
    pub replay: Option<crate::replay::ReplayOf>,
}

impl IncomingEvent {
    /// The `traceparent` stored with the task: its creation span's, or for an
    /// event stored without one, a new span in the event's trace.
    pub fn task_traceparent(&self) -> Option<String> {
        self.traceparent.clone().or_else(|| {
            let span = hex::encode(rave_service::crypto::random_bytes::<8>());
            self.trace_id.as_ref().map(|t| format!("00-{t}-{span}-01"))
        })
    }
}

/// What a hand-off did.
#[derive(Debug, Default, Serialize)]
pub struct Accepted {
    /// Tasks created now, with their kinds.
    #[serde(skip)]
    pub created: Vec<TaskKind>,
    pub created_count: usize,
    pub ignored: usize,
    /// Events whose task (or ignore record) existed already: a redelivery.
    pub duplicates: usize,
    /// Older tasks cancelled or asked to stop by `supersede`.
    pub superseded: u64,
}

/// Creates a task per routed event and an ignore record per unrouted one,
/// idempotently on `task_id`, in one transaction; wakes waiting claims.
pub async fn accept_events(
    pool: &Pool,
    origin: &str,
    now: OffsetDateTime,
    routed: &[(&IncomingEvent, &Routed)],
    ignored: &[&IncomingEvent],
) -> anyhow::Result<Accepted> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut accepted = Accepted::default();

    if !routed.is_empty() {
        let col = |f: &dyn Fn(&(&IncomingEvent, &Routed)) -> String| {
            routed.iter().map(f).collect::<Vec<_>>()
        };
        let ids = col(&|(e, _)| e.task_id.to_string());
        let sources = col(&|(e, _)| e.source.to_string());
        let uuids = col(&|(e, _)| e.event_uuid.to_string());
        let types = col(&|(e, _)| e.event_type.to_string());
        let kinds = col(&|(_, r)| r.kind.to_string());
        let policies = col(&|(_, r)| r.policy.as_str().to_owned());
        let priorities: Vec<i16> = routed.iter().map(|(_, r)| r.priority).collect();
        let max_attempts: Vec<i32> = routed.iter().map(|(_, r)| r.max_attempts).collect();
        let entities: Vec<Option<String>> =
            routed.iter().map(|(_, r)| r.entity_key.clone()).collect();
        let traceparents: Vec<Option<String>> =
            routed.iter().map(|(e, _)| e.task_traceparent()).collect();
        let received: Vec<OffsetDateTime> = routed.iter().map(|(e, _)| e.received_at).collect();
        let rows = tx
            .query_prepared(
                "INSERT INTO tasks (task_id, source, event_uuid, event_type, kind, priority, state,
                                    max_attempts, run_at, entity_key, policy, traceparent,
                                    received_at, created_at, updated_at)
                 SELECT i.task_id, i.source, i.event_uuid, i.event_type, i.kind, i.priority, 'queued',
                        i.max_attempts, $12, i.entity_key, i.policy, i.traceparent, i.received_at, $12, $12
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int2[],
                             $7::int4[], $8::text[], $9::text[], $10::text[], $11::timestamptz[])
                      WITH ORDINALITY AS i(task_id, source, event_uuid, event_type, kind, priority,
                                           max_attempts, entity_key, policy, traceparent, received_at, n)
                 -- An erased event's late copy creates nothing: a duplicate.
                 WHERE NOT EXISTS (SELECT 1 FROM erased_tasks x WHERE x.task_id = i.task_id)
                 ORDER BY i.n
                 ON CONFLICT (task_id) DO NOTHING
                 RETURNING task_id, kind, policy",
                &[
                    &ids, &sources, &uuids, &types, &kinds, &priorities, &max_attempts, &entities, &policies,
                    &traceparents, &received, &now,
                ],
            )
            .await?;
        let created_ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        for row in &rows {
            accepted
                .created
                .push(TaskKind::parse(row.get::<_, String>(1))?);
        }
        accepted.duplicates += routed.len() - rows.len();

        let headers: Vec<serde_json::Value> = routed
            .iter()
            .map(|(e, _)| serde_json::Value::Object(e.headers.clone()))
            .collect();
        let bodies: Vec<&[u8]> = routed.iter().map(|(e, _)| e.body.as_slice()).collect();
        tx.execute_prepared(
            "INSERT INTO task_payloads (task_id, headers, body)
             SELECT i.task_id, i.headers, i.body
             FROM unnest($1::text[], $2::jsonb[], $3::bytea[]) AS i(task_id, headers, body)
             WHERE i.task_id = ANY($4)",
            &[&ids, &headers, &bodies, &created_ids],
        )
        .await?;

        // supersede: the newest new task of a (kind, entity) cancels older
        // queued ones and asks leased ones to stop. Only when a new task has
        // that policy: most batches have none, and need neither statement.
        let superseding: Vec<String> = rows
            .iter()
            .filter(|r| r.get::<_, &str>(2) == "supersede")
            .map(|r| r.get(0))
            .collect();
        if !superseding.is_empty() {
            let newest = "SELECT kind, entity_key, max(seq) AS seq
                          FROM tasks WHERE task_id = ANY($1) GROUP BY kind, entity_key";
            accepted.superseded += tx
                .execute_prepared(
                    &format!(
                        "UPDATE tasks o SET state = 'cancelled', cancel_reason = 'superseded',
                                error = 'superseded by a newer task', finished_at = $2, updated_at = $2
                         FROM ({newest}) n
                         WHERE o.kind = n.kind AND o.entity_key = n.entity_key AND o.seq < n.seq AND o.state = 'queued'"
                    ),
                    &[&superseding, &now],
                )
                .await?;
            accepted.superseded += tx
                .execute_prepared(
                    &format!(
                        "UPDATE tasks o SET cancel_requested = true, cancel_reason = 'superseded', updated_at = $2
                         FROM ({newest}) n
                         WHERE o.kind = n.kind AND o.entity_key = n.entity_key AND o.seq < n.seq
                           AND o.state = 'leased' AND NOT o.cancel_requested"
                    ),
                    &[&superseding, &now],
                )
                .await?;
        }
        if !created_ids.is_empty() {
            // An event retried out of quarantine has one outcome: its task.
            tx.execute_prepared(
                "DELETE FROM quarantined_events WHERE task_id = ANY($1)",
                &[&created_ids],
            )
            .await?;
            super::notify_work(&tx, origin, rows.iter().map(|r| r.get::<_, &str>(1))).await?;
        }
    }

    if !ignored.is_empty() {
        let col = |f: &dyn Fn(&&IncomingEvent) -> String| ignored.iter().map(f).collect::<Vec<_>>();
        let received: Vec<OffsetDateTime> = ignored.iter().map(|e| e.received_at).collect();
        let inserted = tx
            .execute_prepared(
                "INSERT INTO ignored_events (task_id, source, event_uuid, event_type, received_at, ignored_at)
                 SELECT *, $6 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
                 ON CONFLICT (task_id) DO NOTHING",
                &[
                    &col(&|e| e.task_id.to_string()),
                    &col(&|e| e.source.to_string()),
                    &col(&|e| e.event_uuid.to_string()),
                    &col(&|e| e.event_type.to_string()),
                    &received,
                    &now,
                ],
            )
            .await?;
        tx.execute_prepared(
            "DELETE FROM quarantined_events WHERE task_id = ANY($1)",
            &[&col(&|e| e.task_id.to_string())],
        )
        .await?;
        accepted.ignored = inserted as usize;
        accepted.duplicates += ignored.len() - inserted as usize;
    }
    let replays: Vec<(&IncomingEvent, &crate::replay::ReplayOf)> = routed
        .iter()
        .map(|(e, _)| *e)
        .chain(ignored.iter().copied())
        .filter_map(|e| Some((e, e.replay.as_ref()?)))
        .collect();
    if !replays.is_empty() {
        // Each replayed task (or ignore record) names its original, in the
        // transaction that made it.
        let col = |f: &dyn Fn(&(&IncomingEvent, &crate::replay::ReplayOf)) -> String| {
            replays.iter().map(f).collect::<Vec<_>>()
        };
        tx.execute_prepared(
            "INSERT INTO replayed_tasks (task_id, request_id, original_task_id, replayed_at)
             SELECT *, $4 FROM unnest($1::text[], $2::text[], $3::text[])
             ON CONFLICT (task_id) DO NOTHING",
            &[
                &col(&|(e, _)| e.task_id.to_string()),
                &col(&|(_, r)| r.request_id.to_string()),
                &col(&|(_, r)| r.original_task_id.to_string()),
                &now,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    accepted.created_count = accepted.created.len();
    Ok(accepted)
}

/// One relayed event on its way in: routed to a task, or to be ignored.
#[derive(Debug, Clone)]
pub enum Intake {
    Routed(IncomingEvent, Routed),
    Ignored(IncomingEvent),
}

impl Intake {
    pub fn event(&self) -> &IncomingEvent {
        match self {
            Self::Routed(e, _) | Self::Ignored(e) => e,
        }
    }
}

impl Accepted {
    fn merge(mut self, other: Self) -> Self {
        self.created.extend(other.created);
        self.created_count = self.created.len();
        self.ignored += other.ignored;
        self.duplicates += other.duplicates;
        self.superseded += other.superseded;
        self
    }
}

/// [`accept_events`], with one bad event never failing the others: a batch
/// PostgreSQL refuses for its content is split until the events at fault
/// are found (rave_service::isolate); their indexes in `items` are returned
/// with the error, for quarantine, and everything else is committed.
pub async fn accept_isolated(
    pool: &Pool,
    origin: &str,
    now: OffsetDateTime,
    items: &[Intake],
) -> anyhow::Result<(Accepted, Vec<(usize, anyhow::Error)>)> {
    let run = rave_service::isolate::runner(|part: &[Intake]| {
        // A pool is a handle: each run holds its own.
        let (pool, origin) = (pool.clone(), origin.to_owned());
        Box::pin(async move {
            let (mut routed, mut ignored) = (Vec::new(), Vec::new());
            for item in part {
                match item {
                    Intake::Routed(e, r) => routed.push((e, r)),
                    Intake::Ignored(e) => ignored.push(e),
                }
            }
            accept_events(&pool, &origin, now, &routed, &ignored).await
        })
    });
    let out =
        rave_service::isolate::isolate(items, &run, Accepted::merge, rave_pg::is_content_error)
            .await?;
    let mut accepted = out.done.unwrap_or_default();
    accepted.created_count = accepted.created.len();
    Ok((accepted, out.set_aside))
}
