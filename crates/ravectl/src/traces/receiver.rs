//! The local stack's OTLP/HTTP trace receiver (Tempo is not packaged for
//! Debian): `POST /v1/traces` with `application/x-protobuf`, decoded with
//! `opentelemetry-proto`'s types, written to the [`SpanLog`]; refusals are
//! counted on its own `GET /metrics`.

use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use rave_service::error::ReasonLabel;
use rave_service::http::{BodyError, error_response, read_body};
use rave_service::prometheus_client::metrics::counter::Counter;
use rave_service::prometheus_client::metrics::family::Family;
use rave_service::prometheus_client::registry::Registry;

use super::log::{SpanLog, records_of};

/// The receiver's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// One export request's body, at most (the SDK's batches are ~1 MiB).
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
        }
    }
}

struct State {
    log: Mutex<SpanLog>,
    limits: Limits,
    registry: Registry,
    spans: Counter,
    rejected: Family<ReasonLabel, Counter>,
}

impl State {
    fn refuse(&self, status: StatusCode, reason: &'static str, message: &str) -> HttpResponse {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
        error_response(status, reason, message)
    }
}

/// Serves the receiver on `listener` until the returned server is stopped.
pub fn serve(
    listener: std::net::TcpListener,
    log: SpanLog,
    limits: Limits,
) -> std::io::Result<actix_web::dev::Server> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(rave_service::metrics::ProcessCollector));
    let spans = Counter::default();
    registry.register(
        "trace_receiver_spans",
        "Spans received and kept",
        spans.clone(),
    );
    let rejected = Family::<ReasonLabel, Counter>::default();
    registry.register(
        "trace_receiver_exports_rejected",
        "Export requests refused, by error code",
        rejected.clone(),
    );
    let state = web::Data::from(Arc::new(State {
        log: Mutex::new(log),
        limits,
        registry,
        spans,
        rejected,
    }));
    Ok(actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(state.clone())
            .route("/v1/traces", web::post().to(export))
            .route("/metrics", web::get().to(metrics))
            .default_service(web::to(rave_service::http::not_found))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}

async fn metrics(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    rave_service::metrics::render(&req, &state.registry)
}

async fn export(req: HttpRequest, payload: web::Payload, state: web::Data<State>) -> HttpResponse {
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-protobuf") {
        return state.refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "OTLP/HTTP with protobuf bodies only (Content-Type: application/x-protobuf)",
        );
    }
    let body = match read_body(&req, payload, state.limits.max_body_bytes).await {
        Ok(body) => body,
        Err(e @ BodyError::TooLarge { .. }) => {
            return state.refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &e.to_string(),
            );
        }
        Err(e) => {
            return state.refuse(StatusCode::BAD_REQUEST, "unreadable_body", &e.to_string());
        }
    };
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(e) => {
            return state.refuse(
                StatusCode::BAD_REQUEST,
                "malformed_body",
                &format!("not an OTLP ExportTraceServiceRequest: {e}"),
            );
        }
    };
    let records = records_of(&request);
    let written = state
        .log
        .lock()
        .map_err(|_| std::io::Error::other("the span log's lock is poisoned"))
        .and_then(|log| log.append(&records));
    match written {
        Ok(()) => {
            state.spans.inc_by(records.len() as u64);
            HttpResponse::Ok()
                .content_type("application/x-protobuf")
                .body(ExportTraceServiceResponse::default().encode_to_vec())
        }
        Err(e) => {
            eprintln!("trace receiver: writing spans failed: {e}");
            rave_service::http::internal_error(&e)
        }
    }
}
