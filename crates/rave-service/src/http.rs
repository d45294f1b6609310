//! HTTP pieces every service uses: the JSON error body, a size-limited body
//! reader, health endpoints, listeners and the traced outgoing client.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::HttpMessage as _;
use actix_web::dev::Service as _;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use futures_util::StreamExt as _;
use serde::Serialize;

use crate::settings::ServerSettings;

/// Request spans that take their parent from the incoming `traceparent`.
pub use tracing_actix_web::TracingLogger;

/// The services' HTTP client, as [`traced_client`] builds it.
pub type Client = reqwest_middleware::ClientWithMiddleware;

/// `{"error": {"code": "...", "message": "..."}}`
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// The one shape every error response has.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    })
}

/// The opaque 500 for an unexpected error, which is logged here, once, with
/// its whole cause chain.
pub fn internal_error(error: &(dyn std::error::Error + 'static)) -> HttpResponse {
    log_unexpected(error);
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}

/// A 503 telling the caller when to retry; the cause is logged, not sent.
pub fn retry_later(
    code: &str,
    message: &str,
    retry_after_secs: u32,
    cause: &anyhow::Error,
) -> HttpResponse {
    let trace_id = crate::telemetry::current_trace_id();
    tracing::warn!(
        code,
        error.chain = %format!("{cause:#}"),
        trace_id = trace_id.as_ref().map(|t| t.as_str()),
        "dependency unavailable"
    );
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, code, message);
    response.headers_mut().insert(
        actix_web::http::header::RETRY_AFTER,
        actix_web::http::header::HeaderValue::from(retry_after_secs),
    );
    response
}

