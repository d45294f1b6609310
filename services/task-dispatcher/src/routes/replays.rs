//! The operators' replays and what-if routing (ADR 19):
//! - `POST /v1/replays`: stored events become tasks again under the live
//!   rules (a dry run by default), idempotently per request id;
//! - `GET /v1/replays/{request_id}`: its record and the tasks it made;
//! - `POST /v1/routes/diff`: proposed rules against the live ones, over
//!   stored events, changing nothing.

use actix_web::{HttpRequest, HttpResponse, web};
use rave_service::search::SearchRequest;
use serde::{Deserialize, Serialize};

use super::internal::{count_quarantined, take_in};
use super::{AppState, Reply, counted, json_body, operator, unavailable};
use crate::error::DispatchError;
use crate::replay::client::{EventsStore, FoundEvent};
use crate::replay::diff::Diff;
use crate::replay::{self, Planned, ReplayId};
use crate::routing::Router;
use crate::settings::RouteSettings;
use crate::store::{self, Begun, Recorded, ReplayCounts};

/// `POST /v1/replays` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// Needed to apply; a dry run may leave it out.
    request_id: Option<ReplayId>,
    #[serde(default = "yes")]
    dry_run: bool,
    max_events: Option<usize>,
    /// Events the dispatcher ignored, or set aside in quarantine, rather
    /// than every stored event the filter matches.
    from: Option<Recorded>,
    #[serde(default)]
    filter: SearchRequest,
}

fn yes() -> bool {
    true
}

/// What a request id is bound to: a repeat must ask the same.
#[derive(Debug, Serialize)]
struct Asked<'a> {
    from: Option<Recorded>,
    filter: &'a SearchRequest,
    max_events: usize,
}

#[derive(Debug, Serialize)]
struct ReplayAnswer {
    request_id: Option<String>,
    dry_run: bool,
    /// Answered from the record of an earlier call with this request id.
    repeated: bool,
    #[serde(flatten)]
    counts: ReplayCounts,
    /// More events may match than this request took: send another request
    /// (another request id) with `filter.after = next_after`.
    truncated: bool,
    next_after: Option<i64>,
    /// What the live rules make of each event (a dry run: would make).
    events: Vec<Planned>,
}

fn events_store(state: &AppState) -> Result<&EventsStore, DispatchError> {
    state
        .events_store
        .as_deref()
        .ok_or(DispatchError::ReplayNotConfigured)
}

/// The dispatcher's own records a `from` replay walks, a chunk of task ids
/// at a time, oldest first.
struct RecordedIds<'a> {
    pool: &'a rave_pg::Pool,
    which: Recorded,
    source: Option<String>,
    types: Vec<String>,
    cursor: Option<store::RecordedCursor>,
    /// The last chunk was the last one.
    done: bool,
}

/// The events a replay or diff reads, page by page: one cursor over the
/// filter, or (for `from`) the filter over each chunk of recorded task ids
/// in turn, until the cap: every filter applies before the cap counts.
struct Scan<'a> {
    store: &'a EventsStore,
    filter: SearchRequest,
    recorded: Option<RecordedIds<'a>>,
    after: i64,
    page_size: i64,
    remaining: usize,
    /// The current cursor (or chunk) is exhausted.
    exhausted: bool,
    truncated: bool,
}

impl<'a> Scan<'a> {
    fn new(
        store: &'a EventsStore,
        filter: SearchRequest,
        recorded: Option<RecordedIds<'a>>,
        page_size: i64,
        max: usize,
    ) -> Self {
        Self {
            after: filter.after,
            store,
            filter,
            exhausted: recorded.is_some(),
            recorded,
            page_size,
            remaining: max,
            truncated: false,
        }
    }

    /// The next chunk of recorded task ids into the filter; false when
    /// there is none.
    async fn next_chunk(&mut self) -> Result<bool, DispatchError> {
        let Some(r) = self.recorded.as_mut().filter(|r| !r.done) else {
            return Ok(false);
        };
        let ids = store::recorded_task_ids(
            r.pool,
            r.which,
            r.source.as_deref(),
            &r.types,
            r.cursor.as_ref(),
            self.page_size,
        )
        .await
        .map_err(unavailable)?;
        r.done = (ids.len() as i64) < self.page_size;
        r.cursor = ids.last().cloned().or(r.cursor.take());
        self.filter.task_ids = ids
            .into_iter()
            .filter_map(|(_, id)| rave_service::ids::TaskId::parse(id).ok())
            .collect();
        self.after = 0;
        self.exhausted = false;
        Ok(!self.filter.task_ids.is_empty() || !r.done)
    }

