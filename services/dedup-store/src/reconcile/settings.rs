//! The reconciler's settings: `[reconcile]` and one `[reconcile.sources.<name>]`
//! per source whose sender keeps a delivery log RAVE may read.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rave_service::ids::SourceName;
use rave_service::settings::{Secret, SettingsError};
use serde::Deserialize;

/// How long each provider keeps its delivery log: nothing older can be
/// listed or redelivered.
pub const GITHUB_LOG_HOURS: u64 = 72;
pub const GITLAB_LOG_HOURS: u64 = 7 * 24;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    /// How often every configured source is reconciled (0: only on demand).
    pub interval_secs: u64,
    /// A scheduled run looks this far back.
    pub lookback_secs: u64,
    /// Deliveries younger than this are left alone: they may still be on
    /// their way (ingest's spool, a sender's own retry).
    pub min_age_secs: u64,
    /// The longest wait for a rate limit to reset; a longer one ends the
    /// run (counted as `rate_limited`), and the next run carries on.
    pub max_wait_secs: u64,
    /// Deliveries listed per page (GitHub allows 100 at most).
    pub page_size: u32,
    /// Pages read per run at most: bounds a run over a busy hook's log.
    pub max_pages: u32,
    /// Redeliveries asked for per run at most.
    pub max_redeliveries_per_run: u32,
    pub timeout_ms: u64,
    /// CA certificates (PEM) the providers' API certificates must chain to.
    pub ca_file: PathBuf,
    /// Requests older than this are forgotten (the table stays bounded).
    pub keep_requests_days: u32,
    #[serde(default)]
    pub sources: BTreeMap<SourceName, ReconcileSource>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSource {
    pub provider: Provider,
    /// The API's base URL: `https://api.github.com`, a GitHub Enterprise
    /// Server's `https://HOST/api/v3`, or GitLab's `https://HOST/api/v4`.
    pub api_url: String,
    /// GitHub: `owner/repo`, `org:NAME`, or `app` (the GitHub App's own
    /// webhook). GitLab: a project id or path, or `group:ID`.
    pub hook_owner: String,
    /// The hook's id (none for a GitHub App: it has one hook).
    #[serde(default)]
    pub hook_id: Option<u64>,
    /// An API token (usually `{ file = ... }`, a systemd credential); for a
    /// GitHub App, its private key (PEM).
    pub token: Secret,
    /// A GitHub App's client ID (or app ID): the issuer of its tokens.
    #[serde(default)]
    pub app_id: Option<String>,
    /// Pause between two redelivery requests: GitHub asks for at least a
    /// second between mutating calls; GitLab allows 5 resends a minute per
    /// hook (12 s).
    pub request_pause_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
    Gitlab,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
        }
    }

    /// How far back the provider's log goes.
    pub fn log_hours(self) -> u64 {
        match self {
            Self::Github => GITHUB_LOG_HOURS,
            Self::Gitlab => GITLAB_LOG_HOURS,
        }
    }

    pub fn default_pause_ms(self) -> u64 {
        match self {
            Self::Github => 1_000,
            Self::Gitlab => 12_000,
        }
    }
}

impl ReconcileSource {
    /// A GitHub App's own webhook, read with the App's tokens.
    pub fn is_github_app(&self) -> bool {
        self.provider == Provider::Github && self.hook_owner == "app"
    }

    pub fn pause(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.request_pause_ms
                .unwrap_or_else(|| self.provider.default_pause_ms()),
        )
    }
}

impl ReconcileSettings {
    /// `max_age(source)` is the source's retention: a delivery whose event
    /// retention deleted would look missing, and be stored again.
    pub fn validate(
        &self,
        max_age: impl Fn(&str) -> Option<std::time::Duration>,
    ) -> Result<(), SettingsError> {
        if self.page_size == 0 || self.page_size > 100 {
            return Err(SettingsError::invalid(
                "reconcile.page_size",
                "must be 1 to 100",
            ));
        }
        for (key, value) in [
            ("reconcile.max_pages", u64::from(self.max_pages)),
            (
                "reconcile.max_redeliveries_per_run",
                u64::from(self.max_redeliveries_per_run),
            ),
            ("reconcile.timeout_ms", self.timeout_ms),
            ("reconcile.lookback_secs", self.lookback_secs),
            (
                "reconcile.keep_requests_days",
                u64::from(self.keep_requests_days),
            ),
        ] {
            if value == 0 {
                return Err(SettingsError::invalid(key, "must be at least 1"));
            }
        }
        for (name, source) in &self.sources {
            let key = |k: &str| format!("reconcile.sources.{name}.{k}");
            let url = &source.api_url;
            // The token crosses the network in its headers: plain HTTP only
            // to this machine (a test double, a local proxy).
            let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                .iter()
                .any(|p| {
                    url.strip_prefix(p)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
                });
            if !(url.starts_with("https://") || loopback) {
                return Err(SettingsError::invalid(
                    key("api_url"),
                    "must be an https:// URL (http:// only to loopback)",
                ));
            }
            if source.hook_owner.trim().is_empty()
                || source.hook_owner.contains(char::is_whitespace)
            {
                return Err(SettingsError::invalid(
                    key("hook_owner"),
                    "must name the repository, organisation, project or group",
                ));
            }
            let app = source.is_github_app();
            if source.provider == Provider::Github
                && !app
                && !source.hook_owner.starts_with("org:")
                && source.hook_owner.split('/').count() != 2
            {
                return Err(SettingsError::invalid(
                    key("hook_owner"),
                    "GitHub hooks are `owner/repo`, `org:NAME` or `app`",
                ));
            }
            if app {
                let Some(issuer) = source.app_id.as_deref().filter(|i| !i.trim().is_empty()) else {
                    return Err(SettingsError::invalid(
                        key("app_id"),
                        "a GitHub App's webhook is read as the App: set its client ID or app ID",
                    ));
                };
                super::app::AppKey::from_pem(issuer, source.token.expose()).map_err(|e| {
                    SettingsError::invalid(key("token"), format!("the App's private key: {e}"))
                })?;
            } else {
                if source.hook_id.is_none() {
                    return Err(SettingsError::invalid(key("hook_id"), "must be set"));
                }
                if source.app_id.is_some() {
                    return Err(SettingsError::invalid(
                        key("app_id"),
                        "only for hook_owner = \"app\" (a GitHub App's webhook)",
                    ));
                }
            }
            if source.token.expose().is_empty() {
                return Err(SettingsError::invalid(key("token"), "must not be empty"));
            }
            // What the provider still lists must still be stored, or its
            // deliveries would look missing and be stored a second time.
            let log = std::time::Duration::from_secs(source.provider.log_hours() * 3600);
            if let Some(age) = max_age(name.as_str())
                && age < log
            {
                return Err(SettingsError::invalid(
                    format!("retention.sources.{name}"),
                    format!(
                        "a reconciled {} source must keep its events at least {} hours (the provider's delivery log), or forever",
                        source.provider.as_str(),
                        source.provider.log_hours()
                    ),
                ));
            }
        }
        Ok(())
    }
}
