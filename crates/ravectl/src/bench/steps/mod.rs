//! The bench's measurements, one file per mode: `ceilings`, `intake`,
//! `dispatch`, `latency`, `reports`, `retention` (and `erasure`), `startup`, `soak`. Here: what several
//! modes share (signed webhooks, the agents' requests, draining the queue).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Ctx;
use super::http::{Conn, Response, Target, request};
use super::load::{self, Verdict};
use crate::cli::BenchScheme;
/// Builds signed webhooks for the chosen scheme.
#[derive(Clone)]
struct Webhooks {
    scheme: BenchScheme,
    secret: String,
    host: String,
    run: String,
    pad: String,
    duplicates: f64,
}

impl Webhooks {
    fn new(ctx: &Ctx, host: &str) -> anyhow::Result<Self> {
        let p = &ctx.params;
        let secret = match p.scheme {
            BenchScheme::Github => ctx.secret("github.secret")?,
            BenchScheme::Standard => ctx.secret("standard.secret")?,
            BenchScheme::Gitlab => ctx.secret("gitlab-signing.secret")?,
        };
        Ok(Self {
            scheme: p.scheme,
            secret,
            host: host.to_owned(),
            run: format!("{}-{}", ctx.run_id, crate::secrets::hex_token(2)),
            pad: "x".repeat(p.body_bytes.saturating_sub(60)),
            duplicates: p.duplicates,
        })
    }

    /// The `seq`-th delivery of `worker`: a repeat of its previous one with
    /// probability `duplicates` (chosen by a hash, so runs are repeatable).
    fn make(&self, worker: usize, seq: u64) -> Vec<u8> {
        let mixed = (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ worker as u64)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            >> 40;
        let repeat = seq > 0 && (mixed as f64 / (1u64 << 24) as f64) < self.duplicates;
        let n = if repeat { seq - 1 } else { seq };
        let id = format!("{}-{worker}-{n}", self.run);
        let body = format!("{{\"n\":{n},\"worker\":{worker},\"pad\":\"{}\"}}", self.pad);
        self.signed(&id, body.as_bytes())
    }

    fn signed(&self, id: &str, body: &[u8]) -> Vec<u8> {
        let now = rave_service::sign::now_unix();
        let json = ("content-type", "application/json");
        match self.scheme {
            BenchScheme::Github => {
                let sig = rave_service::sign::github(&self.secret, body);
                request(
                    "POST",
                    &self.host,
                    "/hooks/github",
                    &[
                        json,
                        ("x-github-event", "push"),
                        ("x-github-delivery", id),
                        ("x-hub-signature-256", &sig),
                    ],
                    body,
                )
            }
            BenchScheme::Standard => {
                let sig = rave_service::sign::standard(&self.secret, id, now, body);
                let ts = now.to_string();
                request(
                    "POST",
                    &self.host,
                    "/hooks/standard",
                    &[
                        json,
                        ("webhook-id", id),
                        ("webhook-timestamp", &ts),
                        ("webhook-signature", &sig),
                    ],
                    body,
                )
            }
            BenchScheme::Gitlab => {
                let sig = rave_service::sign::standard(&self.secret, id, now, body);
                let ts = now.to_string();
                request(
                    "POST",
                    &self.host,
                    "/hooks/gitlab",
                    &[
                        json,
                        ("x-gitlab-event", "Push Hook"),
                        ("idempotency-key", id),
                        ("webhook-id", id),
                        ("webhook-timestamp", &ts),
                        ("webhook-signature", &sig),
                    ],
                    body,
                )
            }
        }
    }
}

/// Only answers that mean "durably stored" count.
/// Stores `n` events of `source` with the database's own bulk path, as if
/// received `age` ago (a PostgreSQL interval such as `'400 days'`), 256-byte
/// bodies, ids `<run>-<source>-<k>`; then `VACUUM ANALYZE`, so the plans the
/// step measures see them.
fn load_events(ctx: &Ctx, source: &str, age: &str, n: u64) -> anyhow::Result<()> {
    let pg = super::tables::postgres(ctx)?;
    let prefix = format!("{}-{source}-", ctx.run_id);
    pg.psql_in(
        "rave_events",
        &format!(
            "INSERT INTO events (source, event_uuid, event_type, task_id, received_at, stored_at, headers, body)
             SELECT '{source}', '{prefix}' || g, 'push', substr(md5('{prefix}' || g), 1, 16),
                    now() - interval '{age}', now() - interval '{age}', '{{}}'::jsonb,
                    convert_to(repeat('x', 256), 'UTF8')
             FROM generate_series(1, {n}) g
             ON CONFLICT DO NOTHING"
        ),
    )?;
    pg.psql_in("rave_events", "VACUUM ANALYZE events")?;
    Ok(())
}

fn intake_verdict(r: &Response) -> Verdict {
    match r.status {
        202 if r.body.windows(9).any(|w| w == b"\"spooled\"") => ("spooled", 1),
        202 => ("accepted", 1),
        200 => ("duplicate", 1),
        429 => ("rate_limited", 0),
        503 => ("unavailable", 0),
        _ => ("error", 0),
    }
}

