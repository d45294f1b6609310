//! dedup-store's settings. Defaults are below; override with `--config`
//! and `RAVE_DEDUP_STORE__SECTION__KEY`.

pub use rave_pg::DatabaseSettings;
use rave_service::batch::BatchSettings;
use rave_service::ids::SourceName;
use rave_service::settings::{
    Secret, ServerSettings, ServiceSettings, SettingsError, TelemetrySettings,
};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Who may store events: ingest's token(s), as SHA-256 hex digests...
    #[serde(default)]
    pub ingest_tokens_sha256: Vec<String>,
    /// ...or the tokens themselves (usually `{ file = ... }`, a systemd
    /// credential), hashed at start.
    #[serde(default)]
    pub ingest_tokens: Vec<Secret>,
    /// Who may read events (`GET /v1/events...`), as for ingest's.
    #[serde(default)]
    pub operator_tokens_sha256: Vec<String>,
    #[serde(default)]
    pub operator_tokens: Vec<Secret>,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    /// Group commit of inserts (see docs/adr/0004-group-commit.md).
    pub group_commit: BatchSettings,
    pub limits: Limits,
    pub relay: RelaySettings,
    pub retention: RetentionSettings,
    /// Reconciling with the senders' delivery logs (see `reconcile/`).
    pub reconcile: crate::reconcile::ReconcileSettings,
    pub telemetry: TelemetrySettings,
}

/// The shortest event retention allowed (hours): the dedup guarantee lasts
/// as long as an event is kept, so it must outlast every sender's retries
/// and redeliveries (GitHub keeps its delivery log, from which deliveries
/// are redelivered, for 3 days).
pub const MIN_RETENTION_HOURS: u64 = 72;

/// Deleting old events (see `retention.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Events stored longer ago than this are deleted; 0 keeps them forever.
    pub max_age_hours: u64,
    /// Per source, instead of `max_age_hours` (0: keep that source's forever).
    #[serde(default)]
    pub sources: std::collections::BTreeMap<SourceName, u64>,
    /// How often to look for events past their age.
    pub interval_secs: u64,
    /// Events deleted per statement (one short transaction each).
    pub batch: i64,
    /// Pause between two batches at least...
    pub pause_ms: u64,
    /// ...and long enough that deleting takes at most this share of the
    /// time (0.2: a batch that took 100 ms is followed by 400 ms of
    /// nothing), so a large backlog never crowds out intake.
    pub max_busy_share: f64,
}

impl RetentionSettings {
    /// How long `source`'s events are kept; `None`: forever.
    pub fn max_age(&self, source: &str) -> Option<std::time::Duration> {
        let hours = SourceName::parse(source.to_owned())
            .ok()
            .and_then(|s| self.sources.get(&s).copied())
            .unwrap_or(self.max_age_hours);
        (hours > 0).then(|| std::time::Duration::from_secs(hours * 3600))
    }
}

/// Delivering stored events to task-dispatcher (see `relay.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// task-dispatcher's base URL; unset: events wait in the outbox.
    pub dispatcher_url: Option<String>,
    /// Other task-dispatcher replicas, tried in order when `dispatcher_url`
    /// refuses the connection.
    #[serde(default)]
    pub fallback_urls: Vec<String>,
    /// The bearer token task-dispatcher knows as a relay token.
    pub token: Option<Secret>,
    /// Events per batch at most.
    pub batch_size: i64,
    /// Body bytes per batch at most (one larger event still goes alone).
    pub max_batch_bytes: usize,
    /// How often to look for undelivered events when not woken.
    pub interval_ms: u64,
    /// Longest wait between retries while the dispatcher fails.
    pub max_backoff_ms: u64,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest `POST /v1/events` request: a 25 MiB webhook body in base64
    /// plus its metadata.
    pub max_request_bytes: usize,
    /// Largest `POST /v1/events/batch` request (ingest's batches of small
    /// events; each event of it still within `max_request_bytes`).
    pub max_batch_request_bytes: usize,
    /// Events one `POST /v1/events/batch` carries at most.
    pub max_events_per_call: usize,
    /// Stored headers per event at most.
    pub max_headers: usize,
    /// Largest page of `GET /v1/events`.
    pub max_page_size: i64,
    /// Events one erasure request may erase at most (it says when more
    /// match: send it again).
    pub max_erase_per_call: i64,
    /// `POST /v1/events/search`: the largest request, ...
    pub max_search_request_bytes: usize,
    /// ...values in one of its lists (event types, delivery ids, task ids),
    pub max_search_ids: usize,
    /// ...body conditions,
    pub max_search_conditions: usize,
    /// ...and about the most bytes of bodies one page holds (the first
    /// event always, however large).
    pub max_search_response_bytes: usize,
}

