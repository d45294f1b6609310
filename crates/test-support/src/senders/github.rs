//! A double of GitHub for one repository webhook: it sends signed
//! deliveries to a receiver, keeps them in a delivery log, and serves the
//! REST API's delivery endpoints (2022-11-28) as GitHub documents them:
//!
//! - `GET /repos/{owner}/{repo}/hooks/{hook_id}/deliveries?per_page&cursor&status`:
//!   newest first, `per_page` up to 100 (default 30), the next page in a
//!   `Link` header whose `cursor` only this server understands;
//! - `POST .../deliveries/{delivery_id}/attempts`: 202 `{}`, then the
//!   delivery is sent again under the same `X-GitHub-Delivery` guid, as a
//!   new delivery with `redelivery: true`;
//! - `Authorization: Bearer` required (401), unknown hooks and deliveries
//!   404, errors as `{"message", "documentation_url"}`;
//! - `x-ratelimit-*` headers on every answer, and on request a primary
//!   limit (403, `x-ratelimit-remaining: 0`) or a secondary one (403 with
//!   `retry-after`).
//!
//! Every answer is kept in [`Transcript`] for validation against GitHub's
//! OpenAPI description (`tests/github-openapi/validate.py`).

use std::sync::{Arc, Mutex};

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{Exchange, Transcript, respond, serve};

const DOCS: &str = "https://docs.github.com/rest/repos/webhooks";

#[derive(Debug, Clone)]
struct Delivery {
    id: i64,
    guid: String,
    event: String,
    action: Option<String>,
    body: Vec<u8>,
    delivered_at: OffsetDateTime,
    status_code: i64,
    status: String,
    redelivery: bool,
    duration: f64,
}

/// A rate limit the next API request meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// 403 with `retry-after: secs` and GitHub's secondary-limit message.
    Secondary { retry_after_secs: u64 },
    /// 403 with `x-ratelimit-remaining: 0`, resetting `secs` from now.
    Primary { reset_in_secs: u64 },
}

/// Who the API lets in.
#[derive(Debug)]
enum Caller {
    /// `Authorization: Bearer TOKEN` (a personal access or installation token).
    Token(String),
    /// A GitHub App's JWT: RS256 over this public key (RSAPublicKey DER),
    /// issued by `issuer`, at most 10 minutes long, not expired.
    App { issuer: String, public_key: Vec<u8> },
}

#[derive(Debug)]
struct State {
    /// `/repos/{owner}/{repo}/hooks/{id}` or `/app/hook`.
    hook_path: String,
    caller: Caller,
    secret: String,
    target: String,
    deliveries: Vec<Delivery>,
    next_id: i64,
    /// The receiver's answers are lost (a timeout): logged as failed
    /// whatever the receiver did with them.
    lose_answers: bool,
    limits: Vec<Limit>,
    used: u64,
    redelivery_requests: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct GithubDouble {
    /// The API's base URL (what `api_url` is set to).
    pub api_url: String,
    pub owner_repo: String,
    pub hook_id: u64,
    state: Arc<Mutex<State>>,
    transcript: Transcript,
    http: reqwest::Client,
}

impl GithubDouble {
    /// GitHub with one hook on `owner_repo` delivering to `target` (a
    /// webhook URL) signed with `secret`; its API wants `token`.
    pub async fn start(owner_repo: &str, target: &str, secret: &str, token: &str) -> Self {
        Self::start_as(
            format!("/repos/{owner_repo}/hooks/424242"),
            Caller::Token(token.to_owned()),
            owner_repo,
            target,
            secret,
        )
        .await
    }

    /// A GitHub App's own webhook (`/app/hook`), whose API takes only the
    /// App's JWTs: issued by `issuer`, signed by `private_key_pem`'s key.
    pub async fn start_app(
        issuer: &str,
        private_key_pem: &str,
        target: &str,
        secret: &str,
    ) -> Self {
        use rustls_pki_types::pem::PemObject as _;
        let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(private_key_pem.as_bytes())
            .expect("a PEM private key");
        let key = match &der {
            rustls_pki_types::PrivateKeyDer::Pkcs1(k) => {
                ring::signature::RsaKeyPair::from_der(k.secret_pkcs1_der())
            }
            rustls_pki_types::PrivateKeyDer::Pkcs8(k) => {
                ring::signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der())
            }
            _ => panic!("not an RSA key"),
        }
        .expect("an RSA key");
        use ring::signature::KeyPair as _;
        let caller = Caller::App {
            issuer: issuer.to_owned(),
            public_key: key.public_key().as_ref().to_vec(),
        };
        Self::start_as("/app/hook".to_owned(), caller, "app", target, secret).await
    }

