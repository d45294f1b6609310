//! The calls to dedup-store, carrying each event's trace (`traceparent`).
//!
//! Small events go many per call (`POST /v1/events/batch`), formed like a
//! group commit ([`rave_service::batch`]): those that arrive while earlier
//! calls are out go together in the next, so batches grow with load and
//! an idle ingest sends each event at once. Large events go alone.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use anyhow::Context as _;
use prometheus_client::metrics::histogram::Histogram;
use rave_service::batch::{BatchMetrics, Batcher, Handler, Writers};
use tracing::Instrument as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rave_service::ids::{EventType, EventUuid, SourceName, TaskId};
use rave_service::settings::Secret;
use reqwest::StatusCode;
use reqwest_middleware::ClientWithMiddleware;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::IngestError;
use crate::settings::StoreSettings;

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

/// An event waiting for its batch: the encoded request and the webhook's
/// trace, which the event is stored in.
#[derive(Debug)]
struct Pending {
    request: Bytes,
    traceparent: Option<String>,
}

/// What dedup-store did with one event, as the caller needs it.
#[derive(Debug, Clone)]
enum Answer {
    Stored(StoreOutcome),
    /// Nothing was stored (the store is down or busy): spool or 503.
    Unavailable(String),
    /// The store refused what ingest sent: a bug here, 500.
    Failed(String),
}

/// `POST /v1/events/batch` answer: one result per event, in order.
#[derive(Debug, Deserialize)]
struct BatchResponse {
    results: Vec<ItemResult>,
}

#[derive(Debug, Deserialize)]
struct ItemResult {
    status: u16,
    task_id: Option<TaskId>,
    error: Option<ItemError>,
}

#[derive(Debug, Deserialize)]
struct ItemError {
    message: String,
}

impl ItemResult {
    fn answer(self) -> Answer {
        let message = || {
            self.error
                .as_ref()
                .map_or("", |e| e.message.as_str())
                .to_owned()
        };
        match (self.status, self.task_id.clone()) {
            (201, Some(id)) => Answer::Stored(StoreOutcome::New(id)),
            (200, Some(id)) => Answer::Stored(StoreOutcome::Duplicate(id)),
            (status, _) if status >= 500 => {
                Answer::Unavailable(format!("dedup-store answered {status}: {}", message()))
            }
            (status, _) => Answer::Failed(format!(
                "dedup-store refused the event ({status}): {}",
                message()
            )),
        }
    }
}

#[derive(Debug)]
pub struct StoreClient {
    calls: Arc<Calls>,
    /// Small events' batches, and the writers sending them (kept alive here).
    batches: Option<(Batcher<Pending, Answer>, Writers)>,
    batch_max_event_bytes: usize,
    timeout: Duration,
    retry_after_secs: u32,
}

/// The HTTP calls to dedup-store.
#[derive(Debug)]
struct Calls {
    http: ClientWithMiddleware,
    /// Each dedup-store replica's URLs, preferred first.
    events_urls: Vec<String>,
    batch_urls: Vec<String>,
    ready_urls: Vec<String>,
    token: Secret,
}

