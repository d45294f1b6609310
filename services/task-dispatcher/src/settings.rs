//! task-dispatcher's settings. Defaults live in `config/default.toml`.

use std::path::PathBuf;
use std::time::Duration;

pub use rave_pg::DatabaseSettings;
pub use rave_service::auth::{AgentSettings, AgentsFile};
use rave_service::batch::BatchSettings;
use rave_service::settings::{
    Secret, ServerSettings, ServiceSettings, SettingsError, TelemetrySettings,
};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub claim: ClaimSettings,
    pub retry: RetrySettings,
    pub maintenance: MaintenanceSettings,
    pub completions: BatchSettings,
    pub limits: Limits,
    pub events_store: EventsStoreSettings,
    pub replay: ReplaySettings,
    pub telemetry: TelemetrySettings,
    #[serde(default)]
    pub agents: Vec<AgentSettings>,
    pub agents_file: Option<PathBuf>,
    #[serde(default)]
    pub operator_tokens_sha256: Vec<String>,
    #[serde(default)]
    pub relay_tokens_sha256: Vec<String>,
    /// Operator tokens themselves (usually `{ file = ... }`, e.g. a systemd
    /// credential); hashed at start and accepted beside the digests.
    #[serde(default)]
    pub operator_tokens: Vec<Secret>,
    /// dedup-store's relay tokens, as for `operator_tokens`.
    #[serde(default)]
    pub relay_tokens: Vec<Secret>,
    #[serde(default)]
    pub routes: Vec<RouteSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimSettings {
    pub long_poll_secs: u64,
    pub long_poll_max_secs: u64,
    pub max_tasks: i64,
    /// A claim's answer holds whole tasks up to about this many bytes (the
    /// first task always, however large).
    pub max_response_bytes: i64,
    pub lease_secs: u64,
    pub poll_interval_ms: u64,
    /// The LISTEN connection is asked `SELECT 1` this often...
    pub listen_probe_interval_ms: u64,
    /// ...and replaced when it does not answer within this: a half-open
    /// connection delivers no notification and no error.
    pub listen_probe_timeout_ms: u64,
}

impl ClaimSettings {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub base_secs: f64,
    pub max_secs: f64,
    pub jitter: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceSettings {
    pub lease_check_interval_ms: u64,
    pub lease_check_batch: i64,
    /// Leases a task may lose before its agent acknowledged them (no
    /// heartbeat, no result) before it is dead; they are not attempts.
    pub max_unacknowledged_leases: i32,
    pub retention_hours: u64,
    pub prune_interval_secs: u64,
    pub prune_batch: i64,
    /// `/metrics` counts tasks at most this often (ms) and answers from the
    /// last count in between, however many scrapers ask; 0 counts on every
    /// scrape.
    pub gauges_max_age_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_page_size: i64,
    pub max_result_bytes: usize,
    /// Items in one `/v1/agents/results` call or one claim's `finished`.
    pub max_results_per_call: usize,
    /// The largest such call (and the largest claim request).
    pub max_results_request_bytes: usize,
    /// Requests per authenticated agent (claims and lease calls); past it,
    /// 429 with `Retry-After`. Agents behind one address are apart.
    pub agent_requests: rave_service::limit::RateSettings,
}

/// dedup-store's search, which replays and what-if evaluations read stored
/// events from (ADR 19).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsStoreSettings {
    /// dedup-store's base URL; without it there are no replays.
    pub url: Option<String>,
    /// Other dedup-store replicas, tried in turn when `url` refuses.
    #[serde(default)]
    pub fallback_urls: Vec<String>,
    /// One of dedup-store's operator tokens.
    pub token: Option<Secret>,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySettings {
    /// Events one replay request turns into tasks at most (the answer says
    /// where the next one starts).
    pub max_events: usize,
    /// Events read from dedup-store per call.
    pub page_size: i64,
    /// Events one what-if evaluation reads at most.
    pub max_diff_events: usize,
    /// Examples kept per kind of change.
    pub diff_examples: usize,
}

/// What to do with another task for the same entity.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Tasks run independently.
    #[default]
    Queue,
    /// One leased task per entity at a time, in creation order.
    Serialize,
    /// A newer task cancels older queued ones and asks leased ones to stop.
    Supersede,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Serialize => "serialize",
            Self::Supersede => "supersede",
        }
    }
}