impl Settings {
    /// The tokens that may store events.
    pub fn writers(&self) -> rave_service::auth::TokenSet {
        rave_service::auth::TokenSet::from_hex(&self.ingest_tokens_sha256)
            .expect("validated digests")
            .with_tokens(self.ingest_tokens.iter().map(Secret::expose))
    }

    /// The tokens that may read events.
    pub fn readers(&self) -> rave_service::auth::TokenSet {
        rave_service::auth::TokenSet::from_hex(&self.operator_tokens_sha256)
            .expect("validated digests")
            .with_tokens(self.operator_tokens.iter().map(Secret::expose))
    }
}

impl ServiceSettings for Settings {
    const SERVICE: &'static str = "dedup-store";
    const DEFAULTS: &'static str = include_str!("../config/default.toml");

    fn validate(&self) -> Result<(), SettingsError> {
        self.server.require_loopback("server.host")?;
        self.telemetry.validate("telemetry")?;
        self.group_commit.validate("group_commit")?;
        self.database.validate("database")?;
        for (key, digests) in [
            ("ingest_tokens_sha256", &self.ingest_tokens_sha256),
            ("operator_tokens_sha256", &self.operator_tokens_sha256),
        ] {
            for digest in digests {
                rave_service::auth::parse_digest(digest)
                    .map_err(|e| SettingsError::invalid(key, e))?;
            }
        }
        let relay = &self.relay;
        if relay.dispatcher_url.is_some() != relay.token.is_some() {
            return Err(SettingsError::invalid(
                "relay.token",
                "dispatcher_url and token go together",
            ));
        }
        if relay.batch_size < 1
            || relay.max_batch_bytes == 0
            || relay.interval_ms == 0
            || relay.timeout_ms == 0
        {
            return Err(SettingsError::invalid(
                "relay",
                "batch_size, max_batch_bytes, interval_ms and timeout_ms must be positive",
            ));
        }
        let positive = [
            ("group_commit.writers", self.group_commit.writers),
            ("group_commit.max_batch", self.group_commit.max_batch),
            (
                "group_commit.queue_capacity",
                self.group_commit.queue_capacity,
            ),
            ("limits.max_request_bytes", self.limits.max_request_bytes),
            (
                "limits.max_batch_request_bytes",
                self.limits.max_batch_request_bytes,
            ),
            (
                "limits.max_events_per_call",
                self.limits.max_events_per_call,
            ),
            ("limits.max_headers", self.limits.max_headers),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(SettingsError::invalid(key, "must be at least 1"));
            }
        }
        if self.group_commit.writers > self.database.pool_size {
            return Err(SettingsError::invalid(
                "group_commit.writers",
                format!(
                    "must not exceed database.pool_size ({})",
                    self.database.pool_size
                ),
            ));
        }
        let retention = &self.retention;
        let ages = std::iter::once((
            "retention.max_age_hours".to_owned(),
            retention.max_age_hours,
        ))
        .chain(
            retention
                .sources
                .iter()
                .map(|(s, h)| (format!("retention.sources.{s}"), *h)),
        );
        for (key, hours) in ages {
            if hours != 0 && hours < MIN_RETENTION_HOURS {
                return Err(SettingsError::invalid(
                    &key,
                    format!(
                        "must be 0 (keep forever) or at least {MIN_RETENTION_HOURS} hours: deduplication lasts as long as an event is kept, and senders redeliver for days"
                    ),
                ));
            }
        }
        if !(retention.max_busy_share > 0.0 && retention.max_busy_share <= 1.0) {
            return Err(SettingsError::invalid(
                "retention.max_busy_share",
                "must be above 0 and at most 1",
            ));
        }
        if retention.interval_secs == 0 || retention.batch < 1 {
            return Err(SettingsError::invalid(
                "retention",
                "interval_secs and batch must be positive",
            ));
        }
        if self.limits.max_erase_per_call < 1 {
            return Err(SettingsError::invalid(
                "limits.max_erase_per_call",
                "must be at least 1",
            ));
        }
        let l = &self.limits;
        if l.max_search_request_bytes < 1024
            || l.max_search_ids < 1
            || l.max_search_response_bytes < 1
        {
            return Err(SettingsError::invalid(
                "limits",
                "max_search_request_bytes must be at least 1024, max_search_ids and max_search_response_bytes positive",
            ));
        }
        if self.limits.max_page_size < 1 {
            return Err(SettingsError::invalid(
                "limits.max_page_size",
                "must be at least 1",
            ));
        }
        self.reconcile
            .validate(|source| self.retention.max_age(source))?;
        if self.database.dbname.is_empty() || self.database.user.is_empty() {
            return Err(SettingsError::invalid(
                "database",
                "user and dbname must be set",
            ));
        }
        Ok(())
    }
}
