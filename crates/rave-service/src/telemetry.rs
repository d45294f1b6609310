//! Logs (JSON via `tracing`) and traces (OpenTelemetry, W3C `traceparent`).
//!
//! A tracer provider is always installed, so every request has a trace id
//! that is propagated to the next service and attached to metrics as an
//! exemplar; spans are exported over OTLP/HTTP only when an endpoint is set.

use std::time::Duration;

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::ids::TraceId;
use crate::settings::{LogFormat, TelemetrySettings};

/// Flushes and shuts the tracer provider down when dropped.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Exports every finished span now (tests and shutdown).
    pub fn force_flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "flushing spans failed");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            // The subscriber may be gone already; stderr is all that is left.
            eprintln!("shutting down the tracer provider failed: {e}");
        }
    }
}

/// The target of the lines logged once per request or item ("event
/// stored", "task claimed", ...): off unless `telemetry.request_logs` is
/// on, because at full rate they cost more than the work they describe.
pub const REQUEST_LOG: &str = "rave_requests";

/// Installs the global subscriber, propagator and tracer provider.
///
/// Fails if a global subscriber is already installed (call once per process).
pub fn init(service: &'static str, settings: &TelemetrySettings) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let mut builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build())
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))));
    if let Some(endpoint) = &settings.otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    // Each layer has its own filter: a quiet log level must not disable the
    // request spans that carry trace context from one service to the next.
    let log_filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&settings.log_filter));
    let fmt_layer = log_layer(
        settings,
        request_logs(log_filter, settings),
        std::io::stdout,
    );
    let otel_layer = trace_layer(settings, provider.tracer(service));
    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()?;
    Ok(TelemetryGuard { provider })
}

/// `filter`, with the per-request lines ([`REQUEST_LOG`]) off unless
/// `request_logs` is on.
fn request_logs(filter: EnvFilter, settings: &TelemetrySettings) -> EnvFilter {
    if settings.request_logs {
        return filter;
    }
    filter.add_directive(
        format!("{REQUEST_LOG}=off")
            .parse()
            .expect("a valid directive"),
    )
}

/// The trace spans' layer. The per-request lines are filtered out here as
/// in the logs: the OpenTelemetry layer would otherwise keep each one as an
/// event of its span until export (20 per batch call of job reports, which
/// held agent-reporter's memory at twice its goal; docs/performance.md).
/// A trace is found by its spans' `task_id` attribute, never by an event.
fn trace_layer<S>(
    settings: &TelemetrySettings,
    tracer: opentelemetry_sdk::trace::SdkTracer,
) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(request_logs(
            EnvFilter::new(&settings.trace_filter),
            settings,
        ))
}

/// The log lines' layer. Without `log_spans` it sees events only, so no
/// span's fields are formatted for it (see `TelemetrySettings::log_spans`).
fn log_layer<S, W>(
    settings: &TelemetrySettings,
    log_filter: EnvFilter,
    writer: W,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::filter::FilterExt as _;
    let spans = settings.log_spans;
    let filter = log_filter.and(tracing_subscriber::filter::filter_fn(move |meta| {
        spans || meta.is_event()
    }));
    match settings.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(spans)
            .with_span_list(false)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    }
}

/// The trace id of the current span, if it belongs to a trace.
pub fn current_trace_id() -> Option<TraceId> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return None;
    }
    TraceId::parse(format!("{:032x}", span_context.trace_id())).ok()
}

/// Installs telemetry once per test process: logs at `RUST_LOG` (default
/// `error`), traces made and propagated but not exported.
pub fn init_for_tests() {
    static GUARD: std::sync::OnceLock<Option<TelemetryGuard>> = std::sync::OnceLock::new();
    GUARD.get_or_init(|| {
        let settings = TelemetrySettings {
            log_filter: "error".into(),
            log_format: LogFormat::Pretty,
            ..TelemetrySettings::default()
        };
        match init("rave-test", &settings) {
            Ok(guard) => Some(guard),
            Err(e) => {
                eprintln!("test telemetry not installed: {e}");
                None
            }
        }
    });
}

