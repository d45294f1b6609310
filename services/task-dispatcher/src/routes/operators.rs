//! The operators' API: tasks and their history, ignored events, cancel and
//! retry.

use actix_web::{HttpRequest, HttpResponse, web};

use super::{AppState, Reply, counted, operator, task_id, unavailable};
use crate::error::DispatchError;
use crate::store::{self};

pub(super) async fn list_tasks(req: HttpRequest, state: web::Data<AppState>) -> Reply {
    counted(&state, list_tasks_inner(&req, &state).await)
}

async fn list_tasks_inner(req: &HttpRequest, state: &AppState) -> Reply {
    operator(req, state)?;
    let filter = web::Query::<store::TaskFilter>::from_query(req.query_string())
        .map_err(|e| DispatchError::InvalidRequest(format!("query: {e}")))?
        .into_inner();
    if let Some(s) = &filter.state
        && !crate::metrics::STATES.contains(&s.as_str())
    {
        return Err(DispatchError::InvalidRequest(format!(
            "state: one of {:?}",
            crate::metrics::STATES
        )));
    }
    let limit = filter.limit.unwrap_or(100);
    if !(1..=state.limits.max_page_size).contains(&limit) {
        return Err(DispatchError::InvalidRequest(format!(
            "limit: 1 to {}",
            state.limits.max_page_size
        )));
    }
    let tasks = store::list_tasks(&state.pool, &filter, limit)
        .await
        .map_err(unavailable)?;
    let next_after = (tasks.len() as i64 == limit)
        .then(|| tasks.last().map(|t| t.seq))
        .flatten();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "tasks": tasks, "next_after": next_after })))
}

pub(super) async fn get_task(req: HttpRequest, state: web::Data<AppState>) -> Reply {
    counted(&state, get_task_inner(&req, &state).await)
}

async fn get_task_inner(req: &HttpRequest, state: &AppState) -> Reply {
    operator(req, state)?;
    let id = task_id(req)?;
    let (task, attempts) = store::get_task(&state.pool, &id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| DispatchError::TaskNotFound(id.to_string()))?;
    let mut body = serde_json::to_value(task).map_err(|e| DispatchError::Unexpected(e.into()))?;
    body["attempts"] =
        serde_json::to_value(attempts).map_err(|e| DispatchError::Unexpected(e.into()))?;
    // A replayed task names the event's original task and the replay.
    if let Some((request_id, original)) = store::replay_of(&state.pool, id.as_str())
        .await
        .map_err(unavailable)?
    {
        body["replay"] =
            serde_json::json!({"request_id": request_id, "original_task_id": original});
    }
    Ok(HttpResponse::Ok().json(body))
}

pub(super) async fn cancel(req: HttpRequest, state: web::Data<AppState>) -> Reply {
    counted(&state, cancel_inner(&req, &state).await)
}

async fn cancel_inner(req: &HttpRequest, state: &AppState) -> Reply {
    operator(req, state)?;
    let id = task_id(req)?;
    match store::cancel(&state.pool, &id, state.clock.now())
        .await
        .map_err(unavailable)?
    {
        store::CancelOutcome::NotFound => Err(DispatchError::TaskNotFound(id.to_string())),
        store::CancelOutcome::AlreadyFinished => Err(DispatchError::Conflict(format!(
            "task {id} has already finished"
        ))),
        outcome => Ok(HttpResponse::Ok().json(serde_json::json!({ "outcome": outcome }))),
    }
}

pub(super) async fn retry(req: HttpRequest, state: web::Data<AppState>) -> Reply {
    counted(&state, retry_inner(&req, &state).await)
}

async fn retry_inner(req: &HttpRequest, state: &AppState) -> Reply {
    operator(req, state)?;
    let id = task_id(req)?;
    match store::retry(&state.pool, &id, state.clock.now())
        .await
        .map_err(unavailable)?
    {
        None => Err(DispatchError::TaskNotFound(id.to_string())),
        Some((was, false)) => Err(DispatchError::Conflict(format!(
            "task {id} is {was}; only dead or failed tasks can be retried"
        ))),
        Some(_) => {
            state.waker.wake();
            Ok(HttpResponse::Ok().json(serde_json::json!({ "state": "queued" })))
        }
    }
}

pub(super) async fn list_ignored(req: HttpRequest, state: web::Data<AppState>) -> Reply {
    counted(&state, list_ignored_inner(&req, &state).await)
}

async fn list_ignored_inner(req: &HttpRequest, state: &AppState) -> Reply {
    operator(req, state)?;
    let events = store::list_ignored(&state.pool, state.limits.max_page_size)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "events": events })))
}