impl StoreClient {
    /// Starts the batch writers on the current runtime; `settings.url`
    /// first, then the fallback replicas.
    pub fn new(settings: &StoreSettings, batch_size: Histogram) -> anyhow::Result<Self> {
        let token = settings.token.clone().context("store.token is not set")?;
        let base_urls: Vec<&str> = std::iter::once(settings.url.as_str())
            .chain(settings.fallback_urls.iter().map(String::as_str))
            .collect();
        let urls = |path: &str| -> Vec<String> {
            base_urls
                .iter()
                .map(|url| format!("{}{path}", url.trim_end_matches('/')))
                .collect()
        };
        let calls = Arc::new(Calls {
            http: rave_service::http::traced_client(settings.timeout())?,
            events_urls: urls("/v1/events"),
            batch_urls: urls("/v1/events/batch"),
            ready_urls: urls("/readyz"),
            token,
        });
        let batches = (settings.batch_max_event_bytes > 0).then(|| {
            let sender = calls.clone();
            let handler: Handler<Pending, Answer> = Arc::new(move |items| {
                let sender = sender.clone();
                Box::pin(async move { sender.send_batch(&items).await })
            });
            let observed = BatchMetrics {
                batch_size: Some(batch_size),
                in_flight: None,
            };
            Batcher::start_sized(&settings.batch, handler, observed, |p: &Pending| {
                p.request.len()
            })
        });
        Ok(Self {
            calls,
            batches,
            batch_max_event_bytes: settings.batch_max_event_bytes,
            timeout: settings.timeout(),
            retry_after_secs: settings.retry_after_secs,
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

    /// Stores an encoded event; answers only once dedup-store has committed
    /// it. Small events wait for the next batch call; large ones go alone.
    pub async fn store(&self, request: Bytes) -> Result<StoreOutcome, IngestError> {
        let answer = match &self.batches {
            Some((batches, _)) if request.len() <= self.batch_max_event_bytes => {
                let pending = Pending {
                    request,
                    traceparent: rave_service::telemetry::current_traceparent(),
                };
                batches
                    .submit(pending)
                    .await
                    .unwrap_or_else(|e| Answer::Unavailable(format!("{e:#}")))
            }
            _ => self.calls.send_one(request).await,
        };
        match answer {
            Answer::Stored(outcome) => Ok(outcome),
            Answer::Unavailable(cause) => Err(IngestError::StoreUnavailable {
                retry_after_secs: self.retry_after_secs,
                cause: anyhow::anyhow!(cause),
            }),
            Answer::Failed(cause) => Err(IngestError::Unexpected(anyhow::anyhow!(cause))),
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
        for ready_url in &self.calls.ready_urls {
            match self.calls.http.get(ready_url).send().await {
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

impl Calls {
    /// `POST /v1/events` for one event, in the current span's trace. A
    /// replica refusing the connection (stopped, restarting) is passed over
    /// for the next; a retry that reaches a second replica after a commit
    /// is deduplicated anyway.
    async fn send_one(&self, request: Bytes) -> Answer {
        let sent = rave_service::http::send_to_first_replica(&self.events_urls, |url| {
            self.post(url, request.clone())
        })
        .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return Answer::Unavailable(format!("{:#}", anyhow::Error::from(e))),
        };
        let status = response.status();
        match status {
            StatusCode::CREATED | StatusCode::OK => match response.json::<InsertResponse>().await {
                Ok(answer) if status == StatusCode::CREATED => {
                    Answer::Stored(StoreOutcome::New(answer.task_id))
                }
                Ok(answer) => Answer::Stored(StoreOutcome::Duplicate(answer.task_id)),
                Err(e) => Answer::Failed(format!("reading dedup-store's answer: {e}")),
            },
            status if kept(status) => Answer::Unavailable(refusal(status, response).await),
            status => Answer::Failed(refusal(status, response).await),
        }
    }

    /// `POST /v1/events/batch` for `items`: one answer each, in order. A
    /// failure of the whole call (no replica, a 5xx, the token refused) is
    /// every item's: nothing is known stored, and a retry is deduplicated.
    async fn send_batch(&self, items: &[Pending]) -> anyhow::Result<Vec<Answer>> {
        let body = batch_body(items);
        let response = rave_service::http::send_to_first_replica(&self.batch_urls, |url| {
            self.post(url, body.clone())
        })
        .await?;
        match response.status() {
            StatusCode::OK => {
                let answer: BatchResponse = response
                    .json()
                    .await
                    .context("reading dedup-store's batch answer")?;
                anyhow::ensure!(
                    answer.results.len() == items.len(),
                    "dedup-store answered {} results for {} events",
                    answer.results.len(),
                    items.len()
                );
                Ok(answer.results.into_iter().map(ItemResult::answer).collect())
            }
            // A dedup-store without the route (an older one, during an
            // upgrade) or with a lower batch limit: each event alone, each
            // in its own webhook's trace.
            StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::PAYLOAD_TOO_LARGE => {
                Ok(futures_util::future::join_all(items.iter().map(|item| {
                    let span = tracing::info_span!("store.event");
                    if let Some(parent) = &item.traceparent {
                        rave_service::telemetry::set_remote_parent(&span, parent);
                    }
                    self.send_one(item.request.clone()).instrument(span)
                }))
                .await)
            }
            status if kept(status) => Err(anyhow::anyhow!(refusal(status, response).await)),
            status => Ok(vec![
                Answer::Failed(refusal(status, response).await);
                items.len()
            ]),
        }
    }

    fn post(&self, url: &str, body: Bytes) -> reqwest_middleware::RequestBuilder {
        self.http
            .post(url)
            .bearer_auth(self.token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
    }
}

/// Whether an event dedup-store did not take with `status` is kept for
/// later (spooled, or 503 for the sender to retry) rather than refused:
/// the store failing, or refusing ingest's token — a configuration mistake
/// (a rotated token not yet given to ingest), nothing wrong with the event.
/// Any other answer means ingest sent what the store refuses: a bug here.
fn kept(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::UNAUTHORIZED
}

/// Why dedup-store did not store, for the log.
async fn refusal(status: StatusCode, response: reqwest::Response) -> String {
    if status == StatusCode::UNAUTHORIZED {
        return "dedup-store refused ingest's token (store.token)".to_owned();
    }
    let body = response.text().await.unwrap_or_default();
    format!("dedup-store answered {status}: {body}")
}

/// `{"events":[{"traceparent":...,"event":<request>},...]}`, each encoded
/// request copied in as it is: nothing is encoded a second time.
fn batch_body(items: &[Pending]) -> Bytes {
    let size: usize = items.iter().map(|p| p.request.len() + 96).sum();
    let mut out = Vec::with_capacity(size + 16);
    out.extend_from_slice(b"{\"events\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        if let Some(parent) = &item.traceparent {
            out.extend_from_slice(b"\"traceparent\":");
            serde_json::to_writer(&mut out, parent).expect("a string serializes");
            out.push(b',');
        }
        out.extend_from_slice(b"\"event\":");
        out.extend_from_slice(&item.request);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
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
