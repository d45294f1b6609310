//! Erasure on request: an operator deletes one event, or every event
//! matching a filter, for good (a leaked secret or personal data in a
//! payload; docs/security.md).
//!
//! In one transaction the events, their outbox and set-aside rows go, and
//! an `erasures` row records each: the audit record (who, when, why), and
//! the delivery's tombstone, so a sender's retry stores nothing again. The
//! task's copy of the body lives in task-dispatcher's database: the relay
//! asks it to erase that copy (`forward_erasures_once`) at once, and again
//! until it has. A dry run (the default) only lists what would go.

use actix_web::{HttpRequest, HttpResponse, web};
use rave_pg::Pool;
use rave_service::ids::{EventType, EventUuid, SourceName};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;

use crate::error::DedupError;
use crate::routes::AppState;

/// `POST /v1/events/erase` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    pub source: SourceName,
    pub event_uuid: Option<EventUuid>,
    pub event_type: Option<EventType>,
    /// Stored at or after this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub stored_after: Option<OffsetDateTime>,
    /// Stored before this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub stored_before: Option<OffsetDateTime>,
    /// Why: kept in the audit record.
    pub reason: String,
    /// Who asks (a person, a ticket): kept in the audit record beside the
    /// token's fingerprint.
    pub requested_by: String,
    /// Names the request: a repeat answers with what it erased. Default: a
    /// new one.
    pub request_id: Option<String>,
    /// Only list what would be erased (the default).
    #[serde(default = "yes")]
    pub dry_run: bool,
    /// At most this many (and at most `limits.max_erase_per_call`).
    pub limit: Option<i64>,
}

fn yes() -> bool {
    true
}

/// One erased (or, in a dry run, matching) event.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Erased {
    pub source: String,
    pub event_uuid: String,
    pub event_type: String,
    pub task_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub stored_at: OffsetDateTime,
}

/// `POST /v1/events/erase` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct EraseResponse {
    pub request_id: String,
    pub dry_run: bool,
    /// Everything this request erased (in a dry run: would erase).
    pub events: Vec<Erased>,
    /// More events match than one request erases: send it again.
    pub more: bool,
    /// Where task-dispatcher's copies stand: `erased`, `pending` (the relay
    /// keeps asking), or `not_applicable` (a dry run, or nothing erased).
    pub task_payloads: String,
}

const MAX_TEXT: usize = 500;

fn checked_text(field: &str, value: &str) -> Result<String, DedupError> {
    if value.trim().is_empty() {
        return Err(DedupError::InvalidRequest(format!(
            "{field}: must not be empty"
        )));
    }
    rave_service::content::check_text(field, value, MAX_TEXT)?;
    Ok(value.to_owned())
}

fn checked_request_id(raw: Option<&str>) -> Result<String, DedupError> {
    let Some(id) = raw else {
        let bytes = rave_service::crypto::random_bytes::<12>();
        return Ok(bytes.iter().map(|b| format!("{b:02x}")).collect());
    };
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        return Err(DedupError::InvalidRequest(
            "request_id: 1 to 64 letters, digits, '.', '_' or '-'".into(),
        ));
    }
    Ok(id.to_owned())
}

pub async fn erase(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DedupError> {
    crate::routes::counted(&state, erase_inner(&req, payload, &state).await)
}

async fn erase_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, DedupError> {
    let token = crate::routes::authorized(req, &state.readers)?;
    let raw = rave_service::http::read_body(req, payload, 64 * 1024).await?;
    let request: EraseRequest = serde_json::from_slice(&raw)
        .map_err(|e| DedupError::InvalidRequest(format!("invalid erasure request: {e}")))?;
    let filter = Filter::parse(&request, state.limits.max_erase_per_call)?;
    let reason = checked_text("reason", &request.reason)?;
    let requested_by = checked_text("requested_by", &request.requested_by)?;
    let request_id = checked_request_id(request.request_id.as_deref())?;
    if request.dry_run {
        let (events, more) = matching(&state.pool, &filter)
            .await
            .map_err(DedupError::Unavailable)?;
        return Ok(HttpResponse::Ok().json(EraseResponse {
            request_id,
            dry_run: true,
            events,
            more,
            task_payloads: "not_applicable".into(),
        }));
    }
    let audit = Audit {
        request_id: &request_id,
        requested_by: &requested_by,
        token: &fingerprint(token),
        reason: &reason,
    };
    let (erased_now, more) = erase_matching(&state.pool, &filter, &audit)
        .await
        .map_err(DedupError::Unavailable)?;
    state.metrics.erased.inc_by(erased_now);
    tracing::warn!(
        request_id = %request_id, requested_by = %requested_by, erased = erased_now,
        source = %filter.source, "events erased on request"
    );
    let events = erased_by(&state.pool, &request_id)
        .await
        .map_err(DedupError::Unavailable)?;
    let task_payloads = match &state.relay {
        _ if events.is_empty() => "not_applicable",
        Some(relay) => match relay.forward_erasures().await {
            Ok(_) if pending(&state.pool, &request_id).await.unwrap_or(true) => "pending",
            Ok(_) => "erased",
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "task-dispatcher did not erase its copies yet; the relay retries");
                "pending"
            }
        },
        None => "pending",
    };
    Ok(HttpResponse::Ok().json(EraseResponse {
        request_id,
        dry_run: false,
        events,
        more,
        task_payloads: task_payloads.into(),
    }))
}