    async fn start_as(
        hook_path: String,
        caller: Caller,
        owner_repo: &str,
        target: &str,
        secret: &str,
    ) -> Self {
        let state = Arc::new(Mutex::new(State {
            hook_path,
            caller,
            secret: secret.to_owned(),
            target: target.to_owned(),
            deliveries: Vec::new(),
            next_id: 12_077_215_000,
            lose_answers: false,
            limits: Vec::new(),
            used: 0,
            redelivery_requests: Vec::new(),
        }));
        let transcript = Transcript::default();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("client");
        let api_url = {
            let (state, transcript, http) = (state.clone(), transcript.clone(), http.clone());
            serve(move |req, body| {
                let (state, transcript, http) = (state.clone(), transcript.clone(), http.clone());
                async move { answer(&state, &transcript, &http, req, body).await }
            })
            .await
        };
        Self {
            api_url,
            owner_repo: owner_repo.to_owned(),
            hook_id: 424242,
            state,
            transcript,
            http,
        }
    }

    /// Sends a new `event` delivery with `body`; its guid.
    pub async fn deliver(&self, event: &str, body: &[u8]) -> String {
        let guid = uuid_like(&self.state);
        send(&self.state, &self.http, event, &guid, body, false).await;
        guid
    }

    /// Where deliveries go from now on (an unreachable URL: an outage).
    pub fn set_target(&self, target: &str) {
        self.state.lock().unwrap().target = target.to_owned();
    }

    /// While `lose`, every delivery is logged as timed out, whatever the
    /// receiver did with it.
    pub fn lose_answers(&self, lose: bool) {
        self.state.lock().unwrap().lose_answers = lose;
    }

    /// The next API requests meet these limits, one each, in order.
    pub fn limit_next_requests(&self, limits: &[Limit]) {
        self.state.lock().unwrap().limits.extend_from_slice(limits);
    }

    /// Delivery ids redelivery was asked for, in order.
    pub fn redelivery_requests(&self) -> Vec<i64> {
        self.state.lock().unwrap().redelivery_requests.clone()
    }

    /// `(guid, status_code, redelivery)` of every delivery, oldest first.
    pub fn log(&self) -> Vec<(String, i64, bool)> {
        let state = self.state.lock().unwrap();
        state
            .deliveries
            .iter()
            .map(|d| (d.guid.clone(), d.status_code, d.redelivery))
            .collect()
    }

    pub fn transcript(&self) -> Vec<Exchange> {
        self.transcript.exchanges()
    }
}

fn uuid_like(state: &Mutex<State>) -> String {
    let n = {
        let mut s = state.lock().unwrap();
        s.next_id += 1;
        s.next_id
    };
    let r: u64 = rand_u64();
    format!(
        "{:08x}-{:04x}-11eb-{:04x}-{:012x}",
        (r >> 32) as u32,
        (n & 0xffff) as u16,
        0x8000 | ((r >> 16) & 0x0fff) as u16,
        (n as u64 ^ r) & 0xffff_ffff_ffff
    )
}

fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).expect("random");
    u64::from_le_bytes(bytes)
}

