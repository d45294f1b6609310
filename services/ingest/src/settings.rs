//! ingest's settings. Defaults live in `config/default.toml`.

use std::collections::BTreeMap;
use std::time::Duration;

use rave_service::settings::{
    Secret, ServerSettings, ServiceSettings, SettingsError, TelemetrySettings,
};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub limits: Limits,
    pub verification: VerificationSettings,
    pub telemetry: TelemetrySettings,
    pub spool: SpoolSettings,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSettings>,
}

/// `[spool]`: where verified events wait while dedup-store is unreachable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSettings {
    /// A directory only ingest writes; without one, an outage answers 503.
    pub dir: Option<std::path::PathBuf>,
    /// Bytes waiting at most; beyond, 503 with `Retry-After`.
    pub max_bytes: u64,
    /// How often a waiting spool tries the store again.
    pub replay_interval_ms: u64,
    /// Other replicas' spool directories (same machine or shared storage
    /// with working `flock`): replayed by this replica while their owner is
    /// gone, so a dead replica's acknowledged events are not stranded.
    #[serde(default)]
    pub peer_dirs: Vec<std::path::PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// dedup-store's base URL (loopback).
    pub url: String,
    /// Other dedup-store replicas, tried in order when `url` refuses the
    /// connection (docs/scaling.md).
    #[serde(default)]
    pub fallback_urls: Vec<String>,
    /// The bearer token dedup-store knows as an ingest token (required:
    /// it stores nothing without one).
    pub token: Option<Secret>,
    pub timeout_ms: u64,
    pub retry_after_secs: u32,
    /// Encoded events up to this size go to dedup-store many per call
    /// (`POST /v1/events/batch`); larger ones alone. 0: every event alone.
    pub batch_max_event_bytes: usize,
    /// How those calls form: the events that wait while `writers` calls
    /// are out go together, `max_batch` per call.
    pub batch: rave_service::batch::BatchSettings,
}

impl StoreSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_headers: usize,
    /// Names and values of all header fields together, in bytes.
    pub max_header_bytes: usize,
    /// Body bytes of all requests in flight together.
    pub max_in_flight_bytes: usize,
    /// How long a request waits for room under `max_in_flight_bytes`
    /// before it is answered 503 with `Retry-After`.
    pub in_flight_wait_ms: u64,
    /// Failed verifications a client address may have per minute...
    pub failed_verifications_per_minute: u32,
    /// ...and at once; past it the address is refused (429) before its
    /// body is read, until its budget refills. 0 per minute: no limit.
    pub failed_verifications_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationSettings {
    pub timestamp_tolerance_secs: u64,
}

/// Which protocol a source speaks.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Github,
    Gitlab,
    Standard,
    /// Alertmanager's webhook receiver, authenticated by a bearer token.
    Alertmanager,
    /// A declared HMAC scheme: `[sources.NAME.hmac]`.
    Hmac,
    // Presets of the declared form (verify/presets.rs).
    Gitea,
    Forgejo,
    Bitbucket,
    Stripe,
    Slack,
    Shopify,
    Linear,
    Sentry,
    Pagerduty,
    Jira,
}

impl SourceKind {
    /// Every kind, as settings name it.
    pub const ALL: [(&'static str, Self); 15] = [
        ("github", Self::Github),
        ("gitlab", Self::Gitlab),
        ("standard", Self::Standard),
        ("alertmanager", Self::Alertmanager),
        ("hmac", Self::Hmac),
        ("gitea", Self::Gitea),
        ("forgejo", Self::Forgejo),
        ("bitbucket", Self::Bitbucket),
        ("stripe", Self::Stripe),
        ("slack", Self::Slack),
        ("shopify", Self::Shopify),
        ("linear", Self::Linear),
        ("sentry", Self::Sentry),
        ("pagerduty", Self::Pagerduty),
        ("jira", Self::Jira),
    ];
}

/// One webhook source, reached at `POST /hooks/{name}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    pub kind: SourceKind,
    /// Signing secrets; any one that matches accepts (rotation).
    /// github: the webhook secret; standard and gitlab: `whsec_<base64>`.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// A single signing secret, added to `secrets` (handy from the environment).
    pub secret: Option<Secret>,
    /// gitlab: plain `X-Gitlab-Token` values, for GitLab before 19.0;
    /// alertmanager: the bearer tokens of its `http_config.authorization`.
    #[serde(default)]
    pub tokens: Vec<Secret>,
    /// gitlab and alertmanager: a single token, added to `tokens`.
    pub token: Option<Secret>,
    /// gitlab only: refuse requests that carry no `webhook-signature`.
    #[serde(default)]
    pub require_signature: bool,
    /// Overrides `verification.timestamp_tolerance_secs` for this source.
    pub timestamp_tolerance_secs: Option<u64>,
    /// hmac only: the declared scheme (verify/declared/settings.rs).
    #[serde(default)]
    pub hmac: Option<crate::verify::declared::HmacSettings>,
}

