//! Calls to a provider's REST API that respect its rate limits: one request
//! at a time, waiting out `Retry-After` and an exhausted quota before the
//! next, and giving up on a wait longer than `max_wait`.
//!
//! GitHub answers a primary limit with 403/429 and `x-ratelimit-remaining:
//! 0` (wait until `x-ratelimit-reset`), a secondary limit with 403/429 and
//! `retry-after` or no header at all (wait at least a minute); GitLab
//! answers 429 with `Retry-After` and `RateLimit-*` headers.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::HeaderMap;
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// HTTPS (and plain HTTP, which settings allow only to loopback) with a
/// deadline per request.
#[derive(Debug, Clone)]
pub struct Https {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
}

impl Https {
    /// Trusting only the CA certificates in `roots`.
    pub fn new(
        roots: tokio_rustls::rustls::RootCertStore,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        })
    }

    async fn send(
        &self,
        request: http::Request<Empty<Bytes>>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), String> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| rave_service::error::cause_chain(&e))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| rave_service::error::cause_chain(&e))?;
            Ok((parts.status, parts.headers, body.to_bytes().to_vec()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))?
    }
}

/// How a run waits (tests record the waits instead of sleeping).
pub trait Pauses: Send + Sync + std::fmt::Debug {
    fn pause(&self, wait: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Real time.
#[derive(Debug)]
pub struct Sleep;

impl Pauses for Sleep {
    fn pause(&self, wait: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(wait))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the API is unreachable: {0}")]
    Unreachable(String),
    #[error("the API answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("rate limited for {wait_secs} s, longer than reconcile.max_wait_secs")]
    RateLimited { wait_secs: u64 },
    #[error("the API's answer is not what it documents: {0}")]
    Malformed(String),
}

/// An answer: its status, headers and body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// How the provider wants its token.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    Bearer,
    PrivateToken,
    /// A GitHub App: a fresh JWT for every request.
    App(&'a super::app::AppKey),
}

pub struct Api<'a> {
    pub http: &'a Https,
    pub token: &'a str,
    pub auth: Auth<'a>,
    pub pauses: &'a dyn Pauses,
    pub max_wait: Duration,
    /// Waits for a rate limit so far in this run.
    pub waits: u64,
    /// Set when an answer said the quota is spent: no request before then.
    blocked_until: Option<SystemTime>,
}

/// Never the token, whatever prints it.
impl std::fmt::Debug for Api<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("token", &"[redacted]")
            .field("auth", &self.auth)
            .field("max_wait", &self.max_wait)
            .field("waits", &self.waits)
            .finish_non_exhaustive()
    }
}

/// Attempts of one request that was rate limited, at most.
const ATTEMPTS: u32 = 4;
/// A secondary limit without a header: GitHub says wait at least a minute.
const SECONDARY_WAIT: Duration = Duration::from_secs(60);

impl<'a> Api<'a> {
    pub fn new(
        http: &'a Https,
        token: &'a str,
        auth: Auth<'a>,
        pauses: &'a dyn Pauses,
        max_wait: Duration,
    ) -> Self {
        Self {
            http,
            token,
            auth,
            pauses,
            max_wait,
            waits: 0,
            blocked_until: None,
        }
    }

    /// Sends `method url`, waiting out rate limits; a 2xx is `Ok`, any
    /// other answer an error with the provider's message.
    pub async fn call(&mut self, method: Method, url: &str) -> Result<Answer, ApiError> {
        for _ in 0..ATTEMPTS {
            if let Some(until) = self.blocked_until.take() {
                let wait = until.duration_since(SystemTime::now()).unwrap_or_default();
                self.wait(wait).await?;
            }
            let mut request = http::Request::builder()
                .method(method.clone())
                .uri(url)
                .header("user-agent", "rave-dedup-store");
            let github = |request: http::request::Builder, bearer: &str| {
                request
                    .header("authorization", format!("Bearer {bearer}"))
                    .header("accept", "application/vnd.github+json")
                    .header("x-github-api-version", "2022-11-28")
            };
            request = match self.auth {
                Auth::Bearer => github(request, self.token),
                Auth::App(key) => github(request, &key.jwt(now_epoch())),
                Auth::PrivateToken => request.header("private-token", self.token),
            };
            let request = request
                .body(Empty::new())
                .map_err(|e| ApiError::Malformed(format!("request {url}: {e}")))?;
            let (status, headers, body) = self
                .http
                .send(request)
                .await
                .map_err(ApiError::Unreachable)?;
            if status.is_success() {
                if header_u64(&headers, &["x-ratelimit-remaining", "ratelimit-remaining"])
                    == Some(0)
                {
                    self.blocked_until = reset_at(&headers);
                }
                return Ok(Answer {
                    status,
                    headers,
                    body,
                });
            }
            match rate_limit_wait(status, &headers, &body) {
                Some(wait) => self.wait(wait).await?,
                None => {
                    return Err(ApiError::Refused {
                        status: status.as_u16(),
                        message: message_of(&body),
                    });
                }
            }
        }
        Err(ApiError::Refused {
            status: 429,
            message: format!("still rate limited after {ATTEMPTS} attempts"),
        })
    }

