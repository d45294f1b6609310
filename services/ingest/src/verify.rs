//! Signature verification for each source kind, on the raw body bytes,
//! before anything parses them. Every comparison is constant-time.
//!
//! - `github`: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
//! - `standard` (Standard Webhooks `v1`): HMAC-SHA256 over
//!   `{webhook-id}.{webhook-timestamp}.{body}` with the key in `whsec_<base64>`;
//!   `webhook-signature` lists space-separated `v1,<base64>` entries, any of
//!   which may match; other versions are ignored. `svix-*` headers are aliases.
//! - `gitlab`: the Standard Webhooks check when `webhook-signature` is present
//!   (GitLab ≥ 19 signing tokens), else `X-Gitlab-Token`.
//! - `alertmanager`: `Authorization: Bearer <token>` (verify/alertmanager.rs).
//! - `hmac` and its presets (`stripe`, `slack`, …): a declared HMAC scheme
//!   (verify/declared.rs, verify/presets.rs).

use std::borrow::Cow;

use actix_web::http::header::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rave_service::crypto::constant_time_eq;
use rave_service::ids::{EventType, EventUuid};
use rave_service::settings::Secret;
use ring::hmac;

/// Why a request was refused before its body was trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(Cow<'static, str>),
    #[error("malformed header {header}: {reason}")]
    MalformedHeader {
        header: Cow<'static, str>,
        reason: String,
    },
    #[error("the signature does not match")]
    InvalidSignature,
    #[error("no signature of a supported version (v1)")]
    UnsupportedSignatureVersion,
    #[error("the token does not match")]
    InvalidToken,
    #[error("this source only accepts signed requests (webhook-signature)")]
    SignatureRequired,
    #[error("the timestamp is more than {tolerance} s in the past")]
    StaleTimestamp { tolerance: u64 },
    #[error("the timestamp is more than {tolerance} s in the future")]
    FutureTimestamp { tolerance: u64 },
    /// Authenticated, but not what the source's protocol sends.
    #[error("malformed body: {0}")]
    MalformedBody(String),
}

impl VerifyError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::MalformedHeader { .. } => "malformed_header",
            Self::InvalidSignature => "invalid_signature",
            Self::UnsupportedSignatureVersion => "unsupported_signature_version",
            Self::InvalidToken => "invalid_token",
            Self::SignatureRequired => "signature_required",
            Self::StaleTimestamp { .. } => "stale_timestamp",
            Self::FutureTimestamp { .. } => "future_timestamp",
            Self::MalformedBody(_) => "malformed_body",
        }
    }

    /// Whether the sender proved it holds the secret before this went wrong
    /// (a signed body the scheme cannot read): not a forgery, so it never
    /// counts against the sender's address.
    pub fn after_authentication(&self) -> bool {
        matches!(self, Self::MalformedBody(_))
    }

    /// 400 for requests that are malformed, 401 for ones that fail authentication.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            Self::MissingHeader(_) | Self::MalformedHeader { .. } | Self::MalformedBody(_)
        )
    }
}

fn malformed(header: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> VerifyError {
    VerifyError::MalformedHeader {
        header: header.into(),
        reason: reason.into(),
    }
}

/// What a verified request tells about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub event_uuid: EventUuid,
    pub event_type: EventType,
}

/// What a verified request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An event, to be stored.
    Event(Verified),
    /// A sender's handshake (Slack's `url_verification`): answered with
    /// this string, stored nowhere.
    Challenge(String),
}

/// A source's verifier, built once from its settings.
#[derive(Debug)]
pub enum Verifier {
    Declared(Box<declared::Scheme>),
    Github {
        keys: Vec<hmac::Key>,
    },
    Standard {
        keys: StandardKeys,
    },
    Gitlab {
        signing: Option<StandardKeys>,
        tokens: Vec<Secret>,
        require_signature: bool,
    },
    Alertmanager {
        tokens: Vec<Secret>,
    },
}

/// Standard Webhooks `v1` keys and the timestamp tolerance.
#[derive(Debug)]
pub struct StandardKeys {
    keys: Vec<hmac::Key>,
    tolerance_secs: u64,
}

