//! The outbox relay: delivers every stored event to task-dispatcher.
//!
//! Each step locks the oldest outbox rows (`FOR UPDATE SKIP LOCKED`, so
//! replicas share the work), posts their events in one batch, and deletes
//! the rows in the same transaction only after the dispatcher answered 2xx.
//! A crash or error anywhere before the commit leaves the rows to be sent
//! again; the dispatcher creates tasks idempotently on `task_id`, so a
//! redelivered batch creates nothing twice.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rave_pg::Pool;
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
    token: Secret,
    settings: RelaySettings,
    metrics: Arc<Metrics>,
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
            token: token.clone(),
            settings: settings.clone(),
            metrics,
        }))
    }

    /// Delivers one batch of the oldest undelivered events. Returns how many
    /// were delivered (0: the outbox is empty, or locked by other replicas).
    pub async fn relay_once(&self) -> anyhow::Result<usize> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let locked = tx
            .query(
                "SELECT o.id, length(e.body) FROM outbox o JOIN events e ON e.id = o.event_id
                 ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED",
                &[&self.settings.batch_size],
            )
            .await?;
        // Keep batches within the byte budget; the first row always goes.
        let mut ids = Vec::new();
        let mut bytes = 0usize;
        for row in &locked {
            let size = row.get::<_, i32>(1) as usize;
            if !ids.is_empty() && bytes + size > self.settings.max_batch_bytes {
                break;
            }
            bytes += size;
            ids.push(row.get::<_, i64>(0));
        }
        if ids.is_empty() {
            return Ok(0);
        }
        let rows = tx
            .query(
                "SELECT e.task_id, e.source, e.event_uuid, e.event_type, e.received_at, e.trace_id, e.headers, e.body,
                        e.traceparent
                 FROM outbox o JOIN events e ON e.id = o.event_id WHERE o.id = ANY($1) ORDER BY o.id",
                &[&ids],
            )
            .await?;
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
        // A failure here (a timeout included) leaves the rows for the next
        // step, as with one replica.
        let body = serde_json::json!({ "events": events });
        let response = rave_service::http::send_to_first_replica(&self.urls, |url| {
            self.http
                .post(url)
                .bearer_auth(self.token.expose())
                .json(&body)
        })
        .await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("task-dispatcher answered {status}: {body}");
        }
        tx.execute("DELETE FROM outbox WHERE id = ANY($1)", &[&ids])
            .await?;
        tx.commit().await?;
        self.metrics.relayed.inc_by(ids.len() as u64);
        Ok(ids.len())
    }

    /// Relays until `stop`: at once after new events (`wake`), otherwise
    /// every `interval_ms`; after a failure, backs off up to `max_backoff_ms`.
    pub async fn run(self, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        let interval = Duration::from_millis(self.settings.interval_ms);
        let max_backoff = Duration::from_millis(self.settings.max_backoff_ms);
        let mut backoff = Duration::from_millis(100);
        loop {
            let pause = match self.relay_once().await {
                Ok(n) if n > 0 => {
                    backoff = Duration::from_millis(100);
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