/// Posts one delivery to the target and logs it.
async fn send(
    state: &Mutex<State>,
    http: &reqwest::Client,
    event: &str,
    guid: &str,
    body: &[u8],
    redelivery: bool,
) {
    let (target, secret) = {
        let s = state.lock().unwrap();
        (s.target.clone(), s.secret.clone())
    };
    let started = std::time::Instant::now();
    let sent = http
        .post(&target)
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/5f1b3c9")
        .header("x-github-event", event)
        .header("x-github-delivery", guid)
        .header("x-github-hook-id", "424242")
        .header("x-hub-signature-256", crate::sign::github(&secret, body))
        .body(body.to_vec())
        .send()
        .await;
    let duration = started.elapsed().as_secs_f64();
    let mut s = state.lock().unwrap();
    let (status_code, status) = match sent {
        _ if s.lose_answers => (504, "timed out".to_owned()),
        Ok(r) => (
            i64::from(r.status().as_u16()),
            r.status().canonical_reason().unwrap_or("").to_owned(),
        ),
        Err(_) => (502, "failed to connect".to_owned()),
    };
    s.next_id += 1;
    let id = s.next_id;
    let action = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["action"].as_str().map(str::to_owned));
    s.deliveries.push(Delivery {
        id,
        guid: guid.to_owned(),
        event: event.to_owned(),
        action,
        body: body.to_vec(),
        delivered_at: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
        status_code,
        status,
        redelivery,
        duration,
    });
}

/// What GitHub checks of an App's JWT: RS256 by the App's key, its issuer,
/// not expired, and no longer than 10 minutes (with a minute of skew).
fn app_jwt_is_valid(jwt: &str, issuer: &str, public_key: &[u8]) -> bool {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = jwt.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let decode = |p: &str| {
        b64.decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    };
    let (Some(header), Some(claims), Ok(signature)) =
        (decode(header), decode(claims), b64.decode(signature))
    else {
        return false;
    };
    let signed = &jwt[..jwt.rfind('.').unwrap_or(0)];
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key,
    );
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let (iat, exp) = (claims["iat"].as_i64(), claims["exp"].as_i64());
    header["alg"] == "RS256"
        && key.verify(signed.as_bytes(), &signature).is_ok()
        && claims["iss"] == issuer
        && matches!((iat, exp), (Some(iat), Some(exp)) if iat <= now + 60 && exp > now && exp - iat <= 660)
}

fn error(status: u16, message: &str) -> (u16, Value) {
    (
        status,
        json!({"message": message, "documentation_url": DOCS}),
    )
}

async fn answer(
    state: &Arc<Mutex<State>>,
    transcript: &Transcript,
    http: &reqwest::Client,
    req: HttpRequest,
    _body: web::Bytes,
) -> HttpResponse {
    let mut headers: Vec<(String, String)> = vec![
        (
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        ),
        ("x-github-api-version-selected".into(), "2022-11-28".into()),
        (
            "x-github-media-type".into(),
            "github.v3; format=json".into(),
        ),
    ];
    let (method, path, query) = (
        req.method().as_str().to_owned(),
        req.path().to_owned(),
        req.query_string().to_owned(),
    );
    let (status, body) = route(state, http, &req, &method, &path, &query, &mut headers).await;
    respond(transcript, &req, status, headers, body)
}

#[allow(clippy::too_many_arguments)]
async fn route(
    state: &Arc<Mutex<State>>,
    http: &reqwest::Client,
    req: &HttpRequest,
    method: &str,
    path: &str,
    query: &str,
    headers: &mut Vec<(String, String)>,
) -> (u16, Value) {
    // The quota, counted per request as GitHub's core resource does.
    let limit = {
        let mut s = state.lock().unwrap();
        s.used += 1;
        let reset = OffsetDateTime::now_utc().unix_timestamp() + 3600;
        let limit = (!s.limits.is_empty()).then(|| s.limits.remove(0));
        let remaining = match limit {
            Some(Limit::Primary { .. }) => 0,
            _ => 5000 - s.used.min(5000),
        };
        let reset = match limit {
            Some(Limit::Primary { reset_in_secs }) => {
                OffsetDateTime::now_utc().unix_timestamp() + reset_in_secs as i64
            }
            _ => reset,
        };
        headers.extend([
            ("x-ratelimit-limit".into(), "5000".into()),
            ("x-ratelimit-remaining".into(), remaining.to_string()),
            ("x-ratelimit-used".into(), s.used.min(5000).to_string()),
            ("x-ratelimit-reset".into(), reset.to_string()),
            ("x-ratelimit-resource".into(), "core".into()),
        ]);
        limit
    };
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let refusal = match &state.lock().unwrap().caller {
        Caller::Token(token) => (presented != format!("Bearer {token}")
            && presented != format!("token {token}"))
        .then_some("Requires authentication"),
        Caller::App { issuer, public_key } => presented
            .strip_prefix("Bearer ")
            .is_none_or(|jwt| !app_jwt_is_valid(jwt, issuer, public_key))
            .then_some("A JSON web token could not be decoded"),
    };
    if let Some(message) = refusal {
        return error(401, message);
    }
    match limit {
        Some(Limit::Secondary { retry_after_secs }) => {
            headers.push(("retry-after".into(), retry_after_secs.to_string()));
            return error(
                403,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID.",
            );
        }
        Some(Limit::Primary { .. }) => {
            return error(403, "API rate limit exceeded for user ID 1.");
        }
        None => {}
    }
    let hook = format!("{}/deliveries", state.lock().unwrap().hook_path);
    let Some(rest) = path.strip_prefix(&hook) else {
        return error(404, "Not Found");
    };
    match (method, rest) {
        ("GET", "") => list(state, query, &hook, req, headers),
        ("POST", rest) => match rest
            .strip_prefix('/')
            .and_then(|r| r.strip_suffix("/attempts"))
            .and_then(|id| id.parse::<i64>().ok())
        {
            Some(id) => redeliver(state, http, id).await,
            None => error(404, "Not Found"),
        },
        _ => error(404, "Not Found"),
    }
}

