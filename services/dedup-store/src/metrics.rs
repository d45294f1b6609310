//! Every metric dedup-store exposes, declared in one place.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rave_service::metrics::{TraceExemplar, latency_buckets};

pub use rave_service::error::ReasonLabel;

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub inserted: Counter,
    pub duplicates: Counter,
    pub rejected: Family<ReasonLabel, Counter>,
    pub batch_size: Histogram,
    pub commit_duration: HistogramWithExemplars<TraceExemplar>,
    pub commit_failures: Counter,
    pub pool_in_use: Gauge,
    pub pool_max: Gauge,
    pub in_flight: Gauge,
    pub relayed: Counter,
    pub relay_failures: Counter,
    pub relay_refused: Counter,
    pub outbox_depth: Gauge,
    pub outbox_oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub outbox_refused: Gauge,
    pub deleted_by_retention: Counter,
    pub retention_failures: Counter,
    pub erased: Counter,
    pub erasures_unforwarded: Gauge,
    pub erasure_forward_failures: Counter,
    pub searches: Counter,
    pub reconcile: ReconcileMetrics,
}

/// A reconciled source: only configured ones, so the label is bounded.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RunLabels {
    pub source: String,
    /// ok, busy, rate_limited or failed.
    pub result: &'static str,
}

/// The reconciler's (see `reconcile/`).
#[derive(Debug, Default)]
pub struct ReconcileMetrics {
    pub runs: Family<RunLabels, Counter>,
    pub listed: Family<SourceLabel, Counter>,
    pub missing: Family<SourceLabel, Counter>,
    pub redelivered: Family<SourceLabel, Counter>,
    pub failed: Family<SourceLabel, Counter>,
    pub rate_limit_waits: Family<SourceLabel, Counter>,
    pub unrecovered: Family<SourceLabel, Gauge>,
    pub last_success: Family<SourceLabel, Gauge>,
}