impl SourceSettings {
    pub fn all_secrets(&self) -> impl Iterator<Item = &Secret> {
        self.secrets.iter().chain(self.secret.iter())
    }

    pub fn all_tokens(&self) -> impl Iterator<Item = &Secret> {
        self.tokens.iter().chain(self.token.iter())
    }
}

impl ServiceSettings for Settings {
    const SERVICE: &'static str = "ingest";
    const DEFAULTS: &'static str = include_str!("../config/default.toml");

    fn validate(&self) -> Result<(), SettingsError> {
        self.telemetry.validate("telemetry")?;
        let web = |url: &str| url.starts_with("http://") || url.starts_with("https://");
        if !web(&self.store.url) {
            return Err(SettingsError::invalid(
                "store.url",
                "must be an http:// or https:// URL",
            ));
        }
        if self.store.token.is_none() {
            return Err(SettingsError::invalid(
                "store.token",
                "must be set: dedup-store stores events only for ingest's token",
            ));
        }
        if !self.store.fallback_urls.iter().all(|u| web(u)) {
            return Err(SettingsError::invalid(
                "store.fallback_urls",
                "must be http:// or https:// URLs",
            ));
        }
        self.store.batch.validate("store.batch")?;
        for (key, value) in [
            ("limits.max_body_bytes", self.limits.max_body_bytes),
            ("limits.max_headers", self.limits.max_headers),
            ("limits.max_header_bytes", self.limits.max_header_bytes),
            ("store.timeout_ms", self.store.timeout_ms as usize),
        ] {
            if value == 0 {
                return Err(SettingsError::invalid(key, "must be at least 1"));
            }
        }
        if self.limits.max_in_flight_bytes < self.limits.max_body_bytes {
            return Err(SettingsError::invalid(
                "limits.max_in_flight_bytes",
                "must hold at least one body of limits.max_body_bytes",
            ));
        }
        if self.limits.failed_verifications_per_minute > 0
            && self.limits.failed_verifications_burst == 0
        {
            return Err(SettingsError::invalid(
                "limits.failed_verifications_burst",
                "must be at least 1 when failed_verifications_per_minute is set",
            ));
        }
        if self.spool.replay_interval_ms == 0 {
            return Err(SettingsError::invalid(
                "spool.replay_interval_ms",
                "must be at least 1",
            ));
        }
        if self.spool.dir.is_some() && self.spool.max_bytes < 2 * self.limits.max_body_bytes as u64
        {
            return Err(SettingsError::invalid(
                "spool.max_bytes",
                "must hold at least two bodies of limits.max_body_bytes",
            ));
        }
        if !self.spool.peer_dirs.is_empty() && self.spool.dir.is_none() {
            return Err(SettingsError::invalid(
                "spool.peer_dirs",
                "needs spool.dir (a replica without a spool cannot replay others')",
            ));
        }
        if let Some(dir) = &self.spool.dir
            && self.spool.peer_dirs.contains(dir)
        {
            return Err(SettingsError::invalid(
                "spool.peer_dirs",
                "must not list this replica's own spool.dir",
            ));
        }
        // Building the verifiers checks every secret's format.
        crate::sources::Sources::from_settings(self)?;
        Ok(())
    }
}