    async fn wait(&mut self, wait: Duration) -> Result<(), ApiError> {
        if wait > self.max_wait {
            return Err(ApiError::RateLimited {
                wait_secs: wait.as_secs(),
            });
        }
        self.waits += 1;
        self.pauses.pause(wait).await;
        Ok(())
    }
}

/// How long a refusal says to wait, when it is a rate limit.
fn rate_limit_wait(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<Duration> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    if let Some(secs) = header_u64(headers, &["retry-after"]) {
        return Some(Duration::from_secs(secs));
    }
    if header_u64(headers, &["x-ratelimit-remaining", "ratelimit-remaining"]) == Some(0) {
        let until = reset_at(headers)?;
        return Some(until.duration_since(SystemTime::now()).unwrap_or_default());
    }
    // A 403 is a rate limit only when it says so; otherwise the token lacks
    // a permission, and waiting would not help.
    let says_so = message_of(body).to_ascii_lowercase().contains("rate limit");
    (status == StatusCode::TOO_MANY_REQUESTS || says_so).then_some(SECONDARY_WAIT)
}

/// When the quota resets: an epoch second, one second late (clocks differ).
fn reset_at(headers: &HeaderMap) -> Option<SystemTime> {
    let epoch = header_u64(headers, &["x-ratelimit-reset", "ratelimit-reset"])?;
    Some(UNIX_EPOCH + Duration::from_secs(epoch + 1))
}

fn header_u64(headers: &HeaderMap, names: &[&str]) -> Option<u64> {
    names.iter().find_map(|name| {
        headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The provider's error message (both put it in `message`), bounded.
fn message_of(body: &[u8]) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").map(|m| m.to_string()))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    message.chars().take(300).collect()
}

/// Seconds since the epoch, now.
pub fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let http = Https::new(
            tokio_rustls::rustls::RootCertStore::empty(),
            Duration::from_secs(1),
        )
        .unwrap();
        let api = Api::new(
            &http,
            "ghp_secret-token",
            Auth::Bearer,
            &Sleep,
            Duration::from_secs(1),
        );
        assert!(!format!("{api:?}").contains("ghp_secret-token"));
    }

    #[test]
    fn retry_after_is_waited_out_whatever_the_status_says() {
        let h = headers(&[("retry-after", "7")]);
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &h, b"{}"),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &h, b"{}"),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn a_spent_quota_waits_until_its_reset() {
        let reset = now_epoch() + 30;
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset.to_string()),
        ]);
        let wait = rate_limit_wait(StatusCode::FORBIDDEN, &h, b"{}").unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(31));
    }

    #[test]
    fn a_secondary_limit_without_headers_waits_a_minute() {
        let body = br#"{"message":"You have exceeded a secondary rate limit and have been temporarily blocked from content creation."}"#;
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &HeaderMap::new(), body),
            Some(SECONDARY_WAIT)
        );
    }

    #[test]
    fn a_forbidden_token_is_not_a_rate_limit() {
        let body = br#"{"message":"Resource not accessible by personal access token"}"#;
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &HeaderMap::new(), body),
            None
        );
        assert_eq!(
            rate_limit_wait(StatusCode::NOT_FOUND, &HeaderMap::new(), b"{}"),
            None
        );
    }
}
