//! agent-reporter's settings. Defaults live in `config/default.toml`.

use std::path::PathBuf;
use std::time::Duration;

pub use rave_pg::DatabaseSettings;
pub use rave_service::auth::AgentSettings;
use rave_service::settings::{ServerSettings, ServiceSettings, SettingsError, TelemetrySettings};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub pushgateway: PushgatewaySettings,
    pub limits: Limits,
    /// Reports arriving together share one transaction.
    pub reports: rave_service::batch::BatchSettings,
    pub telemetry: TelemetrySettings,
    #[serde(default)]
    pub agents: Vec<AgentSettings>,
    pub agents_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushgatewaySettings {
    pub url: Option<String>,
    pub job: String,
    pub timeout_ms: u64,
    pub debounce_ms: u64,
    pub interval_secs: u64,
    pub group_ttl_secs: u64,
}

impl PushgatewaySettings {
    pub fn group_ttl(&self) -> Duration {
        Duration::from_secs(self.group_ttl_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_report_bytes: usize,
    /// `POST /v1/reports/batch`: the whole body, and the reports in it.
    pub max_batch_bytes: usize,
    pub max_reports_per_call: usize,
    pub max_custom_metrics: usize,
    pub max_labels: usize,
    pub max_label_value_bytes: usize,
    pub max_series_per_agent: i64,
    pub max_duration_secs: f64,
    pub report_retention_hours: u64,
    /// Reports per authenticated agent; past it, 429 with `Retry-After`.
    pub agent_requests: rave_service::limit::RateSettings,
}

impl ServiceSettings for Settings {
    const SERVICE: &'static str = "agent-reporter";
    const DEFAULTS: &'static str = include_str!("../config/default.toml");

    fn validate(&self) -> Result<(), SettingsError> {
        self.limits
            .agent_requests
            .validate("limits.agent_requests")?;
        self.telemetry.validate("telemetry")?;
        self.database.validate("database")?;
        self.reports.validate("reports")?;
        let p = &self.pushgateway;
        if let Some(url) = &p.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(SettingsError::invalid(
                "pushgateway.url",
                "must be an http:// or https:// URL",
            ));
        }
        if !crate::push::valid_label_value(&p.job) || p.job.contains('/') {
            return Err(SettingsError::invalid(
                "pushgateway.job",
                "must be a non-empty name without '/'",
            ));
        }
        if p.timeout_ms == 0 || p.interval_secs == 0 || p.group_ttl_secs == 0 {
            return Err(SettingsError::invalid(
                "pushgateway",
                "timeout_ms, interval_secs and group_ttl_secs must be positive",
            ));
        }
        let l = &self.limits;
        if l.max_report_bytes == 0
            || l.max_batch_bytes < l.max_report_bytes
            || l.max_reports_per_call == 0
            || l.max_series_per_agent < 1
            || l.max_duration_secs <= 0.0
        {
            return Err(SettingsError::invalid(
                "limits",
                "limits must be positive, and max_batch_bytes at least max_report_bytes",
            ));
        }
        rave_service::auth::Agents::load(&self.agents, self.agents_file.as_deref())?;
        Ok(())
    }
}
