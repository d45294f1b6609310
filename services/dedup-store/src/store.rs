//! PostgreSQL access: the pool, migrations, group commit and reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use rave_pg::{Pool, Prepared};
use rave_service::batch::{BatchMetrics, BatchSettings, Batcher, Handler, Writers};
use rave_service::ids::{EventType, EventUuid, SourceName, TaskId, TraceId};
use time::OffsetDateTime;

use crate::metrics::Metrics;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Serialises migrations when several replicas start at once.
const MIGRATION_LOCK: i64 = 0x7261_7665_6465_6475; // "ravededu"

/// Applies dedup-store's embedded migrations.
pub async fn migrate(pool: &Pool) -> anyhow::Result<()> {
    rave_pg::migrate(pool, embedded::migrations::runner(), MIGRATION_LOCK).await
}

/// An event as received, ready to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub source: SourceName,
    pub event_uuid: EventUuid,
    pub event_type: EventType,
    pub trace_id: Option<TraceId>,
    /// The storing request's span context, for the task's span to hang off.
    pub traceparent: Option<String>,
    pub received_at: OffsetDateTime,
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub body: Vec<u8>,
    /// The body as JSON text `jsonb` can hold, for search (ADR 19); `None`
    /// when it is not JSON or holds what `jsonb` refuses.
    pub body_json: Option<String>,
}

impl NewEvent {
    /// The searchable copy of `body` ([`rave_service::content::searchable_copy`]).
    pub fn searchable(body: &[u8]) -> Option<String> {
        rave_service::content::searchable_copy(body)
    }
}

/// What an insert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Committed for the first time, with a new task id.
    New(TaskId),
    /// Stored before; the original event's task id.
    Duplicate(TaskId),
}

/// Inserts queue up and commit together ([`rave_service::batch`]).
pub type GroupCommitter = Batcher<NewEvent, Stored>;

/// Starts the group-commit writers for event inserts. `committed` is
/// notified after every batch that stored a new event (it wakes the relay).
pub fn start_group_commit(
    pool: Pool,
    settings: &BatchSettings,
    metrics: Arc<Metrics>,
    committed: Arc<tokio::sync::Notify>,
) -> (GroupCommitter, Writers) {
    let observed = BatchMetrics {
        batch_size: Some(metrics.batch_size.clone()),
        in_flight: Some(metrics.in_flight.clone()),
    };
    let handler: Handler<NewEvent, Stored> = Arc::new(move |events| {
        let (pool, metrics, committed) = (pool.clone(), metrics.clone(), committed.clone());
        Box::pin(async move {
            let results = commit(&pool, &events, &metrics).await?;
            if results.iter().any(|r| matches!(r, Stored::New(_))) {
                committed.notify_one();
            }
            Ok(results)
        })
    });
    // A queued event holds its body (and a little more) until committed.
    Batcher::start_sized(settings, handler, observed, |e: &NewEvent| {
        e.body.len() + e.body_json.as_ref().map_or(0, String::len) + 1024
    })
}

async fn commit(
    pool: &Pool,
    events: &[NewEvent],
    metrics: &Metrics,
) -> anyhow::Result<Vec<Stored>> {
    let started = Instant::now();
    // A failed transaction changed nothing, so it is safe to run again; the
    // retry also draws fresh task ids should one have collided.
    let mut outcome = insert_batch(pool, events).await;
    if outcome.is_err() {
        outcome = insert_batch(pool, events).await;
    }
    metrics
        .commit_duration
        .observe(started.elapsed().as_secs_f64(), None, None);
    match &outcome {
        Ok(results) => {
            for stored in results {
                match stored {
                    Stored::New(_) => metrics.inserted.inc(),
                    Stored::Duplicate(_) => metrics.duplicates.inc(),
                };
            }
        }
        Err(_) => {
            metrics.commit_failures.inc();
        }
    }
    outcome
}

type Key<'a> = (&'a str, &'a str);

