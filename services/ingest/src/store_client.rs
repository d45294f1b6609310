//! The call to dedup-store, carrying the current trace (`traceparent`).

use std::time::Duration;

use actix_web::web::Bytes;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rave_service::ids::{EventType, EventUuid, SourceName, TaskId};
use reqwest::StatusCode;
use reqwest_middleware::ClientWithMiddleware;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::IngestError;

/// What the store did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    New(TaskId),
    Duplicate(TaskId),
}

#[derive(Debug, Serialize)]
struct InsertRequest<'a> {
    source: &'a SourceName,
    event_uuid: &'a EventUuid,
    event_type: &'a EventType,
    #[serde(with = "time::serde::rfc3339")]
    received_at: OffsetDateTime,
    headers: serde_json::Map<String, serde_json::Value>,
    body_base64: String,
}

#[derive(Debug, Deserialize)]
struct InsertResponse {
    task_id: TaskId,
}

/// An event verified by ingest, to be stored.
#[derive(Debug)]
pub struct VerifiedEvent<'a> {
    pub source: &'a SourceName,
    pub event_uuid: &'a EventUuid,
    pub event_type: &'a EventType,
    pub received_at: OffsetDateTime,
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub body: &'a [u8],
}

#[derive(Debug)]
pub struct StoreClient {
    http: ClientWithMiddleware,
    /// (events URL, readiness URL) of each dedup-store replica, preferred first.
    replicas: Vec<(String, String)>,
    retry_after_secs: u32,
}

impl StoreClient {
    /// `base_urls`: dedup-store replicas, this ingest's preferred one first.
    pub fn new(
        base_urls: &[&str],
        timeout: Duration,
        retry_after_secs: u32,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!base_urls.is_empty(), "no dedup-store URL");
        Ok(Self {
            http: rave_service::http::traced_client(timeout)?,
            replicas: base_urls
                .iter()
                .map(|url| {
                    let base = url.trim_end_matches('/');
                    (format!("{base}/v1/events"), format!("{base}/readyz"))
                })
                .collect(),
            retry_after_secs,
        })
    }

    /// dedup-store's insert request for `event`: what is sent, or spooled.
    pub fn encode(event: VerifiedEvent<'_>) -> Bytes {
        let request = InsertRequest {
            source: event.source,
            event_uuid: event.event_uuid,
            event_type: event.event_type,
            received_at: event.received_at,
            headers: event.headers,
            body_base64: BASE64.encode(event.body),
        };
        Bytes::from(serde_json::to_vec(&request).expect("an insert request serializes"))
    }

    /// Stores an encoded event; answers only once dedup-store has committed it.
    ///
    /// A replica that refuses the connection (stopped, restarting) is passed
    /// over for the next. Nothing else is retried elsewhere: a timeout may
    /// hide a commit, and replicas share one database, so a 5xx from one
    /// would come from the others too. (A retry that does reach a second
    /// replica after a commit is deduplicated anyway.)
    pub async fn store(&self, request: Bytes) -> Result<StoreOutcome, IngestError> {
        let unavailable = |cause: anyhow::Error| IngestError::StoreUnavailable {
            retry_after_secs: self.retry_after_secs,
            cause,
        };
        let mut refused = None;
        let mut answer = None;
        for (events_url, _) in &self.replicas {
            let sent = self
                .http
                .post(events_url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(request.clone())
                .send()
                .await;
            match sent {
                Ok(response) => {
                    answer = Some(response);
                    break;
                }
                Err(reqwest_middleware::Error::Reqwest(e)) if e.is_connect() => {
                    refused = Some(anyhow::Error::new(e));
                }
                Err(e) => return Err(unavailable(e.into())),
            }
        }
        let Some(response) = answer else {
            return Err(unavailable(refused.unwrap_or_else(|| {
                anyhow::anyhow!("no dedup-store replica answered")
            })));
        };
        let status = response.status();
        match status {
            StatusCode::CREATED | StatusCode::OK => {
                let answer: InsertResponse = response.json().await.map_err(|e| {
                    IngestError::Unexpected(
                        anyhow::Error::new(e).context("reading dedup-store's answer"),
                    )
                })?;
                Ok(if status == StatusCode::CREATED {
                    StoreOutcome::New(answer.task_id)
                } else {
                    StoreOutcome::Duplicate(answer.task_id)
                })
            }
            s if s.is_server_error() => {
                let body = response.text().await.unwrap_or_default();
                Err(unavailable(anyhow::anyhow!(
                    "dedup-store answered {s}: {body}"
                )))
            }
            s => {
                // A 4xx means ingest sent something the store refuses: a bug here.
                let body = response.text().await.unwrap_or_default();
                Err(IngestError::Unexpected(anyhow::anyhow!(
                    "dedup-store answered {s}: {body}"
                )))
            }
        }
    }

    pub fn retry_after_secs(&self) -> u32 {
        self.retry_after_secs
    }

    /// Whether a dedup-store replica says it is ready.
    pub async fn ready(&self) -> anyhow::Result<()> {
        let mut last = None;
        for (_, ready_url) in &self.replicas {
            match self.http.get(ready_url).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    last = Some(anyhow::anyhow!(
                        "dedup-store /readyz answered {}",
                        r.status()
                    ))
                }
                Err(e) => last = Some(e.into()),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no dedup-store replica")))
    }
}