impl ReconcileMetrics {
    /// Every series of each reconciled source, at 0 before its first run:
    /// `increase()` and the alerts see a start, not an absence.
    pub fn initialise_sources<'a>(&self, sources: impl IntoIterator<Item = &'a str>) {
        for source in sources {
            let label = SourceLabel {
                source: source.to_owned(),
            };
            for result in ["ok", "busy", "rate_limited", "failed"] {
                let _ = self.runs.get_or_create(&RunLabels {
                    source: source.to_owned(),
                    result,
                });
            }
            for family in [
                &self.listed,
                &self.missing,
                &self.redelivered,
                &self.failed,
                &self.rate_limit_waits,
            ] {
                let _ = family.get_or_create(&label);
            }
            let _ = self.unrecovered.get_or_create(&label);
        }
    }

    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "dedup_reconcile_runs",
            "Reconcile runs with a sender's delivery log, by source and how they ended (busy: another replica's run held the source)",
            m.runs.clone(),
        );
        registry.register(
            "dedup_reconcile_deliveries_listed",
            "Deliveries a sender's log listed in reconcile runs (not dry runs)",
            m.listed.clone(),
        );
        registry.register(
            "dedup_reconcile_missing",
            "Deliveries a reconcile run found in the sender's log and not stored (each run counts what it finds)",
            m.missing.clone(),
        );
        registry.register(
            "dedup_reconcile_redelivered",
            "Redeliveries the sender accepted to send again",
            m.redelivered.clone(),
        );
        registry.register(
            "dedup_reconcile_redelivery_failures",
            "Redelivery requests the sender refused or did not answer",
            m.failed.clone(),
        );
        registry.register(
            "dedup_reconcile_rate_limit_waits",
            "Waits for a sender's API rate limit (Retry-After, a spent quota, a secondary limit)",
            m.rate_limit_waits.clone(),
        );
        registry.register(
            "dedup_reconcile_unrecovered",
            "Redeliveries asked for whose event is still not stored (from the database at each run; alert on the max over replicas)",
            m.unrecovered.clone(),
        );
        registry.register(
            "dedup_reconcile_last_success_timestamp_seconds",
            "When a reconcile run of the source last completed",
            m.last_success.clone(),
        );
        m
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(rave_service::metrics::ProcessCollector));
        let inserted = Counter::default();
        registry.register(
            "dedup_events_inserted",
            "Events stored for the first time (committed)",
            inserted.clone(),
        );
        let duplicates = Counter::default();
        registry.register(
            "dedup_events_duplicate",
            "Inserts answered with an already stored event's task_id",
            duplicates.clone(),
        );
        let rejected = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "dedup_requests_rejected",
            "Requests refused, by error code",
            rejected.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "dedup_batch_size",
            "Inserts committed together in one group-commit transaction",
            batch_size.clone(),
        );
        let commit_duration = HistogramWithExemplars::new(latency_buckets());
        registry.register(
            "dedup_commit_duration_seconds",
            "Time to run and commit one group-commit transaction",
            commit_duration.clone(),
        );
        let commit_failures = Counter::default();
        registry.register(
            "dedup_commit_failures",
            "Group-commit transactions that failed (every caller got 503)",
            commit_failures.clone(),
        );
        let pool_in_use = Gauge::default();
        registry.register(
            "dedup_pool_connections_in_use",
            "PostgreSQL connections checked out of the pool",
            pool_in_use.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "dedup_pool_connections_max",
            "Size limit of the PostgreSQL connection pool",
            pool_max.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "dedup_inserts_in_flight",
            "Inserts waiting for their group commit (queued or committing)",
            in_flight.clone(),
        );
        let relayed = Counter::default();
        registry.register(
            "dedup_events_relayed",
            "Events delivered to task-dispatcher and removed from the outbox",
            relayed.clone(),
        );
        let relay_refused = Counter::default();
        registry.register(
            "dedup_relay_refused_events",
            "Events task-dispatcher refused on their own (4xx), set aside in outbox_refused instead of resent",
            relay_refused.clone(),
        );
        let relay_failures = Counter::default();
        registry.register(
            "dedup_relay_failures",
            "Relay batches that failed (kept in the outbox and retried)",
            relay_failures.clone(),
        );
        // Read from the database at each scrape, so every replica reports
        // the same values: alert on their max.
        let outbox_depth = Gauge::default();
        registry.register(
            "dedup_outbox_depth",
            "Stored events not yet delivered to task-dispatcher",
            outbox_depth.clone(),
        );
        let outbox_oldest_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "dedup_outbox_oldest_age_seconds",
            "Age of the oldest stored event not yet delivered to task-dispatcher (0 when none waits)",
            outbox_oldest_age.clone(),
        );
        let outbox_refused = Gauge::default();
        registry.register(
            "dedup_outbox_refused",
            "Events task-dispatcher refused on their own, set aside in outbox_refused",
            outbox_refused.clone(),
        );
        let deleted_by_retention = Counter::default();
        registry.register(
            "dedup_events_deleted_by_retention",
            "Events deleted because they were stored longer ago than their source's retention",
            deleted_by_retention.clone(),
        );
        let retention_failures = Counter::default();
        registry.register(
            "dedup_retention_failures",
            "Retention steps that failed (retried at the next interval)",
            retention_failures.clone(),
        );
        let erased = Counter::default();
        registry.register(
            "dedup_events_erased",
            "Events erased on an operator's request",
            erased.clone(),
        );
        let erasures_unforwarded = Gauge::default();
        registry.register(
            "dedup_erasures_unforwarded",
            "Erased events whose copy in task-dispatcher (the task's payload) is not yet erased",
            erasures_unforwarded.clone(),
        );
        let erasure_forward_failures = Counter::default();
        registry.register(
            "dedup_erasure_forward_failures",
            "Attempts to have task-dispatcher erase its copies that failed (retried by the relay)",
            erasure_forward_failures.clone(),
        );
        let searches = Counter::default();
        registry.register(
            "dedup_event_searches",
            "Searches of stored events answered (operators' and replays' pages)",
            searches.clone(),
        );
        let reconcile = ReconcileMetrics::register(&mut registry);
        Self {
            searches,
            reconcile,
            registry,
            inserted,
            duplicates,
            rejected,
            batch_size,
            commit_duration,
            commit_failures,
            pool_in_use,
            pool_max,
            in_flight,
            relayed,
            relay_failures,
            relay_refused,
            outbox_depth,
            outbox_oldest_age,
            outbox_refused,
            deleted_by_retention,
            retention_failures,
            erased,
            erasures_unforwarded,
            erasure_forward_failures,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
