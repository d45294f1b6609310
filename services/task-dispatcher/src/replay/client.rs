//! dedup-store's search, as replays and what-if evaluations read it: one
//! page per call, with bodies, and no transaction open meanwhile
//! (invariant 16).

use std::time::Duration;

use rave_service::search::SearchRequest;
use rave_service::settings::Secret;
use serde::Deserialize;

use crate::error::DispatchError;
use crate::settings::EventsStoreSettings;

/// A stored event as the search answers it (with its payload).
#[derive(Debug, Clone, Deserialize)]
pub struct FoundEvent {
    pub id: i64,
    pub source: String,
    pub event_uuid: String,
    pub event_type: String,
    pub task_id: String,
    pub received_at: String,
    #[serde(default)]
    pub traceparent: Option<String>,
    #[serde(default)]
    pub headers: Option<serde_json::Value>,
    #[serde(default)]
    pub body_base64: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SearchPage {
    pub events: Vec<FoundEvent>,
    pub next_after: Option<i64>,
}

#[derive(Debug)]
pub struct EventsStore {
    http: rave_service::http::Client,
    urls: Vec<String>,
    token: Secret,
}

impl EventsStore {
    /// `None` when `[events_store]` names no dedup-store.
    pub fn new(settings: &EventsStoreSettings) -> anyhow::Result<Option<Self>> {
        let (Some(url), Some(token)) = (&settings.url, &settings.token) else {
            return Ok(None);
        };
        Ok(Some(Self {
            http: rave_service::http::traced_client(Duration::from_millis(settings.timeout_ms))?,
            urls: std::iter::once(url)
                .chain(&settings.fallback_urls)
                .map(|u| format!("{}/v1/events/search", u.trim_end_matches('/')))
                .collect(),
            token: token.clone(),
        }))
    }

    /// One page of `filter`'s events after `after`, with their bodies. A
    /// search dedup-store refuses is the operator's (400, with its
    /// message); anything else is dedup-store being unavailable.
    pub async fn page(
        &self,
        filter: &SearchRequest,
        after: i64,
        limit: i64,
    ) -> Result<SearchPage, DispatchError> {
        let mut query = filter.clone();
        query.after = after;
        query.limit = Some(limit);
        query.include_bodies = true;
        let response = rave_service::http::send_to_first_replica(&self.urls, |url| {
            self.http
                .post(url)
                .bearer_auth(self.token.expose())
                .json(&query)
        })
        .await
        .map_err(|e| DispatchError::EventsStoreUnavailable(e.into()))?;
        let status = response.status();
        if status.is_success() {
            return response
                .json()
                .await
                .map_err(|e| DispatchError::EventsStoreUnavailable(e.into()));
        }
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        let message = answer["error"]["message"].as_str().unwrap_or("").to_owned();
        if status.as_u16() == 400 {
            return Err(DispatchError::InvalidRequest(format!(
                "dedup-store refused the search: {message}"
            )));
        }
        Err(DispatchError::EventsStoreUnavailable(anyhow::anyhow!(
            "dedup-store answered {status}: {message}"
        )))
    }
}
