//! A double of GitLab (≥ 17.4) for one project webhook, from GitLab's
//! "Project webhooks API" documentation: it sends token-authenticated
//! deliveries (`X-Gitlab-Token`, `Idempotency-Key`, `X-Gitlab-Event-UUID`)
//! and serves
//!
//! - `GET /api/v4/projects/{id}/hooks/{hook_id}/events?page&per_page`:
//!   newest first, `per_page` default 20, with `X-Page`, `X-Per-Page`,
//!   `X-Next-Page`, `X-Total`, `X-Total-Pages` and `Link`;
//! - `POST .../events/{hook_event_id}/resend`: sends the request again with
//!   the same `Idempotency-Key`, at most 5 a minute per hook (429 with
//!   `Retry-After` beyond; the window restarts once a 429 was answered, as
//!   if the caller waited it out);
//! - `PRIVATE-TOKEN` required (401 `{"message": "401 Unauthorized"}`).

use std::sync::{Arc, Mutex};

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::{Exchange, Transcript, respond, serve};

#[derive(Debug, Clone)]
struct Event {
    id: i64,
    trigger: String,
    event: String,
    idempotency_key: String,
    event_uuid: String,
    body: Vec<u8>,
    response_status: String,
}

#[derive(Debug)]
struct State {
    project: String,
    hook_id: u64,
    token: String,
    hook_token: String,
    target: String,
    events: Vec<Event>,
    next_id: i64,
    resends_in_window: u32,
}

#[derive(Debug, Clone)]
pub struct GitlabDouble {
    /// `http://127.0.0.1:PORT/api/v4`.
    pub api_url: String,
    pub project: String,
    pub hook_id: u64,
    state: Arc<Mutex<State>>,
    transcript: Transcript,
    http: reqwest::Client,
}

const RESENDS_PER_MINUTE: u32 = 5;

impl GitlabDouble {
    /// GitLab with one hook on project `project` (an id) delivering to
    /// `target` with the secret token `hook_token`; its API wants `token`.
    pub async fn start(project: &str, target: &str, hook_token: &str, token: &str) -> Self {
        let state = Arc::new(Mutex::new(State {
            project: project.to_owned(),
            hook_id: 77,
            token: token.to_owned(),
            hook_token: hook_token.to_owned(),
            target: target.to_owned(),
            events: Vec::new(),
            next_id: 0,
            resends_in_window: 0,
        }));
        let transcript = Transcript::default();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("client");
        let base = {
            let (state, transcript, http) = (state.clone(), transcript.clone(), http.clone());
            serve(move |req, body| {
                let (state, transcript, http) = (state.clone(), transcript.clone(), http.clone());
                async move { answer(&state, &transcript, &http, req, body).await }
            })
            .await
        };
        Self {
            api_url: format!("{base}/api/v4"),
            project: project.to_owned(),
            hook_id: 77,
            state,
            transcript,
            http,
        }
    }

    /// Sends a new delivery of `event` (`Push Hook`, ...); its
    /// `Idempotency-Key`.
    pub async fn deliver(&self, event: &str, body: &[u8]) -> String {
        let key = random_uuid();
        let uuid = random_uuid();
        send(&self.state, &self.http, event, &key, &uuid, body).await;
        key
    }

    /// Where deliveries go from now on (an unreachable URL: an outage).
    pub fn set_target(&self, target: &str) {
        self.state.lock().unwrap().target = target.to_owned();
    }

    /// `(idempotency_key, response_status)` of every logged event, oldest
    /// first.
    pub fn log(&self) -> Vec<(String, String)> {
        let s = self.state.lock().unwrap();
        s.events
            .iter()
            .map(|e| (e.idempotency_key.clone(), e.response_status.clone()))
            .collect()
    }

    pub fn transcript(&self) -> Vec<Exchange> {
        self.transcript.exchanges()
    }
}

