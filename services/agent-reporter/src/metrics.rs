//! Every metric agent-reporter exposes about itself, declared in one place.
//! (The agents' own metrics go to the Pushgateway, not here.)

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// accepted or duplicate.
    pub outcome: &'static str,
}

pub use rave_service::error::ReasonLabel;

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub reports: Family<OutcomeLabel, Counter>,
    pub rejected: Family<ReasonLabel, Counter>,
    pub pushes: Counter,
    pub push_failures: Counter,
    pub push_rejected: Counter,
    pub groups_deleted: Counter,
    pub unpushed_groups: Gauge,
    pub buffered_reports: Gauge,
    pub last_report_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub report_batch_size: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        r.register_collector(Box::new(rave_service::metrics::ProcessCollector));
        let reports = Family::<OutcomeLabel, Counter>::default();
        r.register(
            "reporter_reports",
            "Reports accepted (duplicate: an agent's retried report, not counted twice)",
            reports.clone(),
        );
        let rejected = Family::<ReasonLabel, Counter>::default();
        r.register(
            "reporter_reports_rejected",
            "Reports refused, by error code",
            rejected.clone(),
        );
        let pushes = Counter::default();
        r.register(
            "reporter_pushes",
            "Agent groups pushed to the Pushgateway",
            pushes.clone(),
        );
        let push_failures = Counter::default();
        r.register(
            "reporter_push_failures",
            "Pushes that failed (retried; aggregates are kept)",
            push_failures.clone(),
        );
        let push_rejected = Counter::default();
        r.register("reporter_push_rejected", "Pushes the Pushgateway refused with 400, e.g. a metric type clashing with another group", push_rejected.clone());
        let groups_deleted = Counter::default();
        r.register(
            "reporter_groups_deleted",
            "Groups of silent agents deleted from the Pushgateway",
            groups_deleted.clone(),
        );
        let unpushed_groups = Gauge::default();
        r.register(
            "reporter_unpushed_groups",
            "Agent groups with reports not yet pushed",
            unpushed_groups.clone(),
        );
        let buffered_reports = Gauge::default();
        r.register(
            "reporter_buffered_reports",
            "Reports recorded but not yet pushed",
            buffered_reports.clone(),
        );
        let last_report_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        r.register(
            "reporter_last_report_age_seconds",
            "Seconds since any agent last reported a job (since this replica started, if none has)",
            last_report_age.clone(),
        );
        let report_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        r.register(
            "reporter_report_batch_size",
            "Reports committed together in one transaction",
            report_batch_size.clone(),
        );
        for outcome in ["accepted", "duplicate"] {
            let _ = reports.get_or_create_owned(&OutcomeLabel { outcome });
        }
        Self {
            registry: r,
            reports,
            rejected,
            pushes,
            push_failures,
            push_rejected,
            groups_deleted,
            unpushed_groups,
            buffered_reports,
            last_report_age,
            report_batch_size,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
