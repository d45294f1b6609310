//! Every metric task-dispatcher exposes, declared in one place. Labels are
//! bounded: `kind` comes from routing rules, `state` and `outcome` from
//! fixed sets, `source` from ingest's configured sources.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rave_service::metrics::TraceExemplar;
use std::sync::atomic::AtomicU64;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// A replay's mode: `dry_run` or `apply`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    pub mode: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindStateLabels {
    pub kind: String,
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindOutcomeLabels {
    pub kind: String,
    /// succeeded, retried, failed, dead or cancelled.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

pub use rave_service::error::ReasonLabel;

/// The states `dispatcher_tasks` counts: work waiting or running, and dead
/// letters waiting for an operator. Finished tasks are counted as they
/// finish (`dispatcher_completions_total`): counting them again on every
/// scrape would cost as much as the table holds.
pub const GAUGE_STATES: [&str; 3] = ["queued", "leased", "dead"];

/// Every state a task can be in.
pub const STATES: [&str; 6] = [
    "queued",
    "leased",
    "succeeded",
    "failed",
    "cancelled",
    "dead",
];

type Duration = HistogramWithExemplars<TraceExemplar>;

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub events_received: Counter,
    pub events_ignored: Family<SourceLabel, Counter>,
    pub events_quarantined: Family<SourceLabel, Counter>,
    pub quarantined: Gauge,
    pub tasks_created: Family<KindLabel, Counter>,
    pub superseded: Counter,
    pub replays: Family<ModeLabel, Counter>,
    pub replayed_tasks: Counter,
    pub route_diffs: Counter,
    pub payloads_erased: Counter,
    pub listen_lost: Counter,
    pub tasks: Family<KindStateLabels, Gauge>,
    pub claims: Family<KindLabel, Counter>,
    pub completions: Family<KindOutcomeLabels, Counter>,
    pub lease_losses: Family<KindLabel, Counter>,
    pub dead_letters: Family<KindLabel, Counter>,
    pub task_duration: Family<KindLabel, Duration, fn() -> Duration>,
    pub oldest_queued_age: Gauge<f64, AtomicU64>,
    pub agents_waiting: Gauge,
    pub claim_wakeups: Counter,
    pub rejected: Family<ReasonLabel, Counter>,
    pub completion_batch_size: Histogram,
    /// Routes, agents and tokens reloaded on SIGHUP.
    pub reload: rave_service::reload::ReloadMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        r.register_collector(Box::new(rave_service::metrics::ProcessCollector));
        let reload = rave_service::reload::ReloadMetrics::registered(&mut r);
        let events_received = Counter::default();
        r.register(
            "dispatcher_events_received",
            "Events handed over by dedup-store's relay (redeliveries included)",
            events_received.clone(),
        );
        let events_ignored = Family::<SourceLabel, Counter>::default();
        r.register(
            "dispatcher_events_ignored",
            "Events no routing rule matched, by source",
            events_ignored.clone(),
        );
        let events_quarantined = Family::<SourceLabel, Counter>::default();
        r.register(
            "dispatcher_events_quarantined",
            "Events set aside in quarantine because they could not become a task or an ignore record (GET /v1/quarantined-events), by source",
            events_quarantined.clone(),
        );
        let quarantined = Gauge::default();
        r.register(
            "dispatcher_quarantined_events",
            "Events in quarantine now, waiting for an operator",
            quarantined.clone(),
        );
        let tasks_created = Family::<KindLabel, Counter>::default();
        r.register(
            "dispatcher_tasks_created",
            "Tasks created, by kind",
            tasks_created.clone(),
        );
        let payloads_erased = Counter::default();
        r.register(
            "dispatcher_task_payloads_erased",
            "Task payloads erased because their events were erased on an operator's request",
            payloads_erased.clone(),
        );
        let superseded = Counter::default();
        r.register(
            "dispatcher_tasks_superseded",
            "Older tasks cancelled or asked to stop by a newer task for the same entity",
            superseded.clone(),
        );
        let listen_lost = Counter::default();
        r.register(
            "dispatcher_listen_connections_lost",
            "LISTEN connections lost or found unresponsive and replaced (claims poll meanwhile)",
            listen_lost.clone(),
        );
        let tasks = Family::<KindStateLabels, Gauge>::default();
        r.register(
            "dispatcher_tasks",
            "Tasks queued, leased or dead, by kind (counted at most every metrics.task_counts_max_age_ms)",
            tasks.clone(),
        );
        let claims = Family::<KindLabel, Counter>::default();
        r.register(
            "dispatcher_claims",
            "Tasks leased to agents (each attempt counts)",
            claims.clone(),
        );
        let completions = Family::<KindOutcomeLabels, Counter>::default();
        r.register(
            "dispatcher_completions",
            "Attempts reported by agents, by outcome",
            completions.clone(),
        );
        let lease_losses = Family::<KindLabel, Counter>::default();
        r.register(
            "dispatcher_lease_losses",
            "Leases that expired without a heartbeat, completion or failure",
            lease_losses.clone(),
        );
        let dead_letters = Family::<KindLabel, Counter>::default();
        r.register(
            "dispatcher_dead_letters",
            "Tasks that used up their attempts",
            dead_letters.clone(),
        );
        let task_duration: Family<KindLabel, Duration, fn() -> Duration> =
            Family::new_with_constructor(|| {
                HistogramWithExemplars::new(exponential_buckets(0.1, 2.0, 16))
            });
        r.register(
            "task_duration_seconds",
            "Time from claim to completion or failure, by kind (exemplar: the webhook's trace)",
            task_duration.clone(),
        );
        let oldest_queued_age = Gauge::<f64, AtomicU64>::default();
        r.register(
            "dispatcher_oldest_queued_task_age_seconds",
            "How long the oldest due task has waited to be claimed",
            oldest_queued_age.clone(),
        );
        let claim_wakeups = Counter::default();
        r.register(
            "dispatcher_claim_wakeups",
            "Waiting claims woken to look for work again (new work wakes only as many as it can feed)",
            claim_wakeups.clone(),
        );
        let agents_waiting = Gauge::default();
        r.register(
            "dispatcher_agents_waiting",
            "Claims waiting for work (long polls in progress)",
            agents_waiting.clone(),
        );
        let rejected = Family::<ReasonLabel, Counter>::default();
        r.register(
            "dispatcher_requests_rejected",
            "Requests refused, by error code",
            rejected.clone(),
        );
        let completion_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        r.register(
            "dispatcher_completion_batch_size",
            "Completions committed together in one transaction",
            completion_batch_size.clone(),
        );
        let replays = Family::<ModeLabel, Counter>::default();
        r.register(
            "dispatcher_replays",
            "Operators' replay requests run (POST /v1/replays), by mode: dry_run or apply",
            replays.clone(),
        );
        let replayed_tasks = Counter::default();
        r.register(
            "dispatcher_replayed_tasks",
            "Tasks created by operators' replays of stored events",
            replayed_tasks.clone(),
        );
        let route_diffs = Counter::default();
        r.register(
            "dispatcher_route_diffs",
            "What-if evaluations of proposed routing rules run (POST /v1/routes/diff)",
            route_diffs.clone(),
        );
        Self {
            replays,
            replayed_tasks,
            route_diffs,
            registry: r,
            reload,
            events_received,
            events_ignored,
            events_quarantined,
            quarantined,
            tasks_created,
            superseded,
            payloads_erased,
            listen_lost,
            tasks,
            claims,
            completions,
            lease_losses,
            dead_letters,
            task_duration,
            oldest_queued_age,
            agents_waiting,
            claim_wakeups,
            rejected,
            completion_batch_size,
        }
    }

    /// Creates each kind's series at 0, so they exist before the first task.
    pub fn initialise_kinds<'a>(&self, kinds: impl IntoIterator<Item = &'a str>) {
        for kind in kinds {
            let label = KindLabel {
                kind: kind.to_owned(),
            };
            let _ = self.tasks_created.get_or_create_owned(&label);
            let _ = self.claims.get_or_create_owned(&label);
            let _ = self.lease_losses.get_or_create_owned(&label);
            let _ = self.dead_letters.get_or_create_owned(&label);
            let _ = self.task_duration.get_or_create_owned(&label);
            for state in GAUGE_STATES {
                let _ = self.tasks.get_or_create_owned(&KindStateLabels {
                    kind: kind.to_owned(),
                    state,
                });
            }
            for outcome in ["succeeded", "retried", "failed", "dead", "cancelled"] {
                let _ = self.completions.get_or_create_owned(&KindOutcomeLabels {
                    kind: kind.to_owned(),
                    outcome,
                });
            }
        }
    }

    /// Sets the task gauges from fresh counts; states with no tasks read 0.
    pub fn set_task_counts(
        &self,
        kinds: &[String],
        counts: &[(String, String, i64)],
        oldest_secs: f64,
    ) {
        for kind in kinds {
            for state in GAUGE_STATES {
                let n = counts
                    .iter()
                    .find(|(k, s, _)| k == kind && s == state)
                    .map_or(0, |(_, _, n)| *n);
                self.tasks
                    .get_or_create(&KindStateLabels {
                        kind: kind.clone(),
                        state,
                    })
                    .set(n);
            }
        }
        self.oldest_queued_age.set(oldest_secs);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