fn random_uuid() -> String {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("random");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

async fn send(
    state: &Mutex<State>,
    http: &reqwest::Client,
    event: &str,
    key: &str,
    uuid: &str,
    body: &[u8],
) {
    let (target, hook_token) = {
        let s = state.lock().unwrap();
        (s.target.clone(), s.hook_token.clone())
    };
    let sent = http
        .post(&target)
        .header("content-type", "application/json")
        .header("user-agent", "GitLab/17.6.0")
        .header("idempotency-key", key)
        .header("x-gitlab-event", event)
        .header(
            "x-gitlab-webhook-uuid",
            "3c5c0404-c866-44bc-a5f6-452bb1bfc76e",
        )
        .header("x-gitlab-instance", "https://gitlab.example.com")
        .header("x-gitlab-event-uuid", uuid)
        .header("x-gitlab-token", hook_token)
        .body(body.to_vec())
        .send()
        .await;
    let response_status = match sent {
        Ok(r) => r.status().as_u16().to_string(),
        Err(_) => "internal error".to_owned(),
    };
    let mut s = state.lock().unwrap();
    s.next_id += 1;
    let id = s.next_id;
    s.events.push(Event {
        id,
        trigger: event.to_ascii_lowercase().replace(' ', "_") + "s",
        event: event.to_owned(),
        idempotency_key: key.to_owned(),
        event_uuid: uuid.to_owned(),
        body: body.to_vec(),
        response_status,
    });
}

fn message(status: u16, text: &str) -> (u16, Value) {
    (status, json!({ "message": text }))
}

async fn answer(
    state: &Arc<Mutex<State>>,
    transcript: &Transcript,
    http: &reqwest::Client,
    req: HttpRequest,
    _body: web::Bytes,
) -> HttpResponse {
    let mut headers: Vec<(String, String)> =
        vec![("content-type".into(), "application/json".into())];
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
    let (token, hook) = {
        let s = state.lock().unwrap();
        (
            s.token.clone(),
            format!("/api/v4/projects/{}/hooks/{}/events", s.project, s.hook_id),
        )
    };
    if req
        .headers()
        .get("private-token")
        .and_then(|v| v.to_str().ok())
        != Some(token.as_str())
    {
        return message(401, "401 Unauthorized");
    }
    let Some(rest) = path.strip_prefix(&hook) else {
        return message(404, "404 Not Found");
    };
    match (method, rest) {
        ("GET", "") => list(state, query, req, &hook, headers),
        ("POST", rest) => match rest
            .strip_prefix('/')
            .and_then(|r| r.strip_suffix("/resend"))
            .and_then(|id| id.parse::<i64>().ok())
        {
            Some(id) => resend(state, http, id, headers).await,
            None => message(404, "404 Not Found"),
        },
        _ => message(404, "404 Not Found"),
    }
}

fn list(
    state: &Mutex<State>,
    query: &str,
    req: &HttpRequest,
    hook: &str,
    headers: &mut Vec<(String, String)>,
) -> (u16, Value) {
    let (mut page, mut per_page) = (1usize, 20usize);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let parsed = value.parse::<usize>().ok().filter(|n| *n >= 1);
        match (key, parsed) {
            ("page", Some(n)) => page = n,
            ("per_page", Some(n)) => per_page = n.min(100),
            ("page" | "per_page", None) => {
                return message(400, &format!("400 Bad request - {key} is invalid"));
            }
            _ => {}
        }
    }
    let s = state.lock().unwrap();
    let total = s.events.len();
    let pages = total.div_ceil(per_page).max(1);
    let items: Vec<Value> = s
        .events
        .iter()
        .rev()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|e| {
            json!({
                "id": e.id,
                "url": s.target,
                "trigger": e.trigger,
                "request_headers": {
                    "Content-Type": "application/json",
                    "User-Agent": "GitLab/17.6.0",
                    "Idempotency-Key": e.idempotency_key,
                    "X-Gitlab-Event": e.event,
                    "X-Gitlab-Webhook-UUID": "3c5c0404-c866-44bc-a5f6-452bb1bfc76e",
                    "X-Gitlab-Instance": "https://gitlab.example.com",
                    "X-Gitlab-Event-UUID": e.event_uuid,
                    "X-Gitlab-Token": "[REDACTED]",
                },
                "request_data": serde_json::from_slice::<Value>(&e.body).unwrap_or(Value::Null),
                "response_headers": {},
                "response_body": "",
                "execution_duration": 0.01,
                "response_status": e.response_status,
            })
        })
        .collect();
    let host = req.connection_info().host().to_owned();
    let link = |p: usize, rel: &str| {
        format!("<http://{host}{hook}?page={p}&per_page={per_page}>; rel=\"{rel}\"")
    };
    let mut links = vec![link(1, "first"), link(pages, "last")];
    if page < pages {
        links.insert(0, link(page + 1, "next"));
    }
    headers.extend([
        ("x-page".into(), page.to_string()),
        ("x-per-page".into(), per_page.to_string()),
        (
            "x-next-page".into(),
            if page < pages {
                (page + 1).to_string()
            } else {
                String::new()
            },
        ),
        (
            "x-prev-page".into(),
            if page > 1 {
                (page - 1).to_string()
            } else {
                String::new()
            },
        ),
        ("x-total".into(), total.to_string()),
        ("x-total-pages".into(), pages.to_string()),
        ("link".into(), links.join(", ")),
    ]);
    (200, Value::Array(items))
}

async fn resend(
    state: &Mutex<State>,
    http: &reqwest::Client,
    id: i64,
    headers: &mut Vec<(String, String)>,
) -> (u16, Value) {
    let original = {
        let mut s = state.lock().unwrap();
        let Some(found) = s.events.iter().find(|e| e.id == id).cloned() else {
            return message(404, "404 Not Found");
        };
        if s.resends_in_window >= RESENDS_PER_MINUTE {
            s.resends_in_window = 0;
            headers.extend([
                ("retry-after".into(), "60".into()),
                ("ratelimit-limit".into(), RESENDS_PER_MINUTE.to_string()),
                ("ratelimit-remaining".into(), "0".into()),
                ("ratelimit-name".into(), "web_hook_event_resend".into()),
            ]);
            return message(
                429,
                "This endpoint has been requested too many times. Try again later.",
            );
        }
        s.resends_in_window += 1;
        found
    };
    send(
        state,
        http,
        &original.event,
        &original.idempotency_key,
        &original.event_uuid,
        &original.body,
    )
    .await;
    let status = state
        .lock()
        .unwrap()
        .events
        .last()
        .map(|e| e.response_status.parse::<u16>().unwrap_or(0))
        .unwrap_or(0);
    (201, json!({ "response_status": status }))
}