    async fn next(&mut self) -> Result<Option<Vec<FoundEvent>>, DispatchError> {
        loop {
            if self.remaining == 0 {
                return Ok(None);
            }
            if self.exhausted && !self.next_chunk().await? {
                return Ok(None);
            }
            if self.filter.task_ids.is_empty() && self.recorded.is_some() {
                // A chunk of ids none of which parses: on to the next.
                self.exhausted = true;
                continue;
            }
            let limit = self.page_size.min(self.remaining as i64);
            let page = self.store.page(&self.filter, self.after, limit).await?;
            let mut events = page.events;
            events.truncate(self.remaining);
            self.remaining -= events.len();
            let more_chunks = self.recorded.as_ref().is_some_and(|r| !r.done);
            match page.next_after {
                Some(next) => self.after = next,
                None => self.exhausted = true,
            }
            if self.remaining == 0 && (page.next_after.is_some() || more_chunks) {
                self.truncated = true;
            }
            if !events.is_empty() {
                return Ok(Some(events));
            }
        }
    }

    /// Where the next request starts, when this one stopped at its cap
    /// (for a plain filter; recorded ids have no cursor).
    fn next_after(&self) -> Option<i64> {
        (self.truncated && self.recorded.is_none()).then_some(self.after)
    }
}

pub(super) async fn replay(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Reply {
    counted(&state, replay_inner(&req, payload, &state).await)
}

async fn replay_inner(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Reply {
    operator(req, state)?;
    let events_store = events_store(state)?;
    let mut r: ReplayRequest = json_body(req, payload, state.limits.max_request_bytes).await?;
    let cap = state.replay.max_events;
    let max_events = r.max_events.unwrap_or(cap);
    if !(1..=cap).contains(&max_events) {
        return Err(DispatchError::InvalidRequest(format!(
            "max_events: 1 to {cap} (replay.max_events)"
        )));
    }
    if r.from.is_some() && !r.filter.task_ids.is_empty() {
        return Err(DispatchError::InvalidRequest(
            "filter.task_ids: not with from (it selects the task ids)".into(),
        ));
    }
    // Paging is the replay's own.
    (r.filter.limit, r.filter.include_bodies) = (None, false);
    let now = state.clock.now();
    let asked = serde_json::to_value(Asked {
        from: r.from,
        filter: &r.filter,
        max_events,
    })
    .map_err(|e| DispatchError::Unexpected(e.into()))?;
    let request_id = match (&r.request_id, r.dry_run) {
        (Some(id), _) => id.clone(),
        (None, true) => ReplayId::parse("dry-run").expect("a valid id"),
        (None, false) => {
            return Err(DispatchError::InvalidRequest(
                "request_id: needed to apply a replay (it makes the replay idempotent)".into(),
            ));
        }
    };
    let mut until = r.filter.until.unwrap_or(now);
    if !r.dry_run {
        let who = requested_by(req);
        let begun = store::begin_replay(
            &state.pool,
            request_id.as_str(),
            &asked,
            max_events as i32,
            &who,
            now,
            until,
        )
        .await
        .map_err(unavailable)?;
        if let Begun::Existing(record) = begun {
            if record.filter != asked {
                return Err(DispatchError::Conflict(format!(
                    "request_id {request_id} was used for another replay: use a new one"
                )));
            }
            if record.finished_at.is_some() {
                return Ok(HttpResponse::Ok().json(ReplayAnswer {
                    request_id: Some(record.request_id),
                    dry_run: false,
                    repeated: true,
                    counts: record.counts,
                    truncated: record.next_after.is_some(),
                    next_after: record.next_after,
                    events: Vec::new(),
                }));
            }
            // An earlier call stopped half-way: finish it, in its window.
            until = record.until_at;
        }
    }
    r.filter.until = Some(until);

    let recorded = r.from.map(|which| RecordedIds {
        pool: &state.pool,
        which,
        source: r.filter.source.as_ref().map(|s| s.to_string()),
        types: r.filter.event_types.iter().map(|t| t.to_string()).collect(),
        cursor: None,
        done: false,
    });
    let mut scan = Scan::new(
        events_store,
        r.filter.clone(),
        recorded,
        state.replay.page_size,
        max_events,
    );
    let mut counts = ReplayCounts::default();
    let mut planned = Vec::new();
    while let Some(page) = scan.next().await? {
        counts.matched += page.len() as i32;
        let live = state.live.current();
        planned.extend(
            page.iter()
                .filter_map(|e| replay::plan(&live.router, &request_id, e)),
        );
        if r.dry_run {
            continue;
        }
        let relayed = page
            .iter()
            .map(|e| replay::relayed(&request_id, e))
            .collect();
        let (accepted, set_aside) = take_in(state, relayed).await?;
        store::quarantine(&state.pool, state.clock.now(), &set_aside)
            .await
            .map_err(unavailable)?;
        count_quarantined(state, &set_aside);
        counts.created += accepted.created_count as i32;
        counts.ignored += accepted.ignored as i32;
        counts.duplicates += accepted.duplicates as i32;
        counts.quarantined += set_aside.len() as i32;
        state
            .metrics
            .replayed_tasks
            .inc_by(accepted.created_count as u64);
    }
    let truncated = scan.truncated;
    let next_after = scan.next_after();
    if !r.dry_run {
        store::finish_replay(
            &state.pool,
            request_id.as_str(),
            counts,
            next_after,
            state.clock.now(),
        )
        .await
        .map_err(unavailable)?;
    }
    state
        .metrics
        .replays
        .get_or_create(&crate::metrics::ModeLabel {
            mode: if r.dry_run { "dry_run" } else { "apply" }.into(),
        })
        .inc();
    tracing::info!(
        request_id = %request_id,
        dry_run = r.dry_run,
        matched = counts.matched,
        created = counts.created,
        "replay"
    );
    Ok(HttpResponse::Ok().json(ReplayAnswer {
        request_id: r.request_id.map(String::from),
        dry_run: r.dry_run,
        repeated: false,
        counts,
        truncated,
        next_after,
        events: planned,
    }))
}

/// Who asked: the first 12 hex digits of the operator token's SHA-256
/// (enough to tell operators apart, nothing to log in with).
fn requested_by(req: &HttpRequest) -> String {
    let token = crate::auth::bearer(req).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    format!("token:{}", &hex::encode(digest.as_ref())[..12])
}

pub(super) async fn get(req: HttpRequest, state: web::Data<AppState>) -> Reply {
    counted(&state, get_inner(&req, &state).await)
}

async fn get_inner(req: &HttpRequest, state: &AppState) -> Reply {
    operator(req, state)?;
    let raw = req.match_info().get("request_id").unwrap_or_default();
    let id = ReplayId::parse(raw).map_err(DispatchError::InvalidRequest)?;
    let record = store::get_replay(&state.pool, id.as_str())
        .await
        .map_err(unavailable)?
        .ok_or_else(|| DispatchError::ReplayNotFound(id.to_string()))?;
    let tasks = store::replayed_tasks(&state.pool, id.as_str(), state.replay.max_events as i64)
        .await
        .map_err(unavailable)?;
    let mut body = serde_json::to_value(record).map_err(|e| DispatchError::Unexpected(e.into()))?;
    body["tasks"] = tasks
        .into_iter()
        .map(|(task_id, original)| serde_json::json!({"task_id": task_id, "original_task_id": original}))
        .collect();
    Ok(HttpResponse::Ok().json(body))
}

/// `POST /v1/routes/diff` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffRequest {
    /// Proposed rules: the dispatcher's own TOML (its `[[routes]]`; other
    /// keys are not read).
    routes_toml: String,
    #[serde(default)]
    filter: SearchRequest,
    max_events: Option<usize>,
    examples: Option<usize>,
}

/// The `[[routes]]` of a dispatcher settings file.
#[derive(Debug, Deserialize)]
struct RoutesFile {
    #[serde(default)]
    routes: Vec<RouteSettings>,
}

/// Proposed routing rules read as the dispatcher reads its own.
pub fn proposed_router(toml_text: &str) -> Result<Router, String> {
    let file: RoutesFile = toml::from_str(toml_text).map_err(|e| format!("routes_toml: {e}"))?;
    Router::from_settings(&file.routes).map_err(|e| format!("routes_toml: {e}"))
}

pub(super) async fn diff(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Reply {
    counted(&state, diff_inner(&req, payload, &state).await)
}

async fn diff_inner(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Reply {
    operator(req, state)?;
    let events_store = events_store(state)?;
    let mut r: DiffRequest = json_body(req, payload, state.limits.max_request_bytes).await?;
    let proposed = proposed_router(&r.routes_toml).map_err(DispatchError::InvalidRequest)?;
    let cap = state.replay.max_diff_events;
    let max_events = r.max_events.unwrap_or(cap);
    if !(1..=cap).contains(&max_events) {
        return Err(DispatchError::InvalidRequest(format!(
            "max_events: 1 to {cap} (replay.max_diff_events)"
        )));
    }
    (r.filter.limit, r.filter.include_bodies) = (None, false);
    r.filter.until = Some(r.filter.until.unwrap_or(state.clock.now()));
    let live = state.live.current();
    let examples = r.examples.unwrap_or(state.replay.diff_examples).min(100);
    let mut diff = Diff::new(&live.router, &proposed, examples);
    let mut scan = Scan::new(
        events_store,
        r.filter,
        None,
        state.replay.page_size,
        max_events,
    );
    while let Some(page) = scan.next().await? {
        for event in &page {
            diff.add(event);
        }
    }
    state.metrics.route_diffs.inc();
    let report = diff.report(scan.next_after());
    let mut body = serde_json::to_value(report).map_err(|e| DispatchError::Unexpected(e.into()))?;
    body["live_rules"] = live.router.len().into();
    body["proposed_rules"] = proposed.len().into();
    Ok(HttpResponse::Ok().json(body))
}
