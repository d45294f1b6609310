//! Typed settings, loaded once at start: built-in defaults → TOML file →
//! environment (`RAVE_<SERVICE>__SECTION__KEY`), then validated.
//!
//! Secrets are [`Secret`]s: given inline or as `{ file = "/path" }` (systemd
//! credentials), never printed by `Debug`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// A service's settings type.
pub trait ServiceSettings: DeserializeOwned {
    /// The service's name, e.g. `dedup-store`; its environment prefix is
    /// `RAVE_DEDUP_STORE__`.
    const SERVICE: &'static str;
    /// Built-in defaults, as TOML.
    const DEFAULTS: &'static str;
    /// Checks what types alone cannot; errors name the offending key.
    fn validate(&self) -> Result<(), SettingsError>;
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot load settings: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl SettingsError {
    pub fn invalid(key: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.to_string(),
        }
    }
}

/// The environment prefix of a service, e.g. `RAVE_DEDUP_STORE`.
pub fn env_prefix(service: &str) -> String {
    format!("RAVE_{}", service.to_ascii_uppercase().replace('-', "_"))
}

/// Loads settings from the defaults, an optional TOML file and the process
/// environment, and validates them.
pub fn load<S: ServiceSettings>(file: Option<&Path>) -> Result<S, SettingsError> {
    load_with_env(file, None)
}

/// Like [`load`], with the environment given explicitly (`None`: the process
/// environment). Tests use this to avoid touching global state.
pub fn load_with_env<S: ServiceSettings>(
    file: Option<&Path>,
    env: Option<HashMap<String, String>>,
) -> Result<S, SettingsError> {
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        S::DEFAULTS,
        config::FileFormat::Toml,
    ));
    if let Some(path) = file {
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix(&env_prefix(S::SERVICE))
            .prefix_separator("__")
            .separator("__")
            // Values stay strings; typed fields parse them. Parsing here
            // would turn a secret like "007123" into the number 7123.
            .source(env),
    );
    let settings: S = builder.build()?.try_deserialize()?;
    settings.validate()?;
    Ok(settings)
}

/// A secret value: inline, or read from a file (`{ file = "/run/credentials/x" }`).
///
/// A trailing newline in a file is dropped. `Debug` shows `[REDACTED]`.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Inline(String),
            File { file: PathBuf },
        }
        match Repr::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a secret string or a table `{ file = \"PATH\" }`")
        })? {
            Repr::Inline(value) => Ok(Secret::new(value)),
            Repr::File { file } => {
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "cannot read secret file {}: {e}",
                        file.display()
                    ))
                })?;
                let trimmed = text.strip_suffix('\n').unwrap_or(&text);
                let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
                Ok(Secret::new(trimmed))
            }
        }
    }
}

/// Where a service listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: IpAddr,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_timeout_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            workers: 0,
            shutdown_timeout_secs: 30,
        }
    }
}

impl ServerSettings {
    /// Internal services must not be reachable from outside the machine.
    pub fn require_loopback(&self, key: &str) -> Result<(), SettingsError> {
        if self.host.is_loopback() {
            Ok(())
        } else {
            Err(SettingsError::invalid(
                key,
                format!(
                    "{} is not a loopback address; this service is internal",
                    self.host
                ),
            ))
        }
    }
}

/// Logs and traces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// An `EnvFilter` directive, e.g. `info,ingest=debug`. `RUST_LOG` wins when set.
    pub log_filter: String,
    /// `json` (default) or `pretty`.
    pub log_format: LogFormat,
    /// Which spans become trace spans, an `EnvFilter` directive. Independent
    /// of `log_filter`, so quiet logs keep traces whole.
    pub trace_filter: String,
    /// OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`.
    /// Without one, trace ids are still made and propagated, just not exported.
    pub otlp_endpoint: Option<String>,
    /// Fraction of root traces sampled for export, 0.0–1.0.
    pub sample_ratio: f64,
    /// One log line per request or item (event stored, task claimed, job
    /// report, ...), also kept in traces as an event of its span. Off by
    /// default, in both: refusals, failures and everything else are still
    /// logged, and the spans' attributes hold the per-request detail.
    #[serde(default)]
    pub request_logs: bool,
    /// Whether log lines carry the fields of the span they were logged in.
    /// Off by default: the JSON formatter renders every span's fields when
    /// the span is made and again on each `record`, logged or not — about a
    /// tenth of ingest's and dedup-store's CPU at full rate
    /// (docs/performance.md). A request's unexpected-error and
    /// dependency-unavailable lines name their `trace_id` either way.
    #[serde(default)]
    pub log_spans: bool,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_filter: "info".into(),
            log_format: LogFormat::Json,
            trace_filter: "info".into(),
            otlp_endpoint: None,
            sample_ratio: 1.0,
            request_logs: false,
            log_spans: false,
        }
    }
}