/// One statement per batch: the new events, their outbox rows, and the
/// task ids of those inserted now. Prepared once per connection.
const INSERT_EVENTS: &str = "WITH input AS (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                      $6::timestamptz[], $7::jsonb[], $8::bytea[], $9::text[], $10::text[])
                     WITH ORDINALITY AS t(source, event_uuid, event_type, task_id, trace_id,
                                          received_at, headers, body, traceparent, body_json, n)
             ), ins AS (
                 INSERT INTO events (source, event_uuid, event_type, task_id, trace_id,
                                     received_at, headers, body, traceparent, body_json)
                 SELECT source, event_uuid, event_type, task_id, trace_id, received_at, headers, body,
                        traceparent, body_json::jsonb
                 FROM input
                 -- An erased delivery stays gone: its retry is a duplicate.
                 WHERE NOT EXISTS (SELECT 1 FROM erasures x
                                   WHERE x.source = input.source AND x.event_uuid = input.event_uuid)
                 ORDER BY n
                 ON CONFLICT (source, event_uuid) DO NOTHING
                 RETURNING id, source, event_uuid, task_id
             ), outbox_rows AS (
                 INSERT INTO outbox (event_id, task_id) SELECT id, task_id FROM ins
             )
             SELECT source, event_uuid, task_id FROM ins";

/// The task ids of a batch's events stored (or erased) by earlier
/// transactions.
const EXISTING_EVENTS: &str = "SELECT e.source, e.event_uuid, e.task_id
     FROM events e
     JOIN unnest($1::text[], $2::text[]) AS k(source, event_uuid)
       USING (source, event_uuid)
     UNION ALL
     SELECT x.source, x.event_uuid, x.task_id
     FROM erasures x
     JOIN unnest($1::text[], $2::text[]) AS k(source, event_uuid)
       USING (source, event_uuid)";

/// Inserts a batch in one transaction; returns one outcome per event, in order.
async fn insert_batch(pool: &Pool, events: &[NewEvent]) -> anyhow::Result<Vec<Stored>> {
    // The same delivery may appear twice in one batch: only its first
    // occurrence is inserted, the others are its duplicates.
    let mut first_of: HashMap<Key<'_>, usize> = HashMap::new();
    let mut leaders = Vec::new();
    for (i, event) in events.iter().enumerate() {
        first_of
            .entry((event.source.as_str(), event.event_uuid.as_str()))
            .or_insert_with(|| {
                leaders.push(i);
                i
            });
    }
    // Inserting in key order makes concurrent batches lock rows in the same
    // order, so they cannot deadlock.
    leaders.sort_by_key(|&i| (events[i].source.as_str(), events[i].event_uuid.as_str()));
    let task_ids: Vec<TaskId> = leaders.iter().map(|_| TaskId::generate()).collect();

    let mut client = pool
        .get()
        .await
        .context("taking a connection from the pool")?;
    let tx = client.transaction().await?;
    let column = |f: &dyn Fn(&NewEvent) -> String| {
        leaders.iter().map(|&i| f(&events[i])).collect::<Vec<_>>()
    };
    let sources = column(&|e| e.source.to_string());
    let uuids = column(&|e| e.event_uuid.to_string());
    let types = column(&|e| e.event_type.to_string());
    let ids: Vec<String> = task_ids.iter().map(ToString::to_string).collect();
    let traces: Vec<Option<String>> = leaders
        .iter()
        .map(|&i| events[i].trace_id.as_ref().map(ToString::to_string))
        .collect();
    let traceparents: Vec<Option<String>> = leaders
        .iter()
        .map(|&i| events[i].traceparent.clone())
        .collect();
    let received: Vec<OffsetDateTime> = leaders.iter().map(|&i| events[i].received_at).collect();
    let headers: Vec<serde_json::Value> = leaders
        .iter()
        .map(|&i| serde_json::Value::Object(events[i].headers.clone()))
        .collect();
    let bodies: Vec<&[u8]> = leaders.iter().map(|&i| events[i].body.as_slice()).collect();
    let parsed: Vec<Option<&str>> = leaders
        .iter()
        .map(|&i| events[i].body_json.as_deref())
        .collect();

    let insert = tx.prepare_cached(INSERT_EVENTS).await?;
    let inserted = tx
        .query(
            &insert,
            &[
                &sources,
                &uuids,
                &types,
                &ids,
                &traces,
                &received,
                &headers,
                &bodies,
                &traceparents,
                &parsed,
            ],
        )
        .await?;

    let mut task_of: HashMap<(String, String), (TaskId, bool)> = HashMap::new();
    for row in &inserted {
        task_of.insert(
            (row.get(0), row.get(1)),
            (TaskId::parse(row.get::<_, String>(2))?, true),
        );
    }
    if task_of.len() < leaders.len() {
        // Conflicts: the rows were committed by earlier transactions, which
        // this statement's fresh snapshot sees.
        let select = tx.prepare_cached(EXISTING_EVENTS).await?;
        let existing = tx.query(&select, &[&sources, &uuids]).await?;
        for row in &existing {
            task_of
                .entry((row.get(0), row.get(1)))
                .or_insert((TaskId::parse(row.get::<_, String>(2))?, false));
        }
    }
    tx.commit().await.context("committing")?;

    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let key = (event.source.to_string(), event.event_uuid.to_string());
            let (task_id, new) = task_of.get(&key).with_context(|| {
                format!("event {} neither inserted nor found", event.event_uuid)
            })?;
            let leader = first_of[&(event.source.as_str(), event.event_uuid.as_str())];
            Ok(if *new && leader == i {
                Stored::New(task_id.clone())
            } else {
                Stored::Duplicate(task_id.clone())
            })
        })
        .collect()
}

