//! The outbox relay: delivers every stored event to task-dispatcher.
//!
//! Each step claims the oldest outbox rows (one statement, `SKIP LOCKED`,
//! so replicas share the work), posts their events in one batch with no
//! transaction open, and deletes the rows only after the dispatcher answered
//! 2xx. A crash or error before the delete leaves the rows to be sent again
//! (released at once, or when the claim runs out); the dispatcher creates
//! tasks idempotently on `task_id`, so a redelivered batch creates nothing
//! twice. An event the dispatcher refuses on its own is set aside, never
//! resent forever (ADR 12).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rave_pg::{Pool, Prepared};
use rave_service::settings::Secret;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;
use crate::settings::RelaySettings;

#[derive(Debug, Serialize)]
struct RelayedEvent {
    task_id: String,
    source: String,
    event_uuid: String,
    event_type: String,
    #[serde(with = "time::serde::rfc3339")]
    received_at: OffsetDateTime,
    trace_id: Option<String>,
    traceparent: Option<String>,
    headers: serde_json::Value,
    body_base64: String,
}

#[derive(Debug, Clone)]
pub struct Relay {
    pool: Pool,
    http: reqwest_middleware::ClientWithMiddleware,
    /// Each task-dispatcher replica's hand-off URL, preferred first.
    urls: Vec<String>,
    /// And its erasure URL.
    erasure_urls: Vec<String>,
    token: Secret,
    settings: RelaySettings,
    metrics: Arc<Metrics>,
    /// This relay's name on its claims (random per process).
    relay_id: String,
}

/// The relay's claim: the oldest unclaimed rows, `(outbox id, event id,
/// body size)`, for parameters `($1 limit, $2 lease seconds, $3 relay id)`.
///
/// Shaped so that a prepared statement's generic plan, which PostgreSQL
/// keeps once it costs no more than planning each call, reads only the
/// rows it claims whatever the outbox's statistics say: an ordered index
/// scan takes and locks them, the `UPDATE` finds them by `ctid` (a TID
/// scan; the rows are locked, so they cannot move), and each body's size
/// is one primary-key lookup. The statement before joined the claimed rows
/// back to the outbox and to events, and its generic plan hashed the whole
/// outbox, dead rows included, for that join (7–8 ms a claim under load);
/// a literal limit instead gave seq scans wherever the outbox looked short
/// but was long with dead rows (3.5 ms a claim while tasks were queued for
/// `ravectl bench dispatch`).
pub const CLAIM: &str = "WITH p AS MATERIALIZED (
         SELECT o.ctid AS tid, o.id, o.event_id FROM outbox o
         WHERE o.claimed_until IS NULL OR o.claimed_until < now()
         ORDER BY o.id LIMIT $1 FOR UPDATE SKIP LOCKED
     ), u AS (
         UPDATE outbox o SET claimed_until = now() + make_interval(secs => $2), claimed_by = $3
         WHERE o.ctid = ANY (ARRAY(SELECT tid FROM p))
         RETURNING o.id
     )
     SELECT p.id, p.event_id, (SELECT length(e.body) FROM events e WHERE e.id = p.event_id) AS size
     FROM p JOIN u USING (id)";

/// What task-dispatcher said to a batch.
#[derive(Debug)]
enum Answer {
    Accepted,
    /// A 4xx for the events themselves: status and body.
    Refused(u16, String),
}

