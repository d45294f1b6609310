//! GitHub's webhook delivery log (REST API 2022-11-28): repository,
//! organisation and GitHub App hooks.
//!
//! `GET {hook}/deliveries?per_page=N` lists deliveries newest first, a
//! page at a time; the next page is the `Link` header's `rel="next"`, a
//! cursor only GitHub can make. `POST {hook}/deliveries/{id}/attempts`
//! asks for a redelivery (202), sent again with the same `X-GitHub-Delivery`
//! guid, so ingest stores it under the original's id.

use http::Method;
use serde::Deserialize;
use time::OffsetDateTime;

use super::client::{Api, ApiError};
use super::settings::ReconcileSource;
use super::{Delivery, Listing};

/// `{api}/repos/{owner}/{repo}/hooks/{id}`, `{api}/orgs/{org}/hooks/{id}`
/// or, for a GitHub App, `{api}/app/hook`.
pub fn hook_url(source: &ReconcileSource) -> String {
    let api = source.api_url.trim_end_matches('/');
    let id = source.hook_id.unwrap_or_default();
    if source.is_github_app() {
        return format!("{api}/app/hook");
    }
    match source.hook_owner.strip_prefix("org:") {
        Some(org) => format!("{api}/orgs/{org}/hooks/{id}"),
        None => format!("{api}/repos/{}/hooks/{id}", source.hook_owner),
    }
}

#[derive(Debug, Deserialize)]
struct Item {
    id: i64,
    guid: String,
    #[serde(with = "time::serde::rfc3339")]
    delivered_at: OffsetDateTime,
    status_code: i64,
    event: String,
    redelivery: bool,
}

/// Deliveries newer than `since`, newest first, reading at most
/// `max_pages` pages of `page_size`.
pub async fn list(
    api: &mut Api<'_>,
    source: &ReconcileSource,
    since: OffsetDateTime,
    page_size: u32,
    max_pages: u32,
) -> Result<Listing, ApiError> {
    let hook = hook_url(source);
    let origin = origin_of(&source.api_url);
    let mut url = format!("{hook}/deliveries?per_page={page_size}");
    let mut listing = Listing::default();
    for _ in 0..max_pages {
        let answer = api.call(Method::GET, &url).await?;
        let items: Vec<Item> = serde_json::from_slice(&answer.body)
            .map_err(|e| ApiError::Malformed(format!("deliveries: {e}")))?;
        listing.pages += 1;
        let mut reached_since = false;
        for item in items {
            if item.delivered_at < since {
                reached_since = true;
                continue;
            }
            listing.deliveries.push(Delivery {
                delivery_id: item.id.to_string(),
                event_uuid: item.guid,
                event_type: item.event,
                delivered_at: Some(item.delivered_at),
                status_code: u16::try_from(item.status_code).unwrap_or(0),
                redelivery: item.redelivery,
            });
        }
        let next = answer
            .headers
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        match next {
            _ if reached_since => return Ok(listing),
            None => return Ok(listing),
            // The token goes only where the API is: a next page elsewhere
            // is refused, not followed.
            Some(next) if origin_of(&next) != origin => {
                return Err(ApiError::Malformed(format!(
                    "the next page is on another host: {}",
                    origin_of(&next)
                )));
            }
            Some(next) => url = next,
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
    let url = format!("{}/deliveries/{delivery_id}/attempts", hook_url(source));
    api.call(Method::POST, &url).await.map(|_| ())
}

/// The `rel="next"` target of an RFC 8288 `Link` header.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_owned())
    })
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        let header = r#"<https://api.github.com/repos/o/r/hooks/1/deliveries?per_page=2&cursor=v1_12077215967>; rel="next", <https://api.github.com/repos/o/r/hooks/1/deliveries?per_page=2>; rel="first""#;
        assert_eq!(
            next_link(header).as_deref(),
            Some(
                "https://api.github.com/repos/o/r/hooks/1/deliveries?per_page=2&cursor=v1_12077215967"
            )
        );
        assert_eq!(next_link(r#"<https://x/a?page=1>; rel="prev""#), None);
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert_eq!(
            origin_of("https://api.github.com/repos/x"),
            "https://api.github.com"
        );
        assert_eq!(
            origin_of("http://127.0.0.1:9/api/v3/x?y"),
            "http://127.0.0.1:9"
        );
        assert_ne!(
            origin_of("https://api.github.com.evil.example/x"),
            origin_of("https://api.github.com/x")
        );
    }
}