/// Puts `task_id` on the current span, so a trace can be found by task.
pub fn record_task_id(task_id: &crate::ids::TaskId) {
    tracing::Span::current().set_attribute("task_id", task_id.to_string());
}

/// The W3C `traceparent` of `span`, if it belongs to a trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    carrier.remove("traceparent")
}

/// The `traceparent` of the current span.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// Makes `span` a child of the remote span `traceparent` (W3C), so work
/// done later, elsewhere (a task claimed minutes after its webhook), joins
/// the webhook's trace.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    let _ = span.set_parent(remote_context(traceparent));
}

/// The context a W3C `traceparent` names, read by the global propagator.
fn remote_context(traceparent: &str) -> opentelemetry::Context {
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier))
}

/// Links the current span to the remote span `traceparent` without making
/// it the parent: the link is followed, the trace is not joined.
pub fn link_current_span_to(traceparent: &str) {
    link_span_to(&tracing::Span::current(), traceparent);
}

/// Links `span` to the remote span `traceparent`, as above.
pub fn link_span_to(span: &tracing::Span, traceparent: &str) {
    let remote = remote_context(traceparent).span().span_context().clone();
    span.add_link(remote);
}

/// Whether `value` is a well-formed W3C `traceparent` (version 00).
pub fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Every line the layer writes, for reading back.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_unexpected_error_names_the_trace_of_its_request() {
        let lines = Lines::default();
        let writer = lines.clone();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(log_layer(
                &TelemetrySettings::default(),
                EnvFilter::new("info"),
                move || writer.clone(),
            ))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let trace_id = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            let _entered = span.enter();
            crate::http::log_unexpected(&std::io::Error::other("disk gone"));
            current_trace_id().expect("the request span has a trace")
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["fields"]["message"], "unexpected error");
        assert_eq!(line["fields"]["trace_id"], trace_id.as_str());
        assert!(line.get("span").is_none(), "{line}");
    }

    fn logged_inside_a_span(log_spans: bool) -> serde_json::Value {
        let lines = Lines::default();
        let writer = lines.clone();
        let settings = TelemetrySettings {
            log_spans,
            ..TelemetrySettings::default()
        };
        let layer = log_layer(&settings, EnvFilter::new("info"), move || writer.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", route = "/hooks/{source}");
            let _entered = span.enter();
            tracing::error!(code = "x", "unexpected error");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        serde_json::from_str(text.trim()).unwrap()
    }

    /// The spans a test's tracer exports, as they end.
    #[derive(Clone, Debug, Default)]
    struct Exported(Arc<Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Exported {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// The events of a request span that logged one per-request line and
    /// one warning, as its trace holds them.
    fn span_events_with(request_logs: bool) -> Vec<String> {
        let exported = Exported::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exported.clone())
            .build();
        let settings = TelemetrySettings {
            request_logs,
            ..TelemetrySettings::default()
        };
        let subscriber =
            tracing_subscriber::registry().with(trace_layer(&settings, provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request");
            let _entered = span.enter();
            tracing::info!(target: REQUEST_LOG, task_id = "0123456789abcdef", "job report");
            tracing::warn!("report refused");
        });
        let spans = exported.0.lock().unwrap();
        assert_eq!(spans.len(), 1, "{spans:?}");
        spans[0].events.iter().map(|e| e.name.to_string()).collect()
    }

    #[test]
    fn per_request_lines_stay_out_of_traces_unless_request_logs_is_on() {
        assert_eq!(span_events_with(false), ["report refused"]);
        assert_eq!(span_events_with(true), ["job report", "report refused"]);
    }

    #[test]
    fn log_lines_carry_no_span_fields_unless_log_spans_is_on() {
        let quiet = logged_inside_a_span(false);
        assert_eq!(quiet["fields"]["message"], "unexpected error");
        assert_eq!(quiet["fields"]["code"], "x");
        assert!(quiet.get("span").is_none(), "{quiet}");

        let spans = logged_inside_a_span(true);
        assert_eq!(spans["fields"]["message"], "unexpected error");
        assert_eq!(spans["span"]["route"], "/hooks/{source}");
    }
}
