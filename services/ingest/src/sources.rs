//! Configured webhook sources, built once at start from settings.

use std::collections::HashMap;

use actix_web::http::header::HeaderMap;
use rave_service::ids::SourceName;
use rave_service::settings::SettingsError;
use ring::hmac;

use crate::settings::{Settings, SourceKind};
use crate::verify::declared::Scheme;
use crate::verify::{StandardKeys, Verifier, presets};

#[derive(Debug)]
pub struct Source {
    pub name: SourceName,
    pub kind: SourceKind,
    pub verifier: Verifier,
}

/// Every configured source by name.
#[derive(Debug, Default)]
pub struct Sources(HashMap<String, Source>);

impl Sources {
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingsError> {
        let mut sources = HashMap::new();
        for (name, source) in &settings.sources {
            let key = |field: &str| format!("sources.{name}.{field}");
            let parsed = SourceName::parse(name.clone())
                .map_err(|e| SettingsError::invalid(format!("sources.{name}"), e))?;
            let tolerance = source
                .timestamp_tolerance_secs
                .unwrap_or(settings.verification.timestamp_tolerance_secs);
            let secrets: Vec<_> = source.all_secrets().collect();
            let tokens: Vec<_> = source.all_tokens().cloned().collect();
            if !matches!(source.kind, SourceKind::Gitlab | SourceKind::Alertmanager)
                && !tokens.is_empty()
            {
                return Err(SettingsError::invalid(
                    key("tokens"),
                    "tokens apply to gitlab and alertmanager sources only",
                ));
            }
            if source.kind != SourceKind::Gitlab && source.require_signature {
                return Err(SettingsError::invalid(
                    key("require_signature"),
                    "require_signature applies to gitlab sources only",
                ));
            }
            if secrets.iter().any(|s| s.expose().is_empty())
                || tokens.iter().any(|t| t.expose().is_empty())
            {
                return Err(SettingsError::invalid(
                    key("secrets"),
                    "secrets and tokens must not be empty",
                ));
            }
            if source.kind != SourceKind::Hmac && source.hmac.is_some() {
                return Err(SettingsError::invalid(
                    key("hmac"),
                    "applies to kind = \"hmac\" only (a preset's scheme is fixed)",
                ));
            }
            let verifier = match source.kind {
                SourceKind::Github => {
                    if secrets.is_empty() {
                        return Err(SettingsError::invalid(
                            key("secrets"),
                            "a github source needs at least one secret",
                        ));
                    }
                    Verifier::Github {
                        keys: secrets
                            .iter()
                            .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.expose().as_bytes()))
                            .collect(),
                    }
                }
                SourceKind::Standard => {
                    if secrets.is_empty() {
                        return Err(SettingsError::invalid(
                            key("secrets"),
                            "a standard source needs at least one whsec_ secret",
                        ));
                    }
                    Verifier::Standard {
                        keys: StandardKeys::new(secrets, tolerance)
                            .map_err(|e| SettingsError::invalid(key("secrets"), e))?,
                    }
                }
                SourceKind::Gitlab => {
                    if secrets.is_empty() && tokens.is_empty() {
                        return Err(SettingsError::invalid(
                            key("secrets"),
                            "a gitlab source needs a signing token (secrets) or a secret token (tokens)",
                        ));
                    }
                    if source.require_signature && secrets.is_empty() {
                        return Err(SettingsError::invalid(
                            key("require_signature"),
                            "requires at least one signing token in secrets",
                        ));
                    }
                    let signing = StandardKeys::new(secrets, tolerance)
                        .map_err(|e| SettingsError::invalid(key("secrets"), e))?;
                    Verifier::Gitlab {
                        signing: (!signing.is_empty()).then_some(signing),
                        tokens,
                        require_signature: source.require_signature,
                    }
                }
                SourceKind::Alertmanager => {
                    if !secrets.is_empty() {
                        return Err(SettingsError::invalid(
                            key("secrets"),
                            "Alertmanager signs nothing: give its bearer tokens in tokens",
                        ));
                    }
                    if tokens.is_empty() {
                        return Err(SettingsError::invalid(
                            key("tokens"),
                            "an alertmanager source needs at least one bearer token",
                        ));
                    }
                    Verifier::Alertmanager { tokens }
                }
                // `hmac` and every preset: one declared scheme, compiled once.
                kind => {
                    let (declared, challenge) = match presets::expand(kind) {
                        Some(preset) => preset,
                        None => (
                            source.hmac.clone().ok_or_else(|| {
                                SettingsError::invalid(
                                    key("hmac"),
                                    "an hmac source needs its scheme in [sources.NAME.hmac]",
                                )
                            })?,
                            None,
                        ),
                    };
                    Verifier::Declared(Box::new(
                        Scheme::compile(&declared, &secrets, tolerance, challenge)
                            .map_err(|e| SettingsError::invalid(format!("sources.{name}"), e))?,
                    ))
                }
            };
            sources.insert(
                name.clone(),
                Source {
                    name: parsed,
                    kind: source.kind,
                    verifier,
                },
            );
        }
        Ok(Self(sources))
    }

    pub fn get(&self, name: &str) -> Option<&Source> {
        self.0.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl Source {
    /// The headers kept with the event: ids, event names and provenance.
    /// Never a token or signature.
    pub fn stored_headers(
        &self,
        headers: &HeaderMap,
    ) -> serde_json::Map<String, serde_json::Value> {
        if let Verifier::Declared(scheme) = &self.verifier {
            return kept(headers, scheme.kept_headers());
        }
        let names: &[&str] = match self.kind {
            SourceKind::Github => &[
                "x-github-event",
                "x-github-delivery",
                "x-github-hook-id",
                "x-github-hook-installation-target-type",
                "x-github-hook-installation-target-id",
            ],
            SourceKind::Gitlab => &[
                "x-gitlab-event",
                "x-gitlab-event-uuid",
                "x-gitlab-instance",
                "x-gitlab-webhook-uuid",
                "idempotency-key",
                "webhook-id",
                "webhook-timestamp",
            ],
            SourceKind::Standard => &[
                "webhook-id",
                "webhook-timestamp",
                "svix-id",
                "svix-timestamp",
            ],
            // Its one protocol header is the token.
            SourceKind::Alertmanager => &[],
            // Declared schemes name their own (above).
            _ => &[],
        };
        kept(headers, names.iter().copied())
    }
}

/// `names` and the provenance headers, where present and of a sane size.
fn kept<'a>(
    headers: &HeaderMap,
    names: impl Iterator<Item = &'a str>,
) -> serde_json::Map<String, serde_json::Value> {
    names
        .chain(["content-type", "user-agent"])
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            (value.len() <= 4096).then(|| (name.to_owned(), serde_json::Value::from(value)))
        })
        .collect()
}