/// A token's fingerprint for the audit record: enough to tell operators'
/// tokens apart, useless for guessing one.
fn fingerprint(token: &str) -> String {
    let digest = rave_service::auth::token_digest(token);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Which events a request names.
#[derive(Debug)]
struct Filter {
    source: String,
    event_uuid: Option<String>,
    event_type: Option<String>,
    after: Option<OffsetDateTime>,
    before: Option<OffsetDateTime>,
    limit: i64,
}

impl Filter {
    fn parse(request: &EraseRequest, max: i64) -> Result<Self, DedupError> {
        if request.event_uuid.is_none()
            && request.event_type.is_none()
            && request.stored_after.is_none()
            && request.stored_before.is_none()
        {
            return Err(DedupError::InvalidRequest(
                "name the events: event_uuid, event_type, stored_after or stored_before (a source alone would be all of it)".into(),
            ));
        }
        let limit = request.limit.unwrap_or(max);
        if !(1..=max).contains(&limit) {
            return Err(DedupError::InvalidRequest(format!(
                "limit: must be between 1 and {max}"
            )));
        }
        Ok(Self {
            source: request.source.to_string(),
            event_uuid: request.event_uuid.as_ref().map(ToString::to_string),
            event_type: request.event_type.as_ref().map(ToString::to_string),
            after: request.stored_after,
            before: request.stored_before,
            limit,
        })
    }
}

impl Filter {
    /// `MATCHING`'s parameters, with `limit` as its `$6`.
    fn params<'a>(&'a self, limit: &'a i64) -> [&'a (dyn ToSql + Sync); 6] {
        [
            &self.source,
            &self.event_uuid,
            &self.event_type,
            &self.after,
            &self.before,
            limit,
        ]
    }
}

/// Who erased, and why.
struct Audit<'a> {
    request_id: &'a str,
    requested_by: &'a str,
    token: &'a str,
    reason: &'a str,
}

const MATCHING: &str = "SELECT id, source, event_uuid, event_type, task_id, stored_at FROM events
     WHERE source = $1 AND ($2::text IS NULL OR event_uuid = $2)
       AND ($3::text IS NULL OR event_type = $3)
       AND ($4::timestamptz IS NULL OR stored_at >= $4)
       AND ($5::timestamptz IS NULL OR stored_at < $5)
     ORDER BY source, id LIMIT $6";

fn erased_row(row: &tokio_postgres::Row) -> Erased {
    Erased {
        source: row.get("source"),
        event_uuid: row.get("event_uuid"),
        event_type: row.get("event_type"),
        task_id: row.get("task_id"),
        stored_at: row.get("stored_at"),
    }
}

/// The events a dry run would erase, and whether more match.
async fn matching(pool: &Pool, f: &Filter) -> anyhow::Result<(Vec<Erased>, bool)> {
    let client = pool.get().await?;
    let rows = client.query(MATCHING, &f.params(&(f.limit + 1))).await?;
    let more = rows.len() as i64 > f.limit;
    Ok((
        rows.iter().take(f.limit as usize).map(erased_row).collect(),
        more,
    ))
}

/// Erases up to `limit` matching events in one transaction; how many, and
/// whether more match.
async fn erase_matching(pool: &Pool, f: &Filter, audit: &Audit<'_>) -> anyhow::Result<(u64, bool)> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let erased = tx
        .execute(
            &format!(
                "WITH doomed AS ({MATCHING} FOR UPDATE),
                 outbox_rows AS (
                     DELETE FROM outbox o USING doomed d WHERE o.event_id = d.id
                     RETURNING o.event_id, o.claimed_until
                 ), refused AS (
                     DELETE FROM outbox_refused r USING doomed d WHERE r.event_id = d.id
                 ), audit AS (
                     INSERT INTO erasures (request_id, source, event_uuid, event_type, task_id, stored_at,
                                           requested_by, token, reason, forward_after)
                     SELECT $7, d.source, d.event_uuid, d.event_type, d.task_id, d.stored_at, $8, $9, $10,
                            greatest(now(), o.claimed_until)
                     FROM doomed d LEFT JOIN outbox_rows o ON o.event_id = d.id
                     ON CONFLICT (source, event_uuid) DO NOTHING
                 )
                 DELETE FROM events e USING doomed d WHERE e.id = d.id"
            ),
            &[
                f.params(&f.limit).as_slice(),
                &[
                    &audit.request_id,
                    &audit.requested_by,
                    &audit.token,
                    &audit.reason,
                ],
            ]
            .concat(),
        )
        .await?;
    let more = tx.query_opt(MATCHING, &f.params(&1)).await?.is_some();
    tx.commit().await?;
    Ok((erased, more))
}

/// What request `request_id` erased, over all its repeats.
async fn erased_by(pool: &Pool, request_id: &str) -> anyhow::Result<Vec<Erased>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT source, event_uuid, event_type, task_id, stored_at FROM erasures
             WHERE request_id = $1 ORDER BY id",
            &[&request_id],
        )
        .await?;
    Ok(rows.iter().map(erased_row).collect())
}

/// Whether task-dispatcher has yet to erase a copy for `request_id`.
async fn pending(pool: &Pool, request_id: &str) -> anyhow::Result<bool> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM erasures WHERE request_id = $1 AND forwarded_at IS NULL)",
            &[&request_id],
        )
        .await?;
    Ok(row.get(0))
}
