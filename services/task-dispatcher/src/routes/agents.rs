//! The agents' API: claim (long-polled, optionally ending finished tasks
//! first) and heartbeat; the ends of attempts are in `finish`.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use rave_service::ids::{LeaseToken, TaskKind};
use serde::Deserialize;

use super::{AppState, Reply, agent, counted, finish, json_body, task_id, unavailable};
use crate::error::DispatchError;
use crate::metrics::KindLabel;
use crate::store;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimRequest {
    max_tasks: Option<i64>,
    wait_secs: Option<u64>,
    /// A subset of the agent's kinds; default: all of them.
    kinds: Option<Vec<TaskKind>>,
    /// Tasks this agent finished, ended before claiming more (items as in
    /// `/v1/agents/results`); their answers come back as `finished`.
    #[serde(default)]
    finished: Vec<Box<serde_json::value::RawValue>>,
}

pub(super) async fn claim(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Reply {
    counted(&state, claim_inner(&req, payload, &state).await)
}

async fn claim_inner(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Reply {
    let agent = agent(req, state)?;
    let request: ClaimRequest =
        json_body(req, payload, state.limits.max_results_request_bytes).await?;
    let kinds = match request.kinds {
        Some(kinds) => {
            if let Some(k) = kinds.iter().find(|k| !agent.kinds.contains(k)) {
                return Err(DispatchError::Forbidden(format!(
                    "agent {} does not handle kind {k}",
                    agent.id
                )));
            }
            kinds
        }
        None => agent.kinds.clone(),
    };
    let max = request.max_tasks.unwrap_or(1);
    if !(1..=state.claim.max_tasks).contains(&max) {
        return Err(DispatchError::InvalidRequest(format!(
            "max_tasks: must be between 1 and {}",
            state.claim.max_tasks
        )));
    }
    let wait = request.wait_secs.unwrap_or(state.claim.long_poll_secs);
    if wait > state.claim.long_poll_max_secs {
        return Err(DispatchError::InvalidRequest(format!(
            "wait_secs: at most {}",
            state.claim.long_poll_max_secs
        )));
    }
    // Ended first: a task finished here may free its entity for the claim.
    let finished = if request.finished.is_empty() {
        None
    } else {
        Some(finish::finish_all(state, &agent, &request.finished).await?)
    };
    let answer = |tasks: Vec<store::ClaimedTask>| match &finished {
        Some(finished) => serde_json::json!({ "tasks": tasks, "finished": finished }),
        None => serde_json::json!({ "tasks": tasks }),
    };
    // Nothing due: 204, unless there are answers to give.
    let empty = || match finished {
        Some(_) => HttpResponse::Ok().json(answer(Vec::new())),
        None => HttpResponse::NoContent().finish(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let capacity = usize::try_from(max).unwrap_or(1);
    loop {
        // Registered before looking, so work arriving meanwhile wakes it;
        // a claim that will not wait takes no wake-up from one that will.
        let ticket = (wait > 0).then(|| state.waker.register(&kinds, capacity));
        let tasks = store::claim(
            &state.pool,
            &agent.id,
            &kinds,
            max,
            state.clock.now(),
            state.claim.lease(),
            state.claim.max_response_bytes,
        )
        .await
        .map_err(unavailable)?;
        if !tasks.is_empty() {
            let mut tasks = tasks;
            for task in &mut tasks {
                state
                    .metrics
                    .claims
                    .get_or_create(&KindLabel {
                        kind: task.kind.to_string(),
                    })
                    .inc();
                tracing::info!(target: rave_service::telemetry::REQUEST_LOG, task_id = %task.task_id, agent = %agent.id, attempt = task.attempt, "task claimed");
                // The claim joins the task's trace; the agent continues from it.
                if let Some(parent) = task.traceparent.clone() {
                    let span = tracing::info_span!(
                        "task.claim",
                        otel.name = "task.claim",
                        task_id = %task.task_id,
                        agent = %agent.id,
                        attempt = task.attempt
                    );
                    rave_service::telemetry::set_remote_parent(&span, &parent);
                    span.in_scope(|| rave_service::telemetry::record_task_id(&task.task_id));
                    task.traceparent =
                        rave_service::telemetry::traceparent_of(&span).or(Some(parent));
                }
            }
            return Ok(HttpResponse::Ok().json(answer(tasks)));
        }
        let Some(ticket) = ticket.filter(|_| !state.waker.is_closed()) else {
            return Ok(empty());
        };
        // Counted while parked; /metrics reads the count at scrape time.
        let waiting = state.waker.waiting_guard();
        let woken = tokio::select! {
            () = ticket.woken() => true,
            _ = tokio::time::sleep_until(deadline) => false,
        };
        drop(waiting);
        if woken {
            state.metrics.claim_wakeups.inc();
        }
        if !woken || state.waker.is_closed() {
            return Ok(empty());
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseRequest {
    lease_token: LeaseToken,
}

pub(super) async fn heartbeat(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Reply {
    counted(&state, heartbeat_inner(&req, payload, &state).await)
}

async fn heartbeat_inner(req: &HttpRequest, payload: web::Payload, state: &AppState) -> Reply {
    let agent = agent(req, state)?;
    let id = task_id(req)?;
    rave_service::telemetry::record_task_id(&id);
    let body: LeaseRequest = json_body(req, payload, 64 * 1024).await?;
    let beat = store::heartbeat(
        &state.pool,
        &id,
        &body.lease_token,
        &agent.id,
        state.clock.now(),
        state.claim.lease(),
    )
    .await
    .map_err(unavailable)?
    .map_err(|r| finish::refused(r, &id))?;
    Ok(HttpResponse::Ok().json(beat))
}