impl Relay {
    /// `None` when no dispatcher is configured (events wait in the outbox).
    pub fn new(
        pool: Pool,
        settings: &RelaySettings,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Option<Self>> {
        let (Some(url), Some(token)) = (&settings.dispatcher_url, &settings.token) else {
            return Ok(None);
        };
        Ok(Some(Self {
            pool,
            http: rave_service::http::traced_client(Duration::from_millis(settings.timeout_ms))?,
            urls: std::iter::once(url)
                .chain(&settings.fallback_urls)
                .map(|url| format!("{}/v1/internal/events", url.trim_end_matches('/')))
                .collect(),
            erasure_urls: std::iter::once(url)
                .chain(&settings.fallback_urls)
                .map(|url| format!("{}/v1/internal/erasures", url.trim_end_matches('/')))
                .collect(),
            token: token.clone(),
            settings: settings.clone(),
            metrics,
            relay_id: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(rave_service::crypto::random_bytes::<9>()),
        }))
    }

    /// Delivers one batch of the oldest undelivered events. Returns how many
    /// were delivered or set aside (0: the outbox is empty, or claimed by
    /// other relays).
    ///
    /// The rows are claimed in one short statement (`claimed_until`,
    /// `claimed_by`; replicas divide them with `SKIP LOCKED`), so no
    /// transaction or row lock is held while task-dispatcher is called. After
    /// its 2xx this relay deletes the rows it still holds; on a failure it
    /// releases them; if it dies, its claims run out. A batch answered 4xx is
    /// sent again one event at a time, and an event refused on its own is set
    /// aside in `outbox_refused` with the answer (ADR 12).
    pub async fn relay_once(&self) -> anyhow::Result<usize> {
        let claim = self.claim().await?;
        if claim.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = claim.iter().map(|(id, _)| *id).collect();
        let outcome = async {
            match self.post(&claim).await? {
                Answer::Accepted => {
                    self.finish(&ids).await?;
                    Ok(ids.len())
                }
                Answer::Refused(status, answer) if ids.len() == 1 => {
                    self.set_aside(ids[0], status, &answer).await?;
                    Ok(1)
                }
                Answer::Refused(..) => {
                    // One event in it may be the cause: each on its own.
                    let mut done = 0;
                    for one in &claim {
                        done += match self.post(std::slice::from_ref(one)).await? {
                            Answer::Accepted => self.finish(&[one.0]).await?,
                            Answer::Refused(status, answer) => {
                                self.set_aside(one.0, status, &answer).await?;
                                1
                            }
                        };
                    }
                    Ok(done)
                }
            }
        }
        .await;
        if outcome.is_err() {
            // Let the next step (here or on a replica) try at once.
            let _ = self.release(&ids).await;
        }
        outcome
    }

    /// Claims the oldest unclaimed rows within the batch and byte budgets
    /// (the first row always goes): `(outbox id, event id)`.
    async fn claim(&self) -> anyhow::Result<Vec<(i64, i64)>> {
        let client = self.pool.get().await?;
        // Long enough for the call and its fallbacks; a dead relay's rows
        // come back after it.
        let lease = (3 * self.settings.timeout_ms.max(1000)) as f64 / 1000.0;
        let rows = client
            .query_prepared(CLAIM, &[&self.settings.batch_size, &lease, &self.relay_id])
            .await?;
        drop(client);
        let mut claimed: Vec<(i64, i64, i32)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        claimed.sort_unstable();
        let mut claim = Vec::new();
        let mut excess = Vec::new();
        let mut bytes = 0usize;
        for (id, event_id, size) in claimed {
            let size = usize::try_from(size).unwrap_or(0);
            if claim.is_empty()
                || (excess.is_empty() && bytes + size <= self.settings.max_batch_bytes)
            {
                bytes += size;
                claim.push((id, event_id));
            } else {
                excess.push(id);
            }
        }
        if !excess.is_empty() {
            self.release(&excess).await?;
        }
        Ok(claim)
    }

    /// Posts the claimed events in one batch.
    async fn post(&self, claim: &[(i64, i64)]) -> anyhow::Result<Answer> {
        let client = self.pool.get().await?;
        let event_ids: Vec<i64> = claim.iter().map(|(_, e)| *e).collect();
        let rows = client
            .query_prepared(
                "SELECT task_id, source, event_uuid, event_type, received_at, trace_id, headers, body, traceparent
                 FROM events WHERE id = ANY($1) ORDER BY id",
                &[&event_ids],
            )
            .await?;
        drop(client);
        let events: Vec<RelayedEvent> = rows
            .iter()
            .map(|r| RelayedEvent {
                task_id: r.get(0),
                source: r.get(1),
                event_uuid: r.get(2),
                event_type: r.get(3),
                received_at: r.get(4),
                trace_id: r.get(5),
                traceparent: r.get(8),
                headers: r.get(6),
                body_base64: BASE64.encode(r.get::<_, &[u8]>(7)),
            })
            .collect();
        let body = serde_json::json!({ "events": events });
        let response = self.send(&self.urls, &body).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(Answer::Accepted);
        }
        let answer = response.text().await.unwrap_or_default();
        // 401/403 (a wrong token), 429 and 5xx are the relay's or the
        // dispatcher's trouble, not the events': retried as they are.
        if status.is_client_error() && ![401, 403, 404, 408, 429].contains(&status.as_u16()) {
            return Ok(Answer::Refused(status.as_u16(), answer));
        }
        anyhow::bail!("task-dispatcher answered {status}: {answer}")
    }

    /// Posts `body` with the relay's token to the first of `urls` that
    /// takes the connection.
    async fn send(
        &self,
        urls: &[String],
        body: &serde_json::Value,
    ) -> anyhow::Result<reqwest_middleware::reqwest::Response> {
        rave_service::http::send_to_first_replica(urls, |url| {
            self.http
                .post(url)
                .bearer_auth(self.token.expose())
                .json(body)
        })
        .await
        .map_err(Into::into)
    }

    /// Deletes delivered rows this relay still holds; how many.
    async fn finish(&self, ids: &[i64]) -> anyhow::Result<usize> {
        let client = self.pool.get().await?;
        client
            .execute_prepared(
                "DELETE FROM outbox WHERE id = ANY($1) AND claimed_by = $2",
                &[&ids, &self.relay_id],
            )
            .await?;
        self.metrics.relayed.inc_by(ids.len() as u64);
        Ok(ids.len())
    }

