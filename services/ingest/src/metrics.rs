//! Every metric ingest exposes, declared in one place. Labels are bounded:
//! `source` is a configured source name (or `_unknown`), `outcome` and
//! `reason` come from fixed sets.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rave_service::metrics::{TraceExemplar, latency_buckets};
use std::sync::atomic::AtomicU64;

/// The `source` label for requests to a source that is not configured.
pub const UNKNOWN_SOURCE: &str = "_unknown";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub source: String,
    /// accepted, duplicate, spooled, challenge (a sender's handshake,
    /// answered), rejected (4xx) or failed (5xx).
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub source: String,
    pub reason: &'static str,
}

/// Every value of the `outcome` label.
pub const OUTCOMES: [&str; 6] = [
    "accepted",
    "duplicate",
    "spooled",
    "challenge",
    "rejected",
    "failed",
];

type LatencyHistogram = HistogramWithExemplars<TraceExemplar>;

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<OutcomeLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<SourceLabel, LatencyHistogram, fn() -> LatencyHistogram>,
    pub processed: Family<SourceLabel, Counter>,
    pub deduplicated: Family<SourceLabel, Counter>,
    pub uptime: Gauge<f64, AtomicU64>,
    pub spooled: Counter,
    pub spool_replayed: Counter,
    /// Events per call to dedup-store (`store.batch`).
    pub store_batch_size: Histogram,
    pub spool_rejected: Counter,
    pub spool_adopted: Counter,
    pub spool_events: Gauge,
    pub spool_bytes: Gauge,
    pub spool_oldest_age: Gauge<f64, AtomicU64>,
    pub in_flight_bytes: Gauge,
    /// Sources and secrets reloaded on SIGHUP.
    pub reload: rave_service::reload::ReloadMetrics,
    started: Instant,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(rave_service::metrics::ProcessCollector));
        let reload = rave_service::reload::ReloadMetrics::registered(&mut registry);
        let requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_requests",
            "Webhook requests answered, by source and outcome",
            requests.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "webhook_errors",
            "Webhook requests refused or failed, by source and error code",
            errors.clone(),
        );
        let duration: Family<SourceLabel, LatencyHistogram, fn() -> LatencyHistogram> =
            Family::new_with_constructor(|| HistogramWithExemplars::new(latency_buckets()));
        registry.register(
            "webhook_duration_seconds",
            "Time from request to answer, including the durable store, by source",
            duration.clone(),
        );
        let processed = Family::<SourceLabel, Counter>::default();
        registry.register(
            "webhook_events_processed",
            "Verified events stored for the first time",
            processed.clone(),
        );
        let deduplicated = Family::<SourceLabel, Counter>::default();
        registry.register(
            "webhook_events_deduplicated",
            "Verified deliveries that were already stored (sender retries)",
            deduplicated.clone(),
        );
        let uptime = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "webhook_dispatcher_uptime_seconds",
            "Seconds since this ingest process started",
            uptime.clone(),
        );
        let spooled = Counter::default();
        registry.register(
            "ingest_spooled_events",
            "Verified events written to the spool because dedup-store was unreachable",
            spooled.clone(),
        );
        let spool_replayed = Counter::default();
        registry.register(
            "ingest_spool_replayed_events",
            "Spooled events dedup-store has since committed (new or duplicate)",
            spool_replayed.clone(),
        );
        let spool_rejected = Counter::default();
        registry.register(
            "ingest_spool_rejected_events",
            "Spooled events dedup-store refused outright, kept in rejected.log",
            spool_rejected.clone(),
        );
        let spool_adopted = Counter::default();
        registry.register(
            "ingest_spool_adopted_events",
            "Events replayed from another replica's spool while that replica was down",
            spool_adopted.clone(),
        );
        let spool_events = Gauge::default();
        registry.register(
            "ingest_spool_depth_events",
            "Events waiting in the spool",
            spool_events.clone(),
        );
        let spool_bytes = Gauge::default();
        registry.register(
            "ingest_spool_depth_bytes",
            "Bytes waiting in the spool (its bound is spool.max_bytes)",
            spool_bytes.clone(),
        );
        let spool_oldest_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "ingest_spool_oldest_age_seconds",
            "Age of the oldest event waiting in the spool; 0 when empty",
            spool_oldest_age.clone(),
        );
        let store_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 8));
        registry.register(
            "ingest_store_batch_size",
            "Events sent to dedup-store together in one call",
            store_batch_size.clone(),
        );
        let in_flight_bytes = Gauge::default();
        registry.register(
            "ingest_in_flight_body_bytes",
            "Body bytes of requests in flight (their bound is limits.max_in_flight_bytes)",
            in_flight_bytes.clone(),
        );
        Self {
            store_batch_size,
            in_flight_bytes,
            spooled,
            spool_replayed,
            spool_rejected,
            reload,
            spool_adopted,
            spool_events,
            spool_bytes,
            spool_oldest_age,
            registry,
            requests,
            errors,
            duration,
            processed,
            deduplicated,
            uptime,
            started: Instant::now(),
        }
    }

    /// Creates every configured source's series at 0, so dashboards and
    /// `rate()` see them before the first delivery.
    pub fn initialise_sources<'a>(&self, sources: impl IntoIterator<Item = &'a str>) {
        for source in sources {
            let label = SourceLabel {
                source: source.to_owned(),
            };
            self.processed.get_or_create_owned(&label);
            self.deduplicated.get_or_create_owned(&label);
            self.duration.get_or_create_owned(&label);
            for outcome in OUTCOMES {
                self.requests.get_or_create_owned(&OutcomeLabels {
                    source: source.to_owned(),
                    outcome,
                });
            }
        }
    }

    /// Brings computed gauges up to date before a scrape.
    pub fn refresh(&self, spool: Option<crate::spool::Depth>) {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        let depth = spool.unwrap_or(crate::spool::Depth {
            events: 0,
            bytes: 0,
            oldest_ms: None,
        });
        self.spool_events.set(depth.events as i64);
        self.spool_bytes.set(depth.bytes as i64);
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        self.spool_oldest_age.set(
            depth
                .oldest_ms
                .map_or(0.0, |ms| (now_ms - ms).max(0) as f64 / 1000.0),
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