fn list(
    state: &Mutex<State>,
    query: &str,
    hook: &str,
    req: &HttpRequest,
    headers: &mut Vec<(String, String)>,
) -> (u16, Value) {
    let mut per_page = 30usize;
    let mut cursor: Option<i64> = None;
    let mut status: Option<String> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "per_page" => match value.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => per_page = n,
                Ok(n) if n > 100 => per_page = 100,
                _ => return error(400, "Invalid per_page"),
            },
            "cursor" => match value.strip_prefix("v1_").and_then(|c| c.parse().ok()) {
                Some(c) => cursor = Some(c),
                None => return error(400, "Invalid cursor"),
            },
            "status" if value == "success" || value == "failure" => status = Some(value.to_owned()),
            "status" => return error(400, "Invalid status"),
            _ => {}
        }
    }
    let s = state.lock().unwrap();
    let matching: Vec<&Delivery> = s
        .deliveries
        .iter()
        .rev()
        .filter(|d| cursor.is_none_or(|c| d.id < c))
        .filter(|d| match status.as_deref() {
            Some("success") => (200..400).contains(&d.status_code),
            Some(_) => (400..600).contains(&d.status_code),
            None => true,
        })
        .collect();
    let page: Vec<Value> = matching.iter().take(per_page).map(|d| item(d)).collect();
    if matching.len() > per_page {
        let last = matching[per_page - 1].id;
        let host = req.connection_info().host().to_owned();
        let mut next = format!("http://{host}{hook}?per_page={per_page}&cursor=v1_{last}");
        if let Some(status) = &status {
            next.push_str(&format!("&status={status}"));
        }
        headers.push(("link".into(), format!("<{next}>; rel=\"next\"")));
    }
    (200, Value::Array(page))
}

fn item(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "guid": d.guid,
        "delivered_at": d.delivered_at.format(&time::format_description::well_known::Rfc3339).unwrap(),
        "redelivery": d.redelivery,
        "duration": d.duration,
        "status": d.status,
        "status_code": d.status_code,
        "event": d.event,
        "action": d.action,
        "installation_id": null,
        "repository_id": 1296269,
        "throttled_at": null,
    })
}

async fn redeliver(state: &Mutex<State>, http: &reqwest::Client, id: i64) -> (u16, Value) {
    let original = {
        let mut s = state.lock().unwrap();
        let found = s.deliveries.iter().find(|d| d.id == id).cloned();
        if found.is_some() {
            s.redelivery_requests.push(id);
        }
        found
    };
    let Some(original) = original else {
        return error(404, "Not Found");
    };
    // GitHub answers 202 and delivers soon after; the double delivers
    // first, so a test's counts are settled when the call returns.
    send(
        state,
        http,
        &original.event,
        &original.guid,
        &original.body,
        true,
    )
    .await;
    (202, json!({}))
}
