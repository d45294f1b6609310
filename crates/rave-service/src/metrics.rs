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

/// The series [`ProcessCollector`] adds on cgroup v2 (absent elsewhere).
pub const CGROUP_METRICS: [&str; 2] = [
    "process_cgroup_memory_current_bytes",
    "process_cgroup_memory_max_bytes",
];

/// The memory of the process's cgroup (v2): its `memory.max` (`None` when
/// unlimited, "max") and `memory.current`. Prometheus cannot know a unit's
/// `MemoryMax=` otherwise, so "memory near its limit" needs both here.
#[derive(Debug, PartialEq, Eq)]
pub struct CgroupMemory {
    pub max_bytes: Option<u64>,
    pub current_bytes: u64,
}

/// Reads the cgroup memory of the process whose `/proc/<pid>/cgroup` is
/// `proc_cgroup`, under the cgroup v2 mount `root` (`/sys/fs/cgroup`).
pub fn cgroup_memory(proc_cgroup: &str, root: &std::path::Path) -> Option<CgroupMemory> {
    // cgroup v2 is the one line `0::/system.slice/rave-ingest.service`.
    let path = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = root.join(path.trim().trim_start_matches('/'));
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    let current_bytes = read("memory.current")?.trim().parse().ok()?;
    let max_bytes = match read("memory.max")?.trim() {
        "max" => None,
        n => Some(n.parse().ok()?),
    };
    Some(CgroupMemory {
        max_bytes,
        current_bytes,
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
        let cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|c| cgroup_memory(&c, std::path::Path::new("/sys/fs/cgroup")));
        let mut cgroup_gauges = Vec::new();
        if let Some(c) = cgroup {
            cgroup_gauges.push((
                CGROUP_METRICS[0],
                "Memory charged to the process's cgroup (memory.current)",
                c.current_bytes as f64,
            ));
            // Unlimited: no series, so "near the limit" cannot fire.
            if let Some(max) = c.max_bytes {
                cgroup_gauges.push((
                    CGROUP_METRICS[1],
                    "The process's cgroup memory limit (memory.max, systemd's MemoryMax=)",
                    max as f64,
                ));
            }
        }
        for (name, help, value) in gauges.into_iter().chain(cgroup_gauges) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cgroup(max: &str, current: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("system.slice/rave-ingest.service");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.max"), max).unwrap();
        std::fs::write(dir.join("memory.current"), current).unwrap();
        root
    }

    #[test]
    fn a_limited_cgroup_reports_its_limit_and_usage() {
        let root = cgroup("268435456\n", "52428800\n");
        assert_eq!(
            cgroup_memory("0::/system.slice/rave-ingest.service\n", root.path()),
            Some(CgroupMemory {
                max_bytes: Some(268_435_456),
                current_bytes: 52_428_800
            })
        );
    }

    #[test]
    fn an_unlimited_cgroup_has_no_limit_and_cgroup_v1_reports_nothing() {
        let root = cgroup("max\n", "1024\n");
        let found = cgroup_memory("0::/system.slice/rave-ingest.service", root.path()).unwrap();
        assert_eq!(found.max_bytes, None);
        // cgroup v1 lines (`N:controller:/path`) are not read.
        assert_eq!(cgroup_memory("4:memory:/user.slice\n", root.path()), None);
        assert_eq!(cgroup_memory("0::/no/such/group", root.path()), None);
    }
}