impl TelemetrySettings {
    pub fn validate(&self, key: &str) -> Result<(), SettingsError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(SettingsError::invalid(
                format!("{key}.sample_ratio"),
                "must be between 0.0 and 1.0",
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(SettingsError::invalid(
                format!("{key}.otlp_endpoint"),
                "must be an http:// or https:// URL",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_filter)
            .map_err(|e| SettingsError::invalid(format!("{key}.log_filter"), e))?;
        tracing_subscriber::EnvFilter::try_new(&self.trace_filter)
            .map_err(|e| SettingsError::invalid(format!("{key}.trace_filter"), e))?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Demo {
        server: ServerSettings,
        token: Secret,
        limit: u64,
    }

    impl ServiceSettings for Demo {
        const SERVICE: &'static str = "demo-svc";
        const DEFAULTS: &'static str = r#"
            limit = 10
            token = "default-token"
            [server]
            host = "127.0.0.1"
            port = 3000
            workers = 1
            shutdown_timeout_secs = 5
        "#;
        fn validate(&self) -> Result<(), SettingsError> {
            if self.limit == 0 {
                return Err(SettingsError::invalid("limit", "must be positive"));
            }
            self.server.require_loopback("server.host")
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.toml");
        std::fs::write(&path, "limit = 20\n[server]\nport = 4000\n").unwrap();
        let s: Demo =
            load_with_env(Some(&path), env(&[("RAVE_DEMO_SVC__SERVER__PORT", "5000")])).unwrap();
        assert_eq!(s.limit, 20);
        assert_eq!(s.server.port, 5000);
        assert_eq!(s.server.workers, 1);
    }

    #[test]
    fn a_bad_value_is_reported_with_its_key() {
        let err = load_with_env::<Demo>(None, env(&[("RAVE_DEMO_SVC__SERVER__PORT", "lots")]))
            .unwrap_err();
        assert!(err.to_string().contains("server.port"), "{err}");
    }

    #[test]
    fn validation_errors_name_the_key() {
        let err = load_with_env::<Demo>(None, env(&[("RAVE_DEMO_SVC__LIMIT", "0")])).unwrap_err();
        assert_eq!(err.to_string(), "invalid setting `limit`: must be positive");
        let err = load_with_env::<Demo>(None, env(&[("RAVE_DEMO_SVC__SERVER__HOST", "0.0.0.0")]))
            .unwrap_err();
        assert!(err.to_string().contains("`server.host`"), "{err}");
    }

    #[test]
    fn secrets_can_come_from_files_and_never_show_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let secret_path = dir.path().join("token");
        std::fs::write(&secret_path, "from-file-token\n").unwrap();
        let path = dir.path().join("demo.toml");
        std::fs::write(&path, format!("token = {{ file = {:?} }}\n", secret_path)).unwrap();
        let s: Demo = load_with_env(Some(&path), env(&[])).unwrap();
        assert_eq!(s.token.expose(), "from-file-token");
        let debug = format!("{s:?}");
        assert!(!debug.contains("from-file-token"), "{debug}");
        assert!(debug.contains("REDACTED"));
    }

    #[test]
    fn a_numeric_looking_secret_from_the_environment_is_kept_verbatim() {
        let s: Demo = load_with_env(None, env(&[("RAVE_DEMO_SVC__TOKEN", "007123")])).unwrap();
        assert_eq!(s.token.expose(), "007123");
    }

    #[test]
    fn a_missing_secret_file_is_an_error_naming_the_file_not_the_secret() {
        let err = load_with_env::<Demo>(
            None,
            env(&[("RAVE_DEMO_SVC__TOKEN__FILE", "/nonexistent/rave-secret")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("token"), "{err}");
    }
}
