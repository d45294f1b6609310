//! `POST /v1/events/search`: stored events found by source, type, delivery
//! id, task id, time range and JSON-pointer conditions on the body (ADR 19).
//!
//! Pages are in storage order (`id`), so paging is stable under intake: new
//! events only ever land after the last page. Body conditions use the
//! parsed copy `body_json` and its GIN index: `equals` and `in` on a pointer
//! of object keys become containment queries the index answers, rechecked
//! exactly with `#>`; a body that is not JSON matches no condition except
//! `exists = false`, as in routing rules.

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rave_pg::Pool;
use rave_service::ids::{EventType, EventUuid, TaskId};
use rave_service::pointer::{self, Condition};
pub use rave_service::search::SearchRequest;
use serde::Serialize;
use tokio_postgres::types::ToSql;

use crate::error::DedupError;
use crate::routes::{AppState, authorized, counted};
use crate::settings::Limits;
use crate::store::{EventRecord, RECORD_COLUMNS, record};

/// One event found, with its payload when asked for.
#[derive(Debug, Serialize)]
pub struct Found {
    #[serde(flatten)]
    pub record: EventRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

/// A page: `next_after` is absent on the last one.
#[derive(Debug, Serialize)]
pub struct Page {
    pub events: Vec<Found>,
    pub next_after: Option<i64>,
}

/// Refuses what the search cannot run, naming the field; the page size.
fn check(r: &SearchRequest, limits: &Limits) -> Result<i64, DedupError> {
    let invalid = |m: String| Err(DedupError::InvalidRequest(m));
    let limit = r.limit.unwrap_or(100);
    if !(1..=limits.max_page_size).contains(&limit) {
        return invalid(format!(
            "limit: must be between 1 and {}",
            limits.max_page_size
        ));
    }
    let ids = limits.max_search_ids;
    for (field, n) in [
        ("event_types", r.event_types.len()),
        ("event_uuids", r.event_uuids.len()),
        ("task_ids", r.task_ids.len()),
    ] {
        if n > ids {
            return invalid(format!("{field}: at most {ids} values"));
        }
    }
    if r.conditions.len() > limits.max_search_conditions {
        return invalid(format!(
            "where: at most {} conditions",
            limits.max_search_conditions
        ));
    }
    for (i, c) in r.conditions.iter().enumerate() {
        c.check()
            .map_err(|e| DedupError::InvalidRequest(format!("where[{i}]: {e}")))?;
    }
    if let (Some(since), Some(until)) = (r.since, r.until)
        && since > until
    {
        return invalid("since: must not be after until".into());
    }
    if r.after < 0 {
        return invalid("after: must not be negative".into());
    }
    Ok(limit)
}

/// The statement for a search, with only the clauses it needs.
struct Query {
    sql: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Query {
    fn param(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    fn and(&mut self, clause: &str) {
        self.sql.push_str(" AND ");
        self.sql.push_str(clause);
    }

    fn build(r: &SearchRequest, limit: i64) -> Self {
        let mut q = Self {
            sql: String::new(),
            params: Vec::new(),
        };
        let after = q.param(r.after);
        q.sql = format!("SELECT {RECORD_COLUMNS} FROM events WHERE id > {after}");
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // Pages walk the primary key from `after`, and the planner, taking
        // matches to be spread evenly, expects them at once: a source or a
        // type whose events all came late (a sender added last month) had
        // every older event read first, a quarter of a second at 1.5
        // million. The walk starts at the first event that can match,
        // found by one index lookup (per type).
        if let Some(source) = &r.source {
            let p = q.param(source.to_string());
            q.and(&format!(
                "source = {p} AND id >= (SELECT min(id) FROM events WHERE source = {p})"
            ));
        }
        if !r.event_types.is_empty() {
            let v: Vec<&str> = r.event_types.iter().map(EventType::as_str).collect();
            let p = q.param(strings(&v));
            q.and(&format!(
                "event_type = ANY({p}::text[]) AND id >= (SELECT min(first) FROM unnest({p}::text[]) AS t(v), \
                 LATERAL (SELECT min(id) AS first FROM events WHERE event_type = t.v) f)"
            ));
        }
        if !r.event_uuids.is_empty() {
            let v: Vec<&str> = r.event_uuids.iter().map(EventUuid::as_str).collect();
            let p = q.param(strings(&v));
            q.and(&format!("event_uuid = ANY({p}::text[])"));
        }
        if !r.task_ids.is_empty() {
            let v: Vec<&str> = r.task_ids.iter().map(TaskId::as_str).collect();
            let p = q.param(strings(&v));
            q.and(&format!("task_id = ANY({p}::text[])"));
        }
        let mut window_ids = None;
        let mut window = Vec::new();
        if let Some(since) = r.since {
            let p = q.param(since);
            window.push(format!("received_at >= {p}"));
        }
        if let Some(until) = r.until {
            let p = q.param(until);
            window.push(format!("received_at < {p}"));
        }
        if !window.is_empty() {
            let window = window.join(" AND ");
            q.and(&window);
        }
        // Only a window with a start: `until` alone (a replay's pinned end)
        // reaches back to the table's first event anyway. The bound costs
        // a read of the window's index entries, in proportion to the events
        // in it.
        if r.since.is_some() {
            let window = window.join(" AND ");
            // Pages go in id order, and the planner, taking time and id for
            // unrelated, may scan in id order from the first event, reading
            // every event older than the window (at a million events, a
            // third of a second for an hour's window). The window's id range,
            // read first from the (received_at, id) index (OFFSET 0 keeps
            // min/max from becoming that same scan), bounds it.
            window_ids = Some(format!(
                "WITH window_ids AS (SELECT min(id) lo, max(id) hi \
                 FROM (SELECT id FROM events WHERE {window} OFFSET 0) w) "
            ));
            q.and("id BETWEEN (SELECT lo FROM window_ids) AND (SELECT hi FROM window_ids)");
        }
        for c in &r.conditions {
            q.condition(c);
        }
        let limit = q.param(limit);
        q.sql.push_str(&format!(" ORDER BY id LIMIT {limit}"));
        if let Some(with) = window_ids {
            q.sql.insert_str(0, &with);
        }
        q
    }

    fn condition(&mut self, c: &Condition) {
        let path = self.param(pointer::segments(&c.pointer));
        let at = format!("body_json #> {path}::text[]");
        if let Some(v) = &c.equals {
            self.one_of(&at, &c.pointer, std::slice::from_ref(v));
        }
        if let Some(set) = &c.one_of {
            self.one_of(&at, &c.pointer, set);
        }
        match c.exists {
            Some(true) => self.and(&format!("{at} IS NOT NULL")),
            // Nothing is at any pointer of a body that is not JSON.
            Some(false) => self.and(&format!("(body_json IS NULL OR {at} IS NULL)")),
            None => {}
        }
    }

    /// The value at `at` is one of `set`: a containment the GIN index
    /// answers first, when the pointer names object keys only.
    fn one_of(&mut self, at: &str, pointer: &str, set: &[serde_json::Value]) {
        let docs: Option<Vec<serde_json::Value>> = set
            .iter()
            .map(|v| pointer::containing(pointer, v))
            .collect();
        if let Some(docs) = docs.filter(|d| !d.is_empty()) {
            let p = self.param(docs);
            self.and(&format!("body_json @> ANY({p}::jsonb[])"));
        }
        let p = self.param(set.to_vec());
        self.and(&format!("{at} = ANY({p}::jsonb[])"));
    }
}

/// Runs a checked search: one page of records, then (when asked) the
/// payloads of as many of them as fit in `max_search_response_bytes`.
pub async fn search(
    pool: &Pool,
    request: &SearchRequest,
    limit: i64,
    max_bytes: usize,
) -> anyhow::Result<Page> {
    let q = Query::build(request, limit);
    let client = pool.get().await?;
    let params: Vec<&(dyn ToSql + Sync)> = q
        .params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    // Not cached: the statement's shape depends on the request, and an
    // unnamed statement is planned for these very values.
    let rows = client.query(q.sql.as_str(), &params).await?;
    let mut records: Vec<EventRecord> = rows.iter().map(record).collect();
    let full = records.len() as i64 == limit;
    if !request.include_bodies {
        let next_after = full.then(|| records.last().map(|r| r.id)).flatten();
        let events = records
            .into_iter()
            .map(|record| Found {
                record,
                traceparent: None,
                headers: None,
                body_base64: None,
            })
            .collect();
        return Ok(Page { events, next_after });
    }
    // Whole events up to the byte bound (base64 is 4/3 of the body); the
    // first always, however large.
    let mut bytes = 0usize;
    let mut keep = 0;
    for r in &records {
        let size = r.body_bytes as usize * 4 / 3 + 1024;
        if keep > 0 && bytes + size > max_bytes {
            break;
        }
        bytes += size;
        keep += 1;
    }
    let cut = keep < records.len();
    records.truncate(keep);
    let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
    let payloads = client
        .query(
            "SELECT id, traceparent, headers, body FROM events WHERE id = ANY($1) ORDER BY id",
            &[&ids],
        )
        .await?;
    let mut by_id: std::collections::HashMap<i64, (Option<String>, serde_json::Value, Vec<u8>)> =
        payloads
            .iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2), row.get(3))))
            .collect();
    let next_after = (full || cut)
        .then(|| records.last().map(|r| r.id))
        .flatten();
    let events = records
        .into_iter()
        // An event deleted between the two reads (retention, erasure) is
        // left out: the page still ends where it said.
        .filter_map(|record| {
            let (traceparent, headers, body) = by_id.remove(&record.id)?;
            Some(Found {
                record,
                traceparent,
                headers: Some(headers),
                body_base64: Some(BASE64.encode(body)),
            })
        })
        .collect();
    Ok(Page { events, next_after })
}

pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DedupError> {
    counted(&state, handle_inner(&req, payload, &state).await)
}

async fn handle_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, DedupError> {
    authorized(req, &state.readers)?;
    let raw =
        rave_service::http::read_body(req, payload, state.limits.max_search_request_bytes).await?;
    let request: SearchRequest = serde_json::from_slice(&raw)
        .map_err(|e| DedupError::InvalidRequest(format!("invalid search: {e}")))?;
    let limit = check(&request, &state.limits)?;
    let page = search(
        &state.pool,
        &request,
        limit,
        state.limits.max_search_response_bytes,
    )
    .await
    .map_err(DedupError::Unavailable)?;
    state.metrics.searches.inc();
    Ok(HttpResponse::Ok().json(page))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_search_sends_only_the_clauses_it_needs_and_indexes_object_pointers() {
        let r: SearchRequest = serde_json::from_value(json!({
            "source": "github",
            "where": [
                {"pointer": "/repository/full_name", "equals": "o/r"},
                {"pointer": "/commits/0/id", "in": ["a", "b"]},
                {"pointer": "/draft", "exists": false}
            ]
        }))
        .unwrap();
        let q = Query::build(&r, 10);
        assert_eq!(
            q.sql,
            "SELECT id, source, event_uuid, event_type, task_id, trace_id, received_at, stored_at, \
             length(body) FROM events WHERE id > $1 AND source = $2 \
             AND id >= (SELECT min(id) FROM events WHERE source = $2) AND body_json @> ANY($4::jsonb[]) AND body_json #> $3::text[] = ANY($5::jsonb[]) \
             AND body_json #> $6::text[] = ANY($7::jsonb[]) \
             AND (body_json IS NULL OR body_json #> $8::text[] IS NULL) ORDER BY id LIMIT $9"
        );
        assert_eq!(q.params.len(), 9);
    }

    #[test]
    fn a_time_window_bounds_the_id_range_read_from_its_own_index() {
        let r: SearchRequest = serde_json::from_value(json!({
            "since": "2026-12-01T00:00:00Z", "until": "2026-12-02T00:00:00Z"
        }))
        .unwrap();
        let q = Query::build(&r, 10);
        assert!(
            q.sql.starts_with(
                "WITH window_ids AS (SELECT min(id) lo, max(id) hi FROM (SELECT id FROM events \
                 WHERE received_at >= $2 AND received_at < $3 OFFSET 0) w) SELECT "
            ),
            "{}",
            q.sql
        );
        assert!(q.sql.contains(
            "AND id BETWEEN (SELECT lo FROM window_ids) AND (SELECT hi FROM window_ids) ORDER BY id"
        ));
    }
}