/// A JSON-pointer condition on the event body (shared with search).
pub use rave_service::pointer::Condition;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    pub source: Option<String>,
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub when: Vec<Condition>,
    pub kind: String,
    #[serde(default = "default_priority")]
    pub priority: i16,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i32,
    #[serde(default)]
    pub entity_key: Vec<String>,
    #[serde(default)]
    pub policy: Policy,
}

fn default_priority() -> i16 {
    5
}

fn default_max_attempts() -> i32 {
    5
}

impl ServiceSettings for Settings {
    const SERVICE: &'static str = "task-dispatcher";
    const DEFAULTS: &'static str = include_str!("../config/default.toml");

    fn validate(&self) -> Result<(), SettingsError> {
        self.telemetry.validate("telemetry")?;
        self.completions.validate("completions")?;
        self.database.validate("database")?;
        let c = &self.claim;
        if c.lease_secs == 0
            || c.max_tasks < 1
            || c.max_response_bytes < 1
            || c.poll_interval_ms == 0
            || c.listen_probe_interval_ms == 0
            || c.listen_probe_timeout_ms == 0
            || c.long_poll_max_secs < c.long_poll_secs
        {
            return Err(SettingsError::invalid(
                "claim",
                "lease_secs, max_tasks, poll_interval_ms and the listen probe times must be positive; long_poll_max_secs >= long_poll_secs",
            ));
        }
        let r = &self.retry;
        if !(r.base_secs > 0.0 && r.max_secs >= r.base_secs && (0.0..1.0).contains(&r.jitter)) {
            return Err(SettingsError::invalid(
                "retry",
                "need 0 < base_secs <= max_secs and 0 <= jitter < 1",
            ));
        }
        let m = &self.maintenance;
        if m.lease_check_interval_ms == 0
            || m.lease_check_batch < 1
            || m.max_unacknowledged_leases < 1
            || m.prune_interval_secs == 0
            || m.prune_batch < 1
        {
            return Err(SettingsError::invalid(
                "maintenance",
                "intervals and batch sizes must be positive",
            ));
        }
        let l = &self.limits;
        if l.max_page_size < 1
            || l.max_request_bytes == 0
            || l.max_results_per_call == 0
            || l.max_results_request_bytes < 64 * 1024
        {
            return Err(SettingsError::invalid(
                "limits",
                "max_page_size, max_request_bytes and max_results_per_call must be positive, \
                 max_results_request_bytes at least 65536",
            ));
        }
        self.limits
            .agent_requests
            .validate("limits.agent_requests")?;
        let r = &self.replay;
        if r.max_events == 0 || !(1..=500).contains(&r.page_size) || r.max_diff_events == 0 {
            return Err(SettingsError::invalid(
                "replay",
                "max_events and max_diff_events must be positive, page_size 1 to 500",
            ));
        }
        let e = &self.events_store;
        if e.url.is_some() != e.token.is_some() || e.timeout_ms == 0 {
            return Err(SettingsError::invalid(
                "events_store",
                "url and token go together; timeout_ms must be positive",
            ));
        }
        for url in e.url.iter().chain(&e.fallback_urls) {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(SettingsError::invalid(
                    "events_store",
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            crate::routing::Rule::from_settings(route)
                .map_err(|e| SettingsError::invalid(format!("routes[{i}]"), e))?;
        }
        crate::auth::agents(self)?;
        for (key, digests) in [
            ("operator_tokens_sha256", &self.operator_tokens_sha256),
            ("relay_tokens_sha256", &self.relay_tokens_sha256),
        ] {
            for digest in digests {
                crate::auth::parse_digest(digest).map_err(|e| SettingsError::invalid(key, e))?;
            }
        }
        Ok(())
    }
}