impl StandardKeys {
    /// Parses `whsec_<base64>` secrets (the prefix is optional). The spec's
    /// key size is 24 to 64 bytes.
    pub fn new<'a>(
        secrets: impl IntoIterator<Item = &'a Secret>,
        tolerance_secs: u64,
    ) -> Result<Self, String> {
        let keys = secrets
            .into_iter()
            .enumerate()
            .map(|(i, secret)| {
                let encoded = secret.expose();
                let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
                let raw = BASE64
                    .decode(encoded)
                    .map_err(|_| format!("secret #{} is not whsec_<base64>", i + 1))?;
                if !(24..=64).contains(&raw.len()) {
                    return Err(format!(
                        "secret #{} decodes to {} bytes; Standard Webhooks keys are 24 to 64 bytes",
                        i + 1,
                        raw.len()
                    ));
                }
                Ok(hmac::Key::new(hmac::HMAC_SHA256, &raw))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            keys,
            tolerance_secs,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `webhook-id`, `webhook-timestamp` and `webhook-signature`
    /// (or their `svix-` aliases) and returns the message id.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<EventUuid, VerifyError> {
        let id = required(headers, &["webhook-id", "svix-id"])?;
        let timestamp = required(headers, &["webhook-timestamp", "svix-timestamp"])?;
        let signatures = required(headers, &["webhook-signature", "svix-signature"])?;
        let event_uuid =
            EventUuid::parse(id).map_err(|e| malformed("webhook-id", e.to_string()))?;
        if id.contains('.') {
            return Err(malformed("webhook-id", "must not contain '.'"));
        }
        let sent_at: i64 = timestamp
            .parse()
            .map_err(|_| malformed("webhook-timestamp", "must be integer Unix seconds"))?;
        let tolerance = self.tolerance_secs;
        if now_unix.saturating_sub(sent_at) > tolerance as i64 {
            return Err(VerifyError::StaleTimestamp { tolerance });
        }
        if sent_at.saturating_sub(now_unix) > tolerance as i64 {
            return Err(VerifyError::FutureTimestamp { tolerance });
        }

        let entries: Vec<(&str, &str)> = signatures
            .split(' ')
            .filter_map(|e| e.split_once(','))
            .collect();
        if entries.is_empty() {
            return Err(malformed(
                "webhook-signature",
                "expected space-separated <version>,<signature>",
            ));
        }
        let candidates: Vec<Vec<u8>> = entries
            .iter()
            .filter(|(version, _)| *version == "v1")
            .map(|(_, signature)| BASE64.decode(signature).unwrap_or_default())
            .collect();
        if candidates.is_empty() {
            return Err(VerifyError::UnsupportedSignatureVersion);
        }
        for key in &self.keys {
            let mut context = hmac::Context::with_key(key);
            context.update(id.as_bytes());
            context.update(b".");
            context.update(timestamp.as_bytes());
            context.update(b".");
            context.update(body);
            let expected = context.sign();
            if candidates
                .iter()
                .any(|c| constant_time_eq(expected.as_ref(), c))
            {
                return Ok(event_uuid);
            }
        }
        Err(VerifyError::InvalidSignature)
    }
}

impl Verifier {
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<Verdict, VerifyError> {
        // Only a declared scheme knows handshakes; the others deliver events.
        match self {
            Self::Declared(scheme) => scheme.verify(headers, body, now_unix),
            Self::Github { keys } => verify_github(keys, headers, body).map(Verdict::Event),
            Self::Standard { keys } => {
                let event_uuid = keys.verify(headers, body, now_unix)?;
                Ok(Verdict::Event(Verified {
                    event_uuid,
                    event_type: standard_event_type(body),
                }))
            }
            Self::Gitlab {
                signing,
                tokens,
                require_signature,
            } => verify_gitlab(
                signing.as_ref(),
                tokens,
                *require_signature,
                headers,
                body,
                now_unix,
            )
            .map(Verdict::Event),
            Self::Alertmanager { tokens } => {
                alertmanager::verify(tokens, headers, body).map(Verdict::Event)
            }
        }
    }
}

fn verify_github(
    keys: &[hmac::Key],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verified, VerifyError> {
    const HEADER: &str = "x-hub-signature-256";
    let signature = required(headers, &[HEADER])?;
    let hex_digest = signature
        .strip_prefix("sha256=")
        .ok_or_else(|| malformed(HEADER, "expected sha256=<hex>"))?;
    let digest = hex::decode(hex_digest).map_err(|_| malformed(HEADER, "expected sha256=<hex>"))?;
    if digest.len() != 32 {
        return Err(malformed(HEADER, "expected 64 hex digits"));
    }
    // `hmac::verify` recomputes the MAC and compares in constant time.
    if !keys
        .iter()
        .any(|key| hmac::verify(key, body, &digest).is_ok())
    {
        return Err(VerifyError::InvalidSignature);
    }
    Ok(Verified {
        event_uuid: parse_id(
            required(headers, &["x-github-delivery"])?,
            "x-github-delivery",
        )?,
        event_type: parse_type(required(headers, &["x-github-event"])?, "x-github-event")?,
    })
}

fn verify_gitlab(
    signing: Option<&StandardKeys>,
    tokens: &[Secret],
    require_signature: bool,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<Verified, VerifyError> {
    let signed = headers.contains_key("webhook-signature");
    let event_type = || parse_type(required(headers, &["x-gitlab-event"])?, "x-gitlab-event");
    match signing {
        Some(keys) if signed => {
            // The signature covers `webhook-id`, not `Idempotency-Key`: a
            // captured delivery replayed within the tolerance with a fresh
            // key is the same event, so the signed id is the dedup key.
            let event_uuid = keys.verify(headers, body, now_unix)?;
            return Ok(Verified {
                event_uuid,
                event_type: event_type()?,
            });
        }
        _ if require_signature => return Err(VerifyError::SignatureRequired),
        _ => {
            let token = required(headers, &["x-gitlab-token"])?;
            if !any_token_matches(tokens, token) {
                return Err(VerifyError::InvalidToken);
            }
        }
    }
    // Token deliveries sign nothing, so no id is protected: `Idempotency-Key`
    // (GitLab ≥ 17.4, = `webhook-id` from 19.0) is at least stable across
    // retries. Older GitLab only has `X-Gitlab-Event-UUID`, which recursive
    // webhooks share.
    let (id, header) = first_present(
        headers,
        &["idempotency-key", "webhook-id", "x-gitlab-event-uuid"],
    )?
    .ok_or(VerifyError::MissingHeader("idempotency-key".into()))?;
    Ok(Verified {
        event_uuid: parse_id(id, header)?,
        event_type: event_type()?,
    })
}

/// Whether `token` is one of `tokens`, compared with every one in constant
/// time, so timing does not tell which matched, nor how much of one.
fn any_token_matches(tokens: &[Secret], token: &str) -> bool {
    tokens.iter().fold(false, |found, t| {
        constant_time_eq(token.as_bytes(), t.expose().as_bytes()) | found
    })
}

/// Standard Webhooks payloads carry their type in a top-level `type` field;
/// read only after the signature has been verified.
fn standard_event_type(body: &[u8]) -> EventType {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .and_then(|e| e.kind)
        .and_then(|k| EventType::parse(k).ok())
        .unwrap_or_else(|| EventType::parse("unknown").expect("valid event type"))
}

fn parse_id(value: &str, header: &'static str) -> Result<EventUuid, VerifyError> {
    EventUuid::parse(value).map_err(|e| malformed(header, e.to_string()))
}

fn parse_type(value: &str, header: &'static str) -> Result<EventType, VerifyError> {
    EventType::parse(value).map_err(|e| malformed(header, e.to_string()))
}

/// The first of `names` present, as text, and which it was.
fn first_present<'a, 'n, N: AsRef<str>>(
    headers: &'a HeaderMap,
    names: &'n [N],
) -> Result<Option<(&'a str, &'n N)>, VerifyError> {
    for name in names {
        let text = name.as_ref();
        // Two values for one protocol header are ambiguous (which one was
        // signed, which delivery is it?): refuse rather than pick one.
        if headers.get_all(text).nth(1).is_some() {
            return Err(malformed(text.to_owned(), "appears more than once"));
        }
        if let Some(value) = headers.get(text) {
            let value = value
                .to_str()
                .map_err(|_| malformed(text.to_owned(), "must be visible ASCII"))?;
            return Ok(Some((value, name)));
        }
    }
    Ok(None)
}

fn required<'a, N: AsRef<str>>(
    headers: &'a HeaderMap,
    names: &[N],
) -> Result<&'a str, VerifyError> {
    first_present(headers, names)?
        .map(|(value, _)| value)
        .ok_or_else(|| VerifyError::MissingHeader(names[0].as_ref().to_owned().into()))
}

mod alertmanager;
pub mod declared;
pub mod presets;
#[cfg(test)]
mod tests;