    async fn release(&self, ids: &[i64]) -> anyhow::Result<()> {
        let client = self.pool.get().await?;
        client
            .execute_prepared(
                "UPDATE outbox SET claimed_until = NULL, claimed_by = NULL
                 WHERE id = ANY($1) AND claimed_by = $2",
                &[&ids, &self.relay_id],
            )
            .await?;
        Ok(())
    }

    /// Moves a row the dispatcher refused on its own to `outbox_refused`.
    async fn set_aside(&self, id: i64, status: u16, answer: &str) -> anyhow::Result<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let answer = rave_service::content::storable_text(answer, 2048);
        let moved = tx
            .execute_prepared(
                "WITH gone AS (DELETE FROM outbox WHERE id = $1 AND claimed_by = $2 RETURNING event_id, task_id)
                 INSERT INTO outbox_refused (event_id, task_id, status, answer)
                 SELECT event_id, task_id, $3, $4 FROM gone ON CONFLICT (event_id) DO NOTHING",
                &[&id, &self.relay_id, &i32::from(status), &answer],
            )
            .await?;
        tx.commit().await?;
        if moved > 0 {
            tracing::error!(outbox_id = id, status, answer = %answer, "task-dispatcher refused an event on its own; set aside in outbox_refused");
            self.metrics.relay_refused.inc();
        }
        Ok(())
    }

    /// Asks task-dispatcher to erase its copies (each task's payload) of one
    /// batch of erased events, and marks them done after its 2xx. Returns how
    /// many. An erasure waits for the end of a relay's claim on its event,
    /// so a delivery in flight when it was erased has ended first.
    pub async fn forward_erasures_once(&self) -> anyhow::Result<usize> {
        let client = self.pool.get().await?;
        let rows = client
            .query_prepared(
                "SELECT id, task_id, reason FROM erasures
                 WHERE forwarded_at IS NULL AND forward_after <= now()
                 ORDER BY id LIMIT $1",
                &[&self.settings.batch_size],
            )
            .await?;
        drop(client);
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let erasures: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::json!({ "task_id": r.get::<_, &str>(1), "reason": r.get::<_, &str>(2) }))
            .collect();
        let body = serde_json::json!({ "erasures": erasures });
        let outcome = async {
            let response = self.send(&self.erasure_urls, &body).await?;
            let status = response.status();
            if !status.is_success() {
                let answer = response.text().await.unwrap_or_default();
                anyhow::bail!("task-dispatcher answered {status} to erasures: {answer}");
            }
            let client = self.pool.get().await?;
            client
                .execute_prepared(
                    "UPDATE erasures SET forwarded_at = now() WHERE id = ANY($1)",
                    &[&ids],
                )
                .await?;
            Ok(ids.len())
        }
        .await;
        if outcome.is_err() {
            self.metrics.erasure_forward_failures.inc();
        }
        outcome
    }

    /// [`Relay::forward_erasures_once`] until no batch is left (or one fails).
    pub async fn forward_erasures(&self) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let n = self.forward_erasures_once().await?;
            total += n;
            if (n as i64) < self.settings.batch_size {
                return Ok(total);
            }
        }
    }

    /// Relays until `stop`: at once after new events (`wake`), otherwise
    /// every `interval_ms`; after a failure, backs off up to `max_backoff_ms`.
    pub async fn run(self, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        let interval = Duration::from_millis(self.settings.interval_ms);
        let max_backoff = Duration::from_millis(self.settings.max_backoff_ms);
        let mut backoff = Duration::from_millis(100);
        let mut erasures_checked = tokio::time::Instant::now();
        loop {
            // Erasures are rare: looked for once an interval, not every step.
            if erasures_checked.elapsed() >= interval {
                erasures_checked = tokio::time::Instant::now();
                if let Err(e) = self.forward_erasures().await {
                    tracing::warn!(error = %format!("{e:#}"), "task-dispatcher did not erase its copies of erased events; retrying");
                }
            }
            let pause = match self.relay_once().await {
                Ok(n) if n > 0 => {
                    backoff = Duration::from_millis(100);
                    // A stop does not wait for the outbox to empty: the next
                    // process relays the rest.
                    if *stop.borrow() {
                        return;
                    }
                    continue;
                }
                Ok(_) => interval,
                Err(e) => {
                    self.metrics.relay_failures.inc();
                    tracing::warn!(error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "relaying events failed");
                    let pause = backoff;
                    backoff = (backoff * 2).min(max_backoff);
                    pause
                }
            };
            tokio::select! {
                _ = wake.notified(), if pause == interval => {}
                _ = tokio::time::sleep(pause) => {}
                _ = rave_service::served::stopping(&mut stop) => return,
            }
        }
    }
}
