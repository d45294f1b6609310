//! The `/metrics` endpoint: OpenMetrics when the scraper asks for it (so
//! histograms can carry `trace_id` exemplars), Prometheus text 0.0.4 otherwise.
//!
//! Each service declares its own registry in one `metrics` module; this one
//! only encodes. See docs/adr/0001-metrics-with-prometheus-client.md.

use actix_web::HttpRequest;
use actix_web::HttpResponse;
use actix_web::http::header;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::registry::Registry;

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exemplar label set: the trace that produced an observation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: String,
}

/// An exemplar for the current span's trace, if there is one.
pub fn trace_exemplar() -> Option<TraceExemplar> {
    crate::telemetry::current_trace_id().map(|id| TraceExemplar {
        trace_id: id.to_string(),
    })
}

/// Latency buckets in seconds, 1 ms to 10 s: webhook senders give up at 10 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

/// Whether the request's `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"))
}

/// Encodes `registry` in the format the request negotiates.
pub fn render(req: &HttpRequest, registry: &Registry) -> HttpResponse {
    let mut body = String::new();
    let (encoded, content_type) = if wants_openmetrics(req) {
        (
            prometheus_client::encoding::text::encode(&mut body, registry),
            OPENMETRICS_CONTENT_TYPE,
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut body, registry),
            PROMETHEUS_TEXT_CONTENT_TYPE,
        )
    };
    match encoded {
        Ok(()) => HttpResponse::Ok().content_type(content_type).body(body),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            crate::http::error_response(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}