/// Saturation through nginx: every connection sends its next request as soon
/// as the last is answered, for the step's duration, with the components'
/// CPU and memory sampled; warns when nginx rate-limited the load.
async fn saturate<M, C>(
    ctx: &Ctx,
    make: M,
    classify: C,
) -> anyhow::Result<(
    load::RunResult,
    std::collections::BTreeMap<String, crate::bench::procs::Usage>,
)>
where
    M: Fn(usize, u64) -> Vec<u8> + Send + Sync + 'static,
    C: Fn(&Response) -> Verdict + Send + Sync + 'static,
{
    let p = &ctx.params;
    let measured = ctx
        .measured(load::run(
            &ctx.public,
            p.concurrency,
            p.duration(),
            load::Pace::Closed,
            make,
            classify,
        ))
        .await?;
    warn_rate_limited(&measured.0);
    Ok(measured)
}

fn warn_rate_limited(result: &load::RunResult) {
    if result.counts.get("rate_limited").copied().unwrap_or(0) > 0 {
        eprintln!(
            "warning: nginx rate-limited the load generator (429); start the stack with \
             `ravectl up --hooks-rate-limit 0 --agents-rate-limit 0` to measure RAVE rather than the limit"
        );
    }
}

async fn call(
    conn: &mut Option<Conn>,
    target: &Target,
    raw: &[u8],
) -> anyhow::Result<(u16, Value)> {
    if conn.is_none() {
        *conn = Some(target.connect().await?);
    }
    match conn.as_mut().expect("connected").send(raw).await {
        Ok(r) => {
            if r.close {
                *conn = None;
            }
            Ok((
                r.status,
                serde_json::from_slice(&r.body).unwrap_or(Value::Null),
            ))
        }
        Err(e) => {
            *conn = None;
            Err(e)
        }
    }
}

/// `POST /v1/agents/claim` for up to `max_tasks`, waiting `wait_secs`.
fn claim_request(host: &str, token: &str, max_tasks: usize, wait_secs: u64) -> Vec<u8> {
    claim_finishing(host, token, max_tasks, wait_secs, &[])
}

/// A claim that first ends the `finished` tasks (items as for
/// `/v1/agents/results`): an agent's whole cycle in one call.
fn claim_finishing(
    host: &str,
    token: &str,
    max_tasks: usize,
    wait_secs: u64,
    finished: &[Value],
) -> Vec<u8> {
    let mut body = json!({"max_tasks": max_tasks, "wait_secs": wait_secs});
    if !finished.is_empty() {
        body["finished"] = json!(finished);
    }
    agent_request(host, token, "/v1/agents/claim", &body)
}

/// A claimed `task`'s success, as an item of `/v1/agents/results`.
fn succeeded(task: &Value, result: Value) -> Value {
    json!({
        "task_id": task["task_id"], "lease_token": task["lease_token"],
        "outcome": "succeeded", "result": result,
    })
}

/// `POST /v1/agents/results` for `items`.
fn results_request(host: &str, token: &str, items: &[Value]) -> Vec<u8> {
    agent_request(
        host,
        token,
        "/v1/agents/results",
        &json!({ "results": items }),
    )
}

/// How many items of a batch answer (`results` or a claim's `finished`)
/// were answered 200.
fn answered_ok(items: &Value) -> u64 {
    answered_with(items, &[200])
}

/// How many items of a batch answer have one of `statuses`.
fn answered_with(items: &Value, statuses: &[u64]) -> u64 {
    items.as_array().map_or(0, |a| {
        a.iter()
            .filter(|i| i["status"].as_u64().is_some_and(|s| statuses.contains(&s)))
            .count() as u64
    })
}

/// `POST /v1/tasks/{id}/complete` for a claimed `task` with `result`.
fn complete_request(host: &str, token: &str, task: &Value, result: Value) -> Vec<u8> {
    let id = task["task_id"].as_str().unwrap_or_default();
    agent_request(
        host,
        token,
        &format!("/v1/tasks/{id}/complete"),
        &json!({"lease_token": task["lease_token"], "result": result}),
    )
}

fn agent_request(host: &str, token: &str, path: &str, body: &Value) -> Vec<u8> {
    let auth = format!("Bearer {token}");
    request(
        "POST",
        host,
        path,
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        body.to_string().as_bytes(),
    )
}

/// Claims and completes queued tasks until a claim comes back empty.
async fn drain(ctx: &Ctx, token: &str) -> anyhow::Result<u64> {
    let host = ctx.public.host().to_owned();
    let mut conn = None;
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let claim = claim_request(&host, token, 100, 0);
        let (status, answer) = call(&mut conn, &ctx.public, &claim).await?;
        if status != 200 {
            return Ok(done);
        }
        let items: Vec<Value> = answer["tasks"]
            .as_array()
            .map(|tasks| tasks.iter().map(|t| succeeded(t, json!(null))).collect())
            .unwrap_or_default();
        let (_, answer) = call(
            &mut conn,
            &ctx.public,
            &results_request(&host, token, &items),
        )
        .await?;
        done += answered_ok(&answer["results"]);
    }
    Ok(done)
}

mod ceilings;
mod dispatch;
mod erasure;
mod intake;
mod latency;
mod prefill;
mod reports;
mod retention;
mod search;
mod soak;
mod startup;

pub use ceilings::{Ceilings, ceilings};
pub use dispatch::{Dispatch, dispatch};
pub use erasure::{ErasureRun, erasure};
pub use intake::{FLAMEGRAPH, intake};
pub use latency::{Latency, latency};
pub use prefill::prefill;
pub use reports::reports;
pub use retention::{RetentionRun, retention};
pub use search::{SearchRun, search};
pub use soak::{Soak, soak};
pub use startup::startup;
