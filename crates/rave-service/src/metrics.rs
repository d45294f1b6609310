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

/// `process_*` metrics of this process, read from `/proc/self` at scrape
/// time (prometheus-client has no process collector): resident memory, CPU
/// time, start time and open file descriptors, named as the other Prometheus
/// clients name them.
#[derive(Debug, Clone, Copy)]
pub struct ProcessCollector;

/// Linux's clock tick for /proc times; 100 on every architecture RAVE runs on.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

struct ProcessStats {
    resident_bytes: i64,
    cpu_seconds: f64,
    start_time_seconds: f64,
    open_fds: i64,
}

fn process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime is field 14.
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
    let cpu_seconds = (ticks(14)? + ticks(15)?) / CLOCK_TICKS_PER_SEC;
    let boot_time: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    let start_time_seconds = boot_time + ticks(22)? / CLOCK_TICKS_PER_SEC;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let resident_kib: i64 = status.lines().find_map(|l| {
        l.strip_prefix("VmRSS:")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })?;
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    Some(ProcessStats {
        resident_bytes: resident_kib * 1024,
        cpu_seconds,
        start_time_seconds,
        open_fds,
    })
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(p) = process_stats() else {
            return Ok(());
        };
        let gauges: [(&str, &str, f64); 3] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                p.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        let cpu = ConstCounter::new(p.cpu_seconds);
        let metric = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(metric)
    }
}
