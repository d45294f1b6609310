//! The call to dedup-store, carrying the current trace (`traceparent`).

use std::time::Duration;

use actix_web::web::Bytes;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rave_service::ids::{EventType, EventUuid, SourceName, TaskId};
use rave_service::settings::Secret;
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

/// The insert request as plain serde writes it (what `encode` must equal).
#[cfg(test)]
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
    /// Each dedup-store replica's events and readiness URLs, preferred first.
    events_urls: Vec<String>,
    ready_urls: Vec<String>,
    token: Secret,
    timeout: Duration,
    retry_after_secs: u32,
}

impl StoreClient {
    /// `base_urls`: dedup-store replicas, this ingest's preferred one first.
    pub fn new(
        base_urls: &[&str],
        token: Secret,
        timeout: Duration,
        retry_after_secs: u32,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!base_urls.is_empty(), "no dedup-store URL");
        let urls = |path: &str| -> Vec<String> {
            base_urls
                .iter()
                .map(|url| format!("{}{path}", url.trim_end_matches('/')))
                .collect()
        };
        Ok(Self {
            http: rave_service::http::traced_client(timeout)?,
            events_urls: urls("/v1/events"),
            ready_urls: urls("/readyz"),
            token,
            timeout,
            retry_after_secs,
        })
    }

    /// dedup-store's insert request for `event`: what is sent, or spooled.
    /// The body is base64-encoded straight into the request's one buffer
    /// (no intermediate string), sized up front: one copy of it, not two.
    pub fn encode(event: VerifiedEvent<'_>) -> Bytes {
        #[derive(Serialize)]
        struct Head<'a> {
            source: &'a SourceName,
            event_uuid: &'a EventUuid,
            event_type: &'a EventType,
            #[serde(with = "time::serde::rfc3339")]
            received_at: OffsetDateTime,
            headers: serde_json::Map<String, serde_json::Value>,
        }
        let encoded_len = base64::encoded_len(event.body.len(), true).expect("a body under 25 MiB");
        let mut out = Vec::with_capacity(encoded_len + 1024);
        serde_json::to_writer(
            &mut out,
            &Head {
                source: event.source,
                event_uuid: event.event_uuid,
                event_type: event.event_type,
                received_at: event.received_at,
                headers: event.headers,
            },
        )
        .expect("an insert request serializes");
        // `{...}` becomes `{...,"body_base64":"<base64>"}`.
        out.pop();
        out.extend_from_slice(b",\"body_base64\":\"");
        let start = out.len();
        out.resize(start + encoded_len, 0);
        BASE64
            .encode_slice(event.body, &mut out[start..])
            .expect("the buffer is sized for the encoding");
        out.extend_from_slice(b"\"}");
        Bytes::from(out)
    }

    /// Stores an encoded event; answers only once dedup-store has committed it.
    /// A replica refusing the connection (stopped, restarting) is passed
    /// over for the next; a retry that reaches a second replica after a
    /// commit is deduplicated anyway.
    pub async fn store(&self, request: Bytes) -> Result<StoreOutcome, IngestError> {
        let unavailable = |cause: anyhow::Error| IngestError::StoreUnavailable {
            retry_after_secs: self.retry_after_secs,
            cause,
        };
        let response = rave_service::http::send_to_first_replica(&self.events_urls, |url| {
            self.http
                .post(url)
                .bearer_auth(self.token.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(request.clone())
        })
        .await
        .map_err(|e| unavailable(e.into()))?;
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
            StatusCode::UNAUTHORIZED => {
                // A configuration mistake (a rotated token not yet given to
                // ingest): nothing is wrong with the event, so it is kept
                // (spooled, or 503 for the sender to retry), not refused.
                Err(unavailable(anyhow::anyhow!(
                    "dedup-store refused ingest's token (store.token)"
                )))
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

    /// How long one call to the store may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a dedup-store replica says it is ready.
    pub async fn ready(&self) -> anyhow::Result<()> {
        let mut last = None;
        for ready_url in &self.ready_urls {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_copy_encoding_is_the_request_serde_would_write() {
        let (source, uuid, kind) = (
            SourceName::parse("github".to_owned()).unwrap(),
            EventUuid::parse("d-1".to_owned()).unwrap(),
            EventType::parse("push".to_owned()).unwrap(),
        );
        let received_at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut headers = serde_json::Map::new();
        headers.insert("x-github-event".into(), "push".into());
        for body in [
            &b""[..],
            b"x",
            b"xy",
            b"{\"quote\":\"\\\"\"}",
            &[0, 255, 10, 13][..],
        ] {
            let encoded = StoreClient::encode(VerifiedEvent {
                source: &source,
                event_uuid: &uuid,
                event_type: &kind,
                received_at,
                headers: headers.clone(),
                body,
            });
            let expected = serde_json::to_vec(&InsertRequest {
                source: &source,
                event_uuid: &uuid,
                event_type: &kind,
                received_at,
                headers: headers.clone(),
                body_base64: BASE64.encode(body),
            })
            .unwrap();
            assert_eq!(
                String::from_utf8(encoded.to_vec()).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }
}
