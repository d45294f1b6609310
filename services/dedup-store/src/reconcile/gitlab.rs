//! GitLab's webhook event log (REST API v4): project hooks (GitLab ≥ 17.3
//! lists, ≥ 17.4 resends) and group hooks (Premium; the same versions).
//!
//! `GET {hook}/events?page=P&per_page=N` lists the hook's events of the
//! past 7 days, with `X-Next-Page` naming the next page. An event carries
//! the request headers it was sent with (`Idempotency-Key`, from 17.4;
//! `X-Gitlab-Event-UUID`), but no time: a window shorter than GitLab's 7
//! days cannot be applied to it. `POST {hook}/events/{id}/resend` sends it
//! again with the same `Idempotency-Key`; GitLab allows 5 a minute per hook.

use std::collections::HashMap;

use http::Method;
use serde::Deserialize;

use super::client::{Api, ApiError};
use super::settings::ReconcileSource;
use super::{Delivery, Listing};

/// `{api}/projects/{id}/hooks/{hook}` or `{api}/groups/{id}/hooks/{hook}`.
pub fn hook_url(source: &ReconcileSource) -> String {
    let api = source.api_url.trim_end_matches('/');
    let id = source.hook_id.unwrap_or_default();
    match source.hook_owner.strip_prefix("group:") {
        Some(group) => format!("{api}/groups/{}/hooks/{id}", encode(group)),
        None => format!("{api}/projects/{}/hooks/{id}", encode(&source.hook_owner)),
    }
}

#[derive(Debug, Deserialize)]
struct Event {
    id: i64,
    #[serde(default)]
    request_headers: HashMap<String, String>,
    /// A status code as a string, or why there is none ("internal error").
    #[serde(default)]
    response_status: serde_json::Value,
}

/// The header ingest takes a GitLab delivery's id from, in its order.
const ID_HEADERS: [&str; 3] = ["idempotency-key", "webhook-id", "x-gitlab-event-uuid"];

pub async fn list(
    api: &mut Api<'_>,
    source: &ReconcileSource,
    page_size: u32,
    max_pages: u32,
) -> Result<Listing, ApiError> {
    let hook = hook_url(source);
    let mut page = 1u32;
    let mut listing = Listing::default();
    for _ in 0..max_pages {
        let url = format!("{hook}/events?page={page}&per_page={page_size}");
        let answer = api.call(Method::GET, &url).await?;
        let events: Vec<Event> = serde_json::from_slice(&answer.body)
            .map_err(|e| ApiError::Malformed(format!("hook events: {e}")))?;
        listing.pages += 1;
        for event in events {
            let headers: HashMap<String, &String> = event
                .request_headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            let Some(id) = ID_HEADERS.iter().find_map(|h| headers.get(*h)) else {
                // Nothing to match it with: counted, not redelivered.
                listing.unmatched += 1;
                continue;
            };
            let status_code = match &event.response_status {
                serde_json::Value::String(s) => s.parse().unwrap_or(0),
                serde_json::Value::Number(n) => n.as_u64().unwrap_or(0) as u16,
                _ => 0,
            };
            listing.deliveries.push(Delivery {
                delivery_id: event.id.to_string(),
                event_uuid: (*id).clone(),
                event_type: headers
                    .get("x-gitlab-event")
                    .map_or_else(|| "unknown".to_owned(), |t| (*t).clone()),
                delivered_at: None,
                status_code,
                redelivery: false,
            });
        }
        let next = answer
            .headers
            .get("x-next-page")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        match next {
            Some(n) if n > page => page = n,
            _ => return Ok(listing),
        }
    }
    listing.truncated = true;
    Ok(listing)
}

pub async fn redeliver(
    api: &mut Api<'_>,
    source: &ReconcileSource,
    delivery_id: &str,
) -> Result<(), ApiError> {
    let url = format!("{}/events/{delivery_id}/resend", hook_url(source));
    api.call(Method::POST, &url).await.map(|_| ())
}

/// A path segment, percent-encoded (`group/project` → `group%2Fproject`).
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths_are_one_encoded_segment() {
        assert_eq!(encode("group/sub/project"), "group%2Fsub%2Fproject");
        assert_eq!(encode("42"), "42");
    }
}