/// A stored event, as operators read it.
#[derive(Debug, serde::Serialize)]
pub struct EventRecord {
    pub id: i64,
    pub source: String,
    pub event_uuid: String,
    pub event_type: String,
    pub task_id: String,
    pub trace_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub stored_at: OffsetDateTime,
    pub body_bytes: i32,
}

pub(crate) const RECORD_COLUMNS: &str =
    "id, source, event_uuid, event_type, task_id, trace_id, received_at, stored_at, length(body)";

pub(crate) fn record(row: &tokio_postgres::Row) -> EventRecord {
    EventRecord {
        id: row.get(0),
        source: row.get(1),
        event_uuid: row.get(2),
        event_type: row.get(3),
        task_id: row.get(4),
        trace_id: row.get(5),
        received_at: row.get(6),
        stored_at: row.get(7),
        body_bytes: row.get(8),
    }
}

/// One event with its headers and raw body.
pub async fn get_event(
    pool: &Pool,
    source: &SourceName,
    event_uuid: &EventUuid,
) -> anyhow::Result<Option<(EventRecord, serde_json::Value, Vec<u8>)>> {
    let client = pool.get().await?;
    let row = client
        .query_opt_prepared(
            &format!("SELECT {RECORD_COLUMNS}, headers, body FROM events WHERE source = $1 AND event_uuid = $2"),
            &[&source.as_str(), &event_uuid.as_str()],
        )
        .await?;
    Ok(row.map(|row| (record(&row), row.get(9), row.get(10))))
}

/// A page of events in storage order, after the event with id `after`.
pub async fn list_events(
    pool: &Pool,
    source: Option<&SourceName>,
    after: i64,
    limit: i64,
) -> anyhow::Result<Vec<EventRecord>> {
    let client = pool.get().await?;
    let rows = client
        .query_prepared(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM events
                 WHERE id > $1 AND ($2::text IS NULL OR source = $2)
                 ORDER BY id LIMIT $3"
            ),
            &[&after, &source.map(SourceName::as_str), &limit],
        )
        .await?;
    Ok(rows.iter().map(record).collect())
}

/// The outbox as `/metrics` reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutboxGauges {
    pub depth: i64,
    pub oldest_age_secs: f64,
    pub refused: i64,
    pub erasures_unforwarded: i64,
}

pub async fn outbox_gauges(pool: &Pool) -> anyhow::Result<OutboxGauges> {
    let client = pool.get().await?;
    let row = client
        .query_one_prepared(
            "SELECT (SELECT count(*) FROM outbox),
                    coalesce(extract(epoch FROM now() - (SELECT min(created_at) FROM outbox))::float8, 0),
                    (SELECT count(*) FROM outbox_refused),
                    (SELECT count(*) FROM erasures WHERE forwarded_at IS NULL)",
            &[],
        )
        .await?;
    Ok(OutboxGauges {
        depth: row.get(0),
        oldest_age_secs: row.get::<_, f64>(1).max(0.0),
        refused: row.get(2),
        erasures_unforwarded: row.get(3),
    })
}