/// Logs an unexpected error once, with its whole cause chain.
pub fn log_unexpected(error: &(dyn std::error::Error + 'static)) {
    let chain = crate::error::cause_chain(error);
    // Log lines carry no span fields by default (`telemetry.log_spans`):
    // the trace id is what leads from this line to the request.
    let trace_id = crate::telemetry::current_trace_id();
    tracing::error!(
        error.chain = %chain,
        trace_id = trace_id.as_ref().map(|t| t.as_str()),
        "unexpected error"
    );
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body could not be read: {0}")]
    Read(String),
}

/// The body length the request declares (`Content-Length`), if it does.
pub fn declared_length(req: &actix_web::HttpRequest) -> Option<u64> {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// How many bytes the request's body will take, at most `limit`: its
/// declared length, or `limit` when it declares none (chunked).
pub fn expected_body_bytes(req: &actix_web::HttpRequest, limit: usize) -> usize {
    declared_length(req).map_or(limit, |len| len.min(limit as u64) as usize)
}

/// Reads a request body of at most `limit` bytes, refusing early when
/// `Content-Length` already says it is larger.
pub async fn read_body(
    req: &actix_web::HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, BodyError> {
    let declared = declared_length(req);
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let capacity = declared.map_or(8 * 1024, |len| len as usize);
    let mut body = web::BytesMut::with_capacity(capacity);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when `check` succeeded, else 503 naming what is not
/// reachable (the cause is logged, not sent).
pub fn readiness(check: anyhow::Result<()>, dependency: &str) -> HttpResponse {
    match check {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Err(e) => {
            tracing::warn!(dependency, error = %format!("{e:#}"), "not ready");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                &format!("{dependency} is unreachable"),
            )
        }
    }
}

/// The answer for routes that do not exist.
pub async fn not_found() -> HttpResponse {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Whether a service continues the trace context its callers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundTrace {
    /// Internal callers (other RAVE services, authenticated agents): their
    /// `traceparent` is the request span's parent.
    Trusted,
    /// The internet (ingest): a sender's `traceparent` and `tracestate`
    /// are removed before the request span starts, so each webhook starts a
    /// new trace, sampled by RAVE's own ratio; a well-formed `traceparent`
    /// becomes a span link, so the sender's trace can still be found
    /// (docs/security.md).
    Untrusted,
}

/// A sender's `traceparent`, kept for the request span's link.
#[derive(Debug, Clone)]
struct SenderTraceparent(String);

fn take_sender_trace(req: &mut actix_web::dev::ServiceRequest) {
    let headers = req.headers_mut();
    let sent = headers.remove("traceparent").next();
    headers.remove("tracestate");
    if let Some(value) = sent.as_ref().and_then(|v| v.to_str().ok())
        && crate::telemetry::is_traceparent(value)
    {
        let value = value.to_owned();
        req.extensions_mut().insert(SenderTraceparent(value));
    }
}

fn link_sender_trace(req: &actix_web::dev::ServiceRequest) {
    if let Some(SenderTraceparent(value)) = req.extensions().get::<SenderTraceparent>().cloned() {
        crate::telemetry::link_current_span_to(&value);
    }
}

/// The listener a service will serve on: the socket handed over by systemd
/// or `ravectl up` when there is one (restarts then refuse no connection),
/// else one bound here (port 0 picks a free port).
pub fn bind(settings: &ServerSettings) -> std::io::Result<TcpListener> {
    if let Some(listener) = crate::systemd::inherited_listener()? {
        tracing::info!(address = %listener.local_addr()?, "serving on the socket handed over");
        return Ok(listener);
    }
    TcpListener::bind((settings.host, settings.port))
}

/// How long an idle keep-alive connection stays open. Longer than the
/// callers keep theirs (nginx's upstream `keepalive_timeout`, reqwest's
/// pool), so the caller always closes an idle connection first and never
/// sends a request into one this side is closing.
const KEEP_ALIVE: Duration = Duration::from_secs(75);

/// Serves `routes` on `listener` the way every RAVE service does: request
/// spans that continue the caller's trace, shared `state`, a JSON 404 for
/// unknown routes, and a graceful stop on SIGTERM/SIGINT. Once `draining`
/// is true every response closes its connection, so callers stop reusing
/// connections to a process that is stopping.
pub fn serve<T: Send + Sync + 'static>(
    listener: TcpListener,
    settings: &ServerSettings,
    state: web::Data<T>,
    routes: fn(&mut web::ServiceConfig),
    inbound: InboundTrace,
    draining: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<actix_web::dev::Server> {
    let untrusted = inbound == InboundTrace::Untrusted;
    let mut server = actix_web::HttpServer::new(move || {
        let draining = draining.clone();
        actix_web::App::new()
            .wrap_fn(move |req, srv| {
                let draining = draining.clone();
                let response = srv.call(req);
                async move {
                    let mut response = response.await?;
                    if *draining.borrow() {
                        response
                            .response_mut()
                            .head_mut()
                            .set_connection_type(actix_web::http::ConnectionType::Close);
                    }
                    Ok(response)
                }
            })
            // Inside the request span: link it to the sender's trace.
            .wrap_fn(move |req, srv| {
                if untrusted {
                    link_sender_trace(&req);
                }
                srv.call(req)
            })
            .wrap(TracingLogger::default())
            // Before the request span exists: it must not see them.
            .wrap_fn(move |mut req, srv| {
                if untrusted {
                    take_sender_trace(&mut req);
                }
                srv.call(req)
            })
            .app_data(state.clone())
            .configure(routes)
            .default_service(web::to(not_found))
    })
    .listen(listener)?
    // `Served` listens for SIGTERM itself, to mark the service as draining
    // before it stops.
    .disable_signals()
    .shutdown_timeout(settings.shutdown_timeout_secs)
    .keep_alive(KEEP_ALIVE)
    // Senders give up after ~10 s; a client this slow to send is not one.
    .client_request_timeout(Duration::from_secs(10));
    if settings.workers > 0 {
        server = server.workers(settings.workers);
    }
    Ok(server.run())
}

/// An HTTP client whose requests carry the current trace (`traceparent`).
pub fn traced_client(
    timeout: Duration,
) -> anyhow::Result<reqwest_middleware::ClientWithMiddleware> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()?;
    Ok(reqwest_middleware::ClientBuilder::new(client)
        .with(reqwest_tracing::TracingMiddleware::default())
        .build())
}

/// Sends `request(url)` to the first of `urls` (replicas of one service,
/// preferred first) that takes the connection. Only a refused connection
/// moves on: it proves nothing was delivered, whereas a timeout may hide a
/// commit and a 5xx would come from every replica of a shared database.
pub async fn send_to_first_replica(
    urls: &[String],
    request: impl Fn(&str) -> reqwest_middleware::RequestBuilder,
) -> Result<reqwest::Response, reqwest_middleware::Error> {
    let mut refused = None;
    for url in urls {
        match request(url).send().await {
            Err(reqwest_middleware::Error::Reqwest(e)) if e.is_connect() => {
                refused = Some(reqwest_middleware::Error::Reqwest(e));
            }
            answered => return answered,
        }
    }
    Err(refused.unwrap_or_else(|| {
        reqwest_middleware::Error::Middleware(anyhow::anyhow!("no replica URL to send to"))
    }))
}
